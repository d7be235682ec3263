// Live upgrades of samples/counter as real processes: connections survive, counts stay
// exact, every failure before COMMIT leaves the incumbent serving. Loopback only, port 0,
// a temporary directory per test, bounded waits; every process is reaped.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "server_process.h"
#include "shm_util.h"

extern char** environ;

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::Clock;
using testing::eventually;
using testing::slurp;

class Client {
 public:
  /// To 127.0.0.1 (or [::1] with `v6`) at `port`.
  explicit Client(int port, bool v6 = false)
      : fd_(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{AF_INET, htons(static_cast<uint16_t>(port)), {htonl(INADDR_LOOPBACK)}, {}};
    sockaddr_in6 a6{};
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons(static_cast<uint16_t>(port));
    a6.sin6_addr = in6addr_loopback;
    connect_to(v6 ? reinterpret_cast<sockaddr*>(&a6) : reinterpret_cast<sockaddr*>(&a),
               v6 ? sizeof a6 : sizeof a);
  }
  /// To the Unix socket at `path`.
  explicit Client(const std::string& path) : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un a{AF_UNIX, {}};
    std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
    connect_to(reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  void connect_to(const sockaddr* addr, socklen_t len) {
    timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    connected_ = ::connect(fd_.get(), addr, len) == 0;
  }
  bool connected() const { return connected_; }
  // One command, one reply line; "" on a closed or silent connection.
  std::string cmd(const std::string& c) {
    std::string line = c + "\n";
    if (::write(fd_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      return "";
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string out = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return out;
      }
      char tmp[256];
      ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
      if (n <= 0) return "";
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  long num(const std::string& c) { return std::atol(cmd(c).c_str()); }

 private:
  UniqueFd fd_;
  bool connected_ = false;
  std::string buf_;
};

// A counter server (samples/counter).
class Server : public testing::ServerProcess {
 public:
  explicit Server(std::vector<std::string> args, std::string failpoints = "",
                  std::string binary = COUNTER_BIN, std::vector<std::string> extra_env = {})
      : ServerProcess(std::move(binary), std::move(args), std::move(failpoints),
                      std::move(extra_env)) {}
};

// Sends INCRs on `c` until `done()` or a deadline, checking each reply is the last + 1.
long incr_until(Client& c, long last, const std::function<bool()>& done, double seconds = 15) {
  auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < until && !done()) {
    long v = c.num("INCR");
    EXPECT_EQ(v, last + 1) << "a count was lost or doubled";
    if (v != last + 1) return v;
    last = v;
  }
  return last;
}

TEST(LiveUpgrade, ClientKeepsItsConnectionNewOnesAreServedAndTheCountIsExact) {
  Server s({"--control", "@baton-it-" + std::to_string(::getpid())});
  ASSERT_GT(s.port(), 0);
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 50; ++i) ASSERT_EQ(c.num("INCR"), i + 1);
  const pid_t before = s.serving_pid();
  ASSERT_EQ(::kill(before, SIGUSR2), 0);
  long last = 50;
  int fresh_ok = 0;
  auto until = Clock::now() + std::chrono::seconds(15);
  while (Clock::now() < until && std::atoi(c.cmd("PID").c_str()) == before) {
    const long v = c.num("INCR");
    ASSERT_EQ(v, last + 1) << "a count was lost or doubled";
    last = v;

    Client fresh(s.port());  // made while the upgrade runs, maybe during the freeze
    if (fresh.connected() && fresh.num("GET") >= last) ++fresh_ok;
  }
  const pid_t after = std::atoi(c.cmd("PID").c_str());
  EXPECT_NE(after, before) << "the upgrade did not complete; log:\n" << s.log();
  EXPECT_GT(fresh_ok, 0);
  EXPECT_TRUE(eventually([&] { return s.serving_pid() == after; }, 5)) << "pidfile not rewritten";
  EXPECT_EQ(c.num("GET"), last);
  Client later(s.port());
  EXPECT_EQ(later.num("INCR"), last + 1);
  EXPECT_EQ(later.num("GEN"), 2);
  ASSERT_EQ(s.events().size(), 1u);
  const std::string e = s.events()[0];

  EXPECT_NE(e.find("\"generation\":2,\"outcome\":\"committed\""), std::string::npos) << e;
  for (const char* field : {"spawn_us", "checkpoint_us", "catchup_us", "blackout_us", "total_us",
                            "checkpoint_bytes", "deltas", "\"fds\":"})
    EXPECT_NE(e.find(field), std::string::npos) << field << " missing in " << e;
  EXPECT_EQ(testing::count_shm_names("baton-" + std::to_string(before) + "-"), 0);
}

TEST(LiveUpgrade, SecondSignalDuringAnUpgradeIsRefusedAndLogged) {
  Server s({"--timeout-ms", "1500"}, "successor.after_hello=hang");
  const pid_t pid = s.serving_pid();
  ASSERT_EQ(::kill(pid, SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.log().find("spawned successor") != std::string::npos; }));
  ASSERT_EQ(::kill(pid, SIGUSR2), 0);
  EXPECT_TRUE(eventually([&] {
    return s.log().find("upgrade request ignored") != std::string::npos;
  })) << s.log();
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); }));
  std::string log = s.log();
  size_t spawned = 0;
  for (size_t at = 0; (at = log.find("spawned successor", at)) != std::string::npos; ++at)
    ++spawned;
  EXPECT_EQ(spawned, 1u) << "never two successors";
  Client c(s.port());
  EXPECT_EQ(c.num("PID"), pid);
}

struct FailCase {
  std::string failpoint;
  // The timeline's reason contains one of these. A crash surfaces wherever the incumbent
  // next notices it, but the reason always carries the successor's exit status.
  std::vector<std::string> reasons;
};

// Names the case in test output (ctest lists it) instead of a byte dump.
void PrintTo(const FailCase& c, std::ostream* os) { *os << c.failpoint; }

class SuccessorFails : public ::testing::TestWithParam<FailCase> {};

TEST_P(SuccessorFails, IncumbentServesOnWithExactStateAndReapsIt) {
  Server s({"--timeout-ms", "1500"}, GetParam().failpoint);
  Client c(s.port());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(c.num("INCR"), i + 1);
  const pid_t pid = s.serving_pid();
  ASSERT_EQ(::kill(pid, SIGUSR2), 0);
  long last = incr_until(c, 20, [&] { return s.upgrade_ended(); });
  ASSERT_TRUE(s.upgrade_ended()) << s.log() << "\nchildren: " << Server::children(pid);

  const std::string e = s.events()[0];
  EXPECT_NE(e.find("\"outcome\":\"aborted\""), std::string::npos) << e;
  bool named = false;
  for (const std::string& r : GetParam().reasons) named |= e.find(r) != std::string::npos;
  EXPECT_TRUE(named) << e;
  EXPECT_EQ(c.num("PID"), pid) << "the incumbent must serve on";
  EXPECT_EQ(c.num("INCR"), last + 1);
  Client fresh(s.port());
  EXPECT_EQ(fresh.num("GET"), last + 1);
  EXPECT_EQ(Server::children(pid), "") << "the successor was not reaped";
  EXPECT_EQ(testing::count_shm_names("baton-" + std::to_string(pid) + "-"), 0);
}

INSTANTIATE_TEST_SUITE_P(
    EachPhase, SuccessorFails,
    ::testing::Values(
        FailCase{"successor.after_hello=crash", {"killed by signal 9"}},
        FailCase{"successor.after_hello=hang", {"successor did not restore within 1.5 s"}},
        FailCase{"successor.after_restore=crash", {"killed by signal 9"}},
        FailCase{"successor.after_restore=hang", {"successor did not restore within 1.5 s"}},
        FailCase{"successor.after_restore=error", {"fail point successor.after_restore"}},
        FailCase{"successor.before_prepared=crash", {"killed by signal 9"}},
        FailCase{"successor.before_prepared=hang",
                 {"successor sent no PREPARED within 1.5 s of the freeze"}},
        FailCase{"successor.after_prepared=crash", {"killed by signal 9"}}),
    [](const auto& info) {
      std::string n = info.param.failpoint;
      for (char& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

TEST(LiveUpgrade, SuccessorTakesOverWhenTheIncumbentDiesAfterPrepared) {
  Server s({}, "incumbent.before_commit=crash");
  Client c(s.port());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(c.num("INCR"), i + 1);
  const pid_t before = s.serving_pid();
  ASSERT_EQ(::kill(before, SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
  const std::string e = s.events()[0];
  EXPECT_NE(e.find("\"outcome\":\"committed\""), std::string::npos) << e;
  EXPECT_NE(e.find("took over"), std::string::npos) << e;
  EXPECT_NE(c.num("PID"), before);
  EXPECT_EQ(c.num("INCR"), 21) << "every acknowledged write survives the takeover";
}

TEST(LiveUpgrade, CorruptDeltaFrameAbortsNamingTheChecksum) {
  Server s({"--timeout-ms", "3000"}, "incumbent.corrupt_frame=error");
  Client c(s.port());
  const pid_t pid = s.serving_pid();
  ASSERT_EQ(::kill(pid, SIGUSR2), 0);
  long last = incr_until(c, 0, [&] { return s.upgrade_ended(); });  // writes make frames
  ASSERT_TRUE(s.upgrade_ended()) << s.log();
  const std::string e = s.events()[0];
  EXPECT_NE(e.find("\"outcome\":\"aborted\""), std::string::npos) << e;
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
  EXPECT_EQ(c.num("INCR"), last + 1);
  EXPECT_EQ(c.num("PID"), pid);
}

TEST(LiveUpgrade, SuccessorThatCannotReadTheSchemaIsRefusedAtHello) {
  Server s({"--schema-version", "3", "--successor-schema", "1"});
  Client c(s.port());
  ASSERT_EQ(c.num("INCR"), 1);
  ASSERT_EQ(::kill(s.serving_pid(), SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
  const std::string e = s.events()[0];
  EXPECT_NE(e.find("successor reads section 'counter' schema versions 0..2, this incumbent "
                   "writes version 3"),
            std::string::npos)
      << e;
  EXPECT_EQ(c.num("INCR"), 2);
}

TEST(LiveUpgrade, TheSuccessorIsTheBinaryOnDiskAtUpgradeTime) {
  char tmpl[] = "/tmp/baton-bin-XXXXXX";
  std::string bin_dir = ::mkdtemp(tmpl);
  std::string bin = bin_dir + "/counter";
  fs::copy_file(COUNTER_BIN, bin);
  ::chmod(bin.c_str(), 0755);
  {
    Server s({}, "", bin);
    Client c(s.port());
    ASSERT_EQ(c.num("INCR"), 1);
    // An operator installs a new build over the old path, then signals.
    std::string next = bin + ".new";
    std::ofstream(next) << "#!/bin/sh\ntouch " << bin_dir << "/new-build-ran\nexec " << COUNTER_BIN
                        << " \"$@\"\n";
    ::chmod(next.c_str(), 0755);
    ASSERT_EQ(::rename(next.c_str(), bin.c_str()), 0);
    ASSERT_EQ(::kill(s.serving_pid(), SIGUSR2), 0);
    ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
    EXPECT_NE(s.events()[0].find("committed"), std::string::npos) << s.events()[0];
    EXPECT_TRUE(fs::exists(bin_dir + "/new-build-ran"));
    EXPECT_EQ(c.num("INCR"), 2);
  }
  fs::remove_all(bin_dir);
}

TEST(LiveUpgrade, Ipv6AndUnixListenersAndTheirConnectionsMove) {
  {
    UniqueFd probe(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (!probe || ::bind(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      GTEST_SKIP() << "no IPv6 loopback on this machine";
    }
  }
  Server s({"--bind", "::1", "--unix", "{dir}/counter.sock"});
  const std::string path = s.dir() + "/counter.sock";
  Client v6(s.port(), true), local(path);
  ASSERT_TRUE(v6.connected());
  ASSERT_TRUE(local.connected());
  EXPECT_EQ(v6.num("INCR"), 1);
  EXPECT_EQ(local.num("INCR"), 2);
  const pid_t before = s.serving_pid();
  ASSERT_EQ(::kill(before, SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
  EXPECT_NE(s.events()[0].find("committed"), std::string::npos) << s.events()[0];
  EXPECT_EQ(v6.num("INCR"), 3);
  EXPECT_EQ(local.num("INCR"), 4);
  EXPECT_NE(v6.num("PID"), before);
  Client v6_new(s.port(), true), local_new(path);
  EXPECT_EQ(v6_new.num("INCR"), 5) << "the IPv6 listener moved";
  EXPECT_EQ(local_new.num("INCR"), 6) << "the Unix listener moved";
}

TEST(LiveUpgrade, EachServingGenerationTellsSystemdItsPid) {
  // A stand-in for systemd's notify socket, in the abstract namespace.
  std::string name = "baton-it-notify-" + std::to_string(::getpid());
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  timeval tv{10, 0};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto next = [&] {
    char buf[256];
    ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  Server s({}, "", COUNTER_BIN, {"NOTIFY_SOCKET=@" + name});
  const pid_t first = s.serving_pid();
  EXPECT_EQ(next(), "MAINPID=" + std::to_string(first) + "\nREADY=1\n");
  ASSERT_EQ(::kill(first, SIGUSR2), 0);
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
  const pid_t second = s.serving_pid();  // written before the event line
  EXPECT_NE(second, first);
  EXPECT_EQ(next().rfind("RELOADING=1\nSTATUS=upgrading to generation 2\nMONOTONIC_USEC=", 0), 0u);

  EXPECT_EQ(next(), "MAINPID=" + std::to_string(second) + "\nREADY=1\n");
}

// Issue 14: the other-uid refusal runs when the suite is not root too. SO_PEERCRED
// reports the peer's kernel uid, translated into the server's user namespace, and an
// unprivileged user has one kernel uid only: a client in a user namespace of its own
// (unshare -U, -r) still shows the server that uid, and so does a server in one. Another
// uid needs root (setpriv to nobody) or the user's subordinate uids (/etc/subuid, mapped
// by newuidmap: unshare --map-auto --setuid 1, that namespace's uid 1). Without
// either, the refusal is skipped, and the rest runs as the user.
TEST(Batonctl, UpgradesReportsStatusAndRefusesOtherUids) {
  std::string sock = "@baton-it-ctl-" + std::to_string(::getpid());
  Server s({"--control", sock});
  const bool root = ::geteuid() == 0;
  if (!fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs setpriv (util-linux)";
  // posix_spawn (+ setpriv), not fork: forking a process with sanitizer threads is not
  // reliable (under TSan the child died of a signal). `as_other` runs batonctl as another
  // uid, else as this process's.
  auto run = [&](bool as_other, const std::string& what, int* status) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::string();
    std::vector<std::string> args;
    if (as_other && root) {
      args = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    } else if (as_other) {
      // unshare sets the uid itself: an exec as an unmapped uid would drop the
      // namespace's capabilities that setpriv needs.
      args = {"/usr/bin/unshare", "--map-auto", "--setuid", "1", "--setgid", "1"};
    }
    for (std::string a : {std::string(BATONCTL_BIN), std::string("--socket"), sock, what})
      args.push_back(a);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);  // refusals are on stderr
    pid_t child = 0;
    int rc = ::posix_spawn(&child, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(p[1]);
    if (rc != 0) {
      ::close(p[0]);
      return std::string();
    }
    std::string out;
    char buf[512];
    for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;)
      out.append(buf, static_cast<size_t>(n));
    ::close(p[0]);
    ::waitpid(child, status, 0);
    return out;
  };
  int status = 0;
  std::string st = run(false, "status", &status);
  EXPECT_NE(st.find(", generation 1: serving\n"), std::string::npos) << st;
  std::string up = run(false, "upgrade", &status);  // waits for the outcome
  EXPECT_NE(up.find("committed: generation 2 serves as pid "), std::string::npos) << up;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  ASSERT_TRUE(eventually([&] { return s.upgrade_ended(); })) << s.log();
  EXPECT_TRUE(eventually(
      [&] {
        return run(false, "status", &status).find(", generation 2: serving") != std::string::npos;
      },
      5))
      << "the control socket moves to the successor";

  // The refusal, by the successor that now holds the control socket.
  if (!root && !fs::exists("/usr/bin/newuidmap")) {
    GTEST_SKIP() << "not root, and no newuidmap (uidmap) to map subordinate uids: no other uid "
                    "to connect as";
  }
  std::string refused = run(true, "status", &status);
  if (!root && refused.rfind("unshare: ", 0) == 0) {
    GTEST_SKIP() << "not root, and no subordinate uids to connect as (/etc/subuid): " << refused;
  }
  const std::string prefix = "batonctl: uid ";
  const size_t at = refused.find(prefix);
  ASSERT_NE(at, std::string::npos) << refused;
  const long uid = std::atol(refused.c_str() + at + prefix.size());
  EXPECT_NE(uid, static_cast<long>(::geteuid())) << refused;
  if (root) {
    EXPECT_EQ(uid, 65534) << refused;
  }
  EXPECT_NE(
      refused.find(prefix + std::to_string(uid) + " may not control this process (SO_PEERCRED)"),
      std::string::npos)
      << refused;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 5) << "status " << status;
  EXPECT_NE(s.log().find("refused a control connection"), std::string::npos);
}

}  // namespace
}  // namespace baton
