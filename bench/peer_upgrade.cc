// peer_upgrade: the same data and the same load against three ways to replace a running
// in-memory server: kvd upgraded live by Baton (SIGUSR2), Redis restarted (SHUTDOWN SAVE,
// then a new redis-server that reloads the RDB) and memcached warm-restarted (-e memory
// file, SIGUSR1, a new memcached that recovers it). Its own load client records every
// request's latency, errors, resets and refused connects (reconnecting, so a peer's
// downtime is measured rather than fatal) and the longest gap without a success.
// Writes results.csv, one timeline CSV per run and report.md into --out; see
// docs/benchmarks.md and bench/peer_bench.sh (the one command that runs it).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::vector<std::string> servers = {"kvd", "redis", "memcached"};
  std::vector<uint64_t> sizes = {uint64_t{1} << 20, uint64_t{64} << 20, uint64_t{256} << 20,
                                 uint64_t{1} << 30, 1'200'000'000,      uint64_t{4} << 30};
  int connections = 50;
  int idle = 1000;  // for the extra many-connections case
  uint64_t idle_size = 64 << 20;
  double steady_s = 2.0, after_s = 1.0;
  std::string out = "build/peer-bench";
  std::string kvd = "build/bin/kvd";
  std::vector<std::string> kvd_args;  // --kvd-arg, each passed on to kvd
  bool pss = false;  // sample memory as PSS (smaps_rollup), which perturbs the server
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(
      stderr,
      "peer_upgrade: %s\n"
      "usage: peer_upgrade [--quick] [--servers kvd,redis,memcached] [--sizes-mib 1,64,...]\n"
      "                    [--connections N] [--idle N] [--out DIR] [--kvd PATH]\n"
      "                    [--kvd-arg ARG]...   (each passed to kvd, e.g. --kvd-arg\n"
      "                    --checkpoint-share --kvd-arg 0.5) [--pss]\n"
      "  --pss: sample memory as PSS from smaps_rollup, as this harness used to; the kernel\n"
      "         walks each process's page tables for it under its mmap lock, which stalls\n"
      "         the server and takes CPU (docs/benchmarks.md)\n",
      why.c_str());
  std::exit(2);
}

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string key_of(uint64_t i) {
  char k[32];
  std::snprintf(k, sizeof k, "key:%010" PRIu64, i);
  return k;
}
// 100 bytes that depend on the key, so a restored value can be checked.
std::string value_of(uint64_t i) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%010" PRIu64, i);
  std::string v;
  while (v.size() < 100) v += digits;
  v.resize(100);
  return v;
}

int dial(int port, int timeout_ms = 2000) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{AF_INET, htons(static_cast<uint16_t>(port)), {htonl(INADDR_LOOPBACK)}, {}};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {}};
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// ------------------------------------------------------------------ protocols

enum class Proto { kResp, kMemcached };

std::string get_request(Proto p, const std::string& k) {
  if (p == Proto::kMemcached) return "get " + k + "\r\n";
  return "*2\r\n$3\r\nGET\r\n$" + std::to_string(k.size()) + "\r\n" + k + "\r\n";
}
std::string set_request(Proto p, const std::string& k, const std::string& v) {
  if (p == Proto::kMemcached) {
    return "set " + k + " 0 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\n";
  }
  return "*3\r\n$3\r\nSET\r\n$" + std::to_string(k.size()) + "\r\n" + k + "\r\n$" +
         std::to_string(v.size()) + "\r\n" + v + "\r\n";
}

enum class Reply { kNeedMore, kOk, kMiss, kError };

// One reply at the start of `b`: its kind and length, or kNeedMore. `value` gets a hit.
Reply parse_reply(Proto p, std::string_view b, size_t* used, std::string* value) {
  size_t eol = b.find("\r\n");
  if (eol == std::string_view::npos) return Reply::kNeedMore;
  std::string_view line = b.substr(0, eol);
  if (p == Proto::kResp) {
    *used = eol + 2;
    if (line[0] == '+' || line[0] == ':') return Reply::kOk;
    if (line[0] == '-') return Reply::kError;
    if (line == "$-1") return Reply::kMiss;
    if (line[0] == '$') {
      size_t n = std::strtoul(std::string(line.substr(1)).c_str(), nullptr, 10);
      if (b.size() < eol + 2 + n + 2) return Reply::kNeedMore;
      if (value) value->assign(b.substr(eol + 2, n));
      *used = eol + 2 + n + 2;
      return Reply::kOk;
    }
    return Reply::kError;
  }
  if (line == "STORED") return *used = eol + 2, Reply::kOk;
  if (line == "END") return *used = eol + 2, Reply::kMiss;
  if (line.substr(0, 6) == "VALUE ") {
    size_t sp = line.rfind(' ');
    size_t n = std::strtoul(std::string(line.substr(sp + 1)).c_str(), nullptr, 10);
    size_t total = eol + 2 + n + 2 + 5;  // data, CRLF, "END\r\n"
    if (b.size() < total) return Reply::kNeedMore;
    if (value) value->assign(b.substr(eol + 2, n));
    *used = total;
    return Reply::kOk;
  }
  *used = eol + 2;
  return Reply::kError;
}

// Sends `req` and reads exactly one reply; false on a dead connection.
bool call(int fd, Proto p, const std::string& req, std::string& buf, Reply* r, std::string* v) {
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return false;
  }
  for (;;) {
    size_t used = 0;
    *r = parse_reply(p, buf, &used, v);
    if (*r != Reply::kNeedMore) {
      buf.erase(0, used);
      return true;
    }
    char tmp[16384];
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

// ------------------------------------------------------------------ servers

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    std::fprintf(stderr, "peer_upgrade: cannot start %s: %s\n", args[0].c_str(), std::strerror(rc));
    std::exit(1);
  }
  return pid;
}

// One server under test in its own directory: how to start it, replace it, and find its
// processes (for memory).
struct Server {
  std::string kind, dir, kvd_bin;
  std::vector<std::string> kvd_args;
  int port = 0;
  uint64_t size = 0;
  pid_t pid = 0;  // the process we started last (kvd: the first generation)
  Proto proto() const { return kind == "memcached" ? Proto::kMemcached : Proto::kResp; }
  std::string memfile() const { return "/dev/shm/baton-bench-memcached-" + std::to_string(port); }

  std::vector<std::string> args() const {
    if (kind == "kvd") {
      std::vector<std::string> a = {kvd_bin,         "--port",       std::to_string(port),
                                    "--pidfile",     dir + "/pid",   "--event-log",
                                    dir + "/events", "--maxclients", "20000"};
      a.insert(a.end(), kvd_args.begin(), kvd_args.end());
      return a;
    }
    if (kind == "redis") {
      return {"redis-server",
              "--port",
              std::to_string(port),
              "--bind",
              "127.0.0.1",
              "--dir",
              dir,
              "--dbfilename",
              "dump.rdb",
              "--save",
              "",
              "--appendonly",
              "no",
              "--maxclients",
              "20000",
              "--daemonize",
              "no"};
    }
    // Slabs need about twice the payload (item headers, class rounding).
    const uint64_t mib = size * 5 / 2 / (1 << 20) + 64;
    return {"memcached", "-p",        std::to_string(port),
            "-l",        "127.0.0.1", "-U",
            "0",         "-m",        std::to_string(mib),
            "-c",        "20000",     "-e",
            memfile(),   "-u",        "root"};
  }
  void start() {
    pid = spawn(args(), dir + "/server.log");
    // A peer reloading gigabytes takes its time (Redis at 4 GiB: minutes): a deadline, not
    // a count of tries, each of which may wait up to 2 s for a reply.
    const int64_t deadline = now_us() + 300'000'000;
    while (now_us() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {  // it exited: say so at once
        std::fprintf(stderr,
                     "peer_upgrade: %s exited (%s %d) before it served; see %s/server.log\n",
                     kind.c_str(), WIFSIGNALED(status) ? "signal" : "status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), dir.c_str());
        std::exit(1);
      }
      int fd = dial(port);
      if (fd >= 0) {
        std::string buf;
        Reply r;
        bool ok = call(fd, proto(), get_request(proto(), "probe"), buf, &r, nullptr);
        ::close(fd);
        if (ok && r != Reply::kError) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::fprintf(stderr, "peer_upgrade: %s did not serve within 300 s; see %s/server.log\n",
                 kind.c_str(), dir.c_str());
    std::exit(1);
  }
  pid_t serving_pid() const {
    if (kind != "kvd") return pid;
    return std::atoi(slurp(dir + "/pid").c_str());
  }
  // Every process of this server now: kvd's serving one, its successor, and the process
  // it replaced while that stands by (its parent, itself a child of this harness).
  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    pid_t p = serving_pid();
    if (p <= 0) return out;
    out.push_back(p);
    std::istringstream kids(
        slurp("/proc/" + std::to_string(p) + "/task/" + std::to_string(p) + "/children"));
    for (pid_t c; kids >> c;) out.push_back(c);
    const pid_t parent = parent_of(p);
    if (parent > 1 && parent != ::getpid() && parent_of(parent) == ::getpid()) {
      out.push_back(parent);
    }
    return out;
  }
  static pid_t parent_of(pid_t p) {
    // /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces: after the last ')'.
    const std::string st = slurp("/proc/" + std::to_string(p) + "/stat");
    const size_t close = st.rfind(')');
    if (close == std::string::npos) return 0;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(st.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return 0;
    return ppid;
  }
  void stop() {
    for (pid_t p : pids()) ::kill(p, SIGKILL);
    if (pid > 0) ::kill(pid, SIGKILL);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (kind == "memcached") {
      fs::remove(memfile());
      fs::remove(memfile() + ".meta");
    }
  }
};

// One process's proportional set size, from smaps_rollup: exact, but the kernel walks
// every page table of the process to count it, holding the process's mmap lock, 5-15 ms a
// GiB here. Only with --pss, which samples it every 20 ms as this harness used to.
uint64_t pss_bytes(pid_t p) {
  std::ifstream in("/proc/" + std::to_string(p) + "/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Pss:", 0) == 0) return std::strtoull(line.c_str() + 4, nullptr, 10) << 10;
  }
  return 0;
}

// What a server's processes hold, counted without walking page tables: each process's
// private pages (RssAnon in /proc/PID/status, a counter the kernel keeps), its file pages
// (binary, libraries: RssFile) once for all of them, the largest, since kvd's incumbent
// and successor map the same ones, plus every shared-memory file they map (memfds,
// /dev/shm) and `extra_files`, each once and whole (its allocated blocks), however many
// processes map it. Sampling PSS instead walked up to 8 GB of page tables every 20 ms
// during kvd's upgrade at 1.2 GB, most of a core, and a server's brk() waited behind the
// walk for up to 24 ms (docs/benchmarks.md, "Side by side").
uint64_t held_bytes(const std::vector<pid_t>& pids, const std::vector<std::string>& extra_files) {
  uint64_t total = 0, file_pages = 0;
  std::vector<std::pair<dev_t, ino_t>> seen;
  const auto add_file = [&](const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return;
    const std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) return;
    seen.push_back(id);
    total += static_cast<uint64_t>(st.st_blocks) * 512;
  };
  for (pid_t p : pids) {
    const std::string dir = "/proc/" + std::to_string(p);
    std::ifstream status(dir + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("RssAnon:", 0) == 0)
        total += std::strtoull(line.c_str() + 8, nullptr, 10) << 10;
      if (line.rfind("RssFile:", 0) == 0)
        file_pages =
            std::max<uint64_t>(file_pages, std::strtoull(line.c_str() + 8, nullptr, 10) << 10);
    }
    // "start-end perms offset dev inode path": a shared-memory file's pages, through the
    // mapping's own link (it works for a memfd or an unlinked file too).
    std::ifstream maps(dir + "/maps");
    for (std::string line; std::getline(maps, line);) {
      const size_t path = line.find('/');
      if (path == std::string::npos) continue;
      if (line.compare(path, 7, "/memfd:") != 0 && line.compare(path, 9, "/dev/shm/") != 0)
        continue;
      add_file(dir + "/map_files/" + line.substr(0, line.find(' ')));
    }
  }
  for (const auto& f : extra_files) add_file(f);
  return total + file_pages;
}

void fill(const Server& s, uint64_t keys) {
  const int kConns = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kConns; ++t) {
    threads.emplace_back([&, t] {
      int fd = dial(s.port, 30000);
      std::string buf, batch;
      uint64_t pending = 0;
      auto drain = [&] {
        while (pending > 0) {
          size_t used = 0;
          Reply r = parse_reply(s.proto(), buf, &used, nullptr);
          if (r == Reply::kNeedMore) {
            char tmp[65536];
            ssize_t n = ::read(fd, tmp, sizeof tmp);
            if (n <= 0) std::fprintf(stderr, "peer_upgrade: fill connection lost\n"), std::exit(1);
            buf.append(tmp, static_cast<size_t>(n));
            continue;
          }
          if (r == Reply::kError)
            std::fprintf(stderr, "peer_upgrade: fill: server error\n"), std::exit(1);
          buf.erase(0, used);
          --pending;
        }
      };
      for (uint64_t i = static_cast<uint64_t>(t); i < keys; i += kConns) {
        batch += set_request(s.proto(), key_of(i), value_of(i));
        if (++pending == 512) {
          (void)!::send(fd, batch.data(), batch.size(), MSG_NOSIGNAL);
          batch.clear();
          drain();
        }
      }
      (void)!::send(fd, batch.data(), batch.size(), MSG_NOSIGNAL);
      drain();
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
}

// ------------------------------------------------------------------ load and results

struct Result {
  std::string server;
  uint64_t size = 0;
  int idle = 0;
  double downtime_ms = 0;    // longest gap without a successful request
  double gap_end_ms = 0;     // where it ended, after the trigger: which phase it fell in
  double steady_gap_ms = 0;  // the longest gap in the second before the trigger
  double blackout_ms = -1;   // kvd's own timeline; -1 for the peers
  double total_ms = 0;       // trigger until the replacement serves
  uint64_t errors = 0, resets = 0, refused = 0, misses = 0, lost_keys = 0, checked_keys = 0;
  uint64_t idle_lost = 0;
  double p50_steady = 0, p99_steady = 0, p999_steady = 0, p50_up = 0, p99_up = 0, p999_up = 0;
  uint64_t peak_bytes = 0;
  uint64_t steady_bytes = 0;  // the server's memory (held_bytes) just before the trigger
  // After the run, once the load has stopped: the count and the processes' PSS, which
  // should agree (the PSS read then perturbs nothing measured).
  uint64_t end_bytes = 0, end_pss = 0;
  uint64_t keys = 0;
  // Successful requests per second during the replacement against the second before it.
  double throughput_ratio = 0;
  // kvd only: the same while the checkpoint is written, and from then on.
  double throughput_checkpoint = 0, throughput_catchup = 0;
  uint64_t requests = 0;
  std::string note;
  // kvd only: the upgrade's phases from its timeline, and the machine's limits for the
  // same bytes measured right after it.
  double spawn_ms = 0, checkpoint_ms = 0, catchup_ms = 0, memcpy_ms = 0;
  uint64_t checkpoint_bytes = 0, deltas = 0;
  std::string checkpoint_line;  // kvd's "checkpoint written: ..." log line
};

// The physical limit for a checkpoint of `bytes`: memcpy into a fresh shared segment.
double memcpy_fresh_ms(uint64_t bytes) {
  std::vector<char> src(bytes, 'x');  // touched: its faults are not part of the copy
  int fd = ::memfd_create("baton-bench-memcpy", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return 0;
  void* dst = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (dst == MAP_FAILED) return 0;
  const int64_t a = now_us();
  std::memcpy(dst, src.data(), bytes);
  const int64_t b = now_us();
  ::munmap(dst, bytes);
  return (b - a) / 1000.0;
}

// The physical limit for the delta stream: bytes per second through a Unix socketpair
// with 4 MiB buffers and a reader thread, as the runtime sets it up.
double socket_gbps() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  const int buf = 4 << 20;
  for (int fd : sv) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  }
  std::thread reader([&] {
    std::vector<char> sink(1 << 20);
    while (::read(sv[1], sink.data(), sink.size()) > 0) {
    }
  });
  const std::string chunk(64 << 10, 'd');
  const uint64_t total = uint64_t{512} << 20;
  const int64_t a = now_us();
  for (uint64_t sent = 0; sent < total; sent += chunk.size()) {
    if (::write(sv[0], chunk.data(), chunk.size()) <= 0) break;
  }
  const int64_t b = now_us();
  ::shutdown(sv[0], SHUT_RDWR);
  reader.join();
  ::close(sv[0]);
  ::close(sv[1]);
  return total / 1e9 / ((b - a) / 1e6);
}

double percentile(std::vector<uint32_t>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i] / 1000.0;
}

std::string human(uint64_t bytes);

Result run_case(const Options& o, const std::string& kind, uint64_t size, int idle) {
  Result res;
  res.server = kind;
  res.size = size;
  res.idle = idle;
  Server s;
  s.kind = kind;
  s.kvd_bin = o.kvd;
  s.kvd_args = o.kvd_args;
  s.size = size;
  s.port = free_port();
  s.dir = o.out + "/run-" + kind + "-" + std::to_string(size >> 20) + "m" +
          (idle ? "-idle" + std::to_string(idle) : "");
  fs::remove_all(s.dir);
  fs::create_directories(s.dir);
  s.start();
  const uint64_t keys = size / 100;
  const int64_t t_fill = now_us();
  fill(s, keys);
  std::printf("  %-9s %6" PRIu64 " MiB: %" PRIu64 " keys filled in %.1f s", kind.c_str(),
              size >> 20, keys, (now_us() - t_fill) / 1e6);
  std::fflush(stdout);

  std::vector<int> idle_fds;
  for (int i = 0; i < idle; ++i) idle_fds.push_back(dial(s.port));

  // Load: closed loop on each connection, 90% GET / 10% SET of filled keys.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> trigger_us{INT64_MAX}, done_us{INT64_MAX};
  std::atomic<int64_t> last_ok_us{now_us()}, max_gap_us{0};
  // Where the longest gap ended: set with max_gap_us under gap_mu, so the two agree (a
  // new longest gap is rare; the common path only reads max_gap_us).
  std::mutex gap_mu;
  int64_t max_gap_end_us = 0;
  std::atomic<uint64_t> errors{0}, resets{0}, refused{0}, misses{0}, requests{0};
  const int64_t t0 = now_us();
  const size_t kBuckets = 200000;  // 10 ms each: 2000 s
  std::vector<std::atomic<uint32_t>> per10ms(kBuckets);
  std::mutex lat_mu;
  std::vector<uint32_t> lat_steady, lat_up;
  std::vector<std::thread> clients;
  for (int c = 0; c < o.connections; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<uint64_t>(c) * 7919 + 1);
      std::vector<uint32_t> steady, up;
      int fd = -1;
      std::string buf, value;
      while (!stop.load(std::memory_order_relaxed)) {
        if (fd < 0) {
          fd = dial(s.port);
          if (fd < 0) {
            if (errno == ECONNREFUSED) refused.fetch_add(1);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            continue;
          }
          buf.clear();
        }
        const uint64_t i = rng() % keys;
        const bool set = rng() % 10 == 0;
        const std::string req = set ? set_request(s.proto(), key_of(i), value_of(i))
                                    : get_request(s.proto(), key_of(i));
        const int64_t a = now_us();
        Reply r;
        if (!call(fd, s.proto(), req, buf, &r, &value)) {
          resets.fetch_add(1);
          ::close(fd);
          fd = -1;
          continue;
        }
        const int64_t b = now_us();
        requests.fetch_add(1, std::memory_order_relaxed);
        if (r == Reply::kError) {
          errors.fetch_add(1);
          continue;
        }
        if (r == Reply::kMiss) misses.fetch_add(1);
        const int64_t gap = b - last_ok_us.exchange(b);
        if (gap > max_gap_us.load(std::memory_order_relaxed)) {
          std::lock_guard<std::mutex> lock(gap_mu);
          if (gap > max_gap_us.load(std::memory_order_relaxed)) {
            max_gap_us = gap;
            max_gap_end_us = b;
          }
        }
        const size_t bucket = static_cast<size_t>((b - t0) / 10000);
        if (bucket < kBuckets) per10ms[bucket].fetch_add(1, std::memory_order_relaxed);
        const auto us = static_cast<uint32_t>(std::min<int64_t>(b - a, UINT32_MAX));
        if (a >= trigger_us.load() && a <= done_us.load()) {
          up.push_back(us);
        } else if (a < trigger_us.load()) {
          steady.push_back(us);
        }
      }
      if (fd >= 0) ::close(fd);
      std::lock_guard<std::mutex> lock(lat_mu);
      lat_steady.insert(lat_steady.end(), steady.begin(), steady.end());
      lat_up.insert(lat_up.end(), up.begin(), up.end());
    });
  }
  // Memory: the server's processes and memcached's memory file (mapped or not), every 20
  // ms; with --pss, the processes' PSS as before, and the file while no process maps it.
  const std::vector<std::string> files =
      kind == "memcached" ? std::vector<std::string>{s.memfile()} : std::vector<std::string>{};
  const auto sample = [&] {
    if (!o.pss) return held_bytes(s.pids(), files);
    uint64_t total = 0;
    for (pid_t p : s.pids()) total += pss_bytes(p);
    struct stat st;
    if (kind == "memcached" && ::stat(s.memfile().c_str(), &st) == 0 && total < 64 << 20) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
    return total;
  };
  std::atomic<uint64_t> peak{0};
  std::thread sampler([&] {
    while (!stop.load()) {
      const uint64_t total = sample();
      for (uint64_t m = peak.load(); total > m && !peak.compare_exchange_weak(m, total);) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  // The longest gap of the steady second before the trigger (the throughput's baseline
  // too): what the machine and the load do to the clients with no upgrade at all.
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, o.steady_s - 1.0)));
  {
    std::lock_guard<std::mutex> lock(gap_mu);
    max_gap_us = 0;
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(std::min(1.0, o.steady_s)));
  res.steady_gap_ms = max_gap_us / 1000.0;
  res.steady_bytes = sample();
  {
    std::lock_guard<std::mutex> lock(gap_mu);
    max_gap_us = 0;
    max_gap_end_us = 0;
    last_ok_us = now_us();
    trigger_us = now_us();
  }
  const std::string events0 = slurp(s.dir + "/events");
  const auto events_before = static_cast<size_t>(std::count(events0.begin(), events0.end(), '\n'));

  if (kind == "kvd") {
    ::kill(s.serving_pid(), SIGUSR2);
    // The same deadline as a peer's restart: an upgrade of gigabytes, paced, takes minutes.
    const int64_t deadline = now_us() + 300'000'000;
    bool recorded = false;
    while (!recorded && now_us() < deadline) {
      std::string ev = slurp(s.dir + "/events");
      recorded = static_cast<size_t>(std::count(ev.begin(), ev.end(), '\n')) > events_before;
      if (!recorded) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::string ev = recorded ? slurp(s.dir + "/events") : std::string();
    // The last line of the event log (a record holds nested objects: not the last '{').
    const size_t end = ev.find_last_not_of('\n');
    const size_t nl = end == std::string::npos ? std::string::npos : ev.rfind('\n', end);
    std::string line = ev.substr(nl == std::string::npos ? 0 : nl + 1);
    auto num = [&](const char* f) {  // 0 when the record lacks it (or there is none)
      size_t at = line.find(std::string("\"") + f + "\":");
      return at == std::string::npos ? 0.0 : std::atof(line.c_str() + at + std::strlen(f) + 3);
    };
    res.blackout_ms = recorded ? num("blackout_us") / 1000.0 : -1;  // "–": not known
    // Without a record, how long the harness waited: the upgrade took at least that.
    res.total_ms = recorded ? num("total_us") / 1000.0 : (now_us() - trigger_us) / 1000.0;
    res.spawn_ms = num("spawn_us") / 1000.0;
    res.checkpoint_ms = num("checkpoint_us") / 1000.0;
    res.catchup_ms = num("catchup_us") / 1000.0;
    res.checkpoint_bytes = static_cast<uint64_t>(num("checkpoint_bytes"));
    // The incumbent's own account of the checkpoint: its pacing and the page kind it got.
    const std::string log = slurp(s.dir + "/server.log");
    if (const size_t at = log.find("checkpoint written: "); at != std::string::npos) {
      res.checkpoint_line = log.substr(at, log.find('\n', at) - at);
    }
    res.deltas = static_cast<uint64_t>(num("deltas"));
    if (!recorded) {
      res.note = "no upgrade record in the event log within 300 s of SIGUSR2";
    } else if (line.find("\"committed\"") == std::string::npos) {
      res.note = "upgrade aborted: " + line;
    }
    done_us = now_us();
  } else {
    if (kind == "redis") {
      int fd = dial(s.port, 120000);
      std::string req = "SHUTDOWN SAVE\r\n";
      (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
      char tmp[64];
      while (::read(fd, tmp, sizeof tmp) > 0) {
      }
      ::close(fd);
    } else {
      ::kill(s.pid, SIGUSR1);  // graceful stop: the cache stays in the memory file
    }
    int status = 0;
    ::waitpid(s.pid, &status, 0);
    if (kind == "memcached") {
      // memcached 1.6 refuses a memory file saved in the current wall-clock second
      // ("restart incompatible due to setting for [stop_time]"): wait for the next one.
      const time_t stopped = ::time(nullptr);
      while (::time(nullptr) <= stopped) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    s.start();  // returns once it answers (Redis: after loading the RDB)
    done_us = now_us();
    res.total_ms = (done_us - trigger_us) / 1000.0;
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.after_s));
  // A gap still open when the load stops (a server that never answered again) is a gap
  // too, up to then; not the time the clients take to wind down after.
  const int64_t load_end_us = now_us();
  if (const int64_t open = load_end_us - std::min<int64_t>(last_ok_us, load_end_us);
      open > max_gap_us) {
    std::lock_guard<std::mutex> lock(gap_mu);
    max_gap_us = open;
    max_gap_end_us = load_end_us;
  }
  stop = true;
  for (auto& t : clients) t.join();
  sampler.join();
  res.end_bytes = held_bytes(s.pids(), files);
  for (pid_t p : s.pids()) res.end_pss += pss_bytes(p);

  // Did the data survive? A sample of keys, checked on a fresh connection.
  {
    int fd = dial(s.port, 10000);
    std::string buf, value;
    std::mt19937_64 rng(99);
    for (int n = 0; n < 2000; ++n) {
      const uint64_t i = rng() % keys;
      Reply r;
      if (!call(fd, s.proto(), get_request(s.proto(), key_of(i)), buf, &r, &value)) break;
      ++res.checked_keys;
      if (r != Reply::kOk || value != value_of(i)) ++res.lost_keys;
    }
    ::close(fd);
  }
  for (int fd : idle_fds) {
    std::string buf;
    Reply r;
    if (fd < 0 || !call(fd, s.proto(), get_request(s.proto(), "probe"), buf, &r, nullptr)) {
      ++res.idle_lost;
    }
    if (fd >= 0) ::close(fd);
  }

  res.downtime_ms = max_gap_us / 1000.0;
  res.gap_end_ms = (max_gap_end_us - trigger_us) / 1000.0;
  res.errors = errors;
  res.resets = resets;
  res.refused = refused;
  res.misses = misses;
  res.requests = requests;
  res.peak_bytes = peak;
  res.p50_steady = percentile(lat_steady, 0.50);
  res.p99_steady = percentile(lat_steady, 0.99);
  res.p999_steady = percentile(lat_steady, 0.999);
  res.p50_up = percentile(lat_up, 0.50);
  res.p99_up = percentile(lat_up, 0.99);
  res.p999_up = percentile(lat_up, 0.999);

  // Throughput: successes per 10 ms in a span, against the second before the trigger.
  {
    const auto bucket_of = [&](int64_t us) {
      return std::clamp<int64_t>((us - t0) / 10000, 0, static_cast<int64_t>(kBuckets));
    };
    const auto rate = [&](int64_t from_us, int64_t to_us) {
      const int64_t a = bucket_of(from_us), b = bucket_of(to_us);
      if (b <= a) return 0.0;
      uint64_t n = 0;
      for (int64_t i = a; i < b; ++i) n += per10ms[static_cast<size_t>(i)];
      return static_cast<double>(n) / static_cast<double>(b - a);
    };
    const double steady = rate(trigger_us - 1'000'000, trigger_us);
    if (steady > 0) {
      res.throughput_ratio = rate(trigger_us, done_us) / steady;
      if (kind == "kvd" && res.checkpoint_ms > 0) {
        const auto ckpt_end =
            trigger_us + static_cast<int64_t>((res.spawn_ms + res.checkpoint_ms) * 1000);
        res.throughput_checkpoint = rate(trigger_us, ckpt_end) / steady;
        res.throughput_catchup = rate(ckpt_end, done_us) / steady;
      }
    }
  }
  res.keys = keys;

  // Successful requests per 10 ms, from 1 s before the trigger to the end.
  std::ofstream tl(s.dir + "/timeline.csv");
  tl << "ms_since_trigger,successes\n";
  const int64_t first = std::max<int64_t>(0, (trigger_us - t0) / 10000 - 100);
  const int64_t last = std::min<int64_t>(kBuckets, (now_us() - t0) / 10000);
  for (int64_t b = first; b < last; ++b) {
    tl << (b * 10000 + t0 - trigger_us) / 1000 << "," << per10ms[static_cast<size_t>(b)] << "\n";
  }
  s.stop();
  if (kind == "kvd" && res.checkpoint_bytes > 0)
    res.memcpy_ms = memcpy_fresh_ms(res.checkpoint_bytes);
  std::printf(
      "; replaced in %.1f ms, longest gap %.1f ms (ending %.1f ms after the trigger; %.1f ms "
      "in the steady second before), %" PRIu64 " errors, %" PRIu64 " resets, %" PRIu64
      " of %" PRIu64 " keys lost; memory at the end %s counted, %s as PSS\n",
      res.total_ms, res.downtime_ms, res.gap_end_ms, res.steady_gap_ms, res.errors, res.resets,
      res.lost_keys, res.checked_keys, human(res.end_bytes).c_str(), human(res.end_pss).c_str());
  fs::remove_all(s.dir + "/dump.rdb");
  return res;
}

std::string human(uint64_t bytes) {
  char b[32];
  if (bytes >= (uint64_t{1} << 30)) {
    std::snprintf(b, sizeof b, "%.2f GiB", bytes / double(uint64_t{1} << 30));
  } else {
    std::snprintf(b, sizeof b, "%" PRIu64 " MiB", bytes >> 20);
  }
  return b;
}

// Issue 12's targets for each kvd case, met or missed, against the peers measured in the
// same run (docs/benchmarks.md, "Large state").
void write_targets(const std::string& path, const std::vector<Result>& results) {
  std::ofstream out(path);
  out << "| state | target | kvd | bound | |\n|---|---|---|---|---|\n";
  const auto peer = [&](const std::string& kind, uint64_t size) -> const Result* {
    for (const auto& r : results)
      if (r.server == kind && r.size == size && r.idle == 0 && r.note.empty()) return &r;
    return nullptr;
  };
  char line[512];
  const auto row = [&](const Result& r, const char* target, const std::string& got,
                       const std::string& bound, bool met) {
    std::snprintf(line, sizeof line, "| %s | %s | %s | %s | %s |\n", human(r.size).c_str(), target,
                  got.c_str(), bound.c_str(), met ? "met" : "**missed**");
    out << line;
  };
  const auto fmt = [](const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return std::string(b);
  };
  for (const auto& r : results) {
    if (r.server != "kvd" || r.idle != 0) continue;
    if (!r.note.empty()) {
      out << "| " << human(r.size) << " | every target | " << r.note << " | | **missed** |\n";
      continue;
    }
    if (r.size >= 1'000'000'000) {
      const double limit_ms = r.size >= (uint64_t{4} << 30) ? 6000 : 2000;
      row(r, "total time, SIGUSR2 to serving", fmt("%.1f s", r.total_ms / 1e3),
          fmt("<= %.0f s", limit_ms / 1e3), r.total_ms <= limit_ms);
      if (const Result* mc = peer("memcached", r.size)) {
        row(r, "total time against memcached's downtime", fmt("%.1f s", r.total_ms / 1e3),
            fmt("< %.1f s", mc->downtime_ms / 1e3), r.total_ms < mc->downtime_ms);
      }
    }
    row(r, "clients' longest gap",
        fmt("%.1f ms", r.downtime_ms) + fmt(" (steady: %.1f ms)", r.steady_gap_ms), "<= 5 ms",
        r.downtime_ms <= 5);
    const double p99x = r.p99_steady > 0 ? r.p99_up / r.p99_steady : 0;
    row(r, "p99 during / steady", fmt("%.1fx", p99x), "<= 2x", p99x <= 2);
    row(r, "throughput during", fmt("%.0f %%", 100 * r.throughput_ratio), ">= 70 %",
        r.throughput_ratio >= 0.7);
    const double peakx =
        r.steady_bytes ? static_cast<double>(r.peak_bytes) / static_cast<double>(r.steady_bytes)
                       : 0;
    row(r, "peak memory / steady", fmt("%.2fx", peakx), "<= 1.5x", peakx <= 1.5);
    if (const Result* redis = peer("redis", r.size)) {
      row(r, "peak memory against Redis's peak", human(r.peak_bytes),
          "< " + human(redis->peak_bytes), r.peak_bytes < redis->peak_bytes);
      row(r, "steady memory per key against Redis", human(r.steady_bytes),
          "<= " + human(redis->steady_bytes), r.steady_bytes <= redis->steady_bytes);
    }
    row(r, "blackout", fmt("%.2f ms", r.blackout_ms), "< 2 ms", r.blackout_ms < 2);
    row(r, "client errors, resets, keys lost",
        std::to_string(r.errors + r.resets + r.refused + r.lost_keys), "0",
        r.errors + r.resets + r.refused + r.lost_keys == 0);
  }
}

// Whether a case fits this machine: the server's expected peak (bytes per key measured on
// this project's machine, times its peak over steady, with a little room) within 85 % of
// MemAvailable. A case that does not fit is skipped with a line saying so rather than
// swapping or being killed. kvd: 191 B per key at 2.22x since its slot became 56 bytes
// (docs/design.md, "Memory per key"); its 4 GiB case then needs about 17 GiB.
bool fits(const std::string& kind, uint64_t size, std::string* why) {
  const uint64_t keys = size / 100;
  const double per_key = kind == "kvd" ? 195 * 2.25 : kind == "redis" ? 220 * 1.3 : 250 * 1.2;
  const auto need = static_cast<uint64_t>(static_cast<double>(keys) * per_key);
  uint64_t avail = 0;
  std::ifstream in("/proc/meminfo");
  for (std::string k; in >> k;) {
    uint64_t v = 0;
    in >> v;
    if (k == "MemAvailable:") avail = v << 10;
    in.ignore(64, '\n');
  }
  if (avail == 0 || static_cast<double>(need) <= 0.85 * static_cast<double>(avail)) return true;
  *why = kind + " would peak near " + human(need) + ", more than 85 % of the " + human(avail) +
         " available";
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto list = [](const std::string& s) {
      std::vector<std::string> out;
      std::stringstream ss(s);
      for (std::string x; std::getline(ss, x, ',');) out.push_back(x);
      return out;
    };
    if (a == "--quick") {
      o.sizes = {uint64_t{1} << 20, uint64_t{16} << 20};
      o.idle_size = uint64_t{1} << 20;
      o.steady_s = 1.0;
      o.after_s = 0.5;
    } else if (a == "--servers") {
      o.servers = list(next());
      for (auto& sv : o.servers)
        if (sv != "kvd" && sv != "redis" && sv != "memcached") usage("unknown server '" + sv + "'");
    } else if (a == "--sizes-mib") {
      o.sizes.clear();
      for (auto& x : list(next())) {
        if (x.empty() || x.find_first_not_of("0123456789") != std::string::npos || x == "0")
          usage("--sizes-mib takes positive whole numbers, got '" + x + "'");
        o.sizes.push_back(std::stoull(x) << 20);
      }
    } else if (a == "--connections") {
      o.connections = std::atoi(next().c_str());
      if (o.connections < 1 || o.connections > 1000) usage("--connections is 1..1000");
    } else if (a == "--idle") {
      o.idle = std::atoi(next().c_str());
      if (o.idle < 0 || o.idle > 10000) usage("--idle is 0..10000");
    } else if (a == "--out") {
      o.out = next();
    } else if (a == "--kvd") {
      o.kvd = next();
    } else if (a == "--kvd-arg") {
      o.kvd_args.push_back(next());
    } else if (a == "--pss") {
      o.pss = true;
    } else {
      usage("unknown option '" + a + "'");
    }
  }
  if (!fs::exists(o.kvd)) usage("no kvd at " + o.kvd + " (build it, or pass --kvd)");
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // kvd's successors become ours to reap
  rlimit fds{65536, 65536};
  ::setrlimit(RLIMIT_NOFILE, &fds);
  ::signal(SIGPIPE, SIG_IGN);
  fs::create_directories(o.out);

  std::vector<Result> results;
  const int64_t started = now_us();
  for (uint64_t size : o.sizes) {
    std::printf("state %s (%" PRIu64 " keys of 100 bytes), %d connections\n", human(size).c_str(),
                size / 100, o.connections);
    for (const auto& kind : o.servers) {
      std::string why;
      if (!fits(kind, size, &why)) {
        std::printf("  %-9s %6" PRIu64 " MiB: skipped: %s\n", kind.c_str(), size >> 20,
                    why.c_str());
        continue;
      }
      results.push_back(run_case(o, kind, size, 0));
    }
  }
  if (o.idle > 0) {
    std::printf("state %s with %d more idle connections\n", human(o.idle_size).c_str(), o.idle);
    for (const auto& kind : o.servers) results.push_back(run_case(o, kind, o.idle_size, o.idle));
  }

  std::ofstream csv(o.out + "/results.csv");
  csv << "server,state_bytes,idle,downtime_ms,blackout_ms,total_ms,errors,resets,refused,misses,"
         "lost_keys,checked_keys,idle_lost,p50_steady_ms,p99_steady_ms,p999_steady_ms,p50_up_ms,"
         "p99_up_ms,p999_up_ms,peak_bytes,requests,steady_bytes,keys,throughput_ratio,gap_end_ms,"
         "steady_gap_ms\n";
  for (auto& r : results) {
    csv << r.server << "," << r.size << "," << r.idle << "," << r.downtime_ms << ","
        << r.blackout_ms << "," << r.total_ms << "," << r.errors << "," << r.resets << ","
        << r.refused << "," << r.misses << "," << r.lost_keys << "," << r.checked_keys << ","
        << r.idle_lost << "," << r.p50_steady << "," << r.p99_steady << "," << r.p999_steady << ","
        << r.p50_up << "," << r.p99_up << "," << r.p999_up << "," << r.peak_bytes << ","
        << r.requests << "," << r.steady_bytes << "," << r.keys << "," << r.throughput_ratio << ","
        << r.gap_end_ms << "," << r.steady_gap_ms << "\n";
  }
  std::ofstream md(o.out + "/report.md");
  md << "| server | state | idle conns | longest gap | kvd blackout | replaced in | errors | "
        "resets | refused | keys lost (sample) | idle conns lost | p50 / p99 / p99.9 steady | "
        "p50 / p99 / p99.9 during | throughput during | steady memory (per key) | peak memory "
        "(of steady) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  char line[1024];
  for (auto& r : results) {
    std::snprintf(
        line, sizeof line,
        "| %s | %s | %d | %.1f ms | %s | %.1f ms | %" PRIu64 " | %" PRIu64 " | %" PRIu64
        " | %" PRIu64 " of %" PRIu64 " | %" PRIu64
        " | %.2f / %.2f / %.2f ms | %.2f / %.2f / %.2f ms | %.0f %% | %s (%.0f B) | %s (%.2fx) |\n",
        r.server.c_str(), human(r.size).c_str(), r.idle, r.downtime_ms,
        r.blackout_ms < 0 ? "–" : (std::to_string(r.blackout_ms).substr(0, 5) + " ms").c_str(),
        r.total_ms, r.errors, r.resets, r.refused, r.lost_keys, r.checked_keys, r.idle_lost,
        r.p50_steady, r.p99_steady, r.p999_steady, r.p50_up, r.p99_up, r.p999_up,
        100 * r.throughput_ratio, human(r.steady_bytes).c_str(),
        r.keys ? static_cast<double>(r.steady_bytes) / static_cast<double>(r.keys) : 0.0,
        human(r.peak_bytes).c_str(),
        r.steady_bytes ? static_cast<double>(r.peak_bytes) / static_cast<double>(r.steady_bytes)
                       : 0.0);
    md << line;
  }
  csv.close();
  md.close();
  // kvd's upgrade by phase, against the machine's limits measured in this run.
  const double gbps = socket_gbps();
  std::ofstream ph(o.out + "/phases.md");
  ph << "Unix socket throughput measured in this run: " << gbps << " GB/s (64 KiB writes).\n\n"
     << "| state | checkpoint | spawn | checkpoint written | memcpy of it into a fresh segment | "
        "ratio | catch-up (restore + deltas) | deltas | blackout | total (SIGUSR2 to serving) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n";
  for (auto& r : results) {
    if (r.server != "kvd" || r.idle != 0) continue;
    std::snprintf(line, sizeof line,
                  "| %s | %s | %.1f ms | %.1f ms | %.1f ms | %.2fx | %.1f ms | %" PRIu64
                  " | %.3f ms | %.1f ms |\n",
                  human(r.size).c_str(), human(r.checkpoint_bytes).c_str(), r.spawn_ms,
                  r.checkpoint_ms, r.memcpy_ms,
                  r.checkpoint_ms > 0 ? r.memcpy_ms / r.checkpoint_ms : 0, r.catchup_ms, r.deltas,
                  r.blackout_ms, r.total_ms);
    ph << line;
  }
  ph << "\nkvd's checkpoints, as the incumbent logged them (pacing, pages):\n\n";
  for (auto& r : results) {
    if (r.server == "kvd" && r.idle == 0 && !r.checkpoint_line.empty())
      ph << "- " << human(r.size) << ": " << r.checkpoint_line << "\n";
  }
  ph << "\nkvd's throughput by phase, against the second before the trigger, and where the "
        "clients' longest gap ended (against the longest in the steady second before):\n\n"
     << "| state | while the checkpoint is written | restore, catch-up and handoff | longest "
        "gap | ended after the trigger | in | steady |\n|---|---|---|---|---|---|---|\n";
  for (auto& r : results) {
    if (r.server != "kvd" || r.idle != 0) continue;
    const double ckpt_end_ms = r.spawn_ms + r.checkpoint_ms;
    const char* phase = r.gap_end_ms <= ckpt_end_ms  ? "checkpoint"
                        : r.gap_end_ms <= r.total_ms ? "restore, catch-up and handoff"
                                                     : "after";
    std::snprintf(line, sizeof line,
                  "| %s | %.0f %% | %.0f %% | %.1f ms | %.1f ms | %s | %.1f ms |\n",
                  human(r.size).c_str(), 100 * r.throughput_checkpoint, 100 * r.throughput_catchup,
                  r.downtime_ms, r.gap_end_ms, phase, r.steady_gap_ms);
    ph << line;
  }
  ph.close();
  write_targets(o.out + "/targets.md", results);
  std::printf("\n%s\n%s\n%s", slurp(o.out + "/report.md").c_str(),
              slurp(o.out + "/phases.md").c_str(), slurp(o.out + "/targets.md").c_str());

  std::printf("\nall cases in %.0f s; results.csv, report.md and timelines in %s\n",
              (now_us() - started) / 1e6, o.out.c_str());
  return 0;
}
