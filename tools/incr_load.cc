// incr_load: a Redis-protocol load client that survives what redis-benchmark does not.
// Each connection sends INCR on one key, one request at a time, and counts the replies;
// a reset or EOF is counted and the connection redialled at once (refused dials counted
// too). A request that was sent but never answered is "uncertain": the server may or may
// not have applied it. So after the run, for the key's final value V:
//   acked <= V <= acked + uncertain     (no acknowledged INCR lost, none applied twice)
// and the tool checks exactly that itself, with a fresh connection, before it exits.
//
// Usage: incr_load --port P [--connections N] [--seconds S] [--key K] [--stop-file F]
// It runs for S seconds, or until F exists; prints one summary line; exits 0 when the
// check holds, 1 when it does not, 2 on bad arguments.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int port = 0;
  int connections = 8;
  double seconds = 5;
  std::string key = "counter:incr_load";
  std::string stop_file;
};

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
      .count();
}

int dial(int port, bool* refused) {
  *refused = false;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{2, 0};  // a reply that takes this long counts as lost: redial
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    *refused = errno == ECONNREFUSED;
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads one integer reply (":123\r\n"); false on EOF, error, timeout or anything else.
bool read_integer(int fd, std::string& buf, long long* value) {
  for (;;) {
    const size_t nl = buf.find("\r\n");
    if (nl != std::string::npos) {
      const bool ok = buf[0] == ':';
      if (ok) *value = std::atoll(buf.c_str() + 1);
      buf.erase(0, nl + 2);
      return ok;
    }
    char tmp[256];
    const ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

struct Totals {
  std::atomic<long long> acked{0}, uncertain{0}, resets{0}, refused{0}, errors{0};
  std::atomic<int64_t> last_reply_us{0};
  std::atomic<int64_t> longest_gap_us{0};
};

void note_reply(Totals& t) {
  const int64_t now = now_us();
  const int64_t prev = t.last_reply_us.exchange(now);
  if (prev != 0) {
    int64_t gap = now - prev, seen = t.longest_gap_us.load();
    while (gap > seen && !t.longest_gap_us.compare_exchange_weak(seen, gap)) {
    }
  }
}

bool stopped(const Options& o, Clock::time_point until) {
  struct stat st;
  return Clock::now() >= until || (!o.stop_file.empty() && ::stat(o.stop_file.c_str(), &st) == 0);
}

void worker(const Options& o, Clock::time_point until, Totals& t) {
  const std::string req =
      "*2\r\n$4\r\nINCR\r\n$" + std::to_string(o.key.size()) + "\r\n" + o.key + "\r\n";
  int fd = -1;
  std::string buf;
  while (!stopped(o, until)) {
    if (fd < 0) {
      bool refused = false;
      fd = dial(o.port, &refused);
      buf.clear();
      if (fd < 0) {
        if (refused) ++t.refused;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
    }
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      ++t.resets;  // nothing was sent whole: the request may have reached the server or not
      ++t.uncertain;
      ::close(fd);
      fd = -1;
      continue;
    }
    long long v = 0;
    if (!read_integer(fd, buf, &v)) {
      ++t.resets;
      ++t.uncertain;
      ::close(fd);
      fd = -1;
      continue;
    }
    ++t.acked;
    note_reply(t);
  }
  if (fd >= 0) ::close(fd);
}

bool parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "incr_load: %s needs a value\n", flag.c_str());
      return false;
    }
    const char* v = argv[i + 1];
    if (flag == "--port") {
      o->port = std::atoi(v);
    } else if (flag == "--connections") {
      o->connections = std::atoi(v);
    } else if (flag == "--seconds") {
      o->seconds = std::atof(v);
    } else if (flag == "--key") {
      o->key = v;
    } else if (flag == "--stop-file") {
      o->stop_file = v;
    } else {
      std::fprintf(stderr,
                   "incr_load: unknown flag '%s'; flags: --port --connections --seconds --key "
                   "--stop-file\n",
                   flag.c_str());
      return false;
    }
  }
  if (o->port <= 0 || o->port > 65535 || o->connections < 1 || o->connections > 1000 ||
      o->seconds <= 0 || o->seconds > 3600) {
    std::fprintf(stderr,
                 "incr_load: needs --port 1..65535, --connections 1..1000, --seconds 0..3600\n");
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) return 2;
  Totals t;
  const Clock::time_point until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                     std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i)
    threads.emplace_back(worker, std::cref(o), until, std::ref(t));
  for (auto& th : threads) th.join();

  // The check, on a fresh connection (retried briefly: the server may be mid-handoff).
  long long final_value = -1;
  for (int attempt = 0; attempt < 500 && final_value < 0; ++attempt) {
    bool refused = false;
    const int fd = dial(o.port, &refused);
    if (fd >= 0) {
      const std::string get =
          "*2\r\n$3\r\nGET\r\n$" + std::to_string(o.key.size()) + "\r\n" + o.key + "\r\n";
      std::string buf;
      char tmp[256];
      if (::send(fd, get.data(), get.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(get.size())) {
        for (ssize_t n; buf.find("\r\n", buf.find("\r\n") + 2) == std::string::npos &&
                        (n = ::read(fd, tmp, sizeof tmp)) > 0;) {
          buf.append(tmp, static_cast<size_t>(n));
        }
        const size_t nl = buf.find("\r\n");
        if (buf.rfind("$-1", 0) == 0)
          final_value = 0;
        else if (buf[0] == '$' && nl != std::string::npos)
          final_value = std::atoll(buf.c_str() + nl + 2);
      }
      ::close(fd);
    }
    if (final_value < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const long long acked = t.acked, uncertain = t.uncertain;
  const bool exact = final_value >= acked && final_value <= acked + uncertain;
  std::printf(
      "incr_load: acked %lld, uncertain %lld, final %lld (%s), resets %lld, refused %lld, "
      "longest gap %.1f ms\n",
      acked, uncertain, final_value,
      exact ? "every acknowledged INCR present, none doubled" : "MISMATCH", t.resets.load(),
      t.refused.load(), t.longest_gap_us.load() / 1000.0);
  return exact ? 0 : 1;
}
