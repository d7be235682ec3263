// Shadow verification against real kvd processes (docs/protocol.md, "Shadow
// verification"): a successor that answers differently is stopped before COMMIT or rolled
// back during probation, with the discrepancy named; a corrupting migration is caught by
// probes and by the state digest; and correct upgrades, v1 to v2 and back under
// redis-benchmark and redis-py traffic, never raise a false mismatch.
// Loopback only, port 0, a private directory per test, bounded waits, everything reaped.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kvd_process.h"
#include "server_process.h"

namespace baton {
namespace {

using testing::eventually;
using testing::field;
using testing::Kvd;
using testing::RespClient;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kCleanUpgrades = 10;  // 50 in the default build; sanitizers are 10x slower
// The sanitizers' slower clients and standby evaluated 1 to 4 probes in ten 250 ms windows
// on this project's machine on 2026-12-07, at this stop's code and at the commit before it
// alike: a window long enough for their reports to come back.
constexpr const char* kProbationMs = "1000";
#else
constexpr int kCleanUpgrades = 50;
constexpr const char* kProbationMs = "250";
#endif

// kvd-divergent's bug hits keys whose std::hash is 0 mod 1000 (samples/kvd/store.cc).
bool buggy(const std::string& key) { return std::hash<std::string_view>{}(key) % 1000 == 0; }

// 1,000 ordinary keys and every buggy one among the first 20,000: the reader below reads
// them all, so a probe of a buggy key is certain, not likely.
std::vector<std::string> test_keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 20000; ++i) {
    std::string k = "key:" + std::to_string(i);
    if (i < 1000 || buggy(k)) keys.push_back(std::move(k));
  }
  return keys;
}

std::string value_of(const std::string& key) { return "value-of-" + key; }

// A client load of GETs over every key in turn and INCRs of one counter, until stopped;
// it counts the INCRs acknowledged and anything that is not a proper reply.
class Load {
 public:
  Load(int port, std::vector<std::string> keys) : keys_(std::move(keys)) {
    reader_ = std::thread([this, port] {
      RespClient c(port);
      for (size_t i = 0; !stop_ && i < 50'000'000; ++i) {
        const std::string& k = keys_[i % keys_.size()];
        if (c.call({"GET", k}) != value_of(k)) ++errors_;
      }
    });
    writer_ = std::thread([this, port] {
      RespClient c(port);
      for (int i = 0; !stop_ && i < 10'000'000; ++i) {
        const std::string r = c.call({"INCR", "counter"});
        if (r.empty() || r[0] < '0' || r[0] > '9') {
          ++errors_;
        } else {
          acked_ = std::stoll(r);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  ~Load() { stop(); }
  void stop() {
    stop_ = true;
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
  }
  int64_t acked() const { return acked_; }
  int64_t errors() const { return errors_; }

 private:
  std::vector<std::string> keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acked_{0}, errors_{0};
  std::thread reader_, writer_;
};

void populate(int port, const std::vector<std::string>& keys) {
  RespClient c(port);
  for (const std::string& k : keys) ASSERT_EQ(c.call({"SET", k, value_of(k)}), "OK");
}

// Every key holds its value and the counter every acknowledged INCR (none: no counter).
void expect_exact(int port, const std::vector<std::string>& keys, int64_t acked) {
  RespClient c(port);
  for (const std::string& k : keys) ASSERT_EQ(c.call({"GET", k}), value_of(k)) << k;
  EXPECT_EQ(c.call({"GET", "counter"}), acked == 0 ? "(nil)" : std::to_string(acked));
}

TEST(Shadow, ASuccessorWhoseGetAnswersWronglyIsAbortedBeforeCommitNamingTheKey) {
  const std::vector<std::string> keys = test_keys();
  ASSERT_GT(keys.size(), 1000u) << "some keys hit the bug";
  // Every read mirrored, and at least 3,000 evaluated before the freeze: the reader goes
  // over all keys three times, so the successor meets a buggy one.
  Kvd s(KVD_BIN, {"--probation-ms", "0", "--shadow-rate", "1", "--shadow-min-probes", "3000"}, "",
        {"KVD_DIVERGE=get"});
  populate(s.port(), keys);
  const pid_t incumbent = s.serving_pid();
  Load load(s.port(), keys);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(s.upgrade_on_probation(KVD_DIVERGENT_BIN), 0) << "the upgrade must not commit";
  ASSERT_FALSE(s.events().empty()) << s.log();
  const std::string e = s.events().back();
  EXPECT_EQ(field(e, "outcome"), "aborted") << e;
  const std::string reason = field(e, "reason");
  EXPECT_NE(reason.find("shadow probe mismatch"), std::string::npos) << e;
  EXPECT_NE(reason.find("GET key:"), std::string::npos) << "the request is named: " << e;
  EXPECT_NE(e.find("value-of-key:", e.find("the successor")), std::string::npos) << e;
  EXPECT_NE(e.find("?\\\\r\\\\n"), std::string::npos) << "and the wrong reply: " << e;
  EXPECT_NE(e.find("\"discrepancies\":{\"1\":\"LSN "), std::string::npos) << e;
  EXPECT_EQ(s.serving_pid(), incumbent) << "the incumbent serves on";
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  load.stop();
  EXPECT_EQ(load.errors(), 0) << "no client saw a wrong reply or an error";
  expect_exact(s.port(), keys, load.acked());
  RespClient c(s.port());
  const std::string info = c.call({"INFO", "baton"});
  EXPECT_NE(info.find("baton_shadow_probe_mismatches:"), std::string::npos) << info;
  EXPECT_EQ(info.find("baton_shadow_probe_mismatches:0"), std::string::npos) << info;
}

TEST(Shadow, ABugArmedOnlyAfterCommitIsRolledBackByReverseProbesDuringProbation) {
  const std::vector<std::string> keys = test_keys();
  Kvd s(KVD_BIN, {"--probation-ms", "20000", "--shadow-rate", "1"}, "",
        {"KVD_DIVERGE=get-after-commit"});
  populate(s.port(), keys);
  const pid_t standby = s.serving_pid();
  Load load(s.port(), keys);
  const size_t before = s.events().size();
  // The successor's pid is not waited for: with every read probed, the standby can roll
  // it back before its pid file could be read.
  ASSERT_TRUE(s.signal_upgrade(KVD_DIVERGENT_BIN));
  ASSERT_TRUE(eventually([&] { return s.events().size() > before; }, 60)) << s.log();
  const std::string committed = s.events()[before];
  EXPECT_EQ(field(committed, "outcome"), "committed") << committed;
  EXPECT_NE(committed.find("\"mismatched\":0"), std::string::npos) << committed;
  ASSERT_TRUE(eventually([&] { return s.events().size() >= before + 2; }, 15)) << s.log();
  const std::string e = s.events()[before + 1];
  EXPECT_EQ(field(e, "outcome"), "rolled back") << e;
  EXPECT_NE(field(e, "reason").find("shadow probe mismatch"), std::string::npos) << e;
  EXPECT_NE(field(e, "reason").find("evaluated by the standby"), std::string::npos) << e;
  EXPECT_LT(std::stoll(field(e, "total_us")), 15'000'000) << "long before the window ends";
  ASSERT_TRUE(eventually([&] { return s.serving_pid() == standby; }, 5));
  load.stop();
  // Clients did see the bug (that is what probation is for), but no acknowledged write
  // was lost in the rollback.
  expect_exact(s.port(), keys, load.acked());
}

TEST(Shadow, ACorruptingMigrationIsCaughtByProbesBeforeCommit) {
  const std::vector<std::string> keys = test_keys();
  Kvd s(KVD_V1_BIN, {"--probation-ms", "0", "--shadow-rate", "1", "--shadow-min-probes", "3000"},
        "", {"KVD_DIVERGE=migration"});
  populate(s.port(), keys);
  const pid_t incumbent = s.serving_pid();
  Load load(s.port(), keys);
  EXPECT_EQ(s.upgrade_on_probation(KVD_DIVERGENT_BIN), 0);
  ASSERT_FALSE(s.events().empty()) << s.log();
  const std::string e = s.events().back();
  EXPECT_EQ(field(e, "outcome"), "aborted") << e;
  EXPECT_NE(field(e, "reason").find("shadow probe mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find("!\\\\r\\\\n"), std::string::npos) << "the corrupted value: " << e;
  EXPECT_EQ(s.serving_pid(), incumbent);
  load.stop();
  EXPECT_EQ(load.errors(), 0);
  expect_exact(s.port(), keys, load.acked());
}

TEST(Shadow, ACorruptingMigrationThatNoProbeReadsIsCaughtByTheStateDigest) {
  const std::vector<std::string> keys = test_keys();
  // No probes at all: only the digest at the cut can see the corrupted values.
  Kvd s(KVD_V1_BIN, {"--probation-ms", "20000", "--digest", "1"}, "", {"KVD_DIVERGE=migration"});
  populate(s.port(), keys);
  const pid_t standby = s.serving_pid();
  const size_t before = s.events().size();
  // The digests take a millisecond here: the rollback may be over before a pid is read.
  ASSERT_TRUE(s.signal_upgrade(KVD_DIVERGENT_BIN));
  ASSERT_TRUE(eventually([&] { return s.events().size() >= before + 2; }, 15)) << s.log();
  EXPECT_EQ(field(s.events()[before], "outcome"), "committed") << s.events()[before];
  const std::string e = s.events()[before + 1];
  EXPECT_EQ(field(e, "outcome"), "rolled back") << e;
  const std::string reason = field(e, "reason");
  EXPECT_NE(reason.find("state digest mismatch in section 'kvd'"), std::string::npos) << e;
  EXPECT_NE(reason.find("schema version 1"), std::string::npos) << "compared as v1: " << e;
  EXPECT_NE(field(e, "digest").find("mismatch"), std::string::npos) << e;
  ASSERT_TRUE(eventually([&] { return s.serving_pid() == standby; }, 5));
  expect_exact(s.port(), keys, 0);
}

TEST(Shadow, CorrectUpgradesV1ToV2AndBackUnderRealClientsNeverRaiseAFalseMismatch) {
  Kvd s(KVD_V1_BIN, {"--probation-ms", kProbationMs, "--shadow-rate", "0.2", "--digest", "1"});
  const std::string stop = s.dir() + "/stop";
  // redis-benchmark: strings, lists, sets, hashes and sorted sets over 10,000 keys, in a
  // loop; redis-py: reads of every mirrored kind and the writes they read.
  const pid_t bench = testing::spawn_process(
      {"/usr/bin/redis-benchmark", "-p", std::to_string(s.port()), "-c", "8", "-n", "100000000",
       "-r", "10000", "-l", "-q", "-t", "set,get,lpush,lrange_100,sadd,hset,zadd,mset,incr"},
      s.dir() + "/bench.out");
  const pid_t py = testing::spawn_process(
      {"/usr/bin/python3", REDIS_PY_TRAFFIC, std::to_string(s.port()), stop}, s.dir() + "/py.out");
  ASSERT_GT(bench, 0);
  ASSERT_GT(py, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  uint64_t evaluated_before = 0, evaluated_after = 0, digests = 0;
  for (int i = 0; i < kCleanUpgrades; ++i) {
    const std::string to = i % 2 == 0 ? KVD_BIN : KVD_V1_BIN;
    const size_t before = s.events().size();
    ASSERT_GT(s.upgrade_on_probation(to), 0) << "upgrade " << i << ":\n" << s.log();
    ASSERT_TRUE(eventually([&] { return s.events().size() >= before + 2; }, 20)) << s.log();
    const std::string c = s.events()[before], p = s.events()[before + 1];
    ASSERT_EQ(field(c, "outcome"), "committed") << c;
    ASSERT_EQ(field(p, "outcome"), "promoted") << "upgrade " << i << ": " << p;
    EXPECT_NE(c.find("\"mismatched\":0"), std::string::npos) << c;
    EXPECT_NE(p.find("\"mismatched\":0"), std::string::npos) << p;
    ASSERT_EQ(field(p, "digest").rfind("agreed", 0), 0u) << "upgrade " << i << ": " << p;
    evaluated_before += std::stoull(c.substr(c.find("\"evaluated\":") + 12));
    evaluated_after += std::stoull(p.substr(p.find("\"evaluated\":") + 12));
    ++digests;
  }
  { std::ofstream(stop) << "1"; }
  ::kill(bench, SIGTERM);
  testing::wait_process(bench, 10);
  EXPECT_EQ(testing::wait_process(py, 30), 0) << testing::slurp(s.dir() + "/py.out");
  // The probes were real, on both sides of COMMIT: hundreds per upgrade in the default
  // build (~400 evaluated per window), tens under the sanitizers' slower clients. Probes
  // still pending or unreported when a window ends are not counted.
  EXPECT_GT(evaluated_before, 100u);
  EXPECT_GT(evaluated_after, 5u * kCleanUpgrades);
  EXPECT_EQ(digests, static_cast<uint64_t>(kCleanUpgrades));
  std::fprintf(
      stderr, "%d upgrades: %llu probes before COMMIT, %llu during probation, %llu digests\n",
      kCleanUpgrades, static_cast<unsigned long long>(evaluated_before),
      static_cast<unsigned long long>(evaluated_after), static_cast<unsigned long long>(digests));
}

}  // namespace
}  // namespace baton
