// Probation against real kvd processes: a crash of the new version at random moments of
// the window under a load that redials, batonctl rollback under redis-benchmark (v2 back
// to v1), the health gate, window expiry, promote, SIGUSR2 and QUIT during probation.
// Loopback only, port 0, a private directory per test, bounded waits, everything reaped.
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>

#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "kvd_process.h"
#include "server_process.h"
#include "shm_util.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::field;
using testing::Kvd;
using testing::RespClient;
using testing::slurp;

const char* const kBenchmark = "/usr/bin/redis-benchmark";

// The number of open fds of `pid`.
int fd_count(pid_t pid) {
  int n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

// Waits for the event log to reach `n` lines; returns the last one ("" if it did not).
std::string await_event(const Kvd& s, size_t n, double seconds = 15) {
  if (!eventually([&] { return s.events().size() >= n; }, seconds)) return "";
  return s.events()[n - 1];
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0 && !testing::is_zombie(pid); }

TEST(Probation, ASuccessorKilledAtRandomMomentsIsRolledBackWithEveryAcknowledgedWrite) {
  Kvd s(KVD_BIN, {"--probation-ms", "800"});
  const std::string stop = s.dir() + "/stop";
  const pid_t load =
      testing::spawn_process({INCR_LOAD_BIN, "--port", std::to_string(s.port()), "--connections",
                              "8", "--seconds", "120", "--stop-file", stop},
                             s.dir() + "/load.out");
  ASSERT_GT(load, 0);
  std::mt19937 rng(20261201);
  std::uniform_int_distribution<int> moment_ms(0, 700);
  const pid_t standby = s.serving_pid();
  const int fds_before = fd_count(standby);
  int64_t worst_blackout_us = 0;
  for (int round = 0; round < 20; ++round) {
    const size_t events_before = s.events().size();
    const pid_t next = s.upgrade_on_probation(KVD_BIN);
    ASSERT_GT(next, 0) << "round " << round << ":\n" << s.log();
    std::this_thread::sleep_for(std::chrono::milliseconds(moment_ms(rng)));
    ASSERT_EQ(::kill(next, SIGKILL), 0);
    const std::string e = await_event(s, events_before + 2);
    ASSERT_NE(e, "") << "no rollback in round " << round << ":\n" << s.log();
    EXPECT_EQ(field(e, "outcome"), "rolled back") << e;
    EXPECT_NE(field(e, "reason").find("killed by signal 9"), std::string::npos) << e;
    worst_blackout_us = std::max<int64_t>(worst_blackout_us, std::stoll(field(e, "blackout_us")));
    ASSERT_TRUE(eventually([&] { return s.serving_pid() == standby; }, 5))
        << "the standby serves again and says so in the pidfile";
    EXPECT_FALSE(eventually([&] { return alive(next); }, 0)) << "the successor was reaped";
  }
  { std::ofstream(stop) << "1"; }
  const int status = testing::wait_process(load, 30);
  const std::string out = slurp(s.dir() + "/load.out");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("every acknowledged INCR present, none doubled"), std::string::npos) << out;
  EXPECT_NE(out.find("refused 0,"), std::string::npos) << "no connection refused:\n" << out;
  std::printf("    %s    worst rollback blackout (timeline): %.3f ms\n", out.c_str(),
              worst_blackout_us / 1000.0);
  // Nothing left over: the successors are reaped, and the survivor holds what it held.
  EXPECT_EQ(testing::ServerProcess::children(standby), "") << "no zombie or stray child";
  EXPECT_EQ(fd_count(standby), fds_before) << "no fd left behind by 20 rollbacks";
  EXPECT_EQ(testing::count_shm_names("baton-" + std::to_string(standby) + "-"), 0);
}

class RollbackUnderBenchmark : public ::testing::TestWithParam<int> {};  // redis-benchmark -P

TEST_P(RollbackUnderBenchmark, BatonctlRollbackFromV2ToV1LosesNothingAndNoClientNotices) {
  ASSERT_TRUE(fs::exists(kBenchmark))
      << "needs redis-benchmark: tools/deps.sh installs redis-tools";
  Kvd s(KVD_V1_BIN, {"--probation-ms", "60000"});
  const pid_t v1 = s.serving_pid();
  const int pipeline = GetParam();
  const long n = pipeline > 1 ? 400000 : 40000;
  const std::string out = s.dir() + "/bench.out";
  const pid_t bench = testing::spawn_process(
      {kBenchmark, "-p", std::to_string(s.port()), "-q", "-c", "20", "-n", std::to_string(n), "-P",
       std::to_string(pipeline), "-t", "set,get,incr,lpush,rpush,lpop"},
      out);
  ASSERT_GT(bench, 0);
  ASSERT_TRUE(eventually([&] { return slurp(out).find("SET") != std::string::npos; }, 30));
  const pid_t v2 = s.upgrade_on_probation(KVD_BIN);
  ASSERT_GT(v2, 0) << s.log();
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "made-in-v2", "ttl", "EX", "1000"}), "OK");
  ASSERT_EQ(c.call({"SET", "plain-v2", "x"}), "OK");
  ASSERT_EQ(c.call({"INFO", "server"}).find("kvd_schema_version:2") != std::string::npos, true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // writes under v2, streamed back
  const size_t events_before = s.events().size();
  EXPECT_EQ(s.control("rollback").rfind("ok: rolling back", 0), 0u);
  const std::string e = await_event(s, events_before + 1);
  ASSERT_NE(e, "") << s.log();
  EXPECT_EQ(field(e, "outcome"), "rolled back") << e;
  EXPECT_EQ(field(e, "reason"), "rollback requested by batonctl") << e;
  EXPECT_FALSE(field(e, "blackout_us").empty()) << "reported like an upgrade's: " << e;
  std::printf("    rollback blackout %s us, -P %d\n", field(e, "blackout_us").c_str(), pipeline);
  EXPECT_TRUE(eventually([&] { return s.serving_pid() == v1; }, 5));
  EXPECT_TRUE(testing::still_running(bench)) << "the rollback ran under load: raise -n";
  const int status = testing::wait_process(bench, 300);
  const std::string text = slurp(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_EQ(text.find("rror"), std::string::npos) << text;
  EXPECT_EQ(text.find("reset"), std::string::npos) << text;
  // The same connection, served by v1 now, sees v2's writes; the TTL went as documented.
  EXPECT_NE(c.call({"INFO", "server"}).find("kvd_schema_version:1"), std::string::npos);
  EXPECT_EQ(c.call({"GET", "made-in-v2"}), "ttl");
  EXPECT_EQ(c.call({"GET", "plain-v2"}), "x");
  EXPECT_NE(c.call({"TTL", "made-in-v2"}).find("kvd-v1 does not have"), std::string::npos);
  EXPECT_EQ(c.call({"GET", "counter:__rand_int__"}), std::to_string(n))
      << "every acknowledged INCR, exactly once, across the upgrade and the rollback";
  EXPECT_TRUE(eventually([&] { return !alive(v2); }, 5)) << "the rolled-back process exits";
}

INSTANTIATE_TEST_SUITE_P(Pipelining, RollbackUnderBenchmark, ::testing::Values(1, 16),
                         [](const auto& info) { return "P" + std::to_string(info.param); });

TEST(Probation, AnUnhealthySuccessorIsRolledBackWithTheReasonInTimelineAndStatus) {
  Kvd s(KVD_BIN, {"--probation-ms", "30000"}, "successor.unhealthy=error");
  const pid_t old = s.serving_pid();
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "1"}), "OK");
  const size_t events_before = s.events().size();
  ASSERT_GT(s.upgrade_on_probation(KVD_BIN), 0) << s.log();
  const std::string e = await_event(s, events_before + 2);
  ASSERT_NE(e, "") << s.log();
  EXPECT_EQ(field(e, "outcome"), "rolled back") << e;
  EXPECT_EQ(field(e, "reason"), "health check failed: fail point successor.unhealthy is armed");
  EXPECT_TRUE(eventually([&] { return s.serving_pid() == old; }, 5));
  const std::string status = s.control("status");
  EXPECT_NE(status.find("\"pid\":" + std::to_string(old)), std::string::npos) << status;
  EXPECT_NE(status.find("health check failed"), std::string::npos) << status;
  EXPECT_EQ(c.call({"GET", "k"}), "1") << "the connection was handed back";
}

TEST(Probation, WindowExpiryLeavesOneServerAndNothingElse) {
  Kvd s(KVD_BIN, {"--probation-ms", "500"});
  const pid_t old = s.serving_pid();
  const size_t events_before = s.events().size();
  const pid_t next = s.upgrade_on_probation(KVD_BIN);
  ASSERT_GT(next, 0);
  const int fds_on_probation = fd_count(next);
  const std::string e = await_event(s, events_before + 2);
  EXPECT_EQ(field(e, "outcome"), "promoted") << e;
  EXPECT_EQ(field(e, "reason"), "probation window ended") << e;
  EXPECT_EQ(testing::wait_process(old, 10) >= 0, true) << "the standby exits";
  EXPECT_LT(fd_count(next), fds_on_probation) << "the link to the standby is closed";
  EXPECT_EQ(testing::count_shm_names("baton-" + std::to_string(old) + "-"), 0);
  EXPECT_EQ(s.control("status").find("\"phase\":\"serving\"") != std::string::npos, true);
}

TEST(Probation, PromoteEndsItAndSigusr2DuringItIsRefusedAndQuitStillCloses) {
  Kvd s(KVD_BIN, {"--probation-ms", "60000"});
  const pid_t old = s.serving_pid();
  const pid_t next = s.upgrade_on_probation(KVD_BIN);
  ASSERT_GT(next, 0);
  // SIGUSR2 during probation: refused, logged with the time left; no second successor.
  ASSERT_EQ(::kill(next, SIGUSR2), 0);
  EXPECT_TRUE(
      eventually([&] { return s.log().find("upgrade request refused") != std::string::npos; }, 5))
      << s.log();
  EXPECT_EQ(testing::ServerProcess::children(next), "") << "no successor was spawned";
  EXPECT_NE(s.control("upgrade").find("is on probation for"), std::string::npos);
  // QUIT during probation closes for the client, though the standby holds a duplicate.
  RespClient q(s.port());
  ASSERT_EQ(q.call({"PING"}), "PONG");
  EXPECT_EQ(q.call({"QUIT"}), "OK");
  EXPECT_EQ(q.reply(), "(eof)");
  const size_t events_before = s.events().size();
  EXPECT_EQ(s.control("promote").rfind("ok:", 0), 0u);
  const std::string e = await_event(s, events_before + 1);
  EXPECT_EQ(field(e, "outcome"), "promoted") << e;
  EXPECT_EQ(field(e, "reason"), "promoted by request") << e;
  EXPECT_GE(testing::wait_process(old, 10), 0) << "the standby exits at once";
  EXPECT_NE(s.control("promote").find("no upgrade is on probation"), std::string::npos);
  RespClient after(s.port());
  EXPECT_EQ(after.call({"PING"}), "PONG");
}

}  // namespace
}  // namespace baton
