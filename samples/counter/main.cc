// counter: a TCP server that counts, and replaces its own binary on SIGUSR2 without
// dropping a connection or a count. Commands, one per line: INCR, GET, PID, GEN.
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "../common/net.h"
#include "baton/runtime.h"
#include "baton/tracked_map.h"

using namespace baton;

class CounterServer final : public UpgradeHooks, public EarlySockets {
 public:
  CounterServer(Runtime& rt, TrackedMap& state, int epoll) : rt_(rt), state_(state), ep_(epoll) {}

  // `watched`: already in epoll, as an early socket (see early_socket()).
  void listen_on(UniqueFd fd, bool watched = false) {
    if (!watched) watch(fd.get());
    listeners_.push_back(std::move(fd));
  }
  void adopt(UniqueFd fd, std::string pending, bool watched = false) {
    int raw = fd.get();
    conns_[raw] = {std::move(fd), std::move(pending), ++serials_};
    if (!watched) watch(raw);
    handle_lines(raw);  // a request half-read by the previous generation
  }
  // Sockets are edge-triggered, so each event is drained until EAGAIN, and a frozen
  // server simply ignores events: the kernel keeps the bytes for the successor.
  void on_ready(int fd) {
    if (frozen_) return;
    if (is_listener(fd)) {
      for (int c; (c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;)
        adopt(UniqueFd(c), "");
      return;
    }
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
      if (n < 0) {
        if (errno == EAGAIN) break;
        return drop(fd);
      }
      conns_[fd].in.append(buf, static_cast<size_t>(n));
    }
    if (!conns_.count(fd)) return;
    handle_lines(fd);
  }
  bool done() const { return done_; }

  // --- UpgradeHooks: hand sockets over early, then stop reading and accepting.
  std::vector<FrozenSocket> early() override { return sockets(); }
  std::vector<FrozenSocket> freeze() override {
    frozen_ = true;  // O(1): no per-socket epoll_ctl inside the blackout
    return sockets();
  }
  void unfreeze() override {
    frozen_ = false;  // events ignored meanwhile are not repeated: drain everything once
    for (auto& l : listeners_) on_ready(l.get());
    std::vector<int> fds;
    for (auto& [fd, c] : conns_) fds.push_back(fd);
    for (int fd : fds) on_ready(fd);
  }
  void committed() override { done_ = true; }
  // --- EarlySockets (successor): watch them now, outside the blackout; serve them later.
  void early_socket(int fd, const std::string&) override { watch(fd); }
  void early_socket_withdrawn(int fd) override { ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr); }

 private:
  struct Conn {
    UniqueFd fd;
    std::string in;
    uint64_t serial = 0;  // the runtime's id for this socket; never reused
  };
  std::vector<FrozenSocket> sockets() {
    std::vector<FrozenSocket> out;
    for (auto& l : listeners_) out.push_back({l.get(), "listener", ""});
    for (auto& [fd, c] : conns_) out.push_back({fd, "conn", c.in, c.serial});
    return out;
  }
  void watch(int fd) {
    epoll_event ev{EPOLLIN | EPOLLET, {.fd = fd}};
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void drop(int fd) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    conns_.erase(fd);
  }
  void handle_lines(int fd) {
    auto it = conns_.find(fd);
    for (size_t nl; it != conns_.end() && (nl = it->second.in.find('\n')) != std::string::npos;) {
      std::string cmd = it->second.in.substr(0, nl);
      it->second.in.erase(0, nl + 1);
      if (!cmd.empty() && cmd.back() == '\r') cmd.pop_back();
      std::string reply;
      if (cmd == "INCR") {
        reply = std::to_string(state_.incr_by("count", 1).value());
      } else if (cmd == "GET") {
        const Entry* e = state_.find("count");
        reply = e ? std::string(e->str()) : "0";
      } else if (cmd == "PID") {
        reply = std::to_string(::getpid());
      } else if (cmd == "GEN") {
        reply = std::to_string(rt_.generation());
      } else {
        reply = "ERR unknown command '" + cmd.substr(0, 32) + "'";
      }
      reply += '\n';
      if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) < 0) return drop(fd);
    }
    if (it != conns_.end() && it->second.in.size() > 4096) drop(fd);  // no line that long
  }

  Runtime& rt_;
  TrackedMap& state_;
  int ep_;
  bool is_listener(int fd) const {
    for (auto& l : listeners_)
      if (l.get() == fd) return true;
    return false;
  }

  std::vector<UniqueFd> listeners_;  // TCP (v4 or v6) and, with --unix, a Unix socket
  std::map<int, Conn> conns_;
  uint64_t serials_ = 0;
  bool done_ = false;
  bool frozen_ = false;
};

int main(int argc, char** argv) {
  sample::raise_fd_limit();
  auto parsed = sample::parse_flags(
      argc, argv,
      {{"--port", "0"},
       {"--bind", "127.0.0.1"},
       {"--unix", ""},
       {"--port-file", ""},
       {"--pidfile", ""},
       {"--event-log", ""},
       {"--control", ""},
       {"--fill-mib", "0"},
       {"--schema-version", "1"},
       {"--successor-schema", ""},
       {"--timeout-ms", ""}},
      {"--port", "--fill-mib", "--schema-version", "--successor-schema", "--timeout-ms"});
  if (!parsed.ok())
    return std::fprintf(stderr, "counter: %s\n", parsed.error().message().c_str()), 2;
  auto& flag = parsed.value();
  if (std::atol(flag["--port"].c_str()) > 65535 || flag["--schema-version"] == "0") {
    return std::fprintf(stderr, "counter: --port is 0..65535, --schema-version at least 1\n"), 2;
  }
  RuntimeOptions opt;
  opt.pidfile = flag["--pidfile"];
  opt.event_log = flag["--event-log"];
  opt.control_socket = flag["--control"];
  if (!flag["--successor-schema"].empty()) {  // tests: start an incompatible successor
    opt.successor_extra_args = {"--schema-version", flag["--successor-schema"]};
  }
  if (!flag["--timeout-ms"].empty()) {  // tests: every handoff deadline
    const int64_t us = std::atoll(flag["--timeout-ms"].c_str()) * 1000;
    opt.timeouts.hello_us = opt.timeouts.restored_us = us;
    opt.timeouts.restore_silence_us = opt.timeouts.freeze_us = us;
  }
  auto rt = Runtime::create(argc, argv, opt);
  if (!rt.ok()) return std::fprintf(stderr, "counter: %s\n", rt.error().to_string().c_str()), 2;
  uint32_t version = static_cast<uint32_t>(std::atoi(flag["--schema-version"].c_str()));
  TrackedMap state("counter", version);  // the state that survives upgrades
  (void)state.migrations().add(version + 1, version, [](std::string_view, Entry&) {});
  (void)state.migrations().add(version - 1, version, [](std::string_view, Entry&) {});
  (void)(*rt)->registry().add(state);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  CounterServer counter(**rt, state, ep);

  if ((*rt)->is_successor()) {  // restore the state and take the sockets over
    auto inherited = (*rt)->take_over(&counter);
    if (!inherited.ok()) {
      return std::fprintf(stderr, "counter: %s\n", inherited.error().to_string().c_str()), 1;
    }
    for (InheritedSocket& s : *inherited) {
      if (s.tag == "listener")
        counter.listen_on(std::move(s.fd), s.early);
      else
        counter.adopt(std::move(s.fd), std::move(s.state), s.early);
    }
  } else {  // started by hand: optional ballast (100-byte values), then listen
    for (long i = 0, n = std::atol(flag["--fill-mib"].c_str()) * 10486; i < n; ++i)
      state.set("fill:" + std::to_string(i), std::string(100, 'v'));
    uint16_t port = 0;
    auto tcp = sample::listen_tcp(flag["--bind"],
                                  static_cast<uint16_t>(std::atoi(flag["--port"].c_str())), &port);
    if (!tcp.ok()) return std::fprintf(stderr, "counter: %s\n", tcp.error().to_string().c_str()), 2;
    counter.listen_on(std::move(tcp).value());
    if (!flag["--port-file"].empty()) std::ofstream(flag["--port-file"]) << port << "\n";
    if (!flag["--unix"].empty()) {
      auto unix_l = sample::listen_unix(flag["--unix"]);
      if (!unix_l.ok())
        return std::fprintf(stderr, "counter: %s\n", unix_l.error().to_string().c_str()), 2;
      counter.listen_on(std::move(unix_l).value());
    }
  }
  epoll_event rt_ev{EPOLLIN, {.fd = (*rt)->poll_fd()}};
  ::epoll_ctl(ep, EPOLL_CTL_ADD, (*rt)->poll_fd(), &rt_ev);
  (*rt)->serving(counter);

  while (!counter.done()) {
    epoll_event ev[64];
    int n = ::epoll_wait(ep, ev, 64, (*rt)->service_interval_ms());
    for (int i = 0; i < n; ++i) {
      if (ev[i].data.fd != (*rt)->poll_fd()) counter.on_ready(ev[i].data.fd);
    }
    (*rt)->service();
  }
  return 0;  // committed: the successor serves; our copies of the fds close with us
}
