// Worker threads (docs/design.md, "Worker threads"): several threads mutate their own
// maps at random while each writes its own checkpoint on its own thread and the main
// thread merges their deltas into one stream; after one freeze across all of them,
// restore plus replay gives exactly every thread's state. Run under TSan in CI.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "baton/checkpoint.h"
#include "baton/runtime.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"
#include "handoff/host.h"
#include "handoff/workers.h"

namespace baton {
namespace {

using testing::RandomOps;

constexpr unsigned kWorkers = 3;

// A worker thread as a server runs one: random writes to its shard, service() each turn.
struct Shard final : WorkerHooks {
  explicit Shard(unsigned index) : map("kv." + std::to_string(index), 1) {}
  std::vector<FrozenSocket> freeze() override {
    ++freezes;
    return {};
  }
  void unfreeze() override { ++unfreezes; }
  TrackedMap map;
  std::atomic<int> freezes{0}, unfreezes{0};
};

// Every thread's maps, registered as a process registers them.
struct Process {
  Process() : workers(kWorkers, size_t{64} << 20, CheckpointPacing{}) {
    EXPECT_TRUE(main.add(main_map).ok());
    for (unsigned i = 1; i <= kWorkers; ++i) {
      shards.push_back(std::make_unique<Shard>(i));
      EXPECT_TRUE(workers.at(i).registry().add(shards.back()->map).ok());
    }
  }
  Registry main;
  TrackedMap main_map{"kv.0", 1};
  Workers workers;
  std::vector<std::unique_ptr<Shard>> shards;
};

template <typename F>
bool until(F done, double seconds = 20) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::yield();
  }
  return done();
}

TEST(Workers, SeveralThreadsCheckpointOnTheirOwnAndReplayExactlyAfterOneFreeze) {
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    Process live;
    RandomOps main_ops(seed * 100);
    for (int i = 0; i < 300; ++i) main_ops.one(live.main_map);
    for (unsigned i = 0; i < kWorkers; ++i) {
      RandomOps ops(seed * 100 + i + 1);
      for (int j = 0; j < 300; ++j) ops.one(live.shards[i]->map);
    }
    std::atomic<bool> stop{false};
    std::atomic<int> stopped{0};
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < kWorkers; ++i) {
      threads.emplace_back([&, i] {
        Shard& shard = *live.shards[i];
        Worker& w = live.workers.at(i + 1);
        RandomOps ops(seed * 1000 + i);
        for (int turn = 0; turn < 2'000'000 && !stop; ++turn) {
          for (int j = 0; j < 3; ++j) ops.one(shard.map);
          if (!w.service(shard)) break;  // committed
        }
        ++stopped;
      });
    }
    struct JoinAll {
      std::vector<std::thread>& t;
      std::atomic<bool>& stop;
      Workers& w;
      ~JoinAll() {
        stop = true;
        w.release(true);
        for (auto& x : t) x.join();
      }
    } join_all{threads, stop, live.workers};

    // The main thread: its own checkpoint and writes, the workers' in the meantime.
    CheckpointOptions small;
    small.slice_bytes = 2048;  // many slices on every thread
    auto writer = CheckpointWriter::begin(live.main, small);
    ASSERT_TRUE(writer.ok()) << writer.error().to_string();
    live.workers.begin();
    std::vector<std::string> stream;  // the frames the successor would receive, in order
    auto pump = [&] {
      auto r = live.workers.drain_into(live.main.log());
      ASSERT_TRUE(r.ok()) << r.error().to_string();
      if (std::string f = live.main.log().take_frame(); !f.empty()) stream.push_back(std::move(f));
    };
    bool main_done = false;
    ASSERT_TRUE(until([&] {
      main_ops.one(live.main_map);
      if (!main_done) {
        auto d = writer->step();
        EXPECT_TRUE(d.ok());
        main_done = d.ok() && *d;
      }
      pump();
      auto all = live.workers.checkpoints_done();
      EXPECT_TRUE(all.ok()) << all.error().to_string();
      return main_done && all.ok() && *all;
    })) << "every thread's checkpoint";
    auto cp = writer->finish();
    ASSERT_TRUE(cp.ok()) << cp.error().to_string();
    for (int i = 0; i < 200; ++i) {  // writes that only the stream carries, on every thread
      main_ops.one(live.main_map);
      pump();
    }

    // One freeze across the threads: each stops inside service(), its last frame queued.
    std::vector<int64_t> frozen_at;
    auto sockets = live.workers.freeze(monotonic_us() + 20'000'000, &frozen_at);
    ASSERT_TRUE(sockets.ok()) << sockets.error().to_string();
    EXPECT_EQ(frozen_at.size(), kWorkers);
    pump();
    for (auto& s : live.shards) EXPECT_EQ(s->freezes, 1);

    // The successor: every segment restored into its thread's registry, the one stream
    // replayed over the merged ids.
    Process next;
    auto main_r = restore_checkpoint(cp->fd(), next.main);
    ASSERT_TRUE(main_r.ok()) << main_r.error().to_string();
    uint64_t bytes = 0;
    std::vector<int> fds = live.workers.segment_fds(&bytes);
    ASSERT_EQ(fds.size(), kWorkers);
    EXPECT_GT(bytes, 0u);
    std::vector<RestoreResult> worker_r;
    for (unsigned i = 0; i < kWorkers; ++i) {
      auto r = restore_checkpoint(fds[i], next.workers.at(i + 1).registry());
      ASSERT_TRUE(r.ok()) << "worker " << i + 1 << ": " << r.error().to_string();
      worker_r.push_back(std::move(r).value());
    }
    DeltaReplayer replay(merge_restores(std::move(main_r).value(), worker_r));
    for (const std::string& f : stream) {
      auto applied = replay.apply_frame(f);
      ASSERT_TRUE(applied.ok()) << "seed " << seed << ": " << applied.error().to_string();
    }
    EXPECT_TRUE(next.main_map.same_contents(live.main_map)) << "seed " << seed;
    for (unsigned i = 0; i < kWorkers; ++i) {
      EXPECT_TRUE(next.shards[i]->map.same_contents(live.shards[i]->map))
          << "seed " << seed << ", worker " << i + 1;
    }
    live.workers.release(true);
    ASSERT_TRUE(until([&] { return stopped == static_cast<int>(kWorkers); }))
        << "committed: every worker's service() returns false";
    live.workers.end();
    live.main.log().end_capture();
  }
}

// An abandoned freeze: every worker serves on (unfreeze), and a later attempt starts
// clean, with a new checkpoint on every thread.
TEST(Workers, AnAbortAfterTheFreezeResumesEveryThreadAndTheNextAttemptStartsClean) {
  Process live;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      for (int turn = 0; turn < 5'000'000 && !stop; ++turn) {
        live.shards[i]->map.set("k" + std::to_string(turn % 50), "v");
        if (!live.workers.at(i + 1).service(*live.shards[i])) break;
      }
    });
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    live.workers.begin();
    ASSERT_TRUE(until([&] {
      auto all = live.workers.checkpoints_done();
      return all.ok() && *all;
    }));
    auto sockets = live.workers.freeze(monotonic_us() + 20'000'000, nullptr);
    ASSERT_TRUE(sockets.ok());
    live.workers.release(false);
    live.workers.end();
    ASSERT_TRUE(until([&] {
      for (auto& s : live.shards)
        if (s->unfreezes != attempt + 1) return false;
      return true;
    })) << "attempt "
        << attempt << ": every worker unfrozen";
  }
  stop = true;
  for (auto& t : threads) t.join();
}

// A worker whose thread never calls service() cannot freeze: the freeze fails in time,
// naming it, instead of waiting for ever.
TEST(Workers, AThreadThatDoesNotServiceIsNamedAtTheFreezeDeadline) {
  Process live;
  live.workers.begin();
  const int64_t start = monotonic_us();
  auto sockets = live.workers.freeze(start + 50'000, nullptr);
  ASSERT_FALSE(sockets.ok());
  EXPECT_EQ(sockets.error().kind(), ErrorKind::kTimeout);
  EXPECT_NE(sockets.error().message().find("worker 1 did not freeze"), std::string::npos)
      << sockets.error().message();
  EXPECT_LT(monotonic_us() - start, 5'000'000);
  live.workers.release(false);
  live.workers.end();
}

// The options are checked when the runtime is built, and a worker that does not exist is
// named, not returned.
TEST(Workers, TheRuntimeRefusesOptionsItCannotHonourAndNamesAWorkerItDoesNotHave) {
  char arg0[] = "workers_test";
  char* argv[] = {arg0, nullptr};
  RuntimeOptions too_many;
  too_many.worker_threads = kMaxWorkers + 1;
  auto r = Runtime::create(1, argv, too_many);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(r.error().message().find("at most " + std::to_string(kMaxWorkers)), std::string::npos)
      << r.error().message();
  RuntimeOptions with_probation;
  with_probation.worker_threads = 1;
  with_probation.probation_ms = 500;
  r = Runtime::create(1, argv, with_probation);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("probation_ms with worker_threads is not supported"),
            std::string::npos)
      << r.error().message();

  RuntimeOptions one;
  one.worker_threads = 1;
  auto rt = Runtime::create(1, argv, one);
  ASSERT_TRUE(rt.ok()) << rt.error().to_string();
  EXPECT_EQ((*rt)->worker(1).index(), 1u);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((*rt)->worker(2), "Runtime::worker\\(2\\): the workers are 1 to 1");
  EXPECT_DEATH((*rt)->worker(0), "the workers are 1 to 1");
}

}  // namespace
}  // namespace baton
