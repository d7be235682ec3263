// Issue 14's cases against kvd as a real process: hostile environments (a small
// /dev/shm, PID 1 of a namespace), hostile users and signals. Each test failed before its
// fix. Loopback only, port 0, a temporary directory per test, bounded waits, all reaped.
// Tests that need a private mount or PID namespace make it in their own process (ctest
// runs each test alone), so nothing leaks into the machine's /dev/shm or process tree.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "baton/runtime.h"
#include "kvd_process.h"
#include "server_process.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::field;
using testing::Kvd;
using testing::RespClient;

// Gives this test process (and the servers it starts) its own /dev/shm: a tmpfs mounted
// with `options` in a private mount namespace. Empty on success, else why not.
std::string private_dev_shm(const std::string& options) {
  if (::unshare(CLONE_NEWNS) != 0) return std::string("unshare(CLONE_NEWNS): ") + strerror(errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return std::string("making / private: ") + strerror(errno);
  }
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    return "mounting a tmpfs with " + options + " on /dev/shm: " + strerror(errno);
  }
  return "";
}

// `count` values of `bytes` each under "big:<i>", pipelined in batches.
void load(RespClient& c, int count, size_t bytes) {
  for (int i = 0; i < count;) {
    std::string batch;
    const int end = std::min(count, i + 32);
    for (int k = i; k < end; ++k) {
      const std::string key = "big:" + std::to_string(k);
      const std::string value(bytes, static_cast<char>('a' + k % 26));
      batch += "*3\r\n$3\r\nSET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n$" +
               std::to_string(value.size()) + "\r\n" + value + "\r\n";
    }
    ASSERT_TRUE(c.send_raw(batch));
    for (int k = i; k < end; ++k) ASSERT_EQ(c.reply(), "OK") << "key " << k;
    i = end;
  }
}

void expect_loaded(RespClient& c, int count, size_t bytes) {
  ASSERT_EQ(c.call({"DBSIZE"}), std::to_string(count));
  for (int k = 0; k < count; k += 97) {
    EXPECT_EQ(c.call({"GET", "big:" + std::to_string(k)}),
              std::string(bytes, static_cast<char>('a' + k % 26)))
        << k;
  }
}

constexpr size_t kControlConnections = 8;  // ControlServer::kMaxConnections
constexpr int kBigKeys = 1300;             // 85 MB of values: more than Docker's /dev/shm
constexpr size_t kBigValue = 64 << 10;     //

// Case 1, Docker's default: a 64 MiB /dev/shm and 85 MB of state. The checkpoint used to
// be a sparse /dev/shm object; the writer touched a page tmpfs could not supply, and the
// incumbent died of SIGBUS with every key. Now the segment is a memfd, which /dev/shm's
// size does not bound, and the upgrade commits.
TEST(Hardening, SmallDevShmDoesNotBoundTheCheckpoint) {
  if (std::string why = private_dev_shm("size=64m"); !why.empty()) GTEST_SKIP() << why;
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  load(c, kBigKeys, kBigValue);
  const pid_t next = s.upgrade_to(KVD_BIN);
  ASSERT_GT(next, 0) << s.log();
  RespClient after(s.port());
  expect_loaded(after, kBigKeys, kBigValue);
}

// Case 1, where the checkpoint must live in /dev/shm (its huge= option is what gives
// transparent huge pages) and it is too small: the upgrade aborts, naming /dev/shm, what
// was free and what the state needs; the incumbent serves on with every key.
TEST(Hardening, FullDevShmAbortsTheUpgradeWithWhatWasNeeded) {
  if (std::string why = private_dev_shm("size=64m,huge=always"); !why.empty()) {
    GTEST_SKIP() << why;
  }
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  load(c, kBigKeys, kBigValue);
  const pid_t before = s.serving_pid();
  EXPECT_EQ(s.upgrade_to(KVD_BIN), 0) << "the checkpoint cannot fit; the upgrade must abort";
  ASSERT_FALSE(s.events().empty()) << s.log();
  const std::string e = s.events().back();
  EXPECT_NE(e.find("\"outcome\":\"aborted\""), std::string::npos) << e;
  EXPECT_NE(e.find("/dev/shm"), std::string::npos) << e;
  EXPECT_NE(e.find("free"), std::string::npos) << e;
  EXPECT_NE(e.find("--shm-size"), std::string::npos) << e;
  EXPECT_EQ(s.serving_pid(), before);
  expect_loaded(c, kBigKeys, kBigValue);
}

long status_kib(pid_t pid, const std::string& field) {
  const std::string s = testing::slurp("/proc/" + std::to_string(pid) + "/status");
  const auto at = s.find(field + ":");
  return at == std::string::npos ? -1 : std::atol(s.c_str() + at + field.size() + 1);
}

// The sockets among a process's fds.
size_t open_sockets(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    n += fs::read_symlink(it->path(), ec).string().rfind("socket:", 0) == 0;
  }
  return n;
}

// Upgrades through the control socket (pids in the pidfile are the namespace's, not
// ours to signal) and promotes; true once the new generation serves for good.
bool upgrade_and_promote(testing::ServerProcess& s) {
  const std::string ctl = s.dir() + "/ctl";
  const size_t before = s.events().size();
  if (testing::control_command(ctl, "upgrade").rfind("ok:", 0) != 0) return false;
  if (!eventually([&] { return s.events().size() > before; }, 60)) return false;
  if (s.events().back().find("\"outcome\":\"committed\"") == std::string::npos) return false;
  if (!eventually([&] {
        return testing::control_command(ctl, "status").find("\"phase\":\"probation\"") !=
               std::string::npos;
      })) {
    return false;
  }
  if (testing::control_command(ctl, "promote").rfind("ok:", 0) != 0) return false;
  return eventually([&] {
    return s.events().size() > before + 1 &&
           s.events().back().find("\"outcome\":\"promoted\"") != std::string::npos;
  });
}

// Case 2: kvd as PID 1 of a PID namespace (`docker run image kvd`). The old process used
// to exit after the handoff, and the kernel then killed its namespace, successor and all.
// Now PID 1 stays as the namespace's init, re-executed with none of the server's memory
// or fds, while two generations in turn serve every key; SIGTERM to it stops the server
// and then it, as `docker stop` does.
TEST(Hardening, Pid1OfANamespaceStaysAsItsInitAndTheSuccessorServes) {
  // Only the next child goes into the new namespace; later ones (LeakSanitizer's tracer
  // at exit among them) go back to ours, or they could not be created at all.
  UniqueFd ours(::open("/proc/self/ns/pid_for_children", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ours) << strerror(errno);
  if (::unshare(CLONE_NEWPID) != 0) GTEST_SKIP() << "unshare(CLONE_NEWPID): " << strerror(errno);
  testing::ServerProcess s(KVD_BIN, {"--control", "{dir}/ctl"});
  ASSERT_EQ(::setns(ours.get(), CLONE_NEWPID), 0) << strerror(errno);
  ASSERT_TRUE(s.in_pid_namespace());
  ASSERT_EQ(s.serving_pid(), 1) << "the server is its namespace's init";
  const pid_t init = s.first_pid();  // the same process, by the pid we know it by
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  constexpr int kKeys = 600;  // about 40 MB
  load(c, kKeys, kBigValue);
  const long rss_serving = status_kib(init, "VmRSS");
  ASSERT_GT(rss_serving, 30'000);

  ASSERT_TRUE(upgrade_and_promote(s)) << s.log();
  EXPECT_NE(s.serving_pid(), 1);
  ASSERT_TRUE(eventually([&] { return status_kib(init, "VmRSS") < rss_serving / 4; }, 10))
      << "PID 1 still holds " << status_kib(init, "VmRSS") << " KiB; it held " << rss_serving
      << " KiB serving\n"
      << s.log();
  EXPECT_EQ(open_sockets(init), 0u) << "PID 1 keeps no client's socket open";
  expect_loaded(c, kKeys, kBigValue);  // the same connection, served by the successor

  // The successor's own successor: the successor exits, and its child is PID 1's orphan.
  ASSERT_TRUE(upgrade_and_promote(s)) << s.log();
  expect_loaded(c, kKeys, kBigValue);
  EXPECT_EQ(c.call({"SET", "after", "two"}), "OK");

  ASSERT_EQ(::kill(init, SIGTERM), 0);
  const int status = testing::wait_process(init, 20);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n"
                                                             << s.log();
  EXPECT_NE(s.log().find("stopping"), std::string::npos) << "the serving kvd got the SIGTERM";
}

UniqueFd dial_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof addr.sun_path - 1));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Case 3: control connections that never send a command used to be read with a 1 s
// blocking timeout each, on the server's loop, before the peer was even checked; five
// froze every client for 5 s. Now twelve silent ones cost the clients nothing: the
// loop answers a PING at once, the ninth and later are told the server is busy, and
// each silent one is closed with an error after its deadline.
TEST(Hardening, SilentControlConnectionsNeverStallTheLoop) {
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_EQ(c.call({"PING"}), "PONG");
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 12; ++i) {
    silent.push_back(dial_unix(s.control_path()));
    ASSERT_TRUE(silent.back()) << i;
  }
  const auto t0 = testing::Clock::now();
  ASSERT_EQ(c.call({"PING"}), "PONG");
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(testing::Clock::now() - t0);
  // Before: one blocking second per silent connection (12 s). A loose bound: this is a
  // stall test, not a latency measurement.
  EXPECT_LT(ms.count(), 500) << "a PING took " << ms.count() << " ms";
  size_t busy = 0, timed_out = 0;
  for (UniqueFd& fd : silent) {
    const std::string r = read_all(fd.get());
    busy += r.rfind("error: busy", 0) == 0;
    timed_out += r.rfind("error: no request within", 0) == 0;
  }
  EXPECT_EQ(busy, 12u - kControlConnections);
  EXPECT_EQ(timed_out, kControlConnections);
  EXPECT_NE(s.control("status").find("\"phase\":\"serving\""), std::string::npos);
}

// Case 6: --control used to unlink whatever was at the path, a regular file included,
// and a second server silently took a live server's socket. Now a file is refused, a
// live socket is refused naming its pid, and only a stale one is replaced.
TEST(Hardening, ControlPathThatIsAFileOrALiveSocketIsRefused) {
  Kvd s(KVD_BIN);
  const std::string file = s.dir() + "/not-a-socket";
  { std::ofstream(file) << "precious\n"; }
  const std::string out = s.dir() + "/second.out";
  auto second = [&](const std::string& path) {
    const pid_t p = testing::spawn_process(
        {KVD_BIN, "--port", "0", "--control", path, "--probation-ms", "0"}, out);
    return testing::wait_process(p, 10);
  };
  int status = second(file);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_NE(testing::slurp(out).find("exists and is not a socket"), std::string::npos)
      << testing::slurp(out);
  EXPECT_EQ(testing::slurp(file), "precious\n");

  status = second(s.control_path());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_NE(testing::slurp(out).find("belongs to a running server (pid " +
                                     std::to_string(s.serving_pid()) + ")"),
            std::string::npos)
      << testing::slurp(out);
  EXPECT_NE(s.control("status").find("\"pid\":" + std::to_string(s.serving_pid())),
            std::string::npos)
      << "the first server keeps its socket";
}

// Case 6, the rest: the path used to stay behind at exit. Now whoever serves last
// removes it (here a successor, after an upgrade), and a stale one left by a SIGKILL is
// replaced by the next server.
TEST(Hardening, ControlPathIsRemovedAtExitAndAStaleOneReplaced) {
  Kvd s(KVD_BIN);
  ASSERT_GT(s.upgrade_to(KVD_BIN), 0) << s.log();
  ASSERT_TRUE(fs::exists(s.control_path()));
  ASSERT_EQ(::kill(s.serving_pid(), SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !fs::exists(s.control_path()); }, 10)) << s.log();

  // A stale socket: bound, never listened on or closed without unlink.
  const std::string stale = s.dir() + "/stale";
  {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, stale.data(), stale.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  testing::ServerProcess next(KVD_BIN, {"--control", stale, "--probation-ms", "0"});
  EXPECT_GT(next.port(), 0) << next.log();
  EXPECT_NE(testing::control_command(stale, "status").find("\"phase\":\"serving\""),
            std::string::npos)
      << next.log();
}

// Case 4: a client announced a million arguments, sent 7 MB of them, then one byte at a
// time; each byte re-parsed everything pending (about 20 ms), and every other client
// waited behind it. Now the parse resumes where it stopped: 100 trickled bytes, each
// followed by another client's PING, cost about what the same rounds cost with a small
// pending request, measured first in the same run (a ratio, not a time: sanitizer builds
// are ten times slower, the fix's effect is a hundred times). Each side is the fastest of
// three batches: the server may still be reading the last megabytes of the 7 MB (growing
// its buffers, one page fault at a time) during the first batch, a one-time cost that is
// not the per-byte cost this case is about (it made the first batch 20 times the baseline
// on a machine with slow page faults).
TEST(Hardening, ATricklingHugeRequestDoesNotStarveOtherClients) {
  Kvd s(KVD_BIN);
  RespClient attacker(s.port()), small(s.port()), other(s.port());
  ASSERT_TRUE(attacker.connected() && small.connected() && other.connected());
  constexpr int kArgs = 1'000'000;
  constexpr int kTrickled = 100;
  constexpr int kBatches = 3;
  // The fastest of kBatches batches of 100 rounds: one trickled byte to `client`, then a
  // PING from `other`. -1 if a round fails.
  auto rounds = [&](RespClient& client, const char* what) {
    double best = -1;
    for (int batch = 0; batch < kBatches; ++batch) {
      const auto t0 = testing::Clock::now();
      for (int i = 0; i < kTrickled; ++i) {
        if (!client.send_raw("y") || other.call({"PING"}) != "PONG") return -1.0;
      }
      const double ms =
          std::chrono::duration<double, std::milli>(testing::Clock::now() - t0).count();
      std::printf("%d rounds behind %s: %.1f ms\n", kTrickled, what, ms);
      best = best < 0 ? ms : std::min(best, ms);
    }
    return best;
  };
  const std::string tail = "$" + std::to_string(kTrickled * kBatches) + "\r\n";
  ASSERT_TRUE(small.send_raw("*2\r\n$4\r\nECHO\r\n" + tail));
  ASSERT_EQ(other.call({"PING"}), "PONG");
  const double baseline_ms = rounds(small, "a small request");
  ASSERT_GE(baseline_ms, 0);
  std::string bulk = "*" + std::to_string(kArgs + 1) + "\r\n";
  bulk.reserve(8u << 20);
  for (int i = 0; i < kArgs; ++i) bulk += "$1\r\nx\r\n";
  bulk += tail;
  ASSERT_TRUE(attacker.send_raw(bulk));
  ASSERT_EQ(other.call({"PING"}), "PONG");
  const double huge_ms = rounds(attacker, "a 7 MB request");
  ASSERT_GE(huge_ms, 0);
  std::printf(
      "%d rounds, fastest of %d: %.1f ms behind a small request, %.1f ms behind a 7 MB "
      "one\n",
      kTrickled, kBatches, baseline_ms, huge_ms);
  // Before the fix: 2814 ms against about 3 (a thousand times). A loose bound: 5 times,
  // plus 50 ms for scheduling noise on a tiny baseline. Sanitizer builds measured 50
  // (ASan) and 70 (TSan) times the baseline when only one batch was timed (issue 14's
  // closing note called it a per-read cost not yet explained; the first batch here shows
  // it was the rest of the 7 MB being read): reported, not judged, there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_LOG_(INFO) << "sanitizer build: the ratio is reported only";
#else
  EXPECT_LT(huge_ms, 5 * baseline_ms + 50)
      << kTrickled << " trickled bytes and PINGs took " << huge_ms << " ms behind a 7 MB request, "
      << baseline_ms << " ms behind a small one (fastest of " << kBatches << " batches)";
#endif
  ASSERT_TRUE(small.send_raw("\r\n"));
  EXPECT_EQ(small.reply(), std::string(kTrickled * kBatches, 'y'));
  ASSERT_TRUE(attacker.send_raw("\r\n"));
  EXPECT_EQ(attacker.reply().rfind("(error) ERR unknown command 'x'", 0), 0u);
  EXPECT_EQ(attacker.call({"PING"}), "PONG") << "the connection is framed still";
}

// Case 5: a server started through a symlink (`current -> releases/r1`) used to spawn the
// resolved r1 again after the operator switched `current` to r2, and "commit" with no
// change of version. Now the successor is the path it was started from, and the log
// names the file spawned, with where it resolves to and its build id.
TEST(Hardening, AServerStartedThroughASymlinkUpgradesToWhatItNamesNow) {
  char tmpl[] = "/tmp/baton-it-releases-XXXXXX";
  const std::string root = ::mkdtemp(tmpl);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{root};
  for (auto [release, binary] : {std::pair{"r1", KVD_V1_BIN}, std::pair{"r2", KVD_BIN}}) {
    fs::create_directories(root + "/releases/" + release);
    fs::copy_file(binary, root + "/releases/" + release + "/kvd");
  }
  fs::create_directory_symlink("releases/r1", root + "/current");
  testing::ServerProcess s(root + "/current/kvd", {"--control", "{dir}/ctl"});
  RespClient c(s.port());
  ASSERT_NE(c.call({"INFO"}).find("kvd_schema_version:1"), std::string::npos);

  fs::create_directory_symlink("releases/r2", root + "/current.new");
  fs::rename(root + "/current.new", root + "/current");  // what a deploy tool does
  const size_t before = s.events().size();
  ASSERT_EQ(::kill(s.serving_pid(), SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.events().size() > before; }, 60)) << s.log();
  ASSERT_NE(s.events().back().find("\"outcome\":\"committed\""), std::string::npos)
      << s.events().back();
  EXPECT_NE(c.call({"INFO"}).find("kvd_schema_version:2"), std::string::npos)
      << "the successor must be r2\n"
      << s.log();
  const std::string log = s.log();
  EXPECT_NE(log.find(": " + root + "/current/kvd -> " + root + "/releases/r2/kvd, build id "),
            std::string::npos)
      << log;
}

// Case 7: SIGTERM to the successor during the handoff. kvd blocks SIGTERM to read it in
// its loop, so it stayed pending through take_over(): the upgrade committed, then the
// successor stopped, and nothing served. Now a pending stop signal aborts the upgrade
// before the successor serves, and the incumbent serves on with every key.
TEST(Hardening, SigtermToTheSuccessorDuringTheHandoffAbortsTheUpgrade) {
  Kvd s(KVD_BIN, {}, "successor.after_restore=delay");
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  const pid_t incumbent = s.serving_pid();
  const size_t before = s.events().size();
  ASSERT_EQ(::kill(incumbent, SIGUSR2), 0);
  pid_t successor = 0;
  ASSERT_TRUE(eventually([&] {
    const std::string log = s.log();
    const auto at = log.find("spawned successor pid ");
    if (at != std::string::npos) successor = std::atoi(log.c_str() + at + 22);
    return successor > 0 && log.find("fail point successor.after_restore") != std::string::npos;
  }));
  ASSERT_EQ(::kill(successor, SIGTERM), 0);  // a descendant of the server we started
  ASSERT_TRUE(eventually([&] { return s.events().size() > before; }, 30)) << s.log();
  const std::string e = s.events().back();
  EXPECT_NE(e.find("\"outcome\":\"aborted\""), std::string::npos) << e;
  EXPECT_NE(e.find("SIGTERM before it served"), std::string::npos) << e;
  EXPECT_EQ(s.serving_pid(), incumbent) << "the pidfile names the process that serves";
  EXPECT_EQ(c.call({"GET", "k"}), "v");
  EXPECT_EQ(c.call({"SET", "k2", "v2"}), "OK");
  EXPECT_TRUE(eventually([&] { return ::kill(successor, 0) != 0; }, 10))
      << "the successor stopped and was reaped";
}

// Starts an upgrade of `s` and waits for its record; returns it (empty on timeout).
std::string upgrade_record(Kvd& s, int timeout_s) {
  const size_t before = s.events().size();
  if (::kill(s.serving_pid(), SIGUSR2) != 0) return "";
  if (!eventually([&] { return s.events().size() > before; }, timeout_s)) return "";
  return s.events().back();
}

// Case 8: a successor that hung inside the freeze blacked every client out for 5.0 s
// (the PREPARED deadline). One freeze deadline, tied to the blackout target, now bounds
// it: 250 ms, and the aborted record says so.
TEST(Hardening, ASuccessorThatHangsInsideTheFreezeBlacksOutForAQuarterSecondAtMost) {
  Kvd s(KVD_BIN, {}, "successor.before_prepared=hang");
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  const pid_t incumbent = s.serving_pid();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = upgrade_record(s, 30);
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(e.empty()) << s.log();
  EXPECT_EQ(field(e, "outcome"), "aborted") << e;
  const int64_t deadline_us = Timeouts{}.freeze_us;  // 250 ms; 2 s in sanitizer builds
  char deadline[32];
  if (deadline_us < 1'000'000) {
    std::snprintf(deadline, sizeof deadline, "%lld ms", static_cast<long long>(deadline_us / 1000));
  } else {
    std::snprintf(deadline, sizeof deadline, "%.1f s", deadline_us / 1e6);
  }
  EXPECT_NE(e.find(std::string("no PREPARED within ") + deadline + " of the freeze"),
            std::string::npos)
      << e;
  const int64_t blackout_us = std::stoll(field(e, "blackout_us"));
  EXPECT_GE(blackout_us, deadline_us) << e;
  EXPECT_LT(blackout_us, deadline_us + 1'750'000) << "clients waited for the old 5 s: " << e;
  EXPECT_LT(took_s, 20.0);
  EXPECT_EQ(s.serving_pid(), incumbent);
  EXPECT_EQ(c.call({"GET", "k"}), "v");
}

// Case 8: a successor that hung before RESTORED was noticed only after 120 s. It reports
// progress while it restores; 3 s of silence abort the upgrade.
TEST(Hardening, ASuccessorThatHangsWhileRestoringIsAbortedWithinSeconds) {
  Kvd s(KVD_BIN, {}, "successor.restoring=hang");
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = upgrade_record(s, 40);  // the old code: 120 s
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(e.empty()) << "no record within 40 s: " << s.log();
  EXPECT_EQ(field(e, "outcome"), "aborted") << e;
  EXPECT_NE(e.find("reported no restore progress for 3."), std::string::npos) << e;
  EXPECT_LT(took_s, 30.0);
  EXPECT_EQ(c.call({"GET", "k"}), "v");
  EXPECT_EQ(c.call({"SET", "k2", "v2"}), "OK");
}

// Case 10: a slow reader with more than about 512 KiB of unread replies, or a client
// half-way through sending a huge value, vetoed every upgrade, and the reason named only
// "fd 9". Such states now travel in a memfd (protocol 6): the upgrade commits, and both
// clients carry on exactly where they were.
TEST(Hardening, ASlowReaderAndAHalfSentHugeValueNoLongerVetoAnUpgrade) {
  Kvd s(KVD_BIN);
  RespClient writer(s.port());
  const std::string big(1 << 20, 'b');
  ASSERT_EQ(writer.call({"SET", "big", big}), "OK");
  RespClient slow(s.port(), 4096);  // reads nothing until after the upgrade
  constexpr int kGets = 8;          // 8 MiB of replies: most of them wait in kvd
  std::string gets;
  for (int i = 0; i < kGets; ++i) gets += "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
  ASSERT_TRUE(slow.send_raw(gets));
  RespClient half(s.port());
  const std::string value(3 << 20, 'h');
  const std::string head =
      "*3\r\n$3\r\nSET\r\n$1\r\nh\r\n$" + std::to_string(value.size()) + "\r\n";
  ASSERT_TRUE(half.send_raw(head + value.substr(0, 2 << 20)));  // 2 MiB of 3 sent
  ASSERT_EQ(writer.call({"PING"}), "PONG");                     // kvd has read what it was sent
  const pid_t incumbent = s.serving_pid();
  const std::string e = upgrade_record(s, 60);
  ASSERT_FALSE(e.empty()) << s.log();
  EXPECT_EQ(field(e, "outcome"), "committed") << e;
  std::printf("blackout with about 7 MiB of connection state in memfds: %s us\n",
              field(e, "blackout_us").c_str());  // informational: timing belongs to bench/
  EXPECT_NE(s.serving_pid(), incumbent);
  ASSERT_TRUE(half.send_raw(value.substr(2 << 20) + "\r\n"));
  EXPECT_EQ(half.reply(), "OK");
  for (int i = 0; i < kGets; ++i) ASSERT_EQ(slow.reply(), big) << "reply " << i;
  EXPECT_EQ(writer.call({"GET", "h"}), value);
}

// The lowest fd number `pid` does not use: the kernel gives out that one next.
int lowest_free_fd(pid_t pid) {
  std::set<int> used;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    used.insert(std::atoi(it->path().filename().c_str()));
  }
  int n = 0;
  while (used.count(n) != 0) ++n;
  return n;
}

// Case 10: after EMFILE, clients already in the listener's backlog were never accepted
// until another connection arrived: the listener is edge-triggered, and nothing re-armed
// it. Here the limit is raised from outside (prlimit), which kvd sees no event for; it
// retries accept() every 10 ms after EMFILE and serves the waiting client.
TEST(Hardening, ClientsLeftInTheBacklogByEmfileAreAcceptedOnceFdsAreBack) {
  Kvd s(KVD_BIN);
  const pid_t pid = s.serving_pid();
  RespClient first(s.port());
  ASSERT_EQ(first.call({"PING"}), "PONG");
  rlimit old{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, nullptr, &old), 0);
  // Every lower number is taken: the next fd would be this one, and the limit forbids it.
  rlimit tight{static_cast<rlim_t>(lowest_free_fd(pid)), old.rlim_max};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr), 0);
  RespClient waiting(s.port());  // connected by the kernel, not accepted by kvd
  ASSERT_TRUE(waiting.connected());
  ASSERT_TRUE(waiting.send_raw("*1\r\n$4\r\nPING\r\n"));
  EXPECT_TRUE(
      eventually([&] { return s.log().find("out of file descriptors") != std::string::npos; }, 10))
      << s.log();
  ASSERT_EQ(first.call({"SET", "k", "v"}), "OK") << "kvd serves its clients meanwhile";
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &old, nullptr), 0);  // no event reaches kvd
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(waiting.reply(), "PONG") << "the waiting client was never accepted";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

// Case 10: SIGHUP and SIGUSR1 used to kill kvd with every key. Now they are logged and
// ignored; SIGTERM still stops it, and then its pidfile is removed (it used to stay).
TEST(Hardening, SighupAndSigusr1AreIgnoredAndThePidfileGoesAtExit) {
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  const pid_t pid = s.serving_pid();
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  ASSERT_EQ(::kill(pid, SIGUSR1), 0);
  EXPECT_TRUE(eventually([&] { return s.log().find("signal 10 from pid") != std::string::npos; }))
      << s.log();
  EXPECT_EQ(c.call({"GET", "k"}), "v");
  EXPECT_NE(s.log().find("signal 1 from pid " + std::to_string(::getpid()) + " ignored"),
            std::string::npos)
      << s.log();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !fs::exists(s.dir() + "/pid"); }, 10)) << s.log();
}

// Case 10: two servers on one --pidfile used to overwrite each other's silently. The
// second is refused, naming the first.
TEST(Hardening, ASecondServerOnALivePidfileIsRefused) {
  Kvd s(KVD_BIN);
  const std::string out = s.dir() + "/second.out";
  const pid_t p = testing::spawn_process(
      {KVD_BIN, "--port", "0", "--pidfile", s.dir() + "/pid", "--probation-ms", "0"}, out);
  const int status = testing::wait_process(p, 10);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_NE(
      testing::slurp(out).find("names pid " + std::to_string(s.serving_pid()) + ", a running kvd"),
      std::string::npos)
      << testing::slurp(out);
  EXPECT_EQ(s.serving_pid(), s.first_pid()) << "the pidfile still names the first";
}

}  // namespace
}  // namespace baton
