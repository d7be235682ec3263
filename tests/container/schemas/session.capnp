# The record type of tests/container/table_test.cc, compiled to C++. session_v2.capnp and
# session_breaking.capnp are the same struct (same ids) changed, compiled to schema nodes
# only: one binary cannot link two versions of one struct.
@0xa7f0c1d2e3b4a596;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::test");

enum Plan {
  free @0;
  paid @1;
}

struct Session @0xe1d2c3b4a5968778 {
  user @0 :Text;
  hits @1 :UInt64;
  tags @2 :List(Text);
  plan @3 :Plan;
  limit :group {
    perMinute @4 :UInt32;
    burst @5 :UInt32;
  }
}
