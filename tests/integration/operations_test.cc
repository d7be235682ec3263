// Issue 11 against kvd as a real process: batonctl's synchronous upgrade, its status,
// its errors and exit codes, and the metrics endpoint scraped every 10 ms across 20
// upgrades under load, parsed by Prometheus's own Python parser. Loopback only, port 0,
// a temporary directory per test, bounded waits, every child reaped.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvd_process.h"
#include "server_process.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::Kvd;
using testing::RespClient;
using testing::slurp;

constexpr const char* kPython = "/usr/bin/python3";  // Debian's, with python3-prometheus-client

// A finished command: exit code (-1 if killed at its deadline), stdout, stderr.
struct Ran {
  int code = -1;
  std::string out, err;
};

Ran run(const std::vector<std::string>& argv, const std::string& dir, double seconds = 30) {
  static int n = 0;
  const std::string out = dir + "/run" + std::to_string(++n) + ".out";
  const std::string err = dir + "/run" + std::to_string(n) + ".err";
  Ran r;
  const pid_t pid = testing::spawn_process(argv, out, err);
  if (pid == 0) return r;
  const int status = testing::wait_process(pid, seconds);
  r.code = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

Ran batonctl(const Kvd& k, std::vector<std::string> args, double seconds = 60) {
  args.insert(args.begin(), {BATONCTL_BIN, "--socket", k.control_path()});
  return run(args, k.dir(), seconds);
}

std::vector<std::string> no_probation() { return {"--probation-ms", "0"}; }

TEST(Batonctl, UpgradeWaitsForTheCommitAndPrintsTheTimeline) {
  Kvd k(KVD_BIN, no_probation());
  RespClient c(k.port());
  ASSERT_EQ(c.call({"SET", "k", "v"}), "OK");
  const pid_t before = k.serving_pid();
  const Ran r = batonctl(k, {"upgrade"});
  ASSERT_EQ(r.code, 0) << r.out << r.err << k.log();
  // It returns only once the new process serves, with the timeline that process wrote.
  const pid_t after = k.serving_pid();
  EXPECT_NE(after, before);
  EXPECT_NE(r.out.find("committed: generation 2 serves as pid " + std::to_string(after)),
            std::string::npos)
      << r.out;
  for (const char* row : {"spawn", "checkpoint", "catch-up", "blackout", "total"}) {
    EXPECT_TRUE(
        std::regex_search(r.out, std::regex(std::string("\\n  ") + row + " +[0-9]+\\.[0-9]{2} ms")))
        << row << " in\n"
        << r.out;
  }
  EXPECT_NE(r.out.find("generation 2: committed"), std::string::npos) << r.out;
  EXPECT_EQ(c.call({"GET", "k"}), "v");
  // --no-wait: today's form, for scripts that watch by themselves.
  const Ran nowait = batonctl(k, {"upgrade", "--no-wait"});
  EXPECT_EQ(nowait.code, 0) << nowait.err;
  EXPECT_EQ(nowait.out, "ok: upgrade to generation 3 started\n");
  EXPECT_TRUE(eventually([&] { return k.events().size() == 2; }, 30)) << k.log();
}

TEST(Batonctl, UpgradeThatAbortsExitsNonZeroWithTheReason) {
  Kvd k(KVD_BIN, no_probation(), "successor.after_restore=error");
  const pid_t before = k.serving_pid();
  const Ran r = batonctl(k, {"upgrade"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("batonctl: upgrade aborted: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("successor.after_restore"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the old version serves on"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("generation 2: aborted"), std::string::npos) << r.out;
  EXPECT_EQ(k.serving_pid(), before);
  RespClient c(k.port());
  EXPECT_EQ(c.call({"PING"}), "PONG");
  // The JSON form is the event log's line.
  const Ran j = batonctl(k, {"upgrade", "--json"});
  EXPECT_EQ(j.code, 1);
  EXPECT_EQ(j.out, k.events().back() + "\n");
}

TEST(Batonctl, StatusJsonParsesWithEveryField) {
  Kvd k(KVD_BIN);  // kvd's default probation window: status shows it
  ASSERT_EQ(batonctl(k, {"upgrade"}).code, 0) << k.log();
  const Ran s = batonctl(k, {"status", "--json"});
  ASSERT_EQ(s.code, 0) << s.err;
  std::ofstream(k.dir() + "/status.json") << s.out;
  // A real JSON parser, and every field with its type.
  const Ran check = run({kPython, "-c",
                         "import json,sys\n"
                         "d = json.load(open(sys.argv[1]))\n"
                         "want = {'pid': int, 'generation': int, 'state': str, 'phase': str,\n"
                         "        'probation_left_ms': int, 'reverse_lag_bytes': int,\n"
                         "        'last_abort': str, 'last_upgrade': dict}\n"
                         "bad = [k for k, t in want.items() if not isinstance(d.get(k), t)]\n"
                         "u = d['last_upgrade']\n"
                         "bad += [k for k in ('generation', 'outcome', 'reason', 'spawn_us',\n"
                         "  'checkpoint_us', 'catchup_us', 'blackout_us', 'total_us',\n"
                         "  'checkpoint_bytes', 'deltas', 'fds', 'probation_ms') if k not in u]\n"
                         "print(d['state'], d['generation'], d['probation_left_ms'], bad)\n"
                         "sys.exit(1 if bad else 0)\n",
                         k.dir() + "/status.json"},
                        k.dir());
  EXPECT_EQ(check.code, 0) << check.out << check.err << s.out;
  EXPECT_EQ(check.out.rfind("probation 2 ", 0), 0u) << check.out;
  // The human form says the same.
  const Ran h = batonctl(k, {"status"});
  EXPECT_EQ(h.code, 0);
  EXPECT_TRUE(std::regex_search(
      h.out, std::regex("^pid " + std::to_string(k.serving_pid()) +
                        ", generation 2: probation, [0-9.]+ s left \\(reverse stream lag")))
      << h.out;
  EXPECT_NE(h.out.find("last upgrade: generation 2: committed"), std::string::npos) << h.out;
  EXPECT_EQ(batonctl(k, {"promote"}).code, 0);
}

TEST(Batonctl, EveryErrorHasAClearMessageAndExitCode) {
  Kvd k(KVD_BIN, no_probation(), "successor.after_restore=delay");
  const std::string dir = k.dir();
  // No such socket: the path, and the flag that makes one.
  Ran r = run({BATONCTL_BIN, "--socket", dir + "/nope", "status"}, dir);
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find(dir + "/nope: No such file or directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--control " + dir + "/nope"), std::string::npos) << r.err;
  // A socket file nobody listens on (a stopped server's).
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string stale = dir + "/stale";
    std::memcpy(a.sun_path, stale.c_str(), stale.size());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  r = run({BATONCTL_BIN, "--socket", dir + "/stale", "status"}, dir);
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("nothing listens on it"), std::string::npos) << r.err;
  // A server that does not answer (stopped): the timeout, not a hang.
  ASSERT_EQ(::kill(k.serving_pid(), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  r = batonctl(k, {"--timeout", "0.5", "status"});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::kill(k.serving_pid(), SIGCONT);
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_NE(r.err.find("no answer within the timeout"), std::string::npos) << r.err;
  EXPECT_LT(took, 10.0);  // loose: it must end, not be fast
  // Usage.
  for (const std::vector<std::string>& bad : {std::vector<std::string>{},
                                              {"frob"},
                                              {"--timeout", "soon", "status"},
                                              {"--frob", "status"},
                                              {"status", "--no-wait"}}) {
    r = batonctl(k, bad);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find("batonctl: "), std::string::npos) << r.err;
  }
  r = run({BATONCTL_BIN, "status"}, dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("give --socket PATH"), std::string::npos) << r.err;
  // Refusals name what the server is doing.
  r = batonctl(k, {"rollback"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "batonctl: no upgrade is on probation here\n");
  ASSERT_EQ(batonctl(k, {"upgrade", "--no-wait"}).code, 0);  // the successor waits 500 ms
  r = batonctl(k, {"upgrade"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("upgrade request ignored: generation 2 is already in phase"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(eventually([&] { return k.upgrade_ended(); }, 30)) << k.log();
  EXPECT_EQ(batonctl(k, {"--help"}).code, 0);
}

// A stand-in for systemd's notify socket that records who sent each datagram
// (SCM_CREDENTIALS), as systemd does to decide what MAINPID= it accepts.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size());
    bound_ = ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    const int one = 1;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    timeval tv{20, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  bool bound() const { return bound_; }
  // "PID: TEXT" of the next datagram, "" after 20 s.
  std::string next() {
    char buf[512];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_.get(), &m, 0);
    if (n <= 0) return "";
    pid_t pid = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        pid = cred.pid;
      }
    }
    std::string text(buf, static_cast<size_t>(n));
    // MONOTONIC_USEC's value changes every run.
    text = std::regex_replace(text, std::regex("MONOTONIC_USEC=[0-9]+"), "MONOTONIC_USEC=T");
    return std::to_string(pid) + ": " + text;
  }

 private:
  std::string path_;
  UniqueFd fd_;
  bool bound_ = false;
};

// What kvd.service relies on (Type=notify, NotifyAccess=all, ExecReload=batonctl
// upgrade): RELOADING=1 when an upgrade starts, then MAINPID= and READY=1 from whichever
// process serves: the successor after a commit, the old process after a rollback, the
// incumbent itself (READY=1) after an abort. Every datagram and its sender is checked.
TEST(Systemd, NotifySequenceAcrossAnUpgradeARollbackAndAnAbort) {
  char tmpl[] = "/tmp/baton-notify-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  NotifySocket notify(dir + "/notify");
  ASSERT_TRUE(notify.bound());
  ::setenv("NOTIFY_SOCKET", (dir + "/notify").c_str(), 1);  // inherited by the servers
  {
    Kvd k(KVD_BIN, {"--probation-ms", "60000"});
    const std::string p1 = std::to_string(k.serving_pid());
    EXPECT_EQ(notify.next(), p1 + ": MAINPID=" + p1 + "\nREADY=1\n");
    ASSERT_EQ(batonctl(k, {"upgrade"}).code, 0) << k.log();
    const std::string p2 = std::to_string(k.serving_pid());
    EXPECT_EQ(notify.next(),
              p1 + ": RELOADING=1\nSTATUS=upgrading to generation 2\nMONOTONIC_USEC=T\n");
    EXPECT_EQ(notify.next(), p2 + ": MAINPID=" + p2 + "\nREADY=1\n");
    ASSERT_EQ(batonctl(k, {"rollback"}).code, 0);
    ASSERT_TRUE(eventually([&] { return k.serving_pid() == std::stoi(p1); }, 30)) << k.log();
    EXPECT_EQ(notify.next(), p1 + ": MAINPID=" + p1 + "\nREADY=1\n");
  }
  {
    Kvd k(KVD_BIN, {"--probation-ms", "0"}, "successor.after_restore=error");
    const std::string p = std::to_string(k.serving_pid());
    EXPECT_EQ(notify.next(), p + ": MAINPID=" + p + "\nREADY=1\n");
    EXPECT_EQ(batonctl(k, {"upgrade"}).code, 1);
    EXPECT_EQ(notify.next(),
              p + ": RELOADING=1\nSTATUS=upgrading to generation 2\nMONOTONIC_USEC=T\n");
    EXPECT_EQ(notify.next(),
              p + ": READY=1\nSTATUS=upgrade to generation 2 aborted; generation 1 serves on\n");
  }
  ::unsetenv("NOTIFY_SOCKET");
  fs::remove_all(dir);
}

// Reads the metrics URL the runtime logged ("metrics on http://ADDR:PORT/metrics").
std::string metrics_url(const Kvd& k) {
  std::smatch m;
  const std::string log = k.log();
  return std::regex_search(log, m, std::regex("metrics on (http://[0-9.:]+/metrics)")) ? m[1].str()
                                                                                       : "";
}

TEST(Metrics, ScrapedEvery10msAcross20UpgradesUnderLoadNeverFailNorGoBack) {
  Kvd k(KVD_BIN, {"--probation-ms", "0", "--metrics", "127.0.0.1:0"});
  const std::string url = metrics_url(k);
  ASSERT_FALSE(url.empty()) << k.log();
  const std::string dir = k.dir();
  const pid_t load =
      testing::spawn_process({INCR_LOAD_BIN, "--port", std::to_string(k.port()), "--connections",
                              "4", "--seconds", "300", "--stop-file", dir + "/stop"},
                             dir + "/load.out");
  const pid_t scraper = testing::spawn_process(
      {kPython, SCRAPER, url, dir + "/stop", dir + "/summary.json", "300"}, dir + "/scraper.out");
  // Stops and reaps both on every way out of the test, a failed ASSERT included.
  int load_status = -1, scraper_status = -1;
  auto stop = [&] {
    if (load_status != -1 || scraper_status != -1) return;
    std::ofstream(dir + "/stop") << "stop\n";
    load_status = load > 0 ? testing::wait_process(load, 60) : 0;
    scraper_status = scraper > 0 ? testing::wait_process(scraper, 60) : 0;
  };
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{stop};
  ASSERT_GT(load, 0);
  ASSERT_GT(scraper, 0);
  // The first upgrade only once the scraper has scraped generation 1 (Python's start-up,
  // imports included, took over 300 ms on a CI machine).
  ASSERT_TRUE(eventually([&] { return fs::exists(dir + "/summary.json.first"); }, 60))
      << slurp(dir + "/scraper.out");
  int committed = 0;
  for (int i = 0; i < 20; ++i) {
    const Ran r = batonctl(k, {"upgrade"});
    EXPECT_EQ(r.code, 0) << "upgrade " << i << ": " << r.out << r.err;
    committed += r.code == 0;
    if (r.code != 0) break;
  }
  ::usleep(200'000);  // a few scrapes of the last generation
  stop();
  ASSERT_TRUE(WIFEXITED(scraper_status) && WEXITSTATUS(scraper_status) == 0)
      << slurp(dir + "/scraper.out");
  EXPECT_TRUE(WIFEXITED(load_status) && WEXITSTATUS(load_status) == 0) << slurp(dir + "/load.out");

  // The summary, read with Python's json: zero failed scrapes, nothing went backwards,
  // committed upgrades counted exactly, kvd's own counter carried across.
  const Ran check = run({kPython, "-c",
                         "import json,sys\n"
                         "s = json.load(open(sys.argv[1]))\n"
                         "last = s['last']\n"
                         "c = last.get('baton_upgrades_total{\"outcome\": \"committed\"}')\n"
                         "cmds = last.get('kvd_commands_total{}')\n"
                         "print(s['scrapes'], s['failed'], len(s['backwards']), c,\n"
                         "      s['generations'][0], s['generations'][-1], cmds)\n"
                         "print(s['failures'], s['backwards'])\n",
                         dir + "/summary.json"},
                        dir);
  ASSERT_EQ(check.code, 0) << check.err;
  std::istringstream in(check.out);
  long scrapes = 0, failed = -1, backwards = -1, first_gen = 0, last_gen = 0;
  double counted = -1, commands = -1;
  in >> scrapes >> failed >> backwards >> counted >> first_gen >> last_gen >> commands;
  EXPECT_EQ(failed, 0) << check.out;
  EXPECT_EQ(backwards, 0) << check.out;
  EXPECT_EQ(counted, committed) << check.out;
  EXPECT_EQ(committed, 20);
  EXPECT_EQ(first_gen, 1);
  EXPECT_EQ(last_gen, 21);
  // An upgrade here takes about 35 ms and a scrape (Python, parser included) about 14:
  // scrapes overlap every upgrade's handoff, not just the time between them.
  EXPECT_GE(scrapes, 40) << check.out;
  EXPECT_GT(commands, 1000) << check.out;  // the load was counted
}

}  // namespace
}  // namespace baton
