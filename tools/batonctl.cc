// batonctl: the operator's tool. It asks a Baton server to upgrade, roll back or promote,
// reports its status or prints its metrics, over the server's control socket
// (RuntimeOptions::control_socket; a leading '@' = the abstract namespace). Every command
// has a deadline; exit codes are documented in usage() and docs/operations.md.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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
               "            print the timeline. --no-wait: return once it has started\n"
               "  status [--json]\n"
               "            pid, generation, what the server does (serving, upgrading and its\n"
               "            phase, probation and the time left) and the last upgrade\n"
               "  rollback  during probation: hand service back to the previous version\n"
               "  promote   during probation: keep the new version and let the old one go\n"
               "  metrics   the server's metrics in Prometheus text format\n"
               "\n"
               "  --socket PATH     the server's control socket (its --control flag); '@name'\n"
               "                    is an abstract socket. Default: $BATON_SOCKET\n"
               "  --timeout SECONDS give up after this long (default 600 for upgrade, 5 else)\n"
               "\n"
               "exit status: 0 done; 1 the server refused or the upgrade aborted (the reason\n"
               "is printed); 2 bad usage; 3 no server answers on the socket; 4 timed out;\n"
               "5 the server does not accept commands from this uid\n");
}

int64_t now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

struct Reply {
  int status = kOk;     // kOk when `text` is what the server said
  std::string text;     // or the error message
  bool closed = false;  // the server closed the connection (the reply is complete)
};

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
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {kUnreachable, std::string("batonctl: socket: ") + std::strerror(errno)};
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    Reply r{kUnreachable, why_unreachable(path, errno)};
    ::close(fd);
    return r;
  }
  const std::string out = line + "\n";
  // MSG_NOSIGNAL: a server that refuses us may already have answered and closed; its
  // answer is still ours to read.
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
    if (got < 0 && errno == EINTR) continue;
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
  if (m[p + "outcome"] == "promoted") {  // the end of a probation: no handoff ran
    std::printf("  probation   %12s\n", ms_text(m[p + "total_us"]).c_str());
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
}

// The server's reply as batonctl's result: its "error: ..." lines are refusals.
int print_answer(const Reply& r) {
  if (r.status != kOk && r.status != kTimeout) {
    std::fprintf(stderr, "%s\n", r.text.c_str());
    return r.status;
  }
  if (r.status == kTimeout) {
    std::fprintf(stderr, "batonctl: no answer within the timeout\n");
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

int upgrade(const std::string& socket, int64_t deadline_ms, bool wait, bool json) {
  if (!wait) return print_answer(ask(socket, "upgrade", deadline_ms));
  const int64_t started = now_ms();
  const Reply r = ask(socket, "upgrade wait", deadline_ms, has_outcome);
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
  const std::string committed = rest.substr(0, rest.find('\n'));
  const std::string target = head.substr(head.find("generation ") + 11,
                                         head.find(" started") - head.find("generation ") - 11);
  while (now_ms() < deadline_ms) {
    const Reply s = ask(socket, "status", deadline_ms);
    std::map<std::string, std::string> m;
    if (s.status == kOk && Json::parse(s.text, &m) && m["generation"] == target &&
        m["last_upgrade.generation"] == target) {
      if (json) {
        const size_t at = s.text.find("\"last_upgrade\":");
        std::string record = s.text.substr(at + 15);
        while (!record.empty() && (record.back() == '\n' || record.back() == '}'))
          record.pop_back();
        std::printf("%s}\n", record.c_str());
      } else {
        std::printf("%s\n", committed.c_str());
        print_timeline(m, "last_upgrade.");
      }
      return kOk;
    }
    ::usleep(20'000);
  }
  std::printf("%s\n", committed.c_str());
  std::fprintf(stderr,
               "batonctl: committed, but the new process showed no timeline within the "
               "timeout; see 'batonctl status'\n");
  return kOk;
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
  if (timeout_s < 0) timeout_s = cmd == "upgrade" && !no_wait ? 600 : 5;
  const int64_t deadline = now_ms() + static_cast<int64_t>(timeout_s * 1000);
  if (cmd == "status") return status(socket, deadline, json);
  if (cmd == "upgrade") return upgrade(socket, deadline, !no_wait, json);
  return print_answer(ask(socket, cmd, deadline));
}
