// batonctl: the operator's tool. It asks a Baton server to upgrade, roll back or promote,
// reports its status or prints its metrics, over the server's control socket
// (RuntimeOptions::control_socket; a leading '@' = the abstract namespace). Every command
// has a deadline; exit codes are documented in usage() and docs/operations.md.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Exit codes (docs/operations.md, "batonctl").
constexpr int kOk = 0;           // done: committed, promoted, status printed
constexpr int kRefused = 1;      // the server answered no: refused, busy, or the upgrade aborted
constexpr int kUsage = 2;        // bad command line
constexpr int kUnreachable = 3;  // no server on that socket, or it went away mid-command
constexpr int kTimeout = 4;      // no answer within --timeout
constexpr int kForbidden = 5;    // the server refuses this uid

void usage(FILE* out) {
  std::fprintf(out,
               "usage: batonctl --socket PATH [--timeout SECONDS] COMMAND [OPTIONS]\n"
               "\n"
               "  upgrade [--no-wait] [--json]\n"
               "            start a live upgrade to the binary the server was started from\n"
               "            (install the new one there first); wait for the outcome and\n"
               "            print the timeline (--json: as JSON). --no-wait: return once it\n"
               "            has started (not with --json)\n"
               "  status [--json]\n"
               "            pid, generation, what the server does (serving, upgrading and its\n"
               "            phase, probation and the time left) and the last upgrade\n"
               "  rollback  during probation: hand service back to the previous version\n"
               "            (returns once the rollback has started; see status)\n"
               "  promote   during probation: keep the new version and let the old one go\n"
               "  metrics   the server's metrics in Prometheus text format\n"
               "\n"
               "  --socket PATH     the server's control socket (its --control flag); '@name'\n"
               "                    is an abstract socket. Default: $BATON_SOCKET\n"
               "  --timeout SECONDS give up after this long (default 600 for upgrade, 5 else)\n"
               "\n"
               "exit status: 0 done (rollback: started); 1 the server refused, the upgrade\n"
               "aborted, or the new version was rolled back after its commit (the reason\n"
               "is printed); 2 bad usage; 3 no server answers on the socket; 4 timed out;\n"
               "5 the server does not accept commands from this uid\n");
}

int64_t now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

struct Reply {
  int status = kOk;       // kOk when `text` is what the server said
  std::string text;       // or the error message (also for kTimeout when !connected)
  bool closed = false;    // the server closed the connection (the reply is complete)
  bool connected = true;  // false: it ended before connect() did
};

// Connects `fd` (nonblocking) to `addr` by `deadline_ms`: 0, or an errno (ETIMEDOUT).
// A blocking connect would wait as long as the listen backlog stays full, which is what
// a stopped or wedged server's does; on AF_UNIX a nonblocking one fails with EAGAIN then,
// and is retried until the deadline.
int connect_by(int fd, const sockaddr_un& addr, socklen_t len, int64_t deadline_ms) {
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) return 0;
    const int err = errno;
    if (err == EINTR) continue;
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) return ETIMEDOUT;
    if (err == EAGAIN) {  // the backlog is full: it may drain
      ::usleep(static_cast<useconds_t>(std::min<int64_t>(left, 10) * 1000));
      continue;
    }
    if (err != EINPROGRESS) return err;
    pollfd p{fd, POLLOUT, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return ETIMEDOUT;
    int so_error = 0;
    socklen_t sl = sizeof so_error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &sl) != 0) return errno;
    return so_error;
  }
}

// What connect() failing on `path` means, for an operator.
std::string why_unreachable(const std::string& path, int err) {
  const bool abstract = path[0] == '@';
  std::string s = "batonctl: cannot connect to " + path + ": " + std::strerror(err) + "; ";
  if (err == ENOENT) {
    s += "no socket exists there: is the server running, and was it started with --control " +
         path + "?";
  } else if (err == ECONNREFUSED) {
    s += abstract ? "nothing listens on that abstract name: is the server running with "
                    "--control " +
                        path + "?"
                  : "the socket is there but nothing listens on it: the server that made it "
                    "has stopped";
  } else if (err == EACCES || err == EPERM) {
    s += "this user may not open the socket's path; run batonctl as the server's user";
  } else {
    s += "is the server running with --control " + path + "?";
  }
  return s;
}

// Connects, sends `line` and reads until the server closes, `until` returns true on what
// arrived so far, or `deadline_ms` (CLOCK_MONOTONIC) passes.
Reply ask(const std::string& path, const std::string& line, int64_t deadline_ms,
          bool (*until)(const std::string&) = nullptr) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return {kUsage, "batonctl: socket path '" + path + "' is empty or longer than " +
                        std::to_string(sizeof addr.sun_path - 1) + " bytes"};
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return {kUnreachable, std::string("batonctl: socket: ") + std::strerror(errno)};
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (const int err = connect_by(fd, addr, len, deadline_ms); err != 0) {
    Reply r{kUnreachable, why_unreachable(path, err)};
    if (err == ETIMEDOUT) {
      r = {kTimeout,
           "batonctl: no answer within the timeout: " + path +
               " accepts no connection (its listen backlog is full: the server is stopped "
               "or wedged)",
           false, false};
    }
    ::close(fd);
    return r;
  }
  // MSG_NOSIGNAL: a server that refuses us may already have answered and closed; its
  // answer is still ours to read. A line fits the socket's buffer at once.
  const std::string out = line + "\n";
  if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size()) &&
      errno != EPIPE && errno != ECONNRESET) {
    Reply r{kUnreachable,
            std::string("batonctl: sending to ") + path + ": " + std::strerror(errno)};
    ::close(fd);
    return r;
  }
  Reply r;
  char buf[4096];
  for (;;) {
    if (until != nullptr && until(r.text)) break;
    const int64_t left = deadline_ms - now_ms();
    pollfd p{fd, POLLIN, 0};
    const int n = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.status = kTimeout;
      break;
    }
    const ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) {
      r.closed = true;
      break;
    }
    r.text.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  return r;
}

// ---------------------------------------------------------------- JSON, as the server writes it

// Flattens one JSON object into "key" / "outer.inner" -> the value's text (strings
// unescaped, null as "null"). Enough for the status and timeline objects the runtime
// writes; false on anything else.
class Json {
 public:
  static bool parse(std::string_view text, std::map<std::string, std::string>* out) {
    Json j(text);
    j.ws();
    return j.object("", out) && (j.ws(), j.at_ == text.size());
  }

 private:
  explicit Json(std::string_view s) : s_(s) {}
  std::string_view s_;
  size_t at_ = 0;

  void ws() {
    while (at_ < s_.size() && std::strchr(" \t\r\n", s_[at_]) != nullptr) ++at_;
  }
  bool eat(char c) {
    ws();
    if (at_ >= s_.size() || s_[at_] != c) return false;
    ++at_;
    return true;
  }
  bool string(std::string* out) {
    if (!eat('"')) return false;
    for (; at_ < s_.size(); ++at_) {
      char c = s_[at_];
      if (c == '"') return ++at_, true;
      if (c == '\\' && ++at_ < s_.size()) {
        c = s_[at_];
        if (c == 'n')
          c = '\n';
        else if (c == 't')
          c = '\t';
        else if (c == 'u' && at_ + 4 < s_.size()) {
          c = static_cast<char>(
              std::strtol(std::string(s_.substr(at_ + 1, 4)).c_str(), nullptr, 16));
          at_ += 4;
        }
      }
      out->push_back(c);
    }
    return false;
  }
  bool object(const std::string& prefix, std::map<std::string, std::string>* out) {
    if (!eat('{')) return false;
    if (eat('}')) return true;
    do {
      std::string key;
      if (!string(&key) || !eat(':')) return false;
      ws();
      const std::string name = prefix.empty() ? key : prefix + "." + key;
      if (at_ < s_.size() && s_[at_] == '{') {
        if (!object(name, out)) return false;
        continue;
      }
      std::string value;
      if (at_ < s_.size() && s_[at_] == '"') {
        if (!string(&value)) return false;
      } else {
        const size_t from = at_;
        while (at_ < s_.size() && std::strchr(",}] \t\r\n", s_[at_]) == nullptr) ++at_;
        value = std::string(s_.substr(from, at_ - from));
        if (value.empty()) return false;
      }
      (*out)[name] = value;
    } while (eat(','));
    return eat('}');
  }
};

std::string ms_text(const std::string& us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", std::strtod(us.c_str(), nullptr) / 1000.0);
  return buf;
}

// An upgrade's timeline (docs/protocol.md, "Timeline") as a table; `p` is the record's
// key prefix ("" or "last_upgrade.").
void print_timeline(std::map<std::string, std::string>& m, const std::string& p) {
  std::printf("generation %s: %s%s%s\n", m[p + "generation"].c_str(), m[p + "outcome"].c_str(),
              m[p + "reason"].empty() ? "" : ": ", m[p + "reason"].c_str());
  // Shadow verification (docs/protocol.md), when it ran: probes and the state digest.
  auto shadow = [&] {
    const std::string sent = m[p + "probes.sent"], evaluated = m[p + "probes.evaluated"];
    if (!evaluated.empty() && (evaluated != "0" || sent != "0")) {
      std::printf("  probes      %12s  sent, %s evaluated, %s mismatched\n", sent.c_str(),
                  evaluated.c_str(), m[p + "probes.mismatched"].c_str());
      for (int i = 1; m.count(p + "probes.discrepancies." + std::to_string(i)) != 0; ++i) {
        std::printf("    %s\n", m[p + "probes.discrepancies." + std::to_string(i)].c_str());
      }
    }
    if (!m[p + "digest"].empty()) std::printf("  digest      %s\n", m[p + "digest"].c_str());
  };
  if (m[p + "outcome"] == "promoted") {  // the end of a probation: no handoff ran
    std::printf("  probation   %12s\n", ms_text(m[p + "total_us"]).c_str());
    shadow();
    return;
  }
  std::printf("  spawn       %12s\n", ms_text(m[p + "spawn_us"]).c_str());
  std::printf("  checkpoint  %12s  %s bytes\n", ms_text(m[p + "checkpoint_us"]).c_str(),
              m[p + "checkpoint_bytes"].c_str());
  std::printf("  catch-up    %12s  %s deltas\n", ms_text(m[p + "catchup_us"]).c_str(),
              m[p + "deltas"].c_str());
  std::printf("  blackout    %12s  %s fds moved\n", ms_text(m[p + "blackout_us"]).c_str(),
              m[p + "fds"].c_str());
  std::printf("  total       %12s\n", ms_text(m[p + "total_us"]).c_str());
  if (m[p + "probation_ms"] != "0") {
    std::printf("  probation   %9s ms\n", m[p + "probation_ms"].c_str());
  }
  shadow();
}

// The server's reply as batonctl's result: its "error: ..." lines are refusals.
int print_answer(const Reply& r) {
  if (r.status != kOk && r.status != kTimeout) {
    std::fprintf(stderr, "%s\n", r.text.c_str());
    return r.status;
  }
  if (r.status == kTimeout) {
    std::fprintf(stderr, "%s\n",
                 r.connected ? "batonctl: no answer within the timeout" : r.text.c_str());
    return kTimeout;
  }
  if (r.text.empty()) {
    std::fprintf(stderr, "batonctl: the server closed the connection without an answer\n");
    return kUnreachable;
  }
  if (r.text.rfind("error: uid ", 0) == 0) {
    std::fprintf(stderr, "batonctl: %s", r.text.c_str() + 7);
    return kForbidden;
  }
  if (r.text.rfind("error: ", 0) == 0) {
    std::fprintf(stderr, "batonctl: %s", r.text.c_str() + 7);
    return kRefused;
  }
  std::fputs(r.text.c_str(), stdout);
  return kOk;
}

int status(const std::string& socket, int64_t deadline_ms, bool json) {
  const Reply r = ask(socket, "status", deadline_ms);
  if (json || r.status != kOk || r.text.empty() || r.text.rfind("error: ", 0) == 0) {
    return print_answer(r);
  }
  std::map<std::string, std::string> m;
  if (!Json::parse(r.text, &m)) {
    std::fprintf(stderr, "batonctl: the server's status is not the JSON expected: %s",
                 r.text.c_str());
    return kRefused;
  }
  const std::string state = m["state"].empty() ? m["phase"] : m["state"];
  std::printf("pid %s, generation %s: %s", m["pid"].c_str(), m["generation"].c_str(),
              state.c_str());
  if (state == "upgrading") std::printf(" (phase %s)", m["phase"].c_str());
  if (state == "probation" || state == "standby") {
    std::printf(", %.1f s left (reverse stream lag %s bytes)",
                std::strtod(m["probation_left_ms"].c_str(), nullptr) / 1000.0,
                m["reverse_lag_bytes"].c_str());
  }
  std::printf("\n");
  if (m.count("last_upgrade.generation") != 0) {
    std::printf("last upgrade: ");
    print_timeline(m, "last_upgrade.");
  } else {
    std::printf("last upgrade: none\n");
  }
  if (!m["last_abort"].empty()) std::printf("last abort: %s\n", m["last_abort"].c_str());
  return kOk;
}

bool has_outcome(const std::string& text) {
  const size_t nl = text.find('\n');
  if (nl == std::string::npos) return false;
  const std::string_view rest = std::string_view(text).substr(nl + 1);
  if (rest.rfind("committed: ", 0) == 0) return rest.find('\n') != std::string::npos;
  // "aborted: REASON\n" and the timeline line
  const size_t first = rest.find('\n');
  return rest.rfind("aborted: ", 0) == 0 && first != std::string::npos &&
         rest.find('\n', first + 1) != std::string::npos;
}

// The last_upgrade object of a status reply, as its JSON text ("null" if none).
std::string last_upgrade_json(const std::string& status) {
  const size_t at = status.find("\"last_upgrade\":");
  if (at == std::string::npos) return "null";
  std::string record = status.substr(at + 15);
  while (!record.empty() && (record.back() == '\n' || record.back() == '}')) record.pop_back();
  return record == "null" ? record : record + "}";
}

// Asks `status` until the process that serves shows the record of the upgrade to
// generation `target`, or shows that something else came of it: an abort, or a
// generation past it (the new version crashed or failed its health check, and the
// standby took back). `committed` is the outcome line the incumbent sent ("" if it did
// not: a server without `upgrade wait`); `before` the last_upgrade record from before the
// upgrade started, which is not its outcome.
int watch(const std::string& socket, int64_t deadline_ms, int64_t started_ms, uint64_t target,
          std::string committed, const std::string& before, bool json) {
  while (now_ms() < deadline_ms) {
    const Reply s = ask(socket, "status", deadline_ms);
    std::map<std::string, std::string> m;
    if (s.status != kOk || !Json::parse(s.text, &m)) {
      ::usleep(20'000);  // mid-handoff, or the server is gone: its successor may answer
      continue;
    }
    const uint64_t generation = std::strtoull(m["generation"].c_str(), nullptr, 10);
    const std::string record = last_upgrade_json(s.text);
    const uint64_t of = std::strtoull(m["last_upgrade.generation"].c_str(), nullptr, 10);
    const std::string& outcome = m["last_upgrade.outcome"];
    const bool fresh = record != "null" && record != before;
    const bool done = generation == target && of == target && fresh &&
                      (outcome == "committed" || outcome == "promoted");
    const bool aborted = of == target && fresh && outcome == "aborted";
    const bool passed = generation > target || (fresh && of >= target && outcome == "rolled back");
    if (!done && !aborted && !passed) {
      ::usleep(20'000);
      continue;
    }
    if (committed.empty() && !aborted) {
      committed = "committed: generation " + std::to_string(target) +
                  (done ? " serves as pid " + m["pid"] : std::string());
    }
    if (json) {
      std::printf("%s\n", record.c_str());
    } else {
      if (!aborted) std::printf("%s\n", committed.c_str());
      print_timeline(m, "last_upgrade.");
    }
    if (done) return kOk;
    if (aborted) {
      std::fprintf(stderr, "batonctl: upgrade aborted: %s; the old version serves on\n",
                   m["last_upgrade.reason"].c_str());
      return kRefused;
    }
    std::fprintf(stderr,
                 "batonctl: generation %" PRIu64
                 " committed, but did not last: generation %s %s%s%s; pid %s serves generation "
                 "%s now\n",
                 target, m["last_upgrade.generation"].c_str(), outcome.c_str(),
                 m["last_upgrade.reason"].empty() ? "" : ": ", m["last_upgrade.reason"].c_str(),
                 m["pid"].c_str(), m["generation"].c_str());
    return kRefused;
  }
  if (committed.empty()) {
    std::fprintf(stderr,
                 "batonctl: no outcome within %.1f s; the upgrade may still run: see "
                 "'batonctl status'\n",
                 static_cast<double>(now_ms() - started_ms) / 1000.0);
    return kTimeout;
  }
  std::printf("%s\n", committed.c_str());
  std::fprintf(stderr,
               "batonctl: committed, but the new process showed no timeline within the "
               "timeout; see 'batonctl status'\n");
  return kOk;
}

// "ok: upgrade to generation N started" -> N (0 if it is not that line).
uint64_t started_generation(const std::string& head) {
  const size_t at = head.find("generation ");
  return head.rfind("ok: upgrade to ", 0) == 0 && at != std::string::npos
             ? std::strtoull(head.c_str() + at + 11, nullptr, 10)
             : 0;
}

// A server from before `upgrade wait` answers it with this.
constexpr const char* kNoWaitCommand = "error: unknown command 'upgrade wait'";

int upgrade(const std::string& socket, int64_t deadline_ms, bool wait, bool json) {
  if (!wait) return print_answer(ask(socket, "upgrade", deadline_ms));
  const int64_t started = now_ms();
  const Reply r = ask(socket, "upgrade wait", deadline_ms, has_outcome);
  // batonctl's own failures (usage, unreachable, a connect that timed out) first: no
  // upgrade started.
  if ((r.status != kOk && r.status != kTimeout) || !r.connected) return print_answer(r);
  if (r.text.rfind(kNoWaitCommand, 0) == 0) {
    // An older build: start it with `upgrade` and watch `status` for the outcome.
    std::fprintf(stderr,
                 "batonctl: this server predates 'upgrade wait'; starting the upgrade with "
                 "'upgrade' and watching 'status' for its outcome\n");
    const Reply before = ask(socket, "status", deadline_ms);
    if (before.status != kOk || before.text.rfind("error: ", 0) == 0) return print_answer(before);
    const Reply u = ask(socket, "upgrade", deadline_ms);
    const uint64_t target = started_generation(u.text);
    if (u.status != kOk || target == 0) return print_answer(u);
    return watch(socket, deadline_ms, started, target, "", last_upgrade_json(before.text), json);
  }
  if (r.text.rfind("error: ", 0) == 0 || r.text.empty()) return print_answer(r);
  const size_t nl = r.text.find('\n');
  const std::string head = r.text.substr(0, nl);  // "ok: upgrade to generation N started"
  std::string rest = nl == std::string::npos ? "" : r.text.substr(nl + 1);
  if (rest.empty()) {
    std::fprintf(stderr, "%s\n", head.c_str());
    if (r.status == kTimeout) {
      std::fprintf(stderr,
                   "batonctl: no outcome within %.1f s; the upgrade may still run: see "
                   "'batonctl status'\n",
                   static_cast<double>(now_ms() - started) / 1000.0);
      return kTimeout;
    }
    std::fprintf(stderr,
                 "batonctl: the server closed the connection before the outcome (it died, or "
                 "was stopped); see its log and 'batonctl status'\n");
    return kUnreachable;
  }
  if (rest.rfind("aborted: ", 0) == 0) {
    const std::string reason = rest.substr(0, rest.find('\n'));
    const std::string line = rest.substr(rest.find('\n') + 1);
    std::map<std::string, std::string> m;
    if (json) {
      std::fputs(line.c_str(), stdout);
    } else if (Json::parse(line, &m)) {
      print_timeline(m, "");
    }
    std::fprintf(stderr, "batonctl: upgrade %s; the old version serves on\n", reason.c_str());
    return kRefused;
  }
  // Committed: the successor writes the timeline once it serves; ask it (the control
  // socket moved to it) until its status shows this generation's record.
  return watch(socket, deadline_ms, started, started_generation(head),
               rest.substr(0, rest.find('\n')), "null", json);
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket = std::getenv("BATON_SOCKET") ? std::getenv("BATON_SOCKET") : "";
  double timeout_s = -1;
  std::vector<std::string> words;
  bool no_wait = false, json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return kOk;
    }
    if ((a == "--socket" || a == "--timeout") && i + 1 >= argc) {
      std::fprintf(stderr, "batonctl: %s needs a value\n", a.c_str());
      return kUsage;
    }
    if (a == "--socket") {
      socket = argv[++i];
    } else if (a == "--timeout") {
      char* end = nullptr;
      timeout_s = std::strtod(argv[++i], &end);
      if (end == argv[i] || *end != '\0' || !(timeout_s > 0) || timeout_s > 86400) {
        std::fprintf(stderr, "batonctl: --timeout '%s' is not a number of seconds in (0, 86400]\n",
                     argv[i]);
        return kUsage;
      }
    } else if (a == "--no-wait") {
      no_wait = true;
    } else if (a == "--json") {
      json = true;
    } else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "batonctl: unknown option %s (see batonctl --help)\n", a.c_str());
      return kUsage;
    } else {
      words.push_back(a);
    }
  }
  static const char* const kCommands[] = {"upgrade", "status", "rollback", "promote", "metrics"};
  bool known = false;
  for (const char* c : kCommands) known = known || (words.size() == 1 && words[0] == c);
  if (!known) {
    if (words.empty()) {
      std::fprintf(stderr, "batonctl: no command given\n");
    } else {
      std::fprintf(stderr,
                   "batonctl: '%s' is not a command; use upgrade, status, rollback, "
                   "promote or metrics\n",
                   words.back().c_str());
    }
    usage(stderr);
    return kUsage;
  }
  const std::string& cmd = words[0];
  if (socket.empty()) {
    std::fprintf(stderr,
                 "batonctl: which server? give --socket PATH (the server's --control) "
                 "or set BATON_SOCKET\n");
    return kUsage;
  }
  if ((no_wait && cmd != "upgrade") || (json && cmd != "upgrade" && cmd != "status")) {
    std::fprintf(stderr, "batonctl: %s does not apply to %s\n", no_wait ? "--no-wait" : "--json",
                 cmd.c_str());
    return kUsage;
  }
  if (no_wait && json) {
    std::fprintf(stderr,
                 "batonctl: --json prints the upgrade's timeline, which --no-wait does not "
                 "wait for; use one of them\n");
    return kUsage;
  }
  if (timeout_s < 0) timeout_s = cmd == "upgrade" && !no_wait ? 600 : 5;
  const int64_t deadline = now_ms() + static_cast<int64_t>(timeout_s * 1000);
  if (cmd == "status") return status(socket, deadline, json);
  if (cmd == "upgrade") return upgrade(socket, deadline, !no_wait, json);
  return print_answer(ask(socket, cmd, deadline));
}
