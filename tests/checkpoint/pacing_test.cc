// Pacing a checkpoint by time (CheckpointPacer, CheckpointWriter::turn), the page
// helper it writes behind (Prefaulter), and restoring it on threads of lower priority
// (RestoreOptions::nice).
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "../../runtime/src/checkpoint/prefault.h"
#include "baton/checkpoint.h"
#include "baton/tracked_map.h"

namespace baton {
namespace {

TEST(CheckpointPacer, GivesTheCheckpointItsShareOfTheServersBusyTime) {
  CheckpointPacer pacer({.share = 0.3, .max_pause_us = 2000});
  pacer.start(1'000'000, 50'000);
  // The server worked 1 ms (its thread's CPU clock moved 1 ms): 0.3 / 0.7 of it.
  EXPECT_EQ(pacer.budget_us(1'001'000, 51'000), 428);
  pacer.spent(428, 1'001'428, 51'428);
  EXPECT_EQ(pacer.wait_us(), 0);
  // Half and half: an even split.
  CheckpointPacer half({.share = 0.5, .max_pause_us = 2000});
  half.start(0, 0);
  EXPECT_EQ(half.budget_us(800, 800), 800);
}

TEST(CheckpointPacer, IdleTimeIsTheCheckpointsWhole) {
  CheckpointPacer pacer({.share = 0.3, .max_pause_us = 2000});
  pacer.start(0, 0);
  // 1 ms passed, of which the server used 0.1 ms of CPU: 0.9 ms idle plus 0.3/0.7 of 0.1.
  EXPECT_EQ(pacer.budget_us(1000, 100), 942);
}

TEST(CheckpointPacer, ASliceThatOverrunsLeavesADebtTheServerIsPaidFirst) {
  CheckpointPacer pacer({.share = 0.3, .max_pause_us = 2000});
  pacer.start(0, 0);
  EXPECT_EQ(pacer.budget_us(0, 0), 0) << "the first turn writes one slice";
  pacer.spent(700, 700, 700);  // the slice took 0.7 ms (its CPU is not the server's)
  EXPECT_EQ(pacer.wait_us(), 700);
  // The server then works 1 ms: that pays 0.43 ms of the debt, not all of it.
  EXPECT_LT(pacer.budget_us(1700, 1700), 0) << "no slice while the server is owed time";
  EXPECT_EQ(pacer.wait_us(), 272);
  // 0.7 / (0.3 / 0.7) = 1.633 ms of busy server time pays 0.7 ms of writing in all.
  EXPECT_GE(pacer.budget_us(2334, 2334), 0);
}

TEST(CheckpointPacer, NeverPausesTheServerLongerThanItsCap) {
  CheckpointPacer pacer({.share = 0.3, .max_pause_us = 2000});
  pacer.start(0, 0);
  EXPECT_EQ(pacer.budget_us(1'000'000, 1'000'000), 2000) << "busy: no long pause earned";
  pacer.spent(2000, 1'002'000, 1'000'000);
  EXPECT_EQ(pacer.budget_us(5'000'000, 1'000'000), 2000) << "idle: no more banked than the cap";
  CheckpointPacer one_slice({.share = 0.9, .max_pause_us = 0});
  one_slice.start(0, 0);
  EXPECT_EQ(one_slice.budget_us(1'000'000, 0), 0) << "max_pause_us 0: one slice per turn";
}

TEST(CheckpointPacer, ClocksThatDoNotMoveEarnNothing) {
  CheckpointPacer pacer({.share = 0.3, .max_pause_us = 2000});
  pacer.start(5000, 5000);
  EXPECT_EQ(pacer.budget_us(5000, 5000), 0);
  EXPECT_EQ(pacer.budget_us(4000, 4000), 0) << "a clock read before the last counts as none";
}

// A registry with one map of `keys` 100-byte values.
struct Filled {
  explicit Filled(int keys) {
    EXPECT_TRUE(reg.add(m).ok());
    const std::string value(100, 'v');
    for (int i = 0; i < keys; ++i) m.set("key:" + std::to_string(i), value);
  }
  Registry reg;
  TrackedMap m{"kv", 1};
};

// Finishes `w`'s checkpoint of `f` and restores it into a fresh map: the same contents.
void expect_restores_exactly(CheckpointWriter& w, Filled& f) {
  auto cp = w.finish();
  ASSERT_TRUE(cp.ok()) << cp.error().to_string();
  f.reg.log().end_capture();
  Registry reg2;
  TrackedMap m2("kv", 1);
  ASSERT_TRUE(reg2.add(m2).ok());
  auto r = restore_checkpoint(cp->fd(), reg2);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(m2.same_contents(f.m));
}

TEST(CheckpointWriter, TurnWritesAtLeastOneSliceAndFinishesExactly) {
  Filled f(20000);
  CheckpointOptions opt;
  opt.slice_bytes = 4096;
  opt.pacing = {.share = 0.99, .max_pause_us = 0};  // a slice at each turn that may write
  opt.prefault = false;  // the helper's CPU would be charged too: this counts slices only
  auto w = CheckpointWriter::begin(f.reg, opt);
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  uint64_t turns = 0;
  for (bool done = false; !done && turns < 100000; ++turns) {
    auto t = w->turn();
    ASSERT_TRUE(t.ok()) << t.error().to_string();
    done = *t;
  }
  EXPECT_EQ(w->stats().turns + w->stats().turns_skipped, turns);
  EXPECT_EQ(w->stats().slices, w->stats().turns) << "max_pause_us 0: one slice per writing turn";
  EXPECT_GT(w->stats().turns, 100u);
  expect_restores_exactly(*w, f);
}

TEST(CheckpointWriter, ATurnWithTimeToSpareWritesSeveralSlices) {
  Filled f(20000);
  CheckpointOptions opt;
  opt.slice_bytes = 1024;
  opt.pacing = {.share = 0.9, .max_pause_us = 1'000'000};
  opt.prefault = false;  // no helper CPU charged against the idle time below
  auto w = CheckpointWriter::begin(f.reg, opt);
  ASSERT_TRUE(w.ok());
  ::usleep(20'000);  // the "server" was idle 20 ms: the first turn may write for all of it
  auto t = w->turn();
  ASSERT_TRUE(t.ok());
  EXPECT_GT(w->stats().slices, 1u) << "a turn stops at its budget, not after one slice";
  EXPECT_EQ(w->stats().turns, 1u);
}

// Waits up to 10 s for pred(); returns its last value.
template <typename F>
bool eventually(F pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return pred();
}

struct Mapping {
  explicit Mapping(size_t n) : bytes(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  }
  ~Mapping() {
    if (base != nullptr) ::munmap(base, bytes);
  }
  std::byte* base;
  size_t bytes;
};

TEST(Prefaulter, CoversWhatItHasPopulatedThenAllOnceDoneOrStopped) {
  constexpr size_t kMiB = size_t{1} << 20;
  Mapping m(16 * kMiB);
  ASSERT_NE(m.base, nullptr);
  Prefaulter pf(m.base, m.bytes, Prefaulter::Mode::kWrite, 4 * kMiB);
  if (!pf.active()) GTEST_SKIP() << "no MADV_POPULATE_WRITE in this kernel";
  EXPECT_TRUE(eventually([&] { return pf.covers(4 * kMiB); })) << "its window ahead of 0";
  // The window bounds it: nothing past 4 MiB is populated until the consumer moves.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(pf.covers(4 * kMiB + 4096));
  pf.advance(6 * kMiB);
  EXPECT_TRUE(eventually([&] { return pf.covers(10 * kMiB); }));
  EXPECT_FALSE(pf.covers(10 * kMiB + 4096));
  pf.advance(12 * kMiB);
  EXPECT_TRUE(eventually([&] { return pf.covers(SIZE_MAX); })) << "all of it: done";
  Prefaulter stopped(m.base, m.bytes, Prefaulter::Mode::kWrite, 4 * kMiB);
  stopped.stop();
  EXPECT_TRUE(stopped.covers(SIZE_MAX)) << "a stopped helper leaves the consumer to fault";
}

TEST(Prefaulter, AHelperThatCannotReserveCoversEverythingSoTheConsumerMeetsTheFailure) {
  constexpr size_t kMiB = size_t{1} << 20;
  Mapping m(16 * kMiB);
  ASSERT_NE(m.base, nullptr);
  Prefaulter pf(m.base, m.bytes, Prefaulter::Mode::kWrite, 16 * kMiB,
                [](size_t end) { return end <= 6 * kMiB; });  // "full" past 6 MiB
  if (!pf.active()) GTEST_SKIP() << "no MADV_POPULATE_WRITE in this kernel";
  EXPECT_TRUE(eventually([&] { return pf.covers(SIZE_MAX); }))
      << "it gave up at 6 MiB: a consumer waiting for it would wait forever";
}

TEST(CheckpointWriter, TurnsBehindThePageHelperFinishExactlyAndCountEveryTurn) {
  Filled f(200000);  // about 40 MiB of segment: past the helper's first window
  CheckpointOptions opt;
  opt.pacing = {.share = 0.5, .max_pause_us = 500};
  ASSERT_TRUE(opt.prefault);
  auto w = CheckpointWriter::begin(f.reg, opt);
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  ASSERT_TRUE(w->stats().prefaulted) << "this test is about the writer behind the helper";
  uint64_t calls = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (bool done = false; !done && std::chrono::steady_clock::now() < deadline; ++calls) {
    auto t = w->turn();
    ASSERT_TRUE(t.ok()) << t.error().to_string();
    done = *t;
    if (!done && w->turn_wait_us() > 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  const CheckpointStats& st = w->stats();
  EXPECT_EQ(st.turns + st.turns_skipped + st.turns_waited, calls);
  expect_restores_exactly(*w, f);
}

TEST(CheckpointWriter, RefusesAPacingItCannotFollowNamingTheField) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  for (double share : {0.0, 1.0, -0.5, 2.0}) {
    CheckpointOptions opt;
    opt.pacing.share = share;
    auto w = CheckpointWriter::begin(reg, opt);
    ASSERT_FALSE(w.ok()) << share;
    EXPECT_EQ(w.error().kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(w.error().message().find("CheckpointPacing::share"), std::string::npos)
        << w.error().message();
  }
  CheckpointOptions opt;
  opt.pacing.max_pause_us = -1;
  auto w = CheckpointWriter::begin(reg, opt);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message().find("max_pause_us"), std::string::npos);
  EXPECT_FALSE(reg.log().capturing()) << "a refused checkpoint starts no capture";
}

TEST(Restore, ANicedRestoreRunsOnLowerPriorityThreadsAndLeavesTheCallersAlone) {
  Filled f(5000);  // schema version 1
  auto w = CheckpointWriter::begin(f.reg, {});
  ASSERT_TRUE(w.ok());
  while (!w->step().value()) {
  }
  auto cp = w->finish();
  ASSERT_TRUE(cp.ok());
  f.reg.log().end_capture();

  errno = 0;
  const int caller_before = ::getpriority(PRIO_PROCESS, 0);
  ASSERT_EQ(errno, 0);
  if (caller_before > 14) GTEST_SKIP() << "this test already runs at nice " << caller_before;
  // A migration runs on the thread that restores: it sees that thread's priority.
  Registry reg2;
  TrackedMap m2("kv", 2);
  std::atomic<int> restorer_nice{-100};
  std::atomic<pid_t> restorer{0};
  ASSERT_TRUE(m2.migrations()
                  .add(1, 2,
                       [&](std::string_view, Entry&) {
                         restorer_nice = ::getpriority(PRIO_PROCESS, 0);  // this thread's
                         restorer = ::gettid();
                       })
                  .ok());
  ASSERT_TRUE(reg2.add(m2).ok());
  RestoreOptions opt;
  opt.nice = 5;
  const pid_t caller = ::gettid();
  std::atomic<int> reports{0}, elsewhere{0};
  std::atomic<uint64_t> last_done{0};
  opt.progress = [&](uint64_t done, uint64_t) {
    if (::gettid() != caller) ++elsewhere;
    ++reports;
    last_done = done;
  };
  auto r = restore_checkpoint(cp->fd(), reg2, opt);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(m2.same_contents(f.m));
  EXPECT_EQ(restorer_nice.load(), caller_before + 5);
  EXPECT_NE(restorer.load(), caller) << "the restore ran on a thread of its own";
  EXPECT_EQ(::getpriority(PRIO_PROCESS, 0), caller_before) << "the caller keeps its priority";
  EXPECT_GE(reports.load(), 1) << "progress is reported at least at the end";
  EXPECT_EQ(elsewhere.load(), 0) << "and only on the caller's thread";
  EXPECT_EQ(last_done.load(), 5000u) << "the last report counts every record";
}

TEST(Restore, RefusesANiceOutsideZeroToNineteen) {
  Registry reg;
  for (int nice : {-1, 20}) {
    RestoreOptions opt;
    opt.nice = nice;
    auto r = restore_checkpoint(-1, reg, opt);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(r.error().message().find("RestoreOptions::nice is 0..19"), std::string::npos)
        << r.error().message();
  }
}

}  // namespace
}  // namespace baton
