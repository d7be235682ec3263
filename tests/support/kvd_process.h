// kvd as a real process for integration tests: a RESP client, and a kvd started from
// its own copy of a binary so that a test can install another build and upgrade, as an
// operator would. Loopback only, port 0, a private directory; see server_process.h.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <string>
#include <vector>

#include "baton/fd.h"
#include "server_process.h"

namespace baton::testing {

namespace fs = std::filesystem;

// A RESP client that renders replies compactly: "OK", "(error) ERR ...", "42", "value",
// "(nil)", "[a,b]"; "(eof)" once the server closed the connection.
class RespClient {
 public:
  /// `rcvbuf` > 0: a receive buffer that small (set before connecting), for a slow reader.
  explicit RespClient(int port, int rcvbuf = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{AF_INET, htons(static_cast<uint16_t>(port)), {htonl(INADDR_LOOPBACK)}, {}};
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  bool connected() const { return connected_; }
  bool send_raw(const std::string& bytes) {
    return ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  std::string call(const std::vector<std::string>& args) {
    std::string req = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    if (!send_raw(req)) return "(eof)";
    return reply();
  }
  std::string reply() {
    std::string line;
    if (!read_line(&line)) return "(eof)";
    const char type = line[0];
    std::string body = line.substr(1);
    if (type == '+' || type == ':') return body;
    if (type == '-') return "(error) " + body;
    long n = std::atol(body.c_str());
    if (type == '$') {
      if (n < 0) return "(nil)";
      std::string data;
      if (!read_exact(static_cast<size_t>(n) + 2, &data)) return "(eof)";
      return data.substr(0, static_cast<size_t>(n));
    }
    if (n < 0) return "(nil)";
    std::string out = "[";
    for (long i = 0; i < n; ++i) out += (i ? "," : "") + reply();
    return out + "]";
  }

 private:
  bool fill() {
    char tmp[4096];
    ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  bool read_line(std::string* line) {
    size_t at;
    while ((at = buf_.find("\r\n")) == std::string::npos)
      if (!fill()) return false;
    *line = buf_.substr(0, at);
    buf_.erase(0, at + 2);
    return !line->empty();
  }
  bool read_exact(size_t n, std::string* out) {
    while (buf_.size() < n)
      if (!fill()) return false;
    *out = buf_.substr(0, n);
    buf_.erase(0, n);
    return true;
  }
  UniqueFd fd_;
  bool connected_ = false;
  std::string buf_;
};

// Copies `from` to `to` (mode 0755) through descriptors no child inherits: a process
// spawned meanwhile by another thread (a load generator) would otherwise hold `to` open
// for writing, and exec of it would fail with ETXTBSY.
inline bool copy_cloexec(const std::string& from, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755));
  if (!in || !out) return false;
  char buf[1 << 16];
  for (ssize_t n; (n = ::read(in.get(), buf, sizeof buf)) != 0;) {
    if (n < 0 || ::write(out.get(), buf, static_cast<size_t>(n)) != n) return false;
  }
  return true;
}

// The directory a server's binary is installed in; a base so that it exists before the
// server process starts.
struct BinDir {
  BinDir(const std::string& binary, std::string name) : name_(std::move(name)) {
    char tmpl[] = "/tmp/baton-bin-XXXXXX";
    bin_dir_ = ::mkdtemp(tmpl);
    fs::copy_file(binary, bin_dir_ + "/" + name_);
  }
  ~BinDir() { fs::remove_all(bin_dir_); }
  std::string bin_dir_;
  std::string name_;
};

// A sample server started from a copy of `binary` installed in its own directory as
// `name`, so that a test can install another build there and signal, as an operator would.
// It has a control socket in its directory.
class InstalledServer : private BinDir, public ServerProcess {
 public:
  InstalledServer(std::string name, const std::string& binary, std::vector<std::string> args = {},
                  std::string failpoints = "", std::vector<std::string> env = {})
      : BinDir(binary, std::move(name)),
        ServerProcess(bin_dir_ + "/" + name_, with_control(std::move(args)), std::move(failpoints),
                      std::move(env)) {}
  std::string control_path() const { return dir() + "/ctl"; }
  std::string control(const std::string& command) const {
    return control_command(control_path(), command);
  }
  // Installs `binary` atomically (rename), then upgrades; returns once the successor
  // serves (or the upgrade aborted), with the new pid or 0. Probation, if any, is then
  // ended by `promote`, so that the next upgrade may start.
  pid_t upgrade_to(const std::string& binary) {
    const pid_t next = upgrade_on_probation(binary);
    if (next == 0) return 0;
    const size_t events_before = events().size();
    if (control("status").find("\"phase\":\"probation\"") == std::string::npos) return next;
    if (control("promote").rfind("ok:", 0) != 0) return 0;
    if (!eventually([&] { return events().size() > events_before; }, 10)) return 0;
    return events().back().find("\"outcome\":\"promoted\"") != std::string::npos ? next : 0;
  }
  // Installs `binary` and sends SIGUSR2, nothing more: for an upgrade whose probation may
  // end (a rollback) before its pid could be read.
  bool signal_upgrade(const std::string& binary) {
    const std::string path = bin_dir_ + "/" + name_;
    if (!copy_cloexec(binary, path + ".new")) return false;
    fs::rename(path + ".new", path);
    return ::kill(serving_pid(), SIGUSR2) == 0;
  }
  // As upgrade_to(), leaving the new process on probation.
  pid_t upgrade_on_probation(const std::string& binary) {
    const pid_t before = serving_pid();
    const size_t events_before = events().size();
    if (!signal_upgrade(binary)) return 0;
    if (!eventually([&] { return events().size() > events_before; }, 60)) return 0;
    const std::string e = events()[events_before];
    if (e.find("\"outcome\":\"committed\"") == std::string::npos) return 0;
    eventually([&] { return serving_pid() != before; }, 5);
    return serving_pid() != before ? serving_pid() : 0;
  }

 private:
  static std::vector<std::string> with_control(std::vector<std::string> args);
};

// kvd, with kvd's default probation window.
class Kvd : public InstalledServer {
 public:
  explicit Kvd(const std::string& binary, std::vector<std::string> args = {},
               std::string failpoints = "", std::vector<std::string> env = {})
      : InstalledServer("kvd", binary, std::move(args), std::move(failpoints), std::move(env)) {}
};

inline std::vector<std::string> InstalledServer::with_control(std::vector<std::string> args) {
  args.insert(args.begin(), {"--control", "{dir}/ctl"});
  return args;
}

/// The value of `name` in a flat JSON line such as an event-log record, unquoted; empty
/// when absent. Enough for the runtime's own records, not a JSON parser.
inline std::string field(const std::string& line, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  const size_t at = line.find(key);
  if (at == std::string::npos) return "";
  size_t from = at + key.size(), to = from;
  if (line[from] == '"') {
    to = line.find('"', ++from);
  } else {
    while (to < line.size() && line[to] != ',' && line[to] != '}') ++to;
  }
  return line.substr(from, to - from);
}

}  // namespace baton::testing
