// upgrade_under_load: `tools/demo.sh counter`. Starts samples/counter, drives INCRs on many
// connections (plus idle ones held open), upgrades it live with SIGUSR2 several times,
// then prints each upgrade's timeline and what the clients saw: errors, the longest gap
// without a reply, latency, and whether the final count equals the acknowledged INCRs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int connections = 50, idle = 0, upgrades = 5, fill_mib = 0, interval_ms = 300;
  std::string server;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "upgrade_under_load: %s\n"
               "usage: upgrade_under_load [--connections N] [--idle N] [--upgrades N]\n"
               "                          [--fill-mib N] [--interval-ms N] [--server PATH]\n",
               why.c_str());
  std::exit(2);
}

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t us_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count();
}

int dial(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{AF_INET, htons(static_cast<uint16_t>(port)), {htonl(INADDR_LOOPBACK)}, {}};
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

// One blocking request on a fresh or idle connection.
std::string ask(int fd, const std::string& cmd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line = cmd + "\n", out;
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
    return "";
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') out += c;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.server = (fs::path(argv[0]).parent_path() / "counter").string();
  for (int i = 1; i < argc; i += 2) {
    std::string f = argv[i];
    if (f == "--help" || f == "-h") usage("live upgrades of samples/counter under load");

    if (i + 1 >= argc) usage(f + " needs a value");
    const char* v = argv[i + 1];
    auto num = [&](int lo, int hi) {
      char* end;
      long n = std::strtol(v, &end, 10);
      if (*end || n < lo || n > hi)
        usage(f + " takes " + std::to_string(lo) + ".." + std::to_string(hi));
      return static_cast<int>(n);
    };
    if (f == "--connections")
      o.connections = num(1, 5000);
    else if (f == "--idle")
      o.idle = num(0, 20000);
    else if (f == "--upgrades")
      o.upgrades = num(0, 1000);
    else if (f == "--fill-mib")
      o.fill_mib = num(0, 8192);
    else if (f == "--interval-ms")
      o.interval_ms = num(10, 60000);
    else if (f == "--server")
      o.server = v;
    else
      usage("unknown option " + f);
  }
  if (!fs::exists(o.server)) usage("no server binary at " + o.server + " (build it, or --server)");
  rlimit fds;  // one fd per connection: lift the soft limit to the hard one
  if (::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
    fds.rlim_cur = fds.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }
  if (::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < rlim_t(o.connections + o.idle + 64)) {
    usage("--connections + --idle need " + std::to_string(o.connections + o.idle + 64) +
          " fds, the limit is " + std::to_string(fds.rlim_cur));
  }

  ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // later generations become ours to reap

  char tmpl[] = "/tmp/baton-load-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::vector<std::string> args = {o.server,
                                   "--port",
                                   "0",
                                   "--port-file",
                                   dir + "/port",
                                   "--pidfile",
                                   dir + "/pid",
                                   "--event-log",
                                   dir + "/events",
                                   "--fill-mib",
                                   std::to_string(o.fill_mib)};
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());
  av.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  std::string log = dir + "/server.log";
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t first;
  if (::posix_spawn(&first, av[0], &fa, nullptr, av.data(), environ) != 0)
    usage("cannot start " + o.server);
  auto t0 = Clock::now();
  while (slurp(dir + "/pid").empty() && us_since(t0) < 120'000'000)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int port = std::atoi(slurp(dir + "/port").c_str());
  std::printf("server: pid %d, port %d, %d MiB of state, %d active + %d idle connections\n",
              std::atoi(slurp(dir + "/pid").c_str()), port, o.fill_mib, o.connections, o.idle);

  struct Conn {
    int fd;
    long last = 0;
    Clock::time_point sent;
    std::string in;
  };
  std::vector<Conn> conns;
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < o.connections; ++i) {
    int fd = dial(port);
    if (fd < 0) usage("cannot connect to the server");
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    conns.push_back({fd});
  }
  std::vector<int> idle;
  for (int i = 0; i < o.idle; ++i) idle.push_back(dial(port));
  for (size_t i = 0; i < conns.size(); ++i) {
    epoll_event ev{EPOLLIN, {.u64 = i}};
    ::epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    ::send(conns[i].fd, "INCR\n", 5, MSG_NOSIGNAL);
    conns[i].sent = Clock::now();
  }

  long acked = 0, errors = 0;
  auto signal_at = Clock::now();
  int64_t gap_end_us = 0;
  int gap_upgrade = 0;
  std::vector<int64_t> latency_us;
  int64_t longest_gap_us = 0;
  auto last_reply = Clock::now();
  size_t events_seen = 0;
  int upgrades_sent = 0;
  auto next_upgrade = Clock::now() + std::chrono::milliseconds(o.interval_ms);
  auto deadline = Clock::now() + std::chrono::seconds(60 + 5 * o.upgrades + o.fill_mib / 8);
  std::vector<std::string> timeline;
  while (Clock::now() < deadline) {
    epoll_event evs[256];
    int n = ::epoll_wait(ep, evs, 256, 5);
    for (int k = 0; k < n; ++k) {
      Conn& c = conns[evs[k].data.u64];
      char buf[4096];
      ssize_t r = ::read(c.fd, buf, sizeof buf);
      if (r <= 0) {
        ++errors;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        std::fprintf(stderr, "client error: connection %d %s\n", c.fd,
                     r == 0 ? "closed" : std::strerror(errno));
        continue;
      }
      c.in.append(buf, static_cast<size_t>(r));
      for (size_t nl; (nl = c.in.find('\n')) != std::string::npos;) {
        long v = std::atol(c.in.substr(0, nl).c_str());
        c.in.erase(0, nl + 1);
        if (v <= c.last) {
          ++errors;
          std::fprintf(stderr, "client error: reply %ld after %ld\n", v, c.last);
        }
        c.last = v;
        ++acked;
        latency_us.push_back(us_since(c.sent));
        if (us_since(last_reply) > longest_gap_us) {
          longest_gap_us = us_since(last_reply);
          gap_end_us = us_since(signal_at);
          gap_upgrade = upgrades_sent;
        }
        last_reply = Clock::now();
        bool more = upgrades_sent < o.upgrades || events_seen < static_cast<size_t>(upgrades_sent);
        if (more) {
          ::send(c.fd, "INCR\n", 5, MSG_NOSIGNAL);
          c.sent = Clock::now();
        }
      }
    }
    std::istringstream ev(slurp(dir + "/events"));
    std::vector<std::string> lines;
    for (std::string l; std::getline(ev, l);) lines.push_back(l);
    for (; events_seen < lines.size(); ++events_seen) timeline.push_back(lines[events_seen]);
    if (upgrades_sent < o.upgrades && events_seen == static_cast<size_t>(upgrades_sent) &&
        Clock::now() >= next_upgrade) {
      ::kill(std::atoi(slurp(dir + "/pid").c_str()), SIGUSR2);
      signal_at = Clock::now();
      ++upgrades_sent;
      next_upgrade = Clock::now() + std::chrono::milliseconds(o.interval_ms);
    }
    if (upgrades_sent == o.upgrades && events_seen >= static_cast<size_t>(o.upgrades) &&
        us_since(last_reply) > 200'000) {
      break;  // every upgrade reported and the last replies drained
    }
  }
  // Final checks: the count equals the acknowledged INCRs; idle connections still work.
  int fresh = dial(port);
  long final_count = fresh >= 0 ? std::atol(ask(fresh, "GET").c_str()) : -1;
  int idle_failed = 0;
  for (int fd : idle) idle_failed += (fd < 0 || ask(fd, "GET").empty()) ? 1 : 0;
  const std::string final_pid = ask(fresh, "PID");

  std::printf("\n%-4s %-10s %10s %10s %10s %12s %8s %6s  %s\n", "gen", "outcome", "blackout",
              "total", "catch-up", "checkpoint", "deltas", "fds", "reason");
  int committed = 0;
  for (const std::string& l : timeline) {
    auto field = [&](const std::string& k) {
      size_t at = l.find("\"" + k + "\":");
      if (at == std::string::npos) return std::string("?");
      at += k.size() + 3;
      if (l[at] == '"') return l.substr(at + 1, l.find('"', at + 1) - at - 1);
      return l.substr(at, l.find_first_of(",}", at) - at);
    };
    committed += field("outcome") == "committed";
    std::printf(
        "%-4s %-10s %8.3fms %8.1fms %8.1fms %10.1fMiB %8s %6s  %s\n", field("generation").c_str(),
        field("outcome").c_str(), std::atof(field("blackout_us").c_str()) / 1000,
        std::atof(field("total_us").c_str()) / 1000, std::atof(field("catchup_us").c_str()) / 1000,
        std::atof(field("checkpoint_bytes").c_str()) / 1048576, field("deltas").c_str(),
        field("fds").c_str(), field("reason").c_str());
  }
  std::sort(latency_us.begin(), latency_us.end());
  auto pct = [&](double p) {
    return latency_us.empty()
               ? 0.0
               : latency_us[static_cast<size_t>(p * (latency_us.size() - 1))] / 1000.0;
  };
  const bool exact = final_count == acked;
  std::printf(
      "\nclients: %ld INCRs acknowledged, latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, "
      "max %.3f ms\n",
      acked, pct(0.5), pct(0.99), pct(0.999), pct(1.0));
  std::printf(
      "longest gap without any reply: %.3f ms, ending %.1f ms after upgrade %d's "
      "SIGUSR2\n",
      longest_gap_us / 1000.0, gap_end_us / 1000.0, gap_upgrade);

  std::printf("final count %ld (%s), idle connections failed: %d of %d, serving pid %s\n",
              final_count, exact ? "exact" : "MISMATCH", idle_failed, o.idle, final_pid.c_str());
  std::printf("upgrades: %d of %d committed\nclient-side errors: %ld\n", committed, o.upgrades,
              errors + idle_failed);

  // Stop what we started and reap every generation.
  for (pid_t p : {static_cast<pid_t>(std::atoi(final_pid.c_str())), first})
    if (p > 0) ::kill(p, SIGKILL);
  for (auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
    pid_t r = ::waitpid(-1, nullptr, WNOHANG);
    if (r < 0) break;
    if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  fs::remove_all(dir);
  return (errors + idle_failed == 0 && exact && committed == o.upgrades) ? 0 : 1;
}
