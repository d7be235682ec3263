# The benchmark names docs/benchmarks.md and the issues rely on must exist, and the
# cheap ones must run. Invoked by ctest with -DBENCH=<path to baton_bench>.
execute_process(COMMAND ${BENCH} --benchmark_list_tests=true
  OUTPUT_VARIABLE listed RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "baton_bench --benchmark_list_tests failed (${rc})")
endif()
foreach(name
    BM_MemcpyToFreshSegment/67108864 BM_MemcpyToFreshSegment/1073741824
    BM_Checkpoint/67108864 BM_Checkpoint/1073741824
    BM_Restore/67108864 BM_Restore/1073741824
    BM_DigestAtTheCut/67108864 BM_DigestAtTheCut/1073741824
    BM_RecordDelta/idle BM_RecordDelta/active
    BM_NewKeyAfterRestore/12000000 BM_NewKeyAtAPowerOfTwo/8388608 BM_NewKeyAtIndexGrowth/16777216
    BM_Lookup/keys:4194304/hit:1 BM_Lookup/keys:4194304/hit:0 BM_Fill/4194304
    BM_PassFds/1 BM_PassFds/1000 BM_PassFds/10000 BM_Stream/uring BM_Stream/writev)

  string(FIND "${listed}" "${name}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "benchmark ${name} is missing from baton_bench")
  endif()
endforeach()
execute_process(COMMAND ${BENCH} --benchmark_filter=BM_RecordDelta --benchmark_min_time=0.01
  OUTPUT_VARIABLE ran RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT ran MATCHES "BM_RecordDelta/idle" OR NOT ran MATCHES "BM_RecordDelta/active")
  message(FATAL_ERROR "baton_bench did not run BM_RecordDelta (${rc}):\n${ran}")
endif()
message(STATUS "${ran}")
# The digest benchmark checks its sliced digest against the one-pass reference.
execute_process(COMMAND ${BENCH} --benchmark_filter=BM_DigestAtTheCut/67108864
  --benchmark_min_time=0.01 OUTPUT_VARIABLE ran ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT ran MATCHES "s_per_GiB" OR ran MATCHES "ERROR")
  message(FATAL_ERROR "baton_bench BM_DigestAtTheCut failed (${rc}):\n${ran}${err}")
endif()
message(STATUS "${ran}")
