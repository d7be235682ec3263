// Issue 11 against kvd as a real process: batonctl's synchronous upgrade, its status,
// its errors and exit codes, and the metrics endpoint scraped every 10 ms across 20
// upgrades under load, parsed by Prometheus's own Python parser. Also batonctl against
// stand-ins (a wedged socket, an older build, a rollback right after a commit) and what a
// runtime answers as it exits (some in this process). Loopback only, port 0, a temporary
// directory per test, bounded waits, every child reaped.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "baton/runtime.h"
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
    ::usleep(40'000);  // about two scrape cycles of each generation before the next upgrade
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
  // A batonctl upgrade here takes about 25 ms (35 before adopt() took one pass: the
  // blackout went from ~5.5 to ~0.7 ms), then 40 ms pass before the next one; a scrape
  // cycle (Python, parser included, and 10 ms apart) takes about 24: scrapes overlap the
  // handoffs as well as the time between them.
  EXPECT_GE(scrapes, 40) << check.out;
  EXPECT_GT(commands, 1000) << check.out;  // the load was counted
}

// ---------------------------------------------------------------- helpers for what follows

// A connection to a Baton control socket (or "" on failure), blocking.
UniqueFd connect_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size());
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  return fd;
}

UniqueFd connect_tcp(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  ::inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &a.sin_addr);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  return fd;
}

bool send_text(int fd, const std::string& s) {
  return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
}

// What arrives on `fd` until the peer closes it, `until` is seen, or `seconds` pass.
std::string read_for(int fd, double seconds, const std::string& until = "") {
  std::string out;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0 || (!until.empty() && out.find(until) != std::string::npos)) return out;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return out;
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
}

// A process's state letter from /proc (R, S, T, Z, ...), '?' if it is gone.
char proc_state(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? '?' : stat[paren + 2];
}

// The pid in the `nth` (1-based) "baton[PID]: fail point NAME: hang" line of the log, or 0.
pid_t hung_at(const Kvd& k, const std::string& name, int nth) {
  const std::string log = k.log(), line = ": fail point " + name + ": hang";
  size_t at = 0;
  for (int i = 0; i < nth; ++i) {
    at = log.find(line, at == 0 ? 0 : at + 1);
    if (at == std::string::npos) return 0;
  }
  const size_t open = log.rfind("baton[", at);
  return open == std::string::npos ? 0 : std::atoi(log.c_str() + open + 6);
}

// A stand-in for a server on a control socket, in a thread: it answers each connection's
// line with `answer(line)` and closes it. For what no real kvd does on cue: a server of an
// older build, a rollback right after a commit.
class FakeControl {
 public:
  FakeControl(std::string path, std::function<std::string(const std::string&)> answer)
      : answer_(std::move(answer)) {
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size());
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener_.get(), 16) != 0) {
      listener_.reset();
      return;
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeControl() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return static_cast<bool>(listener_); }
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      std::string line = read_for(c.get(), 2, "\n");
      line = line.substr(0, line.find('\n'));
      {
        std::lock_guard<std::mutex> lock(mu_);
        lines_.push_back(line);
      }
      (void)send_text(c.get(), answer_(line));
    }
  }
  std::function<std::string(const std::string&)> answer_;
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// A private directory, removed on every way out of a test (a failed ASSERT included).
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/baton-ops-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string path;
};

std::string record(int generation, const std::string& outcome, const std::string& reason) {
  return "{\"generation\":" + std::to_string(generation) + ",\"outcome\":\"" + outcome +
         "\",\"reason\":\"" + reason +
         "\",\"spawn_us\":500,\"checkpoint_us\":2000,\"catchup_us\":300,\"blackout_us\":9000,"
         "\"total_us\":20000,\"checkpoint_bytes\":4096,\"deltas\":0,\"fds\":3,"
         "\"probation_ms\":2000}";
}

std::string status_line(int pid, int generation, const std::string& last_upgrade) {
  return "{\"pid\":" + std::to_string(pid) + ",\"generation\":" + std::to_string(generation) +
         ",\"state\":\"serving\",\"phase\":\"serving\",\"probation_left_ms\":0,"
         "\"reverse_lag_bytes\":0,\"last_abort\":\"\",\"last_upgrade\":" +
         last_upgrade + "}\n";
}

// ---------------------------------------------------------------- batonctl, against fakes

TEST(Batonctl, ConnectGivesUpAtTheTimeoutWhenTheListenBacklogIsFull) {
  const TempDir temp;
  const std::string& dir = temp.path;
  const std::string path = dir + "/wedged";
  // A listener nobody accepts on, its backlog filled: a stopped server's socket.
  UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size());
  ASSERT_EQ(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l.get(), 1), 0);
  std::vector<UniqueFd> queued;
  for (int i = 0; i < 64; ++i) {
    UniqueFd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      break;
    }
    queued.push_back(std::move(c));
  }
  ASSERT_LT(queued.size(), 64u) << "the backlog never filled";
  for (const char* cmd : {"status", "upgrade"}) {
    const auto t0 = std::chrono::steady_clock::now();
    const Ran r = run({BATONCTL_BIN, "--socket", path, "--timeout", "0.5", cmd}, dir, 20);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.code, 4) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("accepts no connection (its listen backlog is full"), std::string::npos)
        << r.err;
    EXPECT_LT(took, 10.0) << cmd;
  }
}

TEST(Batonctl, UpgradeReportsUsageAndUnreachableErrorsWithTheirOwnExitCodes) {
  const TempDir temp;
  const std::string& dir = temp.path;
  // Too long for sun_path: bad usage, and nothing about an outcome.
  Ran r = run({BATONCTL_BIN, "--socket", dir + "/" + std::string(120, 's'), "upgrade"}, dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("is empty or longer than 107 bytes"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("before the outcome"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  r = run({BATONCTL_BIN, "--socket", dir + "/nope", "upgrade"}, dir);
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find(dir + "/nope: No such file or directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("before the outcome"), std::string::npos) << r.err;
  // --json needs the outcome that --no-wait does not wait for.
  r = run({BATONCTL_BIN, "--socket", dir + "/nope", "upgrade", "--no-wait", "--json"}, dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("batonctl: --json"), std::string::npos) << r.err;
}

TEST(Batonctl, UpgradeExitsOneWhenTheStandbyTookBackBeforeTheNewVersionShowedItsTimeline) {
  const TempDir temp;
  const std::string& dir = temp.path;
  // The incumbent said committed; the successor crashed before it wrote its timeline, and
  // the standby took back at generation 3.
  FakeControl fake(dir + "/control", [](const std::string& line) -> std::string {
    if (line == "upgrade wait") {
      return "ok: upgrade to generation 2 started\n"
             "committed: generation 2 serves as pid 4242, on probation for 2.0 s\n";
    }
    if (line == "status") {
      return status_line(4241, 3,
                         record(3, "rolled back", "crashed: the successor was killed by signal 9"));
    }
    return "error: unexpected\n";
  });
  ASSERT_TRUE(fake.ok());
  const auto t0 = std::chrono::steady_clock::now();
  const Ran r =
      run({BATONCTL_BIN, "--socket", dir + "/control", "--timeout", "8", "upgrade"}, dir, 30);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_LT(took, 6.0) << "it waited for a timeline that never comes";
  EXPECT_NE(r.out.find("committed: generation 2 serves as pid 4242"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("generation 3: rolled back: crashed"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("batonctl: generation 2 committed, but did not last: generation 3 rolled "
                       "back: crashed: the successor was killed by signal 9; pid 4241 serves "
                       "generation 3 now"),
            std::string::npos)
      << r.err;
}

TEST(Batonctl, UpgradeAgainstAServerWithoutUpgradeWaitStartsItAndWatchesStatus) {
  const TempDir temp;
  const std::string& dir = temp.path;
  // A build from before `upgrade wait`: plain `upgrade`, then the outcome shows in status.
  for (const std::string outcome : {"committed", "aborted"}) {
    std::atomic<bool> started{false};
    const std::string path = dir + "/" + outcome;
    FakeControl fake(path, [&](const std::string& line) -> std::string {
      if (line == "upgrade") {
        started = true;
        return "ok: upgrade to generation 2 started\n";
      }
      if (line == "status" && !started) {
        return status_line(100, 1, record(2, "aborted", "an older attempt"));
      }
      if (line == "status" && outcome == "committed") {
        return status_line(200, 2, record(2, "committed", ""));
      }
      if (line == "status") {
        return status_line(100, 1, record(2, "aborted", "successor sent no HELLO within 5.0 s"));
      }
      return "error: unknown command '" + line +
             "'; use upgrade, status, metrics, rollback or promote\n";
    });
    ASSERT_TRUE(fake.ok());
    const Ran r = run({BATONCTL_BIN, "--socket", path, "--timeout", "8", "upgrade"}, dir, 30);
    EXPECT_NE(r.err.find("this server predates 'upgrade wait'"), std::string::npos) << r.err;
    if (outcome == "committed") {
      EXPECT_EQ(r.code, 0) << r.out << r.err;
      EXPECT_NE(r.out.find("committed: generation 2 serves as pid 200\n"
                           "generation 2: committed\n"),
                std::string::npos)
          << r.out;
    } else {
      EXPECT_EQ(r.code, 1) << r.out << r.err;
      EXPECT_NE(r.out.find("generation 2: aborted: successor sent no HELLO"), std::string::npos)
          << r.out;
      EXPECT_NE(r.err.find("batonctl: upgrade aborted: successor sent no HELLO within 5.0 s; the "
                           "old version serves on"),
                std::string::npos)
          << r.err;
    }
    const auto lines = fake.lines();
    ASSERT_GE(lines.size(), 3u);
    EXPECT_EQ(lines[0], "upgrade wait");
    EXPECT_EQ(std::count(lines.begin(), lines.end(), "upgrade"), 1);
  }
}

// ---------------------------------------------------------------- the runtime at exit

// kvd destroys its Server before its Runtime, whose destructor then answers what it had
// accepted: a scrape there must not run the Server's gauge callbacks. In this process, so
// that the callback can tell whether it ran after its owner's end.
TEST(AtExit, AScrapeAnsweredAtExitRunsNoGaugeCallback) {
  const TempDir temp;
  const std::string& dir = temp.path;
  RuntimeOptions opt;
  opt.control_socket = dir + "/control";
  char arg0[] = "operations_test";
  char* argv[] = {arg0, nullptr};
  auto rt = Runtime::create(1, argv, opt);
  ASSERT_TRUE(rt.ok()) << rt.error().to_string();
  auto alive = std::make_shared<bool>(true);
  auto ran_after_end = std::make_shared<bool>(false);
  ASSERT_TRUE((*rt)
                  ->metrics()
                  .gauge_fn("test_server_clients", "a server's", {},
                            [alive, ran_after_end] {
                              if (!*alive) *ran_after_end = true;
                              return 1.0;
                            })
                  .ok());
  UniqueFd scrape = connect_unix(opt.control_socket);
  ASSERT_TRUE(scrape);
  ASSERT_TRUE(send_text(scrape.get(), "metrics\n"));
  (*rt)->service();  // accepts it; its line is read at exit
  *alive = false;    // the server is gone
  rt->reset();
  const std::string reply = read_for(scrape.get(), 5);
  EXPECT_FALSE(*ran_after_end);
  EXPECT_NE(reply.find("\nbaton_generation 1\n"), std::string::npos) << "answered: " << reply;
  EXPECT_EQ(reply.find("test_server_clients"), std::string::npos) << reply;
}

// The port of this process's (only) IPv4 listening socket: the runtime's metrics listener.
int own_tcp_listener_port() {
  for (int fd = 3; fd < 1024; ++fd) {
    int on = 0;
    socklen_t len = sizeof on;
    sockaddr_in a{};
    socklen_t alen = sizeof a;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen) == 0 && a.sin_family == AF_INET) {
      return ntohs(a.sin_port);
    }
  }
  return 0;
}

TEST(AtExit, ConnectionsOfBothListenersShareOne200msDeadline) {
  const TempDir temp;
  const std::string& dir = temp.path;
  RuntimeOptions opt;
  opt.control_socket = dir + "/control";
  opt.metrics_listen = "127.0.0.1:0";
  char arg0[] = "operations_test";
  char* argv[] = {arg0, nullptr};
  auto rt = Runtime::create(1, argv, opt);
  ASSERT_TRUE(rt.ok()) << rt.error().to_string();
  const int port = own_tcp_listener_port();
  ASSERT_GT(port, 0);
  // One silent peer on each listener: the exit waits for them, once.
  UniqueFd control = connect_unix(opt.control_socket);
  UniqueFd scrape = connect_tcp("127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(control && scrape);
  (*rt)->service();
  const auto t0 = std::chrono::steady_clock::now();
  rt->reset();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.18);
  EXPECT_LT(took, 0.35) << "each listener waited 200 ms of its own";
}

// A command that arrives while the process exits (after SIGTERM here; after a handoff
// alike) is refused: an upgrade would spawn a successor only to kill it.
TEST(AtExit, CommandsOtherThanStatusAndMetricsAreRefusedWhileExiting) {
  Kvd k(KVD_BIN, no_probation());
  const pid_t pid = k.serving_pid();
  UniqueFd late = connect_unix(k.control_path());
  ASSERT_TRUE(late);
  ASSERT_TRUE(send_text(late.get(), "upgrade wai"));
  // Answered after `late` connected, so `late` is accepted too (one backlog, in order).
  ASSERT_NE(testing::control_command(k.control_path(), "status"), "");
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  // kvd's loop has returned once it says so: what `late` sends now is read at exit.
  ASSERT_TRUE(eventually([&] { return k.log().find("stopping") != std::string::npos; }, 10))
      << k.log();
  ASSERT_TRUE(send_text(late.get(), "t\n"));
  const std::string reply = read_for(late.get(), 5);
  EXPECT_EQ(reply.rfind("error: this process is exiting (it handed off or is stopping); retry "
                        "'upgrade wait' against the server that serves now\n",
                        0),
            0u)
      << reply << k.log();
  EXPECT_EQ(k.log().find("spawned successor"), std::string::npos) << k.log();
  EXPECT_GE(testing::wait_process(pid, 10), 0);
}

// One epoll batch: upgrade N aborts (its successor died) and `upgrade wait` starts N+1.
// The second waiter gets N+1's outcome, never N's.
TEST(Batonctl, AWaiterGetsTheOutcomeOfTheUpgradeItStartedOnly) {
  Kvd k(KVD_BIN, no_probation(), "successor.after_hello=hang");
  const pid_t pid = k.serving_pid();
  UniqueFd first = connect_unix(k.control_path());
  ASSERT_TRUE(first && send_text(first.get(), "upgrade wait\n"));
  ASSERT_EQ(read_for(first.get(), 10, "\n"), "ok: upgrade to generation 2 started\n");
  pid_t successor = 0;
  ASSERT_TRUE(eventually([&] { return (successor = hung_at(k, "successor.after_hello", 1)); }, 30))
      << k.log();
  UniqueFd second = connect_unix(k.control_path());
  ASSERT_TRUE(second && send_text(second.get(), "upgrade wai"));
  ASSERT_NE(testing::control_command(k.control_path(), "status"), "");  // `second` accepted
  // A few idle turns of kvd's loop (1 ms apart while upgrading): `second`, reported once
  // for its partial line, leaves epoll's ready list; else it could come first below.
  ::usleep(50'000);
  // Stopped, kvd sees the successor's death and the rest of `second`'s line at once.
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  ASSERT_TRUE(eventually([&] { return proc_state(pid) == 'T'; }, 10));
  ASSERT_EQ(::kill(successor, SIGKILL), 0);
  const bool dead = eventually([&] { return proc_state(successor) == 'Z'; }, 10);
  const bool sent = send_text(second.get(), "t\n");
  ::kill(pid, SIGCONT);
  ASSERT_TRUE(dead && sent);
  const std::string outcome1 = read_for(first.get(), 10);
  EXPECT_EQ(outcome1.rfind("aborted: ", 0), 0u) << outcome1 << k.log();
  std::string got = read_for(second.get(), 10, "\n");
  ASSERT_EQ(got, "ok: upgrade to generation 2 started\n") << k.log();
  // Upgrade N+1 hangs like N did: nothing may arrive until its successor dies.
  got += read_for(second.get(), 0.5);
  EXPECT_EQ(got, "ok: upgrade to generation 2 started\n") << "the previous upgrade's outcome";
  pid_t next = 0;
  ASSERT_TRUE(eventually([&] { return (next = hung_at(k, "successor.after_hello", 2)); }, 30))
      << k.log();
  ::kill(next, SIGKILL);
  got += read_for(second.get(), 10);
  EXPECT_NE(got.find("\naborted: "), std::string::npos) << got << k.log();
  EXPECT_TRUE(eventually([&] { return k.events().size() == 2; }, 10)) << k.log();
}

TEST(Metrics, AnHttpRequestEndingInBareLineFeedsIsAnswered) {
  Kvd k(KVD_BIN, {"--metrics", "127.0.0.1:0"});
  const std::string url = metrics_url(k);
  ASSERT_FALSE(url.empty()) << k.log();
  const std::string host_port = url.substr(7, url.find('/', 7) - 7);
  UniqueFd c = connect_tcp(host_port);
  ASSERT_TRUE(c);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(send_text(c.get(), "GET /metrics HTTP/1.1\nHost: x\n\n"));  // as nc sends it
  const std::string reply = read_for(c.get(), 5);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << reply.substr(0, 200);
  EXPECT_NE(reply.find("\nbaton_generation 1\n"), std::string::npos);
  EXPECT_LT(took, 0.9) << "answered at the 1 s deadline, not at the request's end";
}

}  // namespace
}  // namespace baton
