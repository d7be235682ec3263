// kvd as real processes under real Redis clients: redis-benchmark's whole default test
// set, live upgrades (v1 -> v2 -> v1 -> v2) under redis-benchmark load with idle
// connections held open, rollback semantics, protocol errors, maxclients and SIGTERM.
// Loopback only, port 0, a temporary directory per test, bounded waits, all reaped.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <memory>
#include <set>

#include <gtest/gtest.h>

#include "baton/fd.h"
#include "kvd_process.h"
#include "server_process.h"
#include "shm_util.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::Kvd;
using testing::RespClient;
using testing::slurp;

const char* const kBenchmark = "/usr/bin/redis-benchmark";

std::string benchmark_errors(const std::string& output) {
  std::string errors;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    for (std::string_view needle : {"rror", "ERR", "WRONGTYPE", "reset", "refused"}) {
      if (line.find(needle) != std::string::npos) {
        errors += line + "\n";
        break;
      }
    }
  }
  return errors;
}

TEST(Kvd, RedisBenchmarkDefaultTestsRunWithoutAnError) {
  ASSERT_TRUE(fs::exists(kBenchmark))
      << "needs redis-benchmark: tools/deps.sh installs redis-tools";
  Kvd s(KVD_BIN);
  const std::string out = s.dir() + "/bench.out";
  pid_t pid = testing::spawn_process(
      {kBenchmark, "-p", std::to_string(s.port()), "-q", "-n", "2000", "-c", "10"}, out);
  ASSERT_GT(pid, 0);
  const int status = testing::wait_process(pid, 240);
  const std::string text = slurp(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_EQ(benchmark_errors(text), "");
  for (const char* test :
       {"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD",
        "HSET", "SPOP", "ZADD", "ZPOPMIN", "LRANGE_600", "MSET"}) {
    EXPECT_NE(text.find(test), std::string::npos) << test << " did not run:\n" << text;
  }
}

class KvdUnderLoad : public ::testing::TestWithParam<int> {};  // redis-benchmark -P

TEST_P(KvdUnderLoad, UpgradesV1ToV2AndBackLoseNoWriteAndNoConnection) {
  ASSERT_TRUE(fs::exists(kBenchmark))
      << "needs redis-benchmark: tools/deps.sh installs redis-tools";
  Kvd s(KVD_V1_BIN);
  RespClient loader(s.port());
  ASSERT_TRUE(loader.connected());
  for (int i = 0; i < 1000; i += 100) {
    std::vector<std::string> mset = {"MSET"};
    for (int k = i; k < i + 100; ++k) {
      mset.push_back("pre:" + std::to_string(k));
      mset.push_back("value-" + std::to_string(k));
    }
    ASSERT_EQ(loader.call(mset), "OK");
  }
  std::vector<std::unique_ptr<RespClient>> idle;
  for (int i = 0; i < 200; ++i) {
    idle.push_back(std::make_unique<RespClient>(s.port()));
    ASSERT_TRUE(idle.back()->connected());
  }
  ASSERT_EQ(idle.back()->call({"PING"}), "PONG");  // all accepted by now

  const int pipeline = GetParam();
  const long n = pipeline > 1 ? 400000 : 40000;
  const std::string out = s.dir() + "/bench.out";
  pid_t bench = testing::spawn_process(
      {kBenchmark, "-p", std::to_string(s.port()), "-q", "-c", "20", "-n", std::to_string(n), "-P",
       std::to_string(pipeline), "-t", "set,get,incr,lpush,rpush,lpop"},
      out);
  ASSERT_GT(bench, 0);
  ASSERT_TRUE(eventually([&] { return slurp(out).find("SET") != std::string::npos; }, 30));

  std::set<pid_t> pids = {s.serving_pid()};
  int done = 0;
  for (const char* binary : {KVD_BIN, KVD_V1_BIN, KVD_BIN}) {
    const pid_t next = s.upgrade_to(binary);
    ASSERT_GT(next, 0) << "upgrade " << done + 1 << " failed:\n" << s.log();
    EXPECT_TRUE(pids.insert(next).second) << "the pid must change";
    ++done;
    if (!testing::still_running(bench)) break;
  }
  const bool loaded_throughout = testing::still_running(bench);
  const int status = testing::wait_process(bench, 300);
  const std::string text = slurp(out);
  EXPECT_EQ(done, 3);
  EXPECT_TRUE(loaded_throughout) << "redis-benchmark ended before the last upgrade: raise -n";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_EQ(benchmark_errors(text), "") << s.log();

  RespClient after(s.port());
  EXPECT_EQ(after.call({"GET", "counter:__rand_int__"}), std::to_string(n))
      << "every acknowledged INCR, exactly once";
  for (int k = 0; k < 1000; ++k) {
    ASSERT_EQ(after.call({"GET", "pre:" + std::to_string(k)}), "value-" + std::to_string(k));
  }
  int alive = 0;
  for (auto& c : idle) alive += c->call({"PING"}) == "PONG";
  EXPECT_EQ(alive, 200) << "idle connections held across the upgrades";
  const std::string info = after.call({"INFO", "baton"});
  EXPECT_NE(info.find("baton_generation:4"), std::string::npos) << info;
  EXPECT_NE(info.find("\"outcome\":\"promoted\""), std::string::npos) << info;
  for (pid_t p : pids) EXPECT_EQ(testing::count_shm_names("baton-" + std::to_string(p) + "-"), 0);
}

INSTANTIATE_TEST_SUITE_P(Pipelining, KvdUnderLoad, ::testing::Values(1, 16),
                         [](const auto& info) { return "P" + std::to_string(info.param); });

TEST(Kvd, RollbackToV1KeepsValuesRemovesTtlsAndUpgradingAgainWorks) {
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "keep", "1", "EX", "1000"}), "OK");
  ASSERT_EQ(c.call({"SET", "plain", "2"}), "OK");
  ASSERT_EQ(c.call({"SET", "gone", "3", "PX", "20"}), "OK");
  ASSERT_EQ(c.call({"RPUSH", "list", "a", "b"}), "2");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GT(s.upgrade_to(KVD_V1_BIN), 0) << s.log();
  EXPECT_EQ(c.call({"GET", "keep"}), "1");
  EXPECT_EQ(c.call({"GET", "plain"}), "2");
  EXPECT_EQ(c.call({"GET", "gone"}), "(nil)") << "an expired key must not come back";
  EXPECT_EQ(c.call({"LRANGE", "list", "0", "-1"}), "[a,b]");
  EXPECT_NE(c.call({"TTL", "keep"}).find("kvd-v1 does not have"), std::string::npos);
  const std::string info = c.call({"INFO", "baton"});
  EXPECT_NE(info.find("rolled back from schema v2: 1 TTLs removed"), std::string::npos) << info;
  EXPECT_NE(s.log().find("rolled back from schema v2"), std::string::npos) << "logged";

  ASSERT_GT(s.upgrade_to(KVD_BIN), 0) << s.log();
  EXPECT_EQ(c.call({"TTL", "keep"}), "-1") << "the TTL stays removed";
  EXPECT_EQ(c.call({"SET", "t", "x", "EX", "100"}), "OK");
  EXPECT_EQ(c.call({"TTL", "t"}), "100");
}

TEST(Kvd, MalformedProtocolGetsAnErrorAndClosesOnlyThatClient) {
  Kvd s(KVD_BIN);
  RespClient good(s.port());
  ASSERT_EQ(good.call({"SET", "k", "v"}), "OK");
  for (const std::string& garbage : {std::string("*2\r\n$3\r\nGET\r\nxyz\r\n"),
                                     std::string("*abc\r\n"), std::string("\x16\x03\x01\r\n")}) {
    RespClient bad(s.port());
    ASSERT_TRUE(bad.send_raw("PING\r\n" + garbage));
    EXPECT_EQ(bad.reply(), "PONG");
    EXPECT_NE(bad.reply().find("(error) ERR Protocol error"), std::string::npos);
    EXPECT_EQ(bad.reply(), "(eof)") << "the server closes a stream it cannot frame";
  }
  EXPECT_EQ(good.call({"GET", "k"}), "v");
  RespClient unknown(s.port());
  EXPECT_EQ(unknown.call({"FROB"}),
            "(error) ERR unknown command 'FROB', with args beginning with: ");
  EXPECT_EQ(unknown.call({"PING"}), "PONG") << "an unknown command is not a protocol error";
}

TEST(Kvd, MaxclientsRefusesTheNextClientWithAnError) {
  Kvd s(KVD_BIN, {"--maxclients", "2"});
  RespClient a(s.port()), b(s.port());
  ASSERT_EQ(a.call({"PING"}), "PONG");
  ASSERT_EQ(b.call({"PING"}), "PONG");
  RespClient c(s.port());
  EXPECT_EQ(c.reply(), "(error) ERR max number of clients reached");
  EXPECT_EQ(a.call({"PING"}), "PONG");
}

TEST(Kvd, SigtermAnswersPendingRequestsAndExitsZero) {
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  ASSERT_EQ(::kill(s.first_pid(), SIGTERM), 0);
  const int status = testing::wait_process(s.first_pid(), 10);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << s.log();
  EXPECT_NE(s.log().find("signal 15: stopping"), std::string::npos) << s.log();
}

TEST(Kvd, BadFlagsExitTwoNamingTheFlag) {
  char tmpl[] = "/tmp/baton-kvd-flags-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& c :
       std::vector<Case>{{{"--port", "70000"}, "--port is 0..65535"},
                         {{"--port", "x"}, "--port takes a whole number"},
                         {{"--maxclients", "0"}, "--maxclients must be at least 1"},
                         {{"--bogus", "1"}, "unknown flag '--bogus'"},
                         {{"--bind", "nowhere"}, "is no IP address"},
                         {{"--checkpoint-share", "1"},
                          "--checkpoint-share is the share of the server's "
                          "busy time"},
                         {{"--checkpoint-share", "0.3x"}, "(got '0.3x')"},
                         {{"--restore-nice", "20"}, "--restore-nice is 0..19"},
                         {{"--restore-nice", "-1"}, "--restore-nice takes a whole number"}}) {
    std::vector<std::string> argv = {KVD_BIN};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const std::string out = dir + "/out";
    fs::remove(out);
    const int status = testing::wait_process(testing::spawn_process(argv, out), 10);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << c.says;
    EXPECT_NE(slurp(out).find(c.says), std::string::npos) << slurp(out);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace baton
