// sessiond: an HTTP/1.1 keep-alive session service whose state is its own Cap'n Proto
// records (baton::Table), replaced live on SIGUSR2 without dropping a connection or a
// count. Requests are parsed by Boost.Beast's HTTP parser; see README.md for the API.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../common/net.h"
#include "baton/cell.h"
#include "baton/runtime.h"
#include "baton/table.h"
#include "session.capnp.h"  // v1/, v2/ or breaking/, as the build chooses

using namespace baton;
namespace http = boost::beast::http;

namespace {

constexpr size_t kHeaderLimit = 8 << 10;
constexpr size_t kBodyLimit = 64 << 10;
// Unparsed input beyond a header and a body closes the connection.
constexpr size_t kMaxInput = kHeaderLimit + kBodyLimit;

int64_t wall_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

// 1 to 64 of [A-Za-z0-9_.-]: ids and client names go into JSON and logs unescaped.
bool valid_id(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct Reply {
  int status = 200;
  std::string body;
  bool close = false;
};

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 421:
      return "Misdirected Request";
    case 429:
      return "Too Many Requests";
    default:
      return "Error";
  }
}

}  // namespace

// The state, and what each request does to it. Deterministic given the request and the
// clock, so a successor replaying the deltas ends with exactly these records.
class Sessions {
 public:
  // `shard` k of `shards` (0 of 0: the only one): with worker threads each thread owns the
  // ids that hash to it, in sections named "sessions.k", and answers 421 for the others.
  Sessions(Registry* registry, uint32_t rate_limit, unsigned shard = 0, unsigned shards = 0,
           std::vector<uint16_t> ports = {})
      : sessions_(suffixed("sessions", shard), 1),
        limits_(suffixed("limits", shard), 1),
        stats_(suffixed("stats", shard), 1),
        rate_limit_(rate_limit),
        shard_(shard),
        shards_(shards),
        ports_(std::move(ports)) {
    if (registry == nullptr) return;  // sessiond-bare: sections no log is attached to
    for (Section* s : std::initializer_list<Section*>{&sessions_, &limits_, &stats_}) {
      if (auto r = registry->add(*s); !r.ok()) {
        std::fprintf(stderr, "sessiond: %s\n", r.error().to_string().c_str());
        std::exit(2);
      }
    }
  }

  Reply handle(http::verb method, std::string_view target, std::string_view body) {
    (void)stats_.add("requests", 1);
    std::vector<std::string_view> parts;
    for (size_t at = 1; at <= target.size();) {
      const size_t slash = std::min(target.find('/', at), target.size());
      parts.push_back(target.substr(at, slash - at));
      at = slash + 1;
    }
    if (target.empty() || target[0] != '/') return {400, "the target must be a path\n", false};
    if (parts.size() == 1 && parts[0] == "stats") {
      if (method != http::verb::get) return {405, "GET /stats\n"};
      return {200, stats_json()};
    }
    if (parts.size() >= 2 && parts[0] == "sessions") {
      if (!valid_id(parts[1])) return {400, "a session id is 1 to 64 of [A-Za-z0-9_.-]\n"};
      const std::string id(parts[1]);
      if (Reply r; misdirected(id, &r)) return r;
      if (parts.size() == 3 && parts[2] == "hit") {
        if (method != http::verb::post) return {405, "POST /sessions/{id}/hit\n"};
        return hit(id);
      }
      if (parts.size() != 2) return {404, "no such resource\n"};
      switch (method) {
        case http::verb::get:
          return get(id);
        case http::verb::put:
          return put(id, body);
        case http::verb::delete_:
          if (!sessions_.erase(id)) return {404, "no session " + id + "\n"};
          return {204, ""};
        default:
          return {405, "GET, PUT or DELETE /sessions/{id}\n"};
      }
    }
    if (parts.size() == 2 && parts[0] == "limits") {
      if (!valid_id(parts[1])) return {400, "a client name is 1 to 64 of [A-Za-z0-9_.-]\n"};
      if (Reply r; misdirected(parts[1], &r)) return r;
      if (method != http::verb::post) return {405, "POST /limits/{client}\n"};
      return take(std::string(parts[1]));
    }
    return {404, "no such resource; see samples/sessiond/README.md\n"};
  }

  void count_bad_request() { (void)stats_.add("bad_requests", 1); }
  void set_ports(std::vector<uint16_t> ports) { ports_ = std::move(ports); }

  /// The worker that owns `id`: 1 to `shards` (FNV-1a, so every build agrees); 0 without
  /// workers.
  static unsigned owner(std::string_view id, unsigned shards) {
    uint32_t h = 2166136261u;
    for (char c : id) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
    return shards == 0 ? 0 : 1 + h % shards;
  }

 private:
  static std::string suffixed(const char* name, unsigned shard) {
    return shard == 0 ? name : std::string(name) + "." + std::to_string(shard);
  }
  bool misdirected(std::string_view id, Reply* r) const {
    const unsigned w = owner(id, shards_);
    if (w == shard_) return false;
    *r = {421, "'" + std::string(id) + "' belongs to worker " + std::to_string(w) + ", port " +
                   std::to_string(ports_.at(w - 1)) + "\n"};
    return true;
  }
  Reply put(const std::string& id, std::string_view user) {
    if (user.size() > 256) return {400, "a user name is at most 256 bytes\n"};
    const bool existed = sessions_.contains(id);
    sessions_.update(id, [&](sessiond::Session::Builder s) {
      s.setUser(std::string(user));
      s.setHits(0);
      s.setCreatedMs(wall_ms());
    });
    if (!existed) (void)stats_.add("sessions_created", 1);
    return {existed ? 200 : 201, session_json(id)};
  }
  Reply get(const std::string& id) {
    if (!sessions_.contains(id)) return {404, "no session " + id + "\n"};
    return {200, session_json(id)};
  }
  Reply hit(const std::string& id) {
    if (!sessions_.contains(id)) return {404, "no session " + id + "\n"};
    uint64_t hits = 0;
    sessions_.update(id, [&](sessiond::Session::Builder s) {
      s.setHits(s.getHits() + 1);
#if SESSIOND_SCHEMA >= 2
      s.setLastHitMs(wall_ms());
#endif
      hits = s.getHits();
    });
    return {200, std::to_string(hits) + "\n"};
  }
  Reply take(const std::string& client) {
    const int64_t now = wall_ms();
    uint32_t count = 0;
    limits_.update(client, [&](sessiond::Limit::Builder l) {
      if (now - l.getWindowStartMs() >= 1000) {
        l.setWindowStartMs(now);
        l.setCount(0);
      }
      if (l.getCount() <= rate_limit_) l.setCount(l.getCount() + 1);  // stops one past
      count = static_cast<uint32_t>(l.getCount());
    });
    if (count > rate_limit_) {
      return {429, "rate limit of " + std::to_string(rate_limit_) + " per second reached\n"};
    }
    return {200, std::to_string(rate_limit_ - count) + "\n"};
  }
  std::string session_json(const std::string& id) const {
    auto s = *sessions_.get(id);
    std::string out = "{\"id\":" + json_string(id) +
                      ",\"user\":" + json_string(std::string_view(s.getUser().cStr())) +
                      ",\"hits\":" + std::to_string(s.getHits()) +
                      ",\"createdMs\":" + std::to_string(s.getCreatedMs());
#if SESSIOND_SCHEMA >= 2
    out += ",\"lastHitMs\":" + std::to_string(s.getLastHitMs());
#endif
    return out + "}\n";
  }
  std::string stats_json() const {
    std::string out = "{\"schema\":" + std::to_string(SESSIOND_SCHEMA) +
                      ",\"worker\":" + std::to_string(shard_) +
                      ",\"sessions\":" + std::to_string(sessions_.size());
    for (const char* f : {"requests", "bad_requests", "sessions_created"}) {
      out += std::string(",\"") + f + "\":" + std::to_string(count(f));
    }
    return out + "}\n";
  }

  int64_t count(const char* field) const {
    auto n = stats_.counter(field);
    return n.ok() ? *n : 0;
  }

  Table<sessiond::Session> sessions_;
  Table<sessiond::Limit> limits_;
  Cell stats_;
  uint32_t rate_limit_;
  unsigned shard_, shards_;
  std::vector<uint16_t> ports_;  // each worker's, for a 421's pointer
};

// One thread's event loop: edge-triggered epoll over its listeners and connections.
// In the main thread (no workers) its hooks are UpgradeHooks; on a worker thread the same
// freeze() and unfreeze() are that thread's WorkerHooks.
class Server final : public UpgradeHooks, public WorkerHooks, public EarlySockets {
 public:
  // `rt` is null in sessiond-bare, the build without Baton that measures its overhead.
  Server(Runtime* rt, Sessions& sessions) : rt_(rt), sessions_(sessions) {
    ep_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  }

  void listen_on(UniqueFd fd, bool watched = false) {
    if (!watched) watch(fd.get());
    listeners_.push_back(std::move(fd));
    accept_from(listeners_.back().get());  // clients may wait in its backlog already
  }
  // A socket from the previous generation: a listener, or a connection with its state.
  void take(InheritedSocket& s) {
    if (s.tag == "listener") {
      listen_on(std::move(s.fd), s.early);
    } else {
      adopt(std::move(s.fd), s.state, s.early);
    }
  }
  // A connection from the previous generation: "<closing 0|1><input bytes>:<input><output>".
  void adopt(UniqueFd fd, std::string_view state, bool watched = false) {
    Conn& c = add(std::move(fd), watched);
    const size_t colon = state.find(':');
    size_t in_len = 0;
    bool ok = state.size() >= 2 && colon != std::string_view::npos;
    if (ok) {
      auto [end, ec] = std::from_chars(state.data() + 1, state.data() + colon, in_len);
      ok = ec == std::errc() && end == state.data() + colon && in_len <= state.size() - colon - 1;
    }
    if (!ok) {
      std::fprintf(stderr, "sessiond: dropping an inherited connection with a malformed state\n");
      return drop(c.fd.get());
    }
    c.closing = state[0] == '1';
    c.in.assign(state.substr(colon + 1, in_len));
    c.out.assign(state.substr(colon + 1 + in_len));
    serve(c.fd.get());  // a half-read request, or output left unsent at the freeze
  }

  // Serves until committed (the successor took over) or SIGTERM/SIGINT on `signals`.
  int run(int signals) {
    if (rt_ == nullptr) return run_bare(signals);
    return loop(
        rt_->poll_fd(), signals, [this] { return rt_->service_interval_ms(); },
        [this] {
          rt_->service();
          return !done_;
        });
  }
  // Without Baton: the same loop, nothing to service.
  int run_bare(int stop) {
    UniqueFd never(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    return loop(
        never.get(), stop, [] { return -1; }, [] { return true; });
  }
  // A worker thread's loop: until committed (service() returns false) or `stop` is
  // readable (the main thread's SIGTERM).
  void run_worker(Worker& w, int stop) {
    loop(
        w.poll_fd(), stop, [&w] { return w.service_interval_ms(); },
        [this, &w] { return w.service(*this); });
  }

  // --- UpgradeHooks: sockets go early, then the loop stops reading and accepting.
  std::vector<FrozenSocket> early() override { return sockets(false); }
  std::vector<FrozenSocket> freeze() override {
    frozen_ = true;  // O(1): nothing per socket inside the blackout
    return sockets(true);
  }
  void unfreeze() override {
    frozen_ = false;  // edges ignored meanwhile do not come again: serve everything once
    for (auto& l : listeners_) accept_from(l.get());
    std::vector<int> fds;
    for (auto& [fd, c] : conns_) fds.push_back(fd);
    for (int fd : fds) serve(fd);
  }
  void committed() override { done_ = true; }
  // --- EarlySockets (successor): watched now, served once take_over() returns.
  void early_socket(int fd, const std::string&) override { watch(fd); }
  void early_socket_withdrawn(int fd) override {
    ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }

 private:
  struct Conn {
    UniqueFd fd;
    std::string in;   // bytes not yet parsed
    std::string out;  // replies not yet written
    bool closing = false;
    uint64_t serial = 0;
  };

  // Edge-triggered epoll over this thread's sockets, `wake` (the runtime's fd, served by
  // `service`, which returns false when this loop is done) and `stop`.
  template <typename Interval, typename Service>
  int loop(int wake, int stop, Interval interval, Service service) {
    epoll_event s{EPOLLIN, {.fd = stop}};
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, stop, &s);
    epoll_event w{EPOLLIN, {.fd = wake}};
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, wake, &w);
    for (;;) {
      epoll_event ev[256];
      const int n = ::epoll_wait(ep_.get(), ev, 256, accept_more_.empty() ? interval() : 0);
      for (int i = 0; i < n; ++i) {
        const int fd = ev[i].data.fd;
        if (fd == stop) return 0;
        if (fd == wake || frozen_) continue;  // frozen: the kernel keeps the bytes
        if (is_listener(fd)) {
          accept_from(fd);
        } else {
          serve(fd);
        }
      }
      if (!frozen_ && !accept_more_.empty()) {
        std::vector<int> more;
        more.swap(accept_more_);
        for (int l : more) accept_from(l);
      }
      if (!service()) return 0;
    }
  }

  void watch(int fd) {
    epoll_event ev{EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, {.fd = fd}};
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  bool is_listener(int fd) const {
    for (auto& l : listeners_)
      if (l.get() == fd) return true;
    return false;
  }
  Conn& add(UniqueFd fd, bool watched) {
    const int raw = fd.get();
    if (!watched) watch(raw);
    Conn& c = conns_[raw];
    c.fd = std::move(fd);
    c.serial = ++serials_;
    return c;
  }
  void drop(int fd) {
    ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
    conns_.erase(fd);
  }
  void accept_from(int listener) {
    for (int i = 0; i < 256; ++i) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
          std::fprintf(stderr, "sessiond: accept: out of file descriptors (raise ulimit -n)\n");
        }
        return;
      }
      int one = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      add(UniqueFd(fd), false);
    }
    // 256 per turn, so that a storm of connections cannot starve the served ones; the
    // listener is edge-triggered, so the rest of its backlog is taken next turn.
    accept_more_.push_back(listener);
  }
  std::vector<FrozenSocket> sockets(bool with_state) {
    std::vector<FrozenSocket> out;
    for (auto& l : listeners_) out.push_back({l.get(), "listener", "", 0});
    for (auto& [fd, c] : conns_) {
      std::string state;
      if (with_state) {
        state =
            std::string(c.closing ? "1" : "0") + std::to_string(c.in.size()) + ":" + c.in + c.out;
      }
      out.push_back({fd, "conn", std::move(state), c.serial});
    }
    return out;
  }

  // Reads what there is, answers every complete request, writes what it can.
  void serve(int fd) {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    Conn& c = it->second;
    bool eof = false;
    char buf[16 << 10];
    while (!c.closing) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > 2 * kMaxInput) break;  // parse what is there; the parser refuses
        continue;
      }
      if (n == 0) eof = true;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) return drop(fd);
      break;
    }
    answer(c);
    flush(c);
    if (!conns_.count(fd)) return;
    if ((c.closing || eof) && c.out.empty()) drop(fd);
  }

  // Each complete request in `in`, parsed by a fresh Beast parser from its first byte, so
  // that what a freeze hands over is just the unparsed bytes.
  void answer(Conn& c) {
    size_t used = 0;
    while (!c.closing && used < c.in.size()) {
      http::request_parser<http::string_body> p;
      p.header_limit(kHeaderLimit);
      p.body_limit(kBodyLimit);
      p.eager(true);
      boost::beast::error_code ec;
      size_t n = 0;
      while (!p.is_done()) {
        const size_t step =
            p.put(boost::asio::buffer(c.in.data() + used + n, c.in.size() - used - n), ec);
        n += step;
        if (ec || step == 0) break;
      }
      if (ec == http::error::need_more || (!ec && !p.is_done())) {
        if (c.in.size() - used > kMaxInput) {
          reply_bad(c, 413, "a request is at most 8 KiB of header and 64 KiB of body\n");
        }
        break;  // wait for the rest
      }
      if (ec) {
        reply_bad(c, ec == http::error::body_limit ? 413 : 400,
                  "bad HTTP request: " + ec.message() + "\n");
        break;
      }
      used += n;
      const auto& req = p.get();
      const auto target = req.target();  // a boost::string_view in Boost 1.74
      Reply r = sessions_.handle(req.method(), std::string_view(target.data(), target.size()),
                                 req.body());
      r.close = r.close || !req.keep_alive();
      write_reply(c, r);
    }
    c.in.erase(0, used);
  }
  void reply_bad(Conn& c, int status, std::string body) {
    sessions_.count_bad_request();
    write_reply(c, {status, std::move(body), true});
    c.in.clear();
  }
  void write_reply(Conn& c, const Reply& r) {
    c.out += "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
             "\r\nContent-Type: " + (r.body.starts_with("{") ? "application/json" : "text/plain") +
             "\r\nContent-Length: " + std::to_string(r.body.size()) +
             (r.close ? "\r\nConnection: close" : "") + "\r\n\r\n" + r.body;
    if (r.close) c.closing = true;
  }
  void flush(Conn& c) {
    size_t sent = 0;
    while (sent < c.out.size()) {
      const ssize_t n =
          ::send(c.fd.get(), c.out.data() + sent, c.out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;  // EPOLLOUT brings us back
      return drop(c.fd.get());
    }
    c.out.erase(0, sent);
  }

  Runtime* rt_;
  Sessions& sessions_;
  UniqueFd ep_;
  std::vector<UniqueFd> listeners_;
  std::map<int, Conn> conns_;
  std::vector<int> accept_more_;  // listeners whose backlog may hold more
  uint64_t serials_ = 0;
  bool frozen_ = false;
  bool done_ = false;
};

// The main thread with worker threads: it serves no socket itself, only the runtime.
class MainHooks final : public UpgradeHooks {
 public:
  std::vector<FrozenSocket> freeze() override { return {}; }
  void unfreeze() override {}
  void committed() override { done = true; }
  bool done = false;
};

uint16_t local_port(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
  return ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                       : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

// --workers N: N threads, each with its own listener (its own port), connections and
// shard of the sessions (the ids that hash to it; the others get a 421 naming the right
// port). The main thread runs the runtime only.
// `rt` is null in sessiond-bare.
int serve_with_workers(Runtime* rt, std::map<std::string, std::string>& flag, unsigned n,
                       uint32_t rate_limit, int signals) {
  std::vector<std::unique_ptr<Sessions>> shards;
  std::vector<std::unique_ptr<Server>> servers;
  std::vector<std::vector<InheritedSocket>> sockets(n);
  for (unsigned k = 1; k <= n; ++k) {
    Registry* reg = rt != nullptr ? &rt->worker(k).registry() : nullptr;
    shards.push_back(std::make_unique<Sessions>(reg, rate_limit, k, n));
    servers.push_back(std::make_unique<Server>(rt, *shards.back()));
  }
  std::vector<uint16_t> ports(n, 0);
  // Sockets sent ahead of the freeze go to their worker's epoll now, while the incumbent
  // still serves them; the threads start once take_over() returns.
  struct Early final : EarlySockets {
    std::vector<std::unique_ptr<Server>>& servers;
    std::map<int, unsigned> worker_of;
    explicit Early(std::vector<std::unique_ptr<Server>>& s) : servers(s) {}
    void early_socket(int fd, const std::string& tag) override { early_socket(fd, tag, 1); }
    void early_socket(int fd, const std::string& tag, unsigned worker) override {
      if (worker < 1 || worker > servers.size()) return;  // take_over() returns it; closed
      worker_of[fd] = worker;
      servers[worker - 1]->early_socket(fd, tag);
    }
    void early_socket_withdrawn(int fd) override {
      if (auto it = worker_of.find(fd); it != worker_of.end()) {
        servers[it->second - 1]->early_socket_withdrawn(fd);
        worker_of.erase(it);
      }
    }
  } early(servers);
  if (rt != nullptr && rt->is_successor()) {  // every worker's sections, one stream replayed
    auto inherited = rt->take_over(&early);
    if (!inherited.ok()) {
      return std::fprintf(stderr, "sessiond: %s\n", inherited.error().to_string().c_str()), 1;
    }
    for (InheritedSocket& s : *inherited) {
      if (s.worker < 1 || s.worker > n) {
        std::fprintf(stderr, "sessiond: an inherited socket of worker %u, of %u: closed\n",
                     s.worker, n);
        continue;
      }
      if (s.tag == "listener") ports[s.worker - 1] = local_port(s.fd.get());
      sockets[s.worker - 1].push_back(std::move(s));
    }
  } else {
    const long base = std::atol(flag["--port"].c_str());
    for (unsigned k = 1; k <= n; ++k) {
      const auto want = static_cast<uint16_t>(base == 0 ? 0 : base + k - 1);
      auto tcp = sample::listen_tcp(flag["--bind"], want, &ports[k - 1]);
      if (!tcp.ok()) {
        return std::fprintf(stderr, "sessiond: %s\n", tcp.error().to_string().c_str()), 2;
      }
      sockets[k - 1].push_back({std::move(tcp).value(), "listener", "", false, k});
    }
    if (!flag["--port-file"].empty()) {
      std::ofstream out(flag["--port-file"]);
      for (uint16_t p : ports) out << p << " ";
      out << "\n";
    }
    std::fprintf(stderr, "sessiond[%d]: schema %d, %u workers\n", ::getpid(), SESSIOND_SCHEMA, n);
  }
  for (auto& s : shards) s->set_ports(ports);
  // Each worker's sockets go back into its loop here, before its thread starts (which
  // orders these writes before everything the thread does); then the blackout can end.
  for (unsigned k = 1; k <= n; ++k) {
    for (InheritedSocket& s : sockets[k - 1]) servers[k - 1]->take(s);
  }
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::vector<std::thread> threads;
  for (unsigned k = 1; k <= n; ++k) {
    threads.emplace_back([&, k] {
      if (rt == nullptr) {
        servers[k - 1]->run_bare(stop.get());
      } else {
        servers[k - 1]->run_worker(rt->worker(k), stop.get());
      }
    });
  }
  MainHooks hooks;
  if (rt != nullptr) rt->serving(hooks);
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event sig{EPOLLIN, {.fd = signals}};
  ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, signals, &sig);
  if (rt != nullptr) {
    epoll_event wake{EPOLLIN, {.fd = rt->poll_fd()}};
    ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, rt->poll_fd(), &wake);
  }
  while (!hooks.done) {
    epoll_event ev[4];
    const int got = ::epoll_wait(ep.get(), ev, 4, rt != nullptr ? rt->service_interval_ms() : -1);
    bool stopping = false;
    for (int i = 0; i < got; ++i) stopping |= ev[i].data.fd == signals;
    if (stopping) {
      std::fprintf(stderr, "sessiond[%d]: stopping\n", ::getpid());
      const uint64_t one = 1;
      (void)!::write(stop.get(), &one, sizeof one);
      break;
    }
    if (rt != nullptr) rt->service();
  }
  for (auto& t : threads) t.join();  // committed: each worker's service() returned false
  return 0;
}

int main(int argc, char** argv) {
  sample::raise_fd_limit();
  auto parsed = sample::parse_flags(argc, argv,
                                    {{"--port", "0"},
                                     {"--bind", "127.0.0.1"},
                                     {"--port-file", ""},
                                     {"--pidfile", ""},
                                     {"--event-log", ""},
                                     {"--control", ""},
                                     {"--rate-limit", "100"},
                                     {"--workers", "0"}},
                                    {"--port", "--rate-limit", "--workers"});
  if (!parsed.ok()) {
    return std::fprintf(stderr, "sessiond: %s\n", parsed.error().message().c_str()), 2;
  }
  auto& flag = parsed.value();
  const long port = std::atol(flag["--port"].c_str());
  const long rate_limit = std::atol(flag["--rate-limit"].c_str());
  const long workers = std::atol(flag["--workers"].c_str());
  if (port > 65535 || rate_limit < 1 || workers > static_cast<long>(kMaxWorkers)) {
    return std::fprintf(stderr,
                        "sessiond: --port is 0..65535, --rate-limit at least 1, --workers 0..%u "
                        "(0: one thread)\n",
                        kMaxWorkers),
           2;
  }
  // SIGTERM and SIGINT end the loop; SIGUSR2 is the runtime's (blocked before it starts).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop, nullptr);
  UniqueFd signals(::signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC));

  RuntimeOptions opt;
  opt.pidfile = flag["--pidfile"];
  opt.event_log = flag["--event-log"];
  opt.control_socket = flag["--control"];
  opt.worker_threads = static_cast<unsigned>(workers);
#if SESSIOND_BARE  // the baseline of the overhead benchmark: the same server, no Baton
  (void)opt;
  Runtime* runtime = nullptr;
  Registry* registry = nullptr;
#else
  auto rt = Runtime::create(argc, argv, opt);
  if (!rt.ok()) return std::fprintf(stderr, "sessiond: %s\n", rt.error().to_string().c_str()), 2;
  Runtime* runtime = rt->get();
  Registry* registry = &runtime->registry();
#endif
  if (workers > 0) {
    return serve_with_workers(runtime, flag, static_cast<unsigned>(workers),
                              static_cast<uint32_t>(rate_limit), signals.get());
  }
  Sessions sessions(registry, static_cast<uint32_t>(rate_limit));
  Server server(runtime, sessions);

  if (runtime != nullptr && runtime->is_successor()) {  // restore, replay, take sockets over
    auto inherited = runtime->take_over(&server);
    if (!inherited.ok()) {
      return std::fprintf(stderr, "sessiond: %s\n", inherited.error().to_string().c_str()), 1;
    }
    for (InheritedSocket& s : *inherited) server.take(s);
  } else {
    uint16_t bound = 0;
    auto tcp = sample::listen_tcp(flag["--bind"], static_cast<uint16_t>(port), &bound);
    if (!tcp.ok()) {
      return std::fprintf(stderr, "sessiond: %s\n", tcp.error().to_string().c_str()), 2;
    }
    server.listen_on(std::move(tcp).value());
    if (!flag["--port-file"].empty()) std::ofstream(flag["--port-file"]) << bound << "\n";
    std::fprintf(stderr, "sessiond[%d]: schema %d, listening on %s:%u\n", ::getpid(),
                 SESSIOND_SCHEMA, flag["--bind"].c_str(), bound);
  }
  if (runtime != nullptr) runtime->serving(server);
  return server.run(signals.get());
}
