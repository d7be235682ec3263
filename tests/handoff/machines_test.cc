// The upgrade protocol, transition by transition, without processes: each machine runs
// against a fake environment that records what it was asked to do.
#include <fcntl.h>
#include <sys/eventfd.h>

#include <deque>

#include <gtest/gtest.h>

#include "control_codec.h"
#include "fake_envs.h"
#include "handoff/machines.h"

namespace baton::handoff {
namespace {

Hello good_hello() {
  Hello h;
  h.pid = 4242;
  h.sections = {{"kv", 1, 2}};
  return h;
}

// The freeze deadline of an optimised build (sanitizer builds default to more).
Timeouts production() {
  Timeouts t;
  t.freeze_us = 250'000;
  return t;
}

// Drives an incumbent through HELLO and its (three-slice) checkpoint into catch-up.
void to_catch_up(IncumbentMachine& m, FakeIncumbent& env) {
  ASSERT_TRUE(m.request_upgrade().ok());
  m.on_message(good_hello());
  for (int i = 0; i < env.steps_to_finish; ++i) m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kCatchUp);
}

// Drives an incumbent to the phase after RESTORED (backlog 0 freezes at the next tick).
void to_await_prepared(IncumbentMachine& m, FakeIncumbent& env) {
  to_catch_up(m, env);
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
}

TEST(IncumbentMachine, CommitsAfterCheckpointCatchUpFreezeAndPrepared) {
  FakeIncumbent env;
  IncumbentMachine m(env, /*generation=*/4);
  ASSERT_TRUE(m.request_upgrade().ok());
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitHello);
  m.on_message(good_hello());
  ASSERT_EQ(env.sent_of<Welcome>().size(), 1u);
  EXPECT_EQ(env.sent_of<Welcome>()[0]->generation, 5u);
  EXPECT_EQ(m.phase(), IncumbentPhase::kCheckpointing);
  m.tick();
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCheckpointing);  // sliced: one step per tick
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  ASSERT_EQ(env.sent_of<CheckpointReady>().size(), 1u);
  EXPECT_EQ(env.sent.back().fds, std::vector<int>{env.segment_fd});
  env.lsn = 150;  // writes during catch-up
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
  auto frozen = env.sent_of<Frozen>();
  ASSERT_EQ(frozen.size(), 1u);
  EXPECT_EQ(frozen[0]->final_lsn, 150u);
  EXPECT_EQ(frozen[0]->fd_count, 2u);
  auto batches = env.sent_of<FdBatch>();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0]->fds[1].tag, "conn");
  EXPECT_EQ(batches[0]->fds[1].state, "state1");
  EXPECT_EQ(env.sent.back().fds, env.socket_fds);
  m.on_message(Prepared{150, 2, {}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitServing);  // still frozen
  EXPECT_EQ(env.events.back(), "freeze");
  m.on_message(Serving{4242, 0, {}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCommitted);
  auto commits = env.sent_of<Commit>();
  ASSERT_EQ(commits.size(), 1u);
  EXPECT_EQ(commits[0]->generation, 5u);
  EXPECT_EQ(commits[0]->timings.fds, 2u);
  EXPECT_EQ(env.events,
            (std::vector<std::string>{"spawn", "checkpoint_begin", "freeze", "committed"}));
  EXPECT_TRUE(env.timelines.empty()) << "a committed upgrade's line is the successor's to write";
  EXPECT_EQ(m.generation(), 5u);
}

TEST(IncumbentMachine, SecondRequestDuringAnUpgradeIsRefusedAndLogged) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  ASSERT_TRUE(m.request_upgrade().ok());
  auto again = m.request_upgrade();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kState);
  EXPECT_NE(env.logs.back().find("already in phase await-hello"), std::string::npos);
  EXPECT_EQ(std::count(env.events.begin(), env.events.end(), "spawn"), 1);
}

TEST(IncumbentMachine, RefusesAtHelloNamingBothVersions) {
  struct Case {
    Hello hello;
    std::string expect;
  };
  Hello old_protocol = good_hello();  // a version-3 build: one version, no maximum
  old_protocol.protocol_version = 3;
  old_protocol.max_protocol_version = 0;
  Hello new_protocol = good_hello();  // a build that dropped this one's versions
  new_protocol.protocol_version = kProtocolVersion + 1;
  new_protocol.max_protocol_version = kProtocolVersion + 2;
  Hello v1_only = good_hello();
  v1_only.sections = {{"kv", 1, 1}};
  Hello missing = good_hello();
  missing.sections = {{"other", 1, 9}};
  for (const Case& c :
       {Case{old_protocol, "successor speaks protocol versions 3..3, this incumbent speaks " +
                               std::to_string(kMinProtocolVersion) + ".." +
                               std::to_string(kProtocolVersion)},
        Case{new_protocol, "successor speaks protocol versions " +
                               std::to_string(kProtocolVersion + 1) + ".." +
                               std::to_string(kProtocolVersion + 2)},
        Case{v1_only,
             "successor reads section 'kv' schema versions 1..1, this incumbent writes "
             "version 2"},
        Case{missing, "successor does not register section 'kv'"}}) {
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    m.on_message(c.hello);
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    EXPECT_NE(m.last_abort().find(c.expect), std::string::npos) << m.last_abort();
    ASSERT_EQ(env.sent_of<Abort>().size(), 1u);  // the successor learns why
    EXPECT_EQ(env.events, (std::vector<std::string>{"spawn", "kill", "checkpoint_drop"}));
    ASSERT_EQ(env.timelines.size(), 1u);
    EXPECT_EQ(env.timelines[0].outcome, "aborted");
  }
}

// An incumbent whose section 'kv' is typed, sent a HELLO whose 'kv' is typed too.
struct TypedIncumbent {
  TypedIncumbent() {
    env.typed = {{"kv", 2, 0x1234, "nodes"}};
    EXPECT_TRUE(m.request_upgrade().ok());
    hello.sections[0].type_id = 0x1234;
  }
  FakeIncumbent env;
  IncumbentMachine m{env, 1};
  Hello hello = good_hello();
};

// Typed sections (docs/protocol.md, "Typed sections"): the incumbent refuses a section
// typed on one side and untyped on the other, and sends its schemas in WELCOME.
TEST(IncumbentMachine, TypedAgainstUntypedIsRefusedAtHelloAndSchemasGoInWelcome) {
  for (bool typed_here : {true, false}) {
    FakeIncumbent env;
    if (typed_here) env.typed = {{"kv", 2, 0x1234, "nodes"}};
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    Hello h = good_hello();
    if (!typed_here) h.sections[0].type_id = 0x1234;
    m.on_message(h);
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    const std::string expect = typed_here ? "section 'kv' holds typed records here and untyped "
                                            "entries in the successor"
                                          : "section 'kv' holds untyped entries here and typed "
                                            "records in the successor";
    EXPECT_NE(m.last_abort().find(expect), std::string::npos) << m.last_abort();
    EXPECT_TRUE(env.sent_of<Welcome>().empty()) << "refused before anything starts";
  }
  TypedIncumbent t;
  auto& [env, m, h] = t;
  h.sections.push_back({"new", 1, 1, 0x99});  // a section only the successor has
  m.on_message(h);
  EXPECT_EQ(m.phase(), IncumbentPhase::kCheckpointing);
  ASSERT_EQ(env.sent_of<Welcome>().size(), 1u);
  EXPECT_EQ(env.sent_of<Welcome>()[0]->schemas, env.typed);
  // The checkpoint is written meanwhile, but no state goes before the successor accepts.
  for (int i = 0; i < 10; ++i) m.tick();
  EXPECT_TRUE(env.sent_of<CheckpointReady>().empty()) << "held until the schemas are accepted";
  m.on_message(Progress{0, 0, {}});
  m.tick();
  EXPECT_EQ(env.sent_of<CheckpointReady>().size(), 1u);
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
}

TEST(IncumbentMachine, ASuccessorThatNeverAcceptsTheSchemasIsAbortedAtTheHelloDeadline) {
  TypedIncumbent t;
  auto& [env, m, h] = t;
  m.on_message(h);
  for (int i = 0; i < 5; ++i) m.tick();
  env.now += Timeouts{}.hello_us + 1;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("did not accept the typed sections' schemas"), std::string::npos)
      << m.last_abort();
  EXPECT_TRUE(env.sent_of<CheckpointReady>().empty());
}

TEST(IncumbentMachine, EveryPhaseHasADeadline) {
  {  // no HELLO
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    env.now += 4'999'999;
    m.tick();
    EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitHello);
    env.now += 2;
    m.tick();
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    EXPECT_EQ(m.last_abort(), "successor sent no HELLO within 5.0 s");
  }
  {  // no RESTORED
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    to_catch_up(m, env);
    env.now += 121'000'000;
    m.tick();
    EXPECT_EQ(m.last_abort(), "successor did not restore within 120.0 s");
  }
  {  // no PREPARED: the incumbent unfreezes, after killing the successor
    FakeIncumbent env;
    IncumbentMachine m(env, 1, {}, production());
    to_await_prepared(m, env);
    env.now += 250'001;
    m.tick();
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    EXPECT_EQ(m.last_abort(), "successor sent no PREPARED within 250 ms of the freeze");
  }
}

// Issue 14, case 8: a successor that hung inside the freeze blacked every client out for
// 5 s (the PREPARED deadline), and as long again if it hung between COMMIT and SERVING.
// One deadline now bounds the whole freeze, tied to the blackout target (250 ms).
TEST(IncumbentMachine, OneDeadlineTiedToTheBlackoutTargetBoundsTheWholeFreeze) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1, {}, production());
  to_await_prepared(m, env);
  env.now += 200'000;  // a slow PREPARED, still in time
  m.on_message(Prepared{100, 2, {}});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
  env.now += 49'000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
  env.now += 2'000;  // 251 ms after the freeze: the successor never says SERVING
  m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_EQ(m.last_abort(), "successor sent no SERVING within 250 ms of the freeze");
  ASSERT_FALSE(env.timelines.empty());
  EXPECT_GE(env.timelines.back().blackout_us, 250'000);
  EXPECT_LT(env.timelines.back().blackout_us, 300'000);
}

// Issue 14, case 8: a successor that hung while restoring was noticed only after 120 s.
// Once it has reported progress, 3 s of silence abort the upgrade.
TEST(IncumbentMachine, ARestoreThatFallsSilentIsTakenForHungInSeconds) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_catch_up(m, env);
  m.on_message(Progress{0, 0, {}});  // the successor starts restoring
  for (int i = 0; i < 10; ++i) {     // ... and keeps reporting: a long restore is fine
    env.now += 2'000'000;
    m.on_message(Progress{0, 0, {}});
    m.tick();
    ASSERT_EQ(m.phase(), IncumbentPhase::kCatchUp) << m.last_abort();
  }
  env.now += 2'999'000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  env.now += 2'000;
  m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("reported no restore progress for 3.0 s"), std::string::npos)
      << m.last_abort();
  EXPECT_NE(std::find(env.events.begin(), env.events.end(), "kill"), env.events.end());
}

TEST(IncumbentMachine, ASuccessorThatNeverReportsRestoreProgressHasOnlyTheOverallDeadline) {
  // An older build sends no PROGRESS while restoring: no silence deadline for it.
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_catch_up(m, env);
  env.now += 60'000'000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << m.last_abort();
}

// Issue 14, case 9: on the SERVING deadline the incumbent killed a successor whose
// SERVING was already in the socket, because control was read only before the check.
// It now drains control first; the successor serves and keeps its acknowledged writes.
TEST(IncumbentMachine, ASuccessorWhoseServingArrivedAtTheDeadlineIsNotKilled) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1, {}, production());
  to_await_prepared(m, env);
  m.on_message(Prepared{100, 2, {}});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
  env.now += 300'000;  // past the deadline; SERVING sits unread in the socket
  env.on_drain = [&] { m.on_message(Serving{4242, 0, {}}); };
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCommitted) << m.last_abort();
  EXPECT_EQ(std::count(env.events.begin(), env.events.end(), "kill"), 0);
  EXPECT_EQ(std::count(env.events.begin(), env.events.end(), "committed"), 1);
  EXPECT_EQ(env.drains, 1);
}

// Issue 14, case 9: the incumbent polled waitpid for up to 100 ms on its loop so that a
// broken stream would be reported as the successor's death. Now a broken stream from a
// successor that is exiting waits for on_successor_gone(), on later loop turns.
TEST(IncumbentMachine, ABrokenStreamFromAnExitingSuccessorWaitsForItsExitStatus) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_catch_up(m, env);
  env.pump_fails = env.exiting = true;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << m.last_abort();
  m.on_successor_gone("killed by signal 11");
  ASSERT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("killed by signal 11"), std::string::npos) << m.last_abort();
  // A broken stream from a successor not known to be exiting aborts at once.
  FakeIncumbent env2;
  IncumbentMachine m2(env2, 1);
  to_catch_up(m2, env2);
  env2.pump_fails = true;
  m2.tick();
  EXPECT_EQ(m2.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m2.last_abort().find("streaming deltas"), std::string::npos) << m2.last_abort();
}

TEST(IncumbentMachine, ControlIsDrainedOnlyWhenADeadlinePassed) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_await_prepared(m, env);
  for (int i = 0; i < 5; ++i) m.tick();
  EXPECT_EQ(env.drains, 0);
}

TEST(IncumbentMachine, SuccessorGoneInAnyPhaseAbortsKillingBeforeUnfreezing) {
  for (int phase = 0; phase < 4; ++phase) {
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    if (phase >= 1) m.on_message(good_hello());
    if (phase >= 2) {
      for (int i = 0; i < 3; ++i) m.tick();
    }
    if (phase >= 3) m.on_message(Restored{});
    m.on_successor_gone("exited with signal 9");
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    EXPECT_NE(m.last_abort().find("exited with signal 9"), std::string::npos);
    auto kill = std::find(env.events.begin(), env.events.end(), "kill");
    auto unfreeze = std::find(env.events.begin(), env.events.end(), "unfreeze");
    ASSERT_NE(kill, env.events.end());
    EXPECT_NE(std::find(env.events.begin(), env.events.end(), "checkpoint_drop"), env.events.end());
    if (phase == 3) {
      ASSERT_NE(unfreeze, env.events.end()) << "frozen incumbent must serve on";
      EXPECT_LT(kill - env.events.begin(), unfreeze - env.events.begin());
    } else {
      EXPECT_EQ(unfreeze, env.events.end());
    }
    // A new upgrade can start afterwards.
    EXPECT_TRUE(m.request_upgrade().ok());
  }
}

TEST(IncumbentMachine, LagPolicyThrottlesThenAborts) {
  FakeIncumbent env;
  LagPolicy lag;
  lag.converge_bytes = 100;
  lag.throttle_bytes = 1000;
  lag.abort_bytes = 5000;
  IncumbentMachine m(env, 1, lag);
  to_catch_up(m, env);
  env.backlog = 2000;
  m.tick();
  EXPECT_EQ(env.events.back(), "throttle");
  env.backlog = 400;  // under half the throttle mark
  m.tick();
  EXPECT_EQ(env.events.back(), "unthrottle");
  env.backlog = 6000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("delta backlog of 6000 bytes passed the limit of 5000"),
            std::string::npos);
}

TEST(IncumbentMachine, ABacklogThatGrowsDuringTheCheckpointThrottlesTheServerBeforeItAborts) {
  // The successor reads the stream only once restored: a paced checkpoint of a busy server
  // is when the backlog grows, so the lag policy holds while the checkpoint is written.
  FakeIncumbent env;
  env.steps_to_finish = 1000;
  LagPolicy lag;
  lag.throttle_bytes = 1000;
  lag.abort_bytes = 5000;
  IncumbentMachine m(env, 1, lag);
  ASSERT_TRUE(m.request_upgrade().ok());
  m.on_message(good_hello());
  m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kCheckpointing);
  env.backlog = 2000;
  m.tick();
  EXPECT_EQ(env.events.back(), "throttle") << "throttled while the checkpoint is written";
  EXPECT_EQ(m.phase(), IncumbentPhase::kCheckpointing);
  env.backlog = 6000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("delta backlog of 6000 bytes passed the limit of 5000"),
            std::string::npos)
      << m.last_abort();
  EXPECT_NE(std::find(env.events.begin(), env.events.end(), "unthrottle"), env.events.end())
      << "an abort lifts the throttle";
}

TEST(IncumbentMachine, SendsSocketsEarlyAndFreezesOnlyOnceTheSuccessorHasThem) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  int listener = open_fd(), conn = open_fd(), reused = open_fd(), fresh = open_fd();
  env.socket_fds = {listener, conn, reused, fresh};  // closed by the fake
  env.early = {{listener, "listener", "", 11}, {conn, "conn", "", 12}, {reused, "conn", "", 13}};
  // At the freeze: `reused` names another socket now (new id); `fresh` is new.
  env.at_freeze = {{listener, "listener", "", 11},
                   {conn, "conn", "half", 12},
                   {reused, "conn", "", 99},
                   {fresh, "conn", "", 14}};
  to_catch_up(m, env);
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(env.sent_of<EarlyFds>().size(), 1u);
  EXPECT_EQ(env.sent.back().fds, (std::vector<int>{listener, conn, reused}));
  EXPECT_EQ(env.sent_of<EarlyFds>()[0]->fds[1], (HandedFd{"conn", "", 12, false}));
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << "not before the successor has them";
  m.on_message(Progress{100, 2, {}});
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  m.on_message(Progress{100, 3, {}});
  m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
  EXPECT_EQ(env.sent_of<Frozen>()[0]->fd_count, 4u);
  auto batch = env.sent_of<FdBatch>();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0]->fds[0], (HandedFd{"listener", "", 11, true}));
  EXPECT_EQ(batch[0]->fds[1], (HandedFd{"conn", "half", 12, true}));
  EXPECT_FALSE(batch[0]->fds[2].early) << "same fd number, another socket: sent again";
  EXPECT_FALSE(batch[0]->fds[3].early);
  EXPECT_EQ(env.sent.back().fds, (std::vector<int>{reused, fresh}));
  m.on_message(Prepared{100, 4, {}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
}

TEST(IncumbentMachine, WithNoEarlySocketsItFreezesAsBefore) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_await_prepared(m, env);
  EXPECT_TRUE(env.sent_of<EarlyFds>().empty());
}

TEST(IncumbentMachine, FreezesOnlyOnceTheSuccessorHasAppliedAlmostEverything) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_catch_up(m, env);
  env.lsn += 5000;  // written during the restore: sent, but not yet applied
  m.on_message(Restored{});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << "5000 deltas would replay in the freeze";
  m.on_message(Progress{env.lsn - 2000, 0, {}});
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  m.on_message(Progress{env.lsn - 10, 0, {}});
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
}

TEST(IncumbentMachine, AbortsWhenDeltasDoNotConvergeAfterRestore) {
  FakeIncumbent env;
  LagPolicy lag;
  lag.converge_bytes = 100;
  lag.converge_within_us = 1'000'000;
  IncumbentMachine m(env, 1, lag);
  to_catch_up(m, env);
  env.backlog = 500;
  m.on_message(Restored{});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  env.now += 2'000'000;
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("did not converge within 1.0 s"), std::string::npos);
}

TEST(IncumbentMachine, SuccessorDyingBetweenCommitAndServingLeavesTheIncumbentServing) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_await_prepared(m, env);
  m.on_message(Prepared{100, 2, {}});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
  m.on_successor_gone("killed by signal 9");
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  auto kill = std::find(env.events.begin(), env.events.end(), "kill");
  auto unfreeze = std::find(env.events.begin(), env.events.end(), "unfreeze");
  ASSERT_NE(unfreeze, env.events.end());
  EXPECT_LT(kill, unfreeze);
  EXPECT_EQ(std::count(env.events.begin(), env.events.end(), "committed"), 0);
}

// Issue 14, case 8 (part): an upgrade aborted inside the freeze reported blackout_us 0,
// though every client had waited. The record now carries the freeze's real length.
TEST(IncumbentMachine, AnAbortInsideTheFreezeReportsItsRealBlackout) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  to_await_prepared(m, env);  // frozen
  env.now += 5'000'000;       // a successor that hangs inside the freeze
  m.on_successor_gone("killed by signal 9");
  ASSERT_EQ(m.phase(), IncumbentPhase::kIdle);
  ASSERT_FALSE(env.timelines.empty());
  EXPECT_EQ(env.timelines.back().outcome, "aborted");
  EXPECT_GE(env.timelines.back().blackout_us, 5'000'000);
}

// Issue 14, case 10: a slow reader with more than about 512 KiB of unread replies vetoed
// every upgrade ("per-connection state of fd 9 is too large"). A state above 64 KiB now
// travels in a sealed memfd attached after its socket, with a successor of protocol 6.
TEST(IncumbentMachine, AStateTooLargeForAMessageTravelsInAMemfdAfterItsSocket) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  const std::string big(3 << 20, 'r');  // 3 MiB of unread replies
  env.socket_fds = {open_fd(), open_fd(), open_fd()};
  env.at_freeze = {{env.socket_fds[0], "listener", ""},
                   {env.socket_fds[1], "conn", big, 21},
                   {env.socket_fds[2], "conn", "small", 22}};
  to_await_prepared(m, env);
  ASSERT_GE(m.protocol_version(), kStateFdProtocolVersion);
  auto batches = env.sent_of<FdBatch>();
  ASSERT_EQ(batches.size(), 1u);
  const FdBatch& b = *batches[0];
  EXPECT_EQ(b.fds[1], (HandedFd{"conn", "", 21, false, true}));
  EXPECT_EQ(b.fds[2], (HandedFd{"conn", "small", 22, false, false}));
  EXPECT_EQ(b.attached(), 4u);  // three sockets and one memfd, right after its socket
  ASSERT_EQ(env.spilled.size(), 1u);
  auto read = read_spilled_state(env.spilled[0].get());
  ASSERT_TRUE(read.ok()) << read.error().to_string();
  EXPECT_EQ(*read, big);
}

TEST(IncumbentMachine, AStateTooLargeForAnOlderSuccessorAbortsNamingThePeer) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  env.socket_fds = {open_fd()};
  env.at_freeze = {{env.socket_fds[0], "conn", std::string(3 << 20, 'r'), 21}};
  ASSERT_TRUE(m.request_upgrade().ok());
  Hello h = good_hello();
  h.max_protocol_version = 5;  // the build before memfd states
  m.on_message(h);
  for (int i = 0; i < env.steps_to_finish; ++i) m.tick();
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("fd " + std::to_string(env.socket_fds[0]) +
                                ", peer 192.0.2.7:4242 is 3145728 bytes"),
            std::string::npos)
      << m.last_abort();
  EXPECT_NE(m.last_abort().find("protocol 5"), std::string::npos) << m.last_abort();
  EXPECT_TRUE(env.spilled.empty());
}

TEST(IncumbentMachine, HandsTenThousandFdsInBatchesOfAtMost253) {
  FakeIncumbent env;
  env.sockets_at_freeze = 10000;
  IncumbentMachine m(env, 1);
  to_await_prepared(m, env);
  auto batches = env.sent_of<FdBatch>();
  EXPECT_EQ(batches.size(), (10000 + 252) / 253);
  size_t total = 0;
  for (const Sent& s : env.sent) {
    if (!std::holds_alternative<FdBatch>(s.message)) continue;
    EXPECT_LE(s.fds.size(), 253u);
    EXPECT_EQ(s.fds.size(), std::get<FdBatch>(s.message).fds.size());
    total += s.fds.size();
  }
  EXPECT_EQ(total, 10000u);
}

TEST(IncumbentMachine, PreparedAtTheWrongLsnOrUnexpectedMessagesAbort) {
  {
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    to_await_prepared(m, env);
    m.on_message(Prepared{99, 2, {}});
    EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
    EXPECT_NE(m.last_abort().find("expected LSN 100"), std::string::npos);
  }
  {
    FakeIncumbent env;
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    m.on_message(Prepared{});
    EXPECT_EQ(m.last_abort(), "unexpected PREPARED in phase await-hello");
  }
  {
    FakeIncumbent env;
    env.fail_step = true;
    IncumbentMachine m(env, 1);
    ASSERT_TRUE(m.request_upgrade().ok());
    m.on_message(good_hello());
    m.tick();
    EXPECT_NE(m.last_abort().find("checkpoint failed: capacity: segment full"), std::string::npos);
  }
}

// ---------------------------------------------------------------- successor

std::vector<UniqueFd> fds(size_t n) {
  std::vector<UniqueFd> out;
  for (size_t i = 0; i < n; ++i) out.emplace_back(open_fd());
  return out;
}

// Drives a successor through to PREPARED with two sockets.
void successor_to_prepared(SuccessorMachine& s, FakeSuccessor& env, std::vector<int>* raw) {
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  s.on_message(Frozen{120, 2, 777, {}, {}}, {});
  auto two = fds(2);
  for (auto& f : two) raw->push_back(f.get());
  s.on_message(FdBatch{{{"listener", ""}, {"conn", "GET /"}}}, std::move(two));
  EXPECT_EQ(s.phase(), SuccessorPhase::kCatchUp);  // deltas not yet at the final LSN
  env.applied = 120;
  s.tick();
  ASSERT_EQ(s.phase(), SuccessorPhase::kPrepared);
}

TEST(SuccessorMachine, ReportsReplayProgressAtMostEveryMillisecond) {
  FakeSuccessor env;
  SuccessorMachine s(env, 1);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  auto progress = [&] {  // replay reports, after the one that opened the restore
    return std::count_if(env.sent.begin(), env.sent.end(),
                         [](const Message& m) { return std::holds_alternative<Progress>(m); }) -
           1;
  };
  env.applied = 150;
  env.now += 2000;
  s.tick();
  EXPECT_EQ(progress(), 1);
  EXPECT_EQ(std::get<Progress>(env.sent.back()).applied_lsn, 150u);
  env.applied = 160;
  s.tick();  // same millisecond: no second report
  EXPECT_EQ(progress(), 1);
  env.now += 1000;
  s.tick();
  EXPECT_EQ(progress(), 2);
}

TEST(SuccessorMachine, HelloRestoreReplayPrepareAndServeOnCommit) {
  FakeSuccessor env;
  SuccessorMachine s(env, 4242);
  std::vector<int> raw;
  successor_to_prepared(s, env, &raw);
  ASSERT_GE(env.sent.size(), 4u);
  EXPECT_EQ(std::get<Hello>(env.sent[0]).sections, (std::vector<SectionRange>{{"kv", 1, 2}}));
  // A first sign of life before the restore, which can take minutes (issue 14, case 8).
  EXPECT_EQ(std::get<Progress>(env.sent[1]), (Progress{0, 0, {}}));
  EXPECT_EQ(std::get<Restored>(env.sent[2]).records, 10u);
  EXPECT_EQ(std::get<Prepared>(env.sent.back()), (Prepared{120, 2, {}}));
  env.now += 3'600'000'000;  // no deadline after PREPARED
  s.tick();
  EXPECT_EQ(s.phase(), SuccessorPhase::kPrepared);
  s.on_message(Commit{5, {}}, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kServing);
  EXPECT_EQ(std::get<Serving>(env.sent.back()).pid, 4242);  // confirmed before serving
  ASSERT_EQ(env.served.size(), 2u);
  EXPECT_EQ(env.served[1].state, "GET /");
  EXPECT_FALSE(env.served_as_takeover);
  for (int fd : raw) EXPECT_TRUE(is_open(fd));
}

TEST(SuccessorMachine, AStateInAMemfdIsReadBackForItsSocket) {
  FakeSuccessor env;
  SuccessorMachine s(env, 4242);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  s.on_message(Frozen{120, 1, 777, {}, {}}, {});
  const std::string big(1 << 20, 'q');
  auto attached = fds(1);
  auto memfd = spill_state(big);
  ASSERT_TRUE(memfd.ok());
  attached.push_back(std::move(memfd).value());
  s.on_message(FdBatch{{{"conn", "", 9, false, true}}}, std::move(attached));
  env.applied = 120;
  s.tick();
  ASSERT_EQ(s.phase(), SuccessorPhase::kPrepared) << env.failed.value_or("");
  s.on_message(Commit{5, {}}, {});
  ASSERT_EQ(env.served.size(), 1u);
  EXPECT_EQ(env.served[0].state, big);
}

TEST(SuccessorMachine, TakesOverWhenTheIncumbentDiesAfterPrepared) {
  FakeSuccessor env;
  SuccessorMachine s(env, 1);
  std::vector<int> raw;
  successor_to_prepared(s, env, &raw);
  s.on_incumbent_gone();
  EXPECT_EQ(s.phase(), SuccessorPhase::kServing);
  EXPECT_TRUE(env.served_as_takeover);
  EXPECT_EQ(env.served.size(), 2u);
}

// Issue 14, case 9: any receive error used to count as "incumbent gone", which after
// PREPARED means taking over, though the incumbent may be alive and about to resume.
// Now only a closed channel is; another error fails the handoff and says so.
TEST(SuccessorMachine, AChannelErrorAfterPreparedFailsInsteadOfTakingOver) {
  FakeSuccessor env;
  SuccessorMachine s(env, 1);
  std::vector<int> raw;
  successor_to_prepared(s, env, &raw);
  s.on_channel_error("the control channel failed: system: reading: Bad address");
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  EXPECT_FALSE(env.served_as_takeover);
  EXPECT_TRUE(env.served.empty());
  ASSERT_FALSE(env.sent.empty());
  ASSERT_TRUE(std::holds_alternative<Abort>(env.sent.back())) << "the incumbent is told";
  EXPECT_NE(std::get<Abort>(env.sent.back()).reason.find("control channel failed"),
            std::string::npos);
  for (int fd : raw) EXPECT_FALSE(is_open(fd)) << "received fds are closed";
}

// Issue 14, case 7: a stop signal pending in the successor aborts before SERVING.
TEST(SuccessorMachine, AStopRequestedBeforeServingAbortsInsteadOfServing) {
  struct StopAfterPrepared : FakeSuccessor {
    bool stop = false;
    std::string stop_requested() override { return stop ? "the successor was sent SIGTERM" : ""; }
  } env;
  SuccessorMachine s(env, 1);
  std::vector<int> raw;
  successor_to_prepared(s, env, &raw);
  env.stop = true;
  s.on_message(Commit{5, {}}, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  EXPECT_TRUE(env.served.empty());
  ASSERT_TRUE(std::holds_alternative<Abort>(env.sent.back()));
  EXPECT_EQ(std::get<Abort>(env.sent.back()).reason, "the successor was sent SIGTERM");
}

TEST(SuccessorMachine, IncumbentGoneBeforePreparedFailsAndClosesReceivedFds) {
  FakeSuccessor env;
  std::vector<int> raw;
  {
    SuccessorMachine s(env, 1);
    s.start();
    s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
    s.on_message(CheckpointReady{100, 4096}, fds(1));
    s.on_message(Frozen{120, 2, 777, {}, {}}, {});
    auto one = fds(1);
    raw.push_back(one[0].get());
    s.on_message(FdBatch{{{"listener", ""}}}, std::move(one));
    s.on_incumbent_gone();
    EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  }
  ASSERT_TRUE(env.failed);
  EXPECT_NE(env.failed->find("incumbent went away in phase catch-up"), std::string::npos);
  EXPECT_FALSE(env.serving);
  EXPECT_FALSE(is_open(raw[0]));
}

// Worker threads (docs/design.md, "Worker threads"): each thread's state and sockets move
// to the same thread of the successor, so the counts must match; HELLO checks, and the
// successor checks the segments it is sent.
TEST(IncumbentMachine, ASuccessorWithAnotherWorkerCountIsRefusedAtHello) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  ASSERT_TRUE(m.request_upgrade().ok());
  Hello h = good_hello();
  h.workers = 3;
  m.on_message(h);
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(m.last_abort().find("successor runs 3 worker threads besides the main one, this "
                                "incumbent 0"),
            std::string::npos)
      << m.last_abort();
  EXPECT_TRUE(env.sent_of<Welcome>().empty());
}

TEST(SuccessorMachine, CheckpointsOfAnotherWorkerCountFailTheRestore) {
  FakeSuccessor env;
  SuccessorMachine s(env, 1);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096, 2}, fds(3));
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  ASSERT_TRUE(std::holds_alternative<Abort>(env.sent.back()));
  EXPECT_NE(std::get<Abort>(env.sent.back())
                .reason.find("checkpoints of 2 worker threads; this successor runs 0"),
            std::string::npos)
      << std::get<Abort>(env.sent.back()).reason;
}

TEST(SuccessorMachine, AcceptedSchemasAreAcknowledgedSoTheCheckpointMayCome) {
  FakeSuccessor env;
  SuccessorMachine s(env, 1);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {{"kv", 2, 0x1234, "nodes"}}}, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kAwaitCheckpoint);
  ASSERT_EQ(env.sent.size(), 2u);
  EXPECT_EQ(std::get<Progress>(env.sent[1]), (Progress{0, 0, {}}));
}

TEST(SuccessorMachine, AnIncompatibleSchemaFailsAtWelcomeBeforeAnyStateMoves) {
  FakeSuccessor env;
  env.schema_refusal = "typed section 'kv' (Session): not compatible";
  SuccessorMachine s(env, 1);
  s.start();
  Welcome w{kProtocolVersion, 5, {}, {{"kv", 2, 0x1234, "nodes"}}};
  s.on_message(w, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  EXPECT_EQ(env.schemas_checked, w.schemas);
  ASSERT_TRUE(std::holds_alternative<Abort>(env.sent.back()));
  EXPECT_EQ(env.sent.size(), 2u) << "HELLO, then ABORT: no PROGRESS accepting them";
  EXPECT_NE(std::get<Abort>(env.sent.back()).reason.find("typed section 'kv'"), std::string::npos);
  // No checkpoint was asked for or taken: the next message is ignored.
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
}

TEST(SuccessorMachine, RestoreFailureIsReportedToTheIncumbent) {
  FakeSuccessor env;
  env.restore_fails = true;
  SuccessorMachine s(env, 1);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  ASSERT_TRUE(std::holds_alternative<Abort>(env.sent.back()));
  EXPECT_NE(std::get<Abort>(env.sent.back()).reason.find("checksum mismatch"), std::string::npos);
}

TEST(SuccessorMachine, EarlySocketsAreNamedByIdAtTheFreezeAndTheRestWithdrawn) {
  FakeSuccessor env;
  SuccessorMachine s(env, 7);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  auto early = fds(2);
  const int kept = early[0].get(), closed = early[1].get();
  s.on_message(EarlyFds{{{"conn", "", 12, false}, {"conn", "", 13, false}}}, std::move(early));
  EXPECT_EQ(env.early, (std::vector<int>{kept, closed}));
  ASSERT_TRUE(std::holds_alternative<Progress>(env.sent.back())) << "acknowledged at once";
  EXPECT_EQ(std::get<Progress>(env.sent.back()).early_fds, 2u);
  s.on_message(Frozen{120, 2, 777, {}, {}}, {});
  auto one = fds(1);
  const int fresh = one[0].get();
  s.on_message(FdBatch{{{"conn", "half", 12, true}, {"listener", "", 14, false}}}, std::move(one));
  env.applied = 120;
  s.tick();
  ASSERT_EQ(s.phase(), SuccessorPhase::kPrepared);
  EXPECT_EQ(env.withdrawn, std::vector<int>{closed});
  EXPECT_FALSE(is_open(closed));
  s.on_message(Commit{5, {}}, {});
  ASSERT_EQ(env.served.size(), 2u);
  EXPECT_EQ(env.served[0].fd, kept);
  EXPECT_TRUE(env.served[0].early);
  EXPECT_EQ(env.served[0].state, "half");
  EXPECT_EQ(env.served[1].fd, fresh);
  EXPECT_FALSE(env.served[1].early);
}

TEST(SuccessorMachine, AnFdBatchNamingAnUnknownEarlySocketFails) {
  FakeSuccessor env;
  SuccessorMachine s(env, 7);
  s.start();
  s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
  s.on_message(CheckpointReady{100, 4096}, fds(1));
  s.on_message(Frozen{120, 1, 777, {}, {}}, {});
  s.on_message(FdBatch{{{"conn", "", 42, true}}}, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  ASSERT_TRUE(env.failed);
  EXPECT_NE(env.failed->find("early socket id 42"), std::string::npos) << *env.failed;
}

TEST(SuccessorMachine, MessagesWithTheWrongFdsOrOutOfOrderFail) {
  {
    FakeSuccessor env;
    SuccessorMachine s(env, 1);
    s.start();
    s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
    s.on_message(CheckpointReady{100, 4096}, {});  // the segment fd is missing
    EXPECT_EQ(*env.failed, "CHECKPOINT_READY came with 0 fds, expected 1");
  }
  {
    FakeSuccessor env;
    SuccessorMachine s(env, 1);
    s.start();
    s.on_message(Commit{}, {});
    EXPECT_EQ(*env.failed, "unexpected COMMIT in phase hello");
  }
  {
    FakeSuccessor env;
    SuccessorMachine s(env, 1);
    s.start();
    env.now += 6'000'000;
    s.tick();
    EXPECT_NE(env.failed->find("silent past the deadline in phase hello"), std::string::npos);
  }
}

// ---------------------------------------------------------------- both, through the codec

// Carries messages between the two machines as encoded bytes, as the real channel does.
TEST(Handoff, BothMachinesCommitThroughTheRealCodec) {
  struct Link : FakeIncumbent {
    std::deque<std::pair<std::string, std::vector<int>>> to_successor;
    Result<void> send(const Message& m, std::span<const int> f) override {
      (void)FakeIncumbent::send(m, f);
      to_successor.emplace_back(serialization::encode_message(m),
                                std::vector<int>(f.begin(), f.end()));
      return ok();
    }
  } inc_env;
  struct Back : FakeSuccessor {
    std::deque<std::string> to_incumbent;
    Result<void> send(const Message& m) override {
      (void)FakeSuccessor::send(m);
      to_incumbent.push_back(serialization::encode_message(m));
      return ok();
    }
  } suc_env;
  IncumbentMachine inc(inc_env, 1);
  SuccessorMachine suc(suc_env, 99);
  ASSERT_TRUE(inc.request_upgrade().ok());
  suc.start();
  for (int round = 0; round < 100 && inc.phase() != IncumbentPhase::kCommitted; ++round) {
    while (!suc_env.to_incumbent.empty()) {
      auto m = serialization::decode_message(suc_env.to_incumbent.front());
      suc_env.to_incumbent.pop_front();
      ASSERT_TRUE(m.ok()) << m.error().to_string();
      inc.on_message(m.value());
    }
    while (!inc_env.to_successor.empty()) {
      auto [bytes, raw] = std::move(inc_env.to_successor.front());
      inc_env.to_successor.pop_front();
      auto m = serialization::decode_message(bytes);
      ASSERT_TRUE(m.ok()) << m.error().to_string();
      std::vector<UniqueFd> owned;
      for (int fd : raw) owned.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
      suc.on_message(m.value(), std::move(owned));
    }
    suc_env.applied = inc_env.lsn;
    inc.tick();
    suc.tick();
  }
  EXPECT_EQ(inc.phase(), IncumbentPhase::kCommitted);
  EXPECT_EQ(suc.phase(), SuccessorPhase::kServing);
  EXPECT_EQ(suc_env.served.size(), 2u);
  EXPECT_EQ(suc_env.served[1].state, "state1");
}

}  // namespace
}  // namespace baton::handoff

namespace baton::handoff {
namespace {

// ---------------------------------------------------------------- shadow verification

ShadowPolicy probes_policy(uint64_t min_probes, uint64_t max_mismatches) {
  ShadowPolicy p;
  p.sample_rate = 0.5;
  p.min_probes = min_probes;
  p.max_mismatches = max_mismatches;
  return p;
}

TEST(IncumbentShadow, ProbesAreMirroredFromTheEndOfTheCheckpointToTheFreeze) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  m.set_shadow(probes_policy(0, 0));
  ASSERT_TRUE(m.request_upgrade().ok());
  m.on_message(good_hello());
  m.tick();
  EXPECT_FALSE(env.mirroring) << "not while the fuzzy checkpoint is written";
  m.tick();
  m.tick();
  ASSERT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  EXPECT_TRUE(env.mirroring) << "every write is in the stream from here on";
  env.probes = 40;
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
  EXPECT_FALSE(env.mirroring) << "off at the freeze";
  m.on_message(Prepared{100, 2, {40, 0, {}}});
  m.on_message(Serving{4242, 0, {}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCommitted);
  EXPECT_EQ(env.sent_of<Commit>()[0]->timings.probes_sent, 40u);
}

TEST(IncumbentShadow, AMismatchPastTheToleranceAbortsNamingTheDiscrepancy) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  m.set_shadow(probes_policy(0, 1));
  to_catch_up(m, env);
  m.on_message(Progress{100, 0, {500, 1, {"LSN 90: GET a -> ..."}}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << "one is tolerated";
  m.on_message(Progress{101, 0, {600, 2, {"LSN 90: GET a -> ...", "LSN 99: GET b -> x"}}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  ASSERT_EQ(env.timelines.size(), 1u);
  const TimelineRecord& r = env.timelines[0];
  EXPECT_EQ(r.outcome, "aborted");
  EXPECT_NE(r.reason.find("shadow probe mismatch: 2 of 600"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("tolerated 1"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("LSN 90: GET a"), std::string::npos) << r.reason;
  EXPECT_EQ(r.probes_evaluated, 600u);
  EXPECT_EQ(r.discrepancies.size(), 2u);
  EXPECT_FALSE(env.mirroring);
  EXPECT_EQ(std::get<Abort>(env.sent.back().message).reason, r.reason) << "the successor is told";
}

TEST(IncumbentShadow, AMismatchInsideTheFreezeStillAbortsAtPrepared) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  m.set_shadow(probes_policy(0, 0));
  to_await_prepared(m, env);
  m.on_message(Prepared{100, 2, {10, 1, {"LSN 100: GET z"}}});
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_TRUE(env.sent_of<Commit>().empty());
  EXPECT_EQ(env.events.back(), "unfreeze");
}

TEST(IncumbentShadow, TheFreezeWaitsForTheMinimumProbesThenAbortsWhenTheyNeverCome) {
  FakeIncumbent env;
  LagPolicy lag;
  lag.converge_within_us = 1'000'000;
  IncumbentMachine m(env, 1, lag);
  m.set_shadow(probes_policy(100, 0));
  to_catch_up(m, env);
  m.on_message(Restored{1000, 5});
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp) << "converged, but too few probes";
  m.on_message(Progress{100, 0, {99, 0, {}}});
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kCatchUp);
  m.on_message(Progress{100, 0, {100, 0, {}}});
  m.tick();
  EXPECT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);

  FakeIncumbent env2;
  IncumbentMachine m2(env2, 1, lag);
  m2.set_shadow(probes_policy(100, 0));
  to_catch_up(m2, env2);
  m2.on_message(Restored{1000, 5});
  env2.now += 1'100'000;
  m2.tick();
  EXPECT_EQ(m2.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(env2.timelines.back().reason.find("evaluated 0 shadow probes"), std::string::npos)
      << env2.timelines.back().reason;
  EXPECT_NE(env2.timelines.back().reason.find("ShadowPolicy::min_probes"), std::string::npos);
}

TEST(IncumbentShadow, AnOlderSuccessorCannotMeetAMinimumOfProbes) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  m.set_shadow(probes_policy(10, 0));
  ASSERT_TRUE(m.request_upgrade().ok());
  Hello h = good_hello();
  h.max_protocol_version = kShadowProtocolVersion - 1;
  m.on_message(h);
  EXPECT_EQ(m.phase(), IncumbentPhase::kIdle);
  EXPECT_NE(env.timelines.back().reason.find("has no shadow probes"), std::string::npos)
      << env.timelines.back().reason;

  // Without a minimum, it upgrades, unverified: no probes go to a build that would
  // refuse them.
  FakeIncumbent env2;
  IncumbentMachine m2(env2, 1);
  m2.set_shadow(probes_policy(0, 0));
  ASSERT_TRUE(m2.request_upgrade().ok());
  m2.on_message(h);
  for (int i = 0; i < env2.steps_to_finish; ++i) m2.tick();
  EXPECT_EQ(m2.phase(), IncumbentPhase::kCatchUp);
  EXPECT_FALSE(env2.mirroring);
}

TEST(IncumbentShadow, CommitCarriesADigestKeyOnlyWithProbationAndTheDigestOn) {
  for (bool digest : {false, true}) {
    FakeIncumbent env;
    IncumbentMachine m(env, 1, {}, {}, /*probation_ms=*/500);
    ShadowPolicy p;
    p.digest = digest;
    m.set_shadow(p);
    to_await_prepared(m, env);
    m.on_message(Prepared{100, 2, {}});
    auto c = env.sent_of<Commit>();
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0]->digest_k0, digest ? 11u : 0u);
    EXPECT_EQ(c[0]->digest_k1, digest ? 22u : 0u);
  }
}

}  // namespace
}  // namespace baton::handoff
