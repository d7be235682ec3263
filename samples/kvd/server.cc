// kvd's event loop. Sockets are registered once, edge-triggered, for input and output, so
// a frozen server just ignores their events (the kernel keeps the bytes for the successor)
// and nothing per socket happens inside the upgrade's blackout.
#include "server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "resp.h"

namespace kvd {

using baton::UniqueFd;

namespace {

constexpr size_t kReadChunk = size_t{64} << 10;
// Bytes read from one connection per loop turn before the others get theirs.
constexpr size_t kReadBudget = size_t{256} << 10;
// Above this much unsent output a connection's requests wait until the client reads.
constexpr size_t kOutputHighWater = size_t{1} << 20;
// While the runtime asks the server to throttle (the successor's replay lags), requests
// per loop turn, all connections together; the loop then yields the CPU for 1 ms. On two
// cores the successor competes with this loop and the clients for CPU: a throttle that
// only reorders work would not let it converge.
constexpr int kThrottledRequestsPerTurn = 256;
// After EMFILE, how soon accept() is tried again.
constexpr int kAcceptRetryMs = 10;
// Redis's client-query-buffer-limit: unparsed input beyond this closes the connection.
constexpr size_t kMaxQueryBytes = size_t{1} << 30;
// Inherited connection state: flags byte, decimal input length, ':', input, output.
constexpr char kStateClosing = 1;

enum Tag : uint32_t { kConnTag = 0, kListenerTag = 1, kRuntimeTag = 2, kSignalTag = 3 };
uint64_t tagged(Tag tag, int fd) { return (uint64_t{tag} << 32) | static_cast<uint32_t>(fd); }

int64_t wall_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace

struct Server::Conn {
  UniqueFd fd;
  std::string in;  // bytes read but not yet parsed, from in_pos on
  size_t in_pos = 0;
  kvd::RequestParser parser;  // its progress through the request at in_pos
  std::string out;            // replies not yet written, from out_pos on
  size_t out_pos = 0;
  bool closing = false;  // QUIT or a protocol error: close once `out` is written
  bool eof = false;      // the client sent its last byte: answer it all, then close
  bool dropped = false;
  bool queued = false;  // in ready_
  bool held = false;    // in held_: replies wait for their writes to reach the standby
  uint64_t serial = 0;  // this connection's id for the runtime, never reused
  size_t pending_out() const { return out.size() - out_pos; }
};

Server::Server(baton::Runtime* runtime, baton::TrackedMap& map, bool expiry, ServerOptions options)
    : rt_(runtime),
      map_(map),
      store_(map, expiry, *this),
      options_(std::move(options)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      rbuf_(new char[kReadChunk]),
      started_ms_(wall_ms()) {
  store_.set_now(started_ms_);
  if (rt_ == nullptr) return;
  // kvd's own metrics next to Baton's; the counters continue across upgrades.
  baton::Metrics& m = rt_->metrics();
  auto counter = [&m](const char* name, const char* help) {
    auto c = m.counter(name, help);
    return c.ok() ? *c : nullptr;
  };
  commands_total_ = counter("kvd_commands_total", "commands executed");
  connections_total_ = counter("kvd_connections_received_total", "connections accepted");
  rejected_total_ = counter("kvd_rejected_connections_total", "connections refused at maxclients");
  (void)m.gauge_fn("kvd_connected_clients", "open client connections", {},
                   [this] { return static_cast<double>(clients_); });
  (void)m.gauge_fn("kvd_keys", "keys stored", {},
                   [this] { return static_cast<double>(map_.size()); });
}

Server::~Server() = default;

void Server::watch(int fd, bool listener) {
  epoll_event ev{listener ? EPOLLIN | EPOLLET : EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                 {.u64 = tagged(listener ? kListenerTag : kConnTag, fd)}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
}

void Server::listen_on(UniqueFd fd, bool registered) {
  if (!registered) watch(fd.get(), true);
  accept_more_.push_back(fd.get());  // connections may already wait in its backlog
  listeners_.push_back(std::move(fd));
}

Server::Conn* Server::add_conn(UniqueFd fd, bool registered) {
  const int raw = fd.get();
  if (conns_.size() <= static_cast<size_t>(raw)) conns_.resize(static_cast<size_t>(raw) + 1);
  auto& c = conns_[static_cast<size_t>(raw)];
  c = std::make_unique<Conn>();
  c->fd = std::move(fd);
  c->serial = ++serials_;
  if (!registered) watch(raw, false);
  ++clients_;
  return c.get();
}

// Early sockets are watched while the incumbent still serves them: their events wait in
// this epoll's ready list until take_over() returns, and registering 1,000 sockets (~1.5 ms)
// happens outside the blackout.
void Server::early_socket(int fd, const std::string& tag) { watch(fd, tag == "listener"); }

void Server::early_socket_withdrawn(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void Server::adopt(UniqueFd fd, std::string_view state, bool registered) {
  Conn* c = add_conn(std::move(fd), registered);
  // The previous generation wrote this state. A malformed one is a bug there, and costs
  // this one connection rather than the server.
  const size_t colon = state.find(':');
  size_t in_len = 0;
  bool ok = !state.empty() && colon != std::string_view::npos;
  if (ok) {
    auto [end, ec] = std::from_chars(state.data() + 1, state.data() + colon, in_len);
    ok = ec == std::errc() && end == state.data() + colon && in_len <= state.size() - colon - 1;
  }
  if (!ok) {
    std::fprintf(stderr, "kvd: dropping an inherited connection whose state is malformed\n");
    return drop(*c);
  }
  c->closing = (state[0] & kStateClosing) != 0;
  c->in.assign(state.substr(colon + 1, in_len));
  c->out.assign(state.substr(colon + 1 + in_len));
  c->queued = true;
  ready_.push_back(c->fd.get());  // a half-read request, or bytes queued during the freeze
}

void Server::accept_from(int listener) {
  // Bounded per turn so that a connection storm cannot starve served clients.
  for (int i = 0; i < 256; ++i) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // The listener is edge-triggered: no new edge comes for clients already in its
        // backlog, so try again shortly rather than wait for the next connection.
        const int64_t now = wall_ms();
        if (now - emfile_logged_ms_ >= 1000) {
          std::fprintf(stderr,
                       "kvd[%d]: accept: out of file descriptors (raise ulimit -n); "
                       "retrying every %d ms\n",
                       ::getpid(), kAcceptRetryMs);
          emfile_logged_ms_ = now;
        }
        accept_retry_.push_back(listener);
        accept_retry_at_ms_ = now + kAcceptRetryMs;
      }
      return;
    }
    UniqueFd owned(fd);
    ++connections_received_;
    if (connections_total_ != nullptr) connections_total_->inc();
    if (clients_ >= options_.maxclients) {
      static constexpr std::string_view kFull = "-ERR max number of clients reached\r\n";
      (void)!::send(fd, kFull.data(), kFull.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ++rejected_;
      if (rejected_total_ != nullptr) rejected_total_->inc();
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails on Unix: fine
    add_conn(std::move(owned));
    if (rt_ != nullptr) rt_->accepted(fd);  // during probation the standby holds it too
  }
  accept_more_.push_back(listener);
}

void Server::serve(Conn& c) {
  flush(c);  // first: an EPOLLOUT edge may be what woke a connection held back by its output
  if (!c.dropped && c.in_pos < c.in.size()) {
    c.in_pos += process(c, std::string_view(c.in).substr(c.in_pos));
    if (c.in_pos == c.in.size()) {
      c.in.clear();
      c.in_pos = 0;
    }
  }
  size_t budget = kReadBudget;
  while (!c.dropped && !c.closing && !c.eof && c.pending_out() < kOutputHighWater) {
    ssize_t n = ::read(c.fd.get(), rbuf_.get(), kReadChunk);
    if (n == 0) {
      c.eof = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) drop(c);
      break;
    }
    feed(c, rbuf_.get(), static_cast<size_t>(n));
    if (c.in.size() - c.in_pos > kMaxQueryBytes) {
      reply_error(c.out, "ERR Protocol error: over 1 GiB of unparsed input; closing");
      c.closing = true;
      break;
    }
    // A short read emptied the socket; a later arrival raises a new edge.
    if (static_cast<size_t>(n) < kReadChunk) break;
    if ((budget -= std::min(budget, static_cast<size_t>(n))) == 0) {
      if (!c.queued) ready_.push_back(c.fd.get());
      c.queued = true;
      break;
    }
  }
  finish(c);
}

void Server::finish(Conn& c) {
  if (c.dropped) return;
  if (holding_ && c.pending_out() > 0) {
    if (!c.held) held_.push_back(c.fd.get());
    c.held = true;
    return;
  }
  flush(c);
  drop_if_done(c);
}

void Server::drop_if_done(Conn& c) {
  // At EOF, input still queued (throttled) is served first; an incomplete request never will be.
  if (!c.dropped && c.pending_out() == 0 && (c.closing || (c.eof && !c.queued))) drop(c);
}

void Server::release_held() {
  if (held_.empty() || (rt_ != nullptr && !rt_->writes_durable())) return;
  std::vector<int> held;
  held.swap(held_);
  for (int fd : held) {
    Conn* c = conns_[static_cast<size_t>(fd)].get();
    if (c == nullptr || !c->held) continue;
    c->held = false;
    if (c->dropped) continue;
    flush(*c);
    // Requests parsing stopped for (output at its high-water mark) go on next turn.
    if (!c->dropped && c->in_pos < c->in.size() && !c->queued) {
      c->queued = true;
      ready_.push_back(fd);
    }
    drop_if_done(*c);
  }
}

void Server::feed(Conn& c, const char* data, size_t n) {
  if (c.in_pos == c.in.size() && c.pending_out() < kOutputHighWater) {
    // The common case: whole requests straight from the read buffer, no copy.
    c.in.clear();
    c.in_pos = 0;
    size_t used = process(c, std::string_view(data, n));
    c.in.assign(data + used, n - used);
    return;
  }
  c.in.append(data, n);
  c.in_pos += process(c, std::string_view(c.in).substr(c.in_pos));
  if (c.in_pos > c.in.size() / 2) {
    c.in.erase(0, c.in_pos);
    c.in_pos = 0;
  }
}

size_t Server::process(Conn& c, std::string_view data) {
  size_t pos = 0;
  std::string error;
  while (pos < data.size() && !c.closing) {
    if (c.pending_out() >= kOutputHighWater) {
      if (holding_) break;  // release_held() requeues it once its replies are out
      flush(c);
      // Still full: the socket is too, so an EPOLLOUT edge resumes this connection.
      if (c.dropped || c.pending_out() >= kOutputHighWater) break;
    }
    if (throttled_ && --turn_budget_ < 0) {
      if (!c.queued) ready_.push_back(c.fd.get());
      c.queued = true;
      break;
    }

    size_t used = 0;
    Parse p = c.parser.parse(data.substr(pos), &args_, &used, &error);
    if (p == Parse::kNeedMore) break;
    if (p == Parse::kError) {
      reply_error(c.out, error);
      c.closing = true;
      return data.size();  // the rest cannot be framed: discard it
    }
    pos += used;
    if (commands_total_ != nullptr) commands_total_->inc();
    const size_t reply_at = c.out.size();
    if (store_.execute(args_, c.out).close) {
      c.closing = true;
      return data.size();
    }
    // Shadow verification: a sample of deterministic reads goes to the other process,
    // which answers it at this very point of the stream (docs/protocol.md).
    if (BATON_UNLIKELY(rt_ != nullptr && rt_->shadow_sample()) && Store::mirrored(args_[0])) {
      const std::string_view reply = std::string_view(c.out).substr(reply_at);
      rt_->shadow_probe(store_.probe_request(args_), store_.probe_reply(args_, reply));
    }
  }
  return pos;
}

void Server::flush(Conn& c) {
  if (c.held) return;  // not before Runtime::writes_durable()
  while (c.pending_out() > 0) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_pos, c.pending_out(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) drop(c);
      return;  // EPOLLOUT raises an edge once the client reads
    }
    c.out_pos += static_cast<size_t>(n);
  }
  c.out.clear();
  c.out_pos = 0;
  if (c.out.capacity() > kOutputHighWater) c.out.shrink_to_fit();
}

void Server::drop(Conn& c) {
  if (c.dropped) return;
  c.dropped = true;
  dropped_.push_back(c.fd.get());
}

void Server::reap_dropped() {
  for (int fd : dropped_) {
    // Explicitly: a file still referenced elsewhere (an fd in flight to a successor that
    // was then killed) would otherwise stay registered under a reused number.
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    // shutdown first: during probation the standby holds a duplicate of this socket, and
    // a close alone would leave the client connected to it.
    ::shutdown(fd, SHUT_RDWR);
    conns_[static_cast<size_t>(fd)].reset();
    --clients_;
  }
  dropped_.clear();
}

int Server::run(int signal_fd) {
  epoll_event sig{EPOLLIN, {.u64 = tagged(kSignalTag, signal_fd)}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, signal_fd, &sig);
  if (rt_ != nullptr) {
    epoll_event ev{EPOLLIN, {.u64 = tagged(kRuntimeTag, rt_->poll_fd())}};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, rt_->poll_fd(), &ev);
  }
  int64_t last_sweep = 0, last_service = 0;
  constexpr int kSweepMs = 100;
  if (options_.crash_after_ms != 0) crash_at_ms_ = wall_ms() + options_.crash_after_ms;
  epoll_event events[256];
  while (!done_) {
    int timeout = store_.expiry() ? kSweepMs : -1;
    if (rt_ != nullptr && rt_->service_interval_ms() >= 0) {
      timeout =
          timeout < 0 ? rt_->service_interval_ms() : std::min(timeout, rt_->service_interval_ms());
    }
    if (!frozen_ && (!ready_.empty() || !accept_more_.empty())) timeout = 0;
    if (!accept_retry_.empty()) {
      const int wait = static_cast<int>(std::max<int64_t>(0, accept_retry_at_ms_ - wall_ms()));
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
    if (!held_.empty()) timeout = std::min(timeout < 0 ? 1 : timeout, 1);
    if (crash_at_ms_ != 0 && wall_ms() >= crash_at_ms_) {
      std::fprintf(stderr, "kvd-crashy[%d]: crashing on purpose\n", ::getpid());
      std::abort();
    }

    turn_budget_ = kThrottledRequestsPerTurn;
    holding_ = rt_ != nullptr && rt_->on_probation();

    int n = ::epoll_wait(epoll_.get(), events, 256, timeout);
    store_.set_now(wall_ms());
    bool runtime_ready = false;
    for (int i = 0; i < n; ++i) {
      const int fd = static_cast<int>(events[i].data.u64 & 0xffffffffu);
      switch (static_cast<Tag>(events[i].data.u64 >> 32)) {
        case kRuntimeTag:
          runtime_ready = true;
          break;
        case kSignalTag: {
          signalfd_siginfo info;
          if (::read(signal_fd, &info, sizeof info) == sizeof info) {
            if (info.ssi_signo == SIGHUP || info.ssi_signo == SIGUSR1) {
              std::fprintf(stderr,
                           "kvd[%d]: signal %u from pid %u ignored (SIGUSR2 upgrades, SIGTERM "
                           "stops)\n",
                           ::getpid(), info.ssi_signo, info.ssi_pid);
              break;
            }
            std::fprintf(stderr, "kvd[%d]: signal %u: stopping\n", ::getpid(), info.ssi_signo);
            stop();
            return 0;
          }
          break;
        }
        case kListenerTag:
          if (!frozen_) accept_from(fd);
          break;
        case kConnTag: {
          // An early socket (a successor's or a rollback's) is watched before it is adopted.
          Conn* c = static_cast<size_t>(fd) < conns_.size() ? conns_[static_cast<size_t>(fd)].get()
                                                            : nullptr;
          if (c != nullptr && !c->dropped && !frozen_) serve(*c);
          break;
        }
      }
    }
    if (!frozen_) {
      if (!accept_retry_.empty() && wall_ms() >= accept_retry_at_ms_) {
        accept_more_.insert(accept_more_.end(), accept_retry_.begin(), accept_retry_.end());
        accept_retry_.clear();
      }
      std::vector<int> more;
      more.swap(accept_more_);
      for (int l : more) accept_from(l);
      std::vector<int> ready;
      ready.swap(ready_);
      for (int fd : ready) {
        Conn* c = conns_[static_cast<size_t>(fd)].get();
        if (c == nullptr || c->dropped) continue;
        c->queued = false;
        serve(*c);
      }
      release_held();
      if (store_.expiry() && store_.now() - last_sweep >= kSweepMs) {
        store_.sweep_expired(1000);  // about 10k slots a second: Redis's pace, roughly
        last_sweep = store_.now();
      }
    }
    reap_dropped();
    // The runtime asks for service() every service_interval_ms() while that is >= 0. An
    // upgrade's checkpoint writes its share of the CPU in these calls, so then every turn; on
    // probation writes_durable() already pumps the reverse stream each turn, so only when
    // due.
    if (rt_ != nullptr) {
      const int interval = rt_->service_interval_ms();
      const int64_t now = store_.now();
      const bool due = holding_ ? now - last_service >= interval : true;
      if (runtime_ready || (interval >= 0 && due)) {
        rt_->service();
        last_service = now;
      }
    }
    if (throttled_ && turn_budget_ < 0) {
      timespec pause{0, 1'000'000};  // see kThrottledRequestsPerTurn
      ::nanosleep(&pause, nullptr);
    }
  }
  return 0;  // committed: the successor serves; our copies of its sockets close with us
}

void Server::stop() {
  // Graceful: no new connections, replies already computed get one chance to go out.
  listeners_.clear();
  for (auto& c : conns_) {
    if (c && !c->dropped) flush(*c);
  }
}

std::vector<baton::FrozenSocket> Server::early() {
  std::vector<baton::FrozenSocket> out;
  for (auto& l : listeners_) out.push_back({l.get(), "listener", ""});
  for (auto& c : conns_) {
    if (c && !c->dropped) out.push_back({c->fd.get(), "conn", "", c->serial});
  }
  return out;
}

std::vector<baton::FrozenSocket> Server::freeze() {
  frozen_ = true;  // O(1) for the sockets: their events are ignored until unfreeze or exit
  release_held();  // replies whose writes are safe go now; the others travel as state
  const bool durable = held_.empty();
  for (int fd : held_) {
    if (Conn* c = conns_[static_cast<size_t>(fd)].get()) c->held = false;
  }
  held_.clear();
  reap_dropped();
  std::vector<baton::FrozenSocket> out;
  for (auto& l : listeners_) out.push_back({l.get(), "listener", ""});
  for (auto& c : conns_) {
    if (!c) continue;
    if (durable) flush(*c);  // most output leaves now; the rest travels as state
    if (c->dropped) continue;
    std::string_view in = std::string_view(c->in).substr(c->in_pos);
    std::string state(1, c->closing ? kStateClosing : 0);
    state += std::to_string(in.size());
    state += ':';
    state += in;
    state.append(c->out, c->out_pos);
    out.push_back({c->fd.get(), "conn", std::move(state), c->serial});
  }
  return out;
}

void Server::standby() {
  // The successor serves every socket now; the runtime holds duplicates. Close ours
  // without shutdown() (that would end the connections for the successor too) and forget
  // their half-read requests and unsent replies: the successor has them.
  for (auto& c : conns_) {
    if (c) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
    c.reset();
  }
  for (auto& l : listeners_) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, l.get(), nullptr);
  listeners_.clear();
  ready_.clear();
  dropped_.clear();
  accept_more_.clear();
  accept_retry_.clear();
  held_.clear();
  clients_ = 0;
  // Frozen until resume(): a rollback's sockets arrive early and are watched before the
  // successor lets go of them; their events must not be served here meanwhile.
  frozen_ = true;
}

void Server::resume(std::vector<baton::InheritedSocket> sockets) {
  frozen_ = false;
  for (baton::InheritedSocket& s : sockets) {
    if (s.tag == "listener") {
      listen_on(std::move(s.fd), s.early);
    } else {
      adopt(std::move(s.fd), s.state, s.early);
    }
  }
  if (on_resume_) on_resume_();
}

void Server::unfreeze() {
  frozen_ = false;
  // Events that arrived meanwhile were ignored and will not repeat: look at everything once.
  for (auto& l : listeners_) accept_more_.push_back(l.get());
  for (auto& c : conns_) {
    if (c && !c->dropped && !c->queued) {
      c->queued = true;
      ready_.push_back(c->fd.get());
    }
  }
}

std::string Server::info(std::string_view section) const {
  const bool all =
      section.empty() || section == "all" || section == "default" || section == "everything";
  std::string s;
  auto add = [&s](std::string_view k, const std::string& v) {
    s.append(k).append(":").append(v).append("\r\n");
  };
  if (all || section == "server") {
    s += "# Server\r\n";
    add("redis_version", "7.0.0");  // what clients check features against; kvd speaks RESP2
    add("kvd_schema_version", std::to_string(map_.schema_version()));
    add("process_id", std::to_string(::getpid()));
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (!listeners_.empty() &&
        ::getsockname(listeners_[0].get(), reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      const bool v6 = a.ss_family == AF_INET6;
      add("tcp_port", std::to_string(ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&a)->sin_port)));
    }

    add("uptime_in_seconds", std::to_string((store_.now() - started_ms_) / 1000));
    s += "\r\n";
  }
  if (all || section == "clients") {
    s += "# Clients\r\n";
    add("connected_clients", std::to_string(clients_));
    add("maxclients", std::to_string(options_.maxclients));
    s += "\r\n";
  }
  if (all || section == "memory") {
    s += "# Memory\r\n";
    add("used_memory_dataset", std::to_string(map_.estimate_bytes()));
    long pages = 0, resident = 0;
    std::ifstream("/proc/self/statm") >> pages >> resident;
    add("used_memory_rss", std::to_string(resident * ::sysconf(_SC_PAGESIZE)));
    s += "\r\n";
  }
  if (all || section == "stats") {
    s += "# Stats\r\n";
    add("total_connections_received", std::to_string(connections_received_));
    add("total_commands_processed", std::to_string(store_.commands()));
    add("rejected_connections", std::to_string(rejected_));
    add("expired_keys", std::to_string(store_.expired()));
    s += "\r\n";
  }
  if (all || section == "baton") {
    s += "# Baton\r\n";
    add("baton_enabled", rt_ != nullptr ? "1" : "0");
    if (rt_ != nullptr) {
      add("baton_generation", std::to_string(rt_->generation()));
      add("baton_upgrading", rt_->upgrading() ? "1" : "0");
      add("baton_last_upgrade", rt_->last_upgrade());
      add("baton_phase", rt_->phase());
      add("baton_probation_left_ms", std::to_string(rt_->probation_remaining_ms()));
      const baton::ShadowStats sh = rt_->shadow_stats();
      add("baton_shadow_probes_sent", std::to_string(sh.probes_sent));
      add("baton_shadow_probes_evaluated", std::to_string(sh.probes_evaluated));
      add("baton_shadow_probe_mismatches", std::to_string(sh.probe_mismatches));
      add("baton_state_digest", sh.digest.empty() ? "none" : sh.digest);
    }
    if (!options_.upgrade_note.empty()) add("baton_upgrade_note", options_.upgrade_note);
    s += "\r\n";
  }
  if (all || section == "keyspace") {
    s += "# Keyspace\r\n";
    if (!map_.empty()) add("db0", "keys=" + std::to_string(map_.size()));
  }
  return s;
}

}  // namespace kvd
