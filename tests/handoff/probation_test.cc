// Probation, transition by transition, without processes: the successor's
// ProbationMachine and the standby's StandbyMachine against fake environments, and the
// incumbent's side of version negotiation and of COMMIT's probation window.
#include <gtest/gtest.h>

#include <algorithm>

#include "fake_envs.h"
#include "handoff/probation.h"

namespace baton::handoff {
namespace {

class FakeProbation : public FakeIncumbentOf<ProbationEnv> {
 public:
  std::string unhealthy;
  std::vector<std::string> ended;  // reasons end_probation() was given
  bool told_standby = false;
  bool pending = false;  // a state digest comparison still to come
  std::string health() override { return unhealthy; }
  bool verdict_pending() override { return pending; }
  void end_probation(std::string_view reason, bool tell) override {
    ended.emplace_back(reason);
    told_standby = tell;
  }
};

class FakeStandby : public FakeSuccessorOf<StandbyEnv> {
 public:
  std::vector<int> held;
  std::vector<UniqueFd> held_fds;
  int drains = 0;
  bool drain_fails = false;
  std::vector<std::string> taken_back, exited, logs;
  void hold(UniqueFd fd, std::string_view) override {
    held.push_back(fd.get());
    held_fds.push_back(std::move(fd));
  }
  Result<uint64_t> drain_deltas() override {
    ++drains;
    if (drain_fails) return Error(ErrorKind::kCorrupt, "frame checksum mismatch");
    return applied;
  }
  void take_back(std::string_view reason) override { taken_back.emplace_back(reason); }
  void exit_standby(std::string_view reason) override { exited.emplace_back(reason); }
  void log(std::string_view line) override { logs.emplace_back(line); }
};

constexpr int64_t kWindowUs = 5'000'000;

Hello hello_speaking(uint32_t min, uint32_t max) {
  Hello h;
  h.pid = 4242;
  h.sections = {{"kv", 1, 2}};
  h.protocol_version = min;
  h.max_protocol_version = max;
  return h;
}

// Runs an incumbent with a probation window through a whole upgrade with `hello`.
void upgrade_with(IncumbentMachine& m, FakeIncumbent& env, const Hello& hello) {
  ASSERT_TRUE(m.request_upgrade().ok());
  m.on_message(hello);
  for (int i = 0; i < env.steps_to_finish; ++i) m.tick();
  m.on_message(Restored{1000, 5});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitPrepared);
  m.on_message(Prepared{env.lsn, 2, {}});
  ASSERT_EQ(m.phase(), IncumbentPhase::kAwaitServing);
  m.on_message(Serving{4242, 9, {{"kv", 2}}});
  ASSERT_EQ(m.phase(), IncumbentPhase::kCommitted);
}

TEST(Negotiation, AVersion5SuccessorGetsVersion5AndTheProbationWindow) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1, {}, {}, /*probation_ms=*/3000);
  upgrade_with(m, env, hello_speaking(kMinProtocolVersion, kProtocolVersion));
  EXPECT_EQ(env.sent_of<Welcome>()[0]->protocol_version, kProtocolVersion);
  EXPECT_EQ(env.sent_of<Commit>()[0]->probation_ms, 3000u);
  EXPECT_EQ(env.committed_probation_ms, 3000u) << "the shell stands by";
}

TEST(Negotiation, AVersion4SuccessorGetsVersion4AndNoProbation) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1, {}, {}, /*probation_ms=*/3000);
  upgrade_with(m, env, hello_speaking(4, 0));  // what today's main sends
  EXPECT_EQ(env.sent_of<Welcome>()[0]->protocol_version, 4u);
  EXPECT_EQ(env.sent_of<Commit>()[0]->probation_ms, 0u) << "version 4 cannot stream back";
  EXPECT_EQ(env.committed_probation_ms, 0u) << "the shell exits as version 4 expects";
}

TEST(Negotiation, ASuccessorOfVersion5OnlyIsStillAccepted) {
  FakeIncumbent env;
  IncumbentMachine m(env, 1);
  ASSERT_TRUE(m.request_upgrade().ok());
  m.on_message(hello_speaking(5, 5));
  EXPECT_EQ(m.phase(), IncumbentPhase::kCheckpointing);
  EXPECT_EQ(m.protocol_version(), 5u);
}

TEST(Negotiation, SuccessorRefusesAWelcomeOutsideItsRange) {
  FakeSuccessor env;
  SuccessorMachine s(env, 7);
  s.start();
  EXPECT_EQ(std::get<Hello>(env.sent[0]).protocol_version, kMinProtocolVersion);
  EXPECT_EQ(std::get<Hello>(env.sent[0]).max_protocol_version, kProtocolVersion);
  s.on_message(Welcome{kProtocolVersion + 1, 5, {}, {}}, {});
  EXPECT_EQ(s.phase(), SuccessorPhase::kFailed);
  ASSERT_TRUE(env.failed);
  EXPECT_NE(
      env.failed->find("incumbent chose protocol version " + std::to_string(kProtocolVersion + 1) +
                       ", this successor speaks " + std::to_string(kMinProtocolVersion) + ".." +
                       std::to_string(kProtocolVersion)),
      std::string::npos)
      << *env.failed;
}

TEST(Negotiation, SuccessorStartsTheReverseStreamOnlyWhenCommitOffersProbation) {
  for (uint32_t window : {0u, 2000u}) {
    FakeSuccessor env;
    SuccessorMachine s(env, 7);
    s.start();
    s.on_message(Welcome{kProtocolVersion, 5, {}, {}}, {});
    s.on_message(CheckpointReady{10, 4096}, [] {
      std::vector<UniqueFd> v;
      v.emplace_back(open_fd());
      return v;
    }());
    env.applied = 10;
    s.on_message(Frozen{10, 0, 1, {}, {}}, {});
    ASSERT_EQ(s.phase(), SuccessorPhase::kPrepared);
    s.on_message(Commit{5, {}, window}, {});
    ASSERT_EQ(s.phase(), SuccessorPhase::kServing);
    const auto& serving = std::get<Serving>(env.sent.back());
    EXPECT_EQ(env.reverse_streams, window ? 1 : 0);
    EXPECT_EQ(serving.reverse_start_lsn, window ? 77u : 0u);
    EXPECT_EQ(serving.sections.size(), window ? 1u : 0u);
  }
}

// ---------------------------------------------------------------- successor side

TEST(ProbationMachine, TheWindowEndsInPromoteAndTellsTheStandby) {
  FakeProbation env;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  EXPECT_EQ(p.remaining_us(), kWindowUs);
  env.now += kWindowUs - 1;
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kOn);
  env.now += 1;
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  ASSERT_EQ(env.ended, std::vector<std::string>{"probation window ended"});
  EXPECT_TRUE(env.told_standby);
  EXPECT_EQ(p.remaining_us(), 0);
  EXPECT_FALSE(p.promote("again").ok()) << "once over, nothing more to end";
  EXPECT_FALSE(p.rollback("too late").ok());
}

TEST(ProbationMachine, TheWindowWaitsForAPendingDigestVerdictButNotForever) {
  FakeProbation env;
  env.pending = true;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  env.now += kWindowUs;
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kOn) << "held open for the digests";
  EXPECT_EQ(p.remaining_us(), 0);
  EXPECT_TRUE(env.ended.empty());
  EXPECT_EQ(std::count(env.logs.begin(), env.logs.end(),
                       "probation window ended; held open for the state digest comparison"),
            1);
  env.pending = false;  // the comparison came (and agreed)
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  EXPECT_EQ(env.ended, std::vector<std::string>{"probation window ended"});

  FakeProbation never;  // a standby whose digest never arrives
  never.pending = true;
  ProbationMachine q(never, 2, kWindowUs, {}, {});
  never.now += kWindowUs + kVerdictGraceUs - 1;
  q.tick();
  EXPECT_EQ(q.phase(), ProbationPhase::kOn);
  never.now += 1;
  q.tick();
  EXPECT_EQ(q.phase(), ProbationPhase::kOver) << "bounded: kVerdictGraceUs past the window";
  EXPECT_EQ(never.ended, std::vector<std::string>{"probation window ended"});
  EXPECT_LT(kVerdictGraceUs, kStandbyGraceUs) << "the standby must still be there";
}

TEST(ProbationMachine, PromoteEndsItEarly) {
  FakeProbation env;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  ASSERT_TRUE(p.promote("promoted by request").ok());
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  EXPECT_EQ(env.ended, std::vector<std::string>{"promoted by request"});
}

TEST(ProbationMachine, AFailedHealthCheckRollsBackWithTheReason) {
  FakeProbation env;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  env.unhealthy = "disk full";
  p.tick();  // health is asked every kHealthIntervalUs, not every tick
  EXPECT_EQ(p.phase(), ProbationPhase::kOn);
  env.now += kHealthIntervalUs;
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kRollingBack);
  ASSERT_EQ(env.sent_of<Rollback>().size(), 1u);
  EXPECT_EQ(env.sent_of<Rollback>()[0]->reason, "health check failed: disk full");
}

// A planned rollback is the forward handoff from catch-up: early sockets, PROGRESS, the
// freeze, FD_BATCH, PREPARED, COMMIT (generation + 1, no probation), SERVING, committed.
TEST(ProbationMachine, PlannedRollbackRunsTheHandoffBackwardsWithoutCheckpoint) {
  FakeProbation env;
  env.early = {{open_fd(), "listener", "", 11}, {open_fd(), "conn", "", 12}};
  env.socket_fds = {env.early[0].fd, env.early[1].fd};
  env.at_freeze = {{env.early[0].fd, "listener", "", 11}, {env.early[1].fd, "conn", "half", 12}};
  ProbationMachine p(env, /*generation=*/2, kWindowUs, {}, {});
  ASSERT_TRUE(p.rollback("rollback requested by batonctl").ok());
  EXPECT_EQ(p.phase(), ProbationPhase::kRollingBack);
  EXPECT_FALSE(p.rollback("twice").ok());
  EXPECT_FALSE(p.promote("now").ok()) << "a rollback is running";
  p.tick();  // sends the sockets ahead of the freeze, then waits for the standby
  ASSERT_EQ(env.sent_of<EarlyFds>().size(), 1u);
  EXPECT_EQ(env.sent_of<EarlyFds>()[0]->fds.size(), 2u);
  p.tick();
  EXPECT_TRUE(env.sent_of<Frozen>().empty()) << "not before the standby has the sockets";
  p.on_message(Progress{env.lsn, 2, {}});
  p.tick();
  ASSERT_EQ(env.sent_of<Frozen>().size(), 1u);
  EXPECT_EQ(env.sent_of<FdBatch>()[0]->fds[1].state, "half");
  EXPECT_TRUE(env.sent_of<FdBatch>()[0]->fds[1].early) << "moved by id, no fd";
  p.on_message(Prepared{env.lsn, 2, {}});
  ASSERT_EQ(env.sent_of<Commit>().size(), 1u);
  EXPECT_EQ(env.sent_of<Commit>()[0]->generation, 3u);
  EXPECT_EQ(env.sent_of<Commit>()[0]->probation_ms, 0u);
  p.on_message(Serving{1, 0, {}});
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  EXPECT_EQ(p.outcome(), "rolled back");
  EXPECT_EQ(env.events, (std::vector<std::string>{"freeze", "committed"}))
      << "no spawn, no checkpoint";
  EXPECT_TRUE(env.ended.empty()) << "the server exits through committed()";
}

TEST(ProbationMachine, ARollbackTheStandbyAbortsLeavesTheSuccessorServing) {
  FakeProbation env;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  ASSERT_TRUE(p.rollback("health check failed: x").ok());
  p.tick();
  p.on_message(Abort{"replaying deltas: gap at LSN 9"});
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  EXPECT_NE(p.outcome().find("rollback failed: successor aborted"), std::string::npos)
      << p.outcome();
  ASSERT_FALSE(env.timelines.empty());
  EXPECT_EQ(env.timelines.back().outcome, "aborted");
  EXPECT_NE(std::find(env.events.begin(), env.events.end(), "kill"), env.events.end())
      << "the link to the standby ends";
}

TEST(ProbationMachine, TheStandbyGoingAwayEndsProbationButNotService) {
  FakeProbation env;
  ProbationMachine p(env, 2, kWindowUs, {}, {});
  p.on_standby_gone("its control channel closed");
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  ASSERT_EQ(env.ended.size(), 1u);
  EXPECT_NE(env.ended[0].find("the standby is gone"), std::string::npos);
  EXPECT_FALSE(env.told_standby);
}

TEST(ProbationMachine, AStandbyTooFarBehindEndsProbationSoClientsAreServed) {
  FakeProbation env;
  LagPolicy lag;
  lag.abort_bytes = 1000;
  ProbationMachine p(env, 2, kWindowUs, lag, {});
  env.backlog = 1001;
  p.tick();
  EXPECT_EQ(p.phase(), ProbationPhase::kOver);
  EXPECT_NE(env.ended[0].find("fell 1001 bytes behind"), std::string::npos) << env.ended[0];
}

// ---------------------------------------------------------------- standby side

TEST(StandbyMachine, AppliesTheReverseStreamAndExitsOnPromote) {
  FakeStandby env;
  StandbyMachine s(env, 1, /*generation=*/2, kWindowUs, {});
  env.applied = 40;
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kStandingBy);
  EXPECT_EQ(s.remaining_us(), kWindowUs);
  s.on_message(Promote{"probation window ended"}, {});
  EXPECT_EQ(s.phase(), StandbyPhase::kExited);
  ASSERT_EQ(env.exited.size(), 1u);
  EXPECT_NE(env.exited[0].find("probation window ended"), std::string::npos);
  EXPECT_TRUE(env.taken_back.empty());
}

TEST(StandbyMachine, HoldsTheSocketsTheSuccessorAcceptsDuringProbation) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  std::vector<UniqueFd> fds;
  fds.emplace_back(open_fd());
  fds.emplace_back(open_fd());
  const int a = fds[0].get(), b = fds[1].get();
  s.on_message(EarlyFds{{{"conn", "", 0, false}, {"conn", "", 0, false}}}, std::move(fds));
  EXPECT_EQ(env.held, (std::vector<int>{a, b}));
  EXPECT_EQ(s.phase(), StandbyPhase::kStandingBy);
}

TEST(StandbyMachine, TheSuccessorDyingMakesItDrainTheStreamAndServeAtOnce) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_successor_gone("was killed by signal 9");
  EXPECT_EQ(s.phase(), StandbyPhase::kServing);
  EXPECT_EQ(env.drains, 1);
  ASSERT_EQ(env.taken_back.size(), 1u);
  EXPECT_EQ(env.taken_back[0], "the successor was killed by signal 9");
}

TEST(StandbyMachine, ABrokenStreamAtACrashStillServesAndSaysWhatItLacks) {
  FakeStandby env;
  env.drain_fails = true;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_successor_gone("exited with status 1");
  EXPECT_EQ(s.phase(), StandbyPhase::kServing) << "the only copy left serves";
  EXPECT_NE(env.taken_back[0].find("the reverse stream ended badly"), std::string::npos);
}

TEST(StandbyMachine, ABrokenStreamWhileTheSuccessorLivesEndsTheStandbyNotTheService) {
  class Broken : public FakeStandby {
   public:
    Result<uint64_t> replay_available() override {
      return Error(ErrorKind::kCorrupt, "delta frame checksum mismatch");
    }
  } env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kExited);
  ASSERT_FALSE(env.sent.empty());
  EXPECT_NE(std::get<Abort>(env.sent.back()).reason.find("can no longer follow"),
            std::string::npos);
}

TEST(StandbyMachine, PlannedRollbackReceivesSocketsEarlyThenServesOnCommit) {
  FakeStandby env;
  StandbyMachine s(env, 1, /*generation=*/2, kWindowUs, {});
  env.applied = 50;
  s.on_message(Rollback{"rollback requested by batonctl"}, {});
  EXPECT_EQ(s.phase(), StandbyPhase::kRollingBack);
  EXPECT_EQ(s.rollback_reason(), "rollback requested by batonctl");
  std::vector<UniqueFd> fds;
  fds.emplace_back(open_fd());
  const int conn = fds[0].get();
  s.on_message(EarlyFds{{{"conn", "", 12, false}}}, std::move(fds));
  EXPECT_EQ(env.early, std::vector<int>{conn});
  ASSERT_TRUE(std::holds_alternative<Progress>(env.sent.back()));
  EXPECT_EQ(std::get<Progress>(env.sent.back()).early_fds, 1u);
  s.on_message(Frozen{50, 1, 123, {}, {}}, {});
  s.on_message(FdBatch{{{"conn", "half", 12, true}}}, {});
  ASSERT_TRUE(std::holds_alternative<Prepared>(env.sent.back()));
  s.on_message(Commit{3, {}, 0}, {});
  EXPECT_EQ(s.phase(), StandbyPhase::kServing);
  ASSERT_EQ(env.served.size(), 1u);
  EXPECT_EQ(env.served[0].state, "half");
  EXPECT_TRUE(std::holds_alternative<Serving>(env.sent.back()));
  EXPECT_TRUE(env.taken_back.empty()) << "a planned rollback keeps every connection";
}

TEST(StandbyMachine, ASuccessorDyingMidRollbackBeforePreparedIsACrashRollback) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_message(Rollback{"health check failed: x"}, {});
  std::vector<UniqueFd> fds;
  fds.emplace_back(open_fd());
  const int conn = fds[0].get();
  s.on_message(EarlyFds{{{"conn", "", 12, false}}}, std::move(fds));
  s.on_successor_gone("was killed by signal 9");
  EXPECT_EQ(s.phase(), StandbyPhase::kServing);
  EXPECT_EQ(env.withdrawn, std::vector<int>{conn}) << "the early copy is given up";
  EXPECT_FALSE(is_open(conn));
  EXPECT_EQ(env.taken_back.size(), 1u);
}

TEST(StandbyMachine, ASuccessorDyingAfterPreparedOfItsRollbackIsTakenOverFromWhatItSent) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_message(Rollback{"r"}, {});
  std::vector<UniqueFd> fds;
  fds.emplace_back(open_fd());
  s.on_message(Frozen{0, 1, 123, {}, {}}, {});
  s.on_message(FdBatch{{{"conn", "", 0, false}}}, std::move(fds));
  ASSERT_TRUE(std::holds_alternative<Prepared>(env.sent.back()));
  s.on_successor_gone("exited with status 0");
  EXPECT_EQ(s.phase(), StandbyPhase::kServing);
  EXPECT_TRUE(env.served_as_takeover);
  EXPECT_EQ(env.drains, 0) << "it was frozen: nothing more came";
}

TEST(StandbyMachine, AClosedChannelWithoutPromoteWaitsForThePidfdThenGivesUp) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_channel_closed();
  env.now += 900'000;
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kStandingBy) << "a dying successor's pidfd follows";
  env.now += 200'000;
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kExited);
}

TEST(StandbyMachine, ExitsOnItsOwnWellPastTheWindow) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  env.now += kWindowUs + kStandbyGraceUs - 1;
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kStandingBy);
  env.now += 1;
  s.tick();
  EXPECT_EQ(s.phase(), StandbyPhase::kExited);
}

TEST(StandbyMachine, AnUnexpectedMessageEndsTheStandbyNamingIt) {
  FakeStandby env;
  StandbyMachine s(env, 1, 2, kWindowUs, {});
  s.on_message(Restored{1, 1}, {});
  EXPECT_EQ(s.phase(), StandbyPhase::kExited);
  EXPECT_NE(env.exited[0].find("unexpected RESTORED while standing by"), std::string::npos);
}

}  // namespace
}  // namespace baton::handoff
