// ControlServer (control_server.h): the runtime's own listeners' connections, never
// blocking the loop.
#include "handoff/control_server.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "baton/unix_socket.h"
#include "handoff/host.h"

namespace baton {
namespace {

// Sends what the socket takes now; returns what is left.
std::string send_now(int fd, std::string text) {
  const ssize_t n = ::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) return (errno == EAGAIN || errno == EINTR) ? text : std::string();
  return text.substr(static_cast<size_t>(n));
}

// Whatever the peer sent already, so that the close after our reply is a FIN, not an RST
// that could discard the reply before the peer reads it.
void drain(int fd) {
  char buf[512];
  for (int i = 0; i < 8 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
  }
}

std::string control_error(int, const std::string& text) { return "error: " + text + "\n"; }

size_t line_end(std::string_view in) { return in.find('\n'); }

// The empty line that ends an HTTP head. Lines end in CRLF, but a recipient may take a
// bare LF (RFC 9112, section 2.2), as a request typed into nc or printf'd sends.
size_t head_end(std::string_view in) {
  for (size_t nl = in.find('\n'); nl != std::string_view::npos; nl = in.find('\n', nl + 1)) {
    if (in.substr(nl + 1, 1) == "\n" || in.substr(nl + 1, 2) == "\r\n") return nl;
  }
  return std::string_view::npos;
}

std::string http_error(int status, const std::string& text) {
  const char* reason = status == 400   ? "Bad Request"
                       : status == 403 ? "Forbidden"
                       : status == 404 ? "Not Found"
                       : status == 405 ? "Method Not Allowed"
                       : status == 408 ? "Request Timeout"
                       : status == 431 ? "Request Header Fields Too Large"
                                       : "Service Unavailable";
  const std::string body = text + "\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

const ControlServer::Dialect ControlServer::kControl{"control", true, line_end, 256, control_error};
const ControlServer::Dialect ControlServer::kHttp{"metrics", false, head_end, 8192, http_error};

ControlServer::ControlServer(Host& host, const Dialect& dialect, Commands commands)
    : host_(host), dialect_(dialect), commands_(std::move(commands)) {}

ControlServer::~ControlServer() {
  for (Conn& c : conns_) host_.unwatch(c.fd.get());
}

void ControlServer::accept_all(int listener) {
  for (int n = 0; n < 64; ++n) {  // bounded: a flood waits for the next turn
    UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn) return;
    if (dialect_.same_uid_only) {
      auto cred = peer_credentials(conn.get());
      if (!cred.ok() || cred->uid != ::geteuid()) {
        const unsigned uid = cred.ok() ? cred->uid : ~0u;
        host_.say("refused a control connection from pid " +
                  std::to_string(cred.ok() ? cred->pid : 0) + " uid " + std::to_string(uid));
        drain(conn.get());
        (void)send_now(conn.get(), dialect_.error(403, "uid " + std::to_string(uid) +
                                                           " may not control this process "
                                                           "(SO_PEERCRED); only uid " +
                                                           std::to_string(::geteuid()) + " may"));
        continue;
      }
    }
    if (conns_.size() >= kMaxConnections) {
      drain(conn.get());
      (void)send_now(conn.get(), dialect_.error(503, "busy: " + std::to_string(kMaxConnections) +
                                                         " " + dialect_.what +
                                                         " connections are open already; try "
                                                         "again"));
      continue;
    }
    if (!host_.watch(conn.get()).ok()) continue;
    conns_.push_back({std::move(conn), {}, monotonic_us() + kDeadlineUs, false, 0, {}});
  }
}

bool ControlServer::on_fd(int fd) {
  size_t i = 0;
  while (i < conns_.size() && conns_[i].fd.get() != fd) ++i;
  if (i == conns_.size()) return false;
  Conn& c = conns_[i];
  if (!c.out.empty()) {  // writable again: the rest of the reply
    c.out = send_now(fd, std::move(c.out));
    if (c.out.empty()) close_conn(i);
    return true;
  }
  if (c.waiting) {  // it has its command; what else comes is dropped
    char buf[512];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
    }
    // A half-close looks like a close: keep the connection for the outcome, unwatched
    // (an EOF stays readable), and let finish_waiters() try.
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) host_.unwatch(fd);
    return true;
  }
  char buf[512];
  bool eof = false;
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > dialect_.max_request) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    eof = true;  // closed, or an error: what arrived is all there is
    break;
  }
  const size_t end = dialect_.request_end(c.in);
  if (end == std::string::npos && c.in.size() > dialect_.max_request) {
    reply_and_close(
        i, dialect_.error(431, "a request is at most " + std::to_string(dialect_.max_request) +
                                   " bytes" + (dialect_.same_uid_only ? ", one line" : "")));
    return true;
  }
  if (end == std::string::npos && !eof) return true;  // more to come, before the deadline
  std::string request = c.in.substr(0, end);
  while (!request.empty() && (request.back() == '\r' || request.back() == '\n')) {
    request.pop_back();
  }
  Reply r = commands_(request);
  if (!r.wait) {
    reply_and_close(i, std::move(r.text));
    return true;
  }
  (void)send_now(fd, std::move(r.text));  // a line: the socket takes it
  c.waiting = true;
  c.attempt = r.attempt;
  c.deadline_us = INT64_MAX;
  if (eof) host_.unwatch(fd);  // maybe a half-close: the outcome is still sent
  return true;
}

void ControlServer::tick() {
  const int64_t now = monotonic_us();
  for (size_t i = conns_.size(); i-- > 0;) {
    if (now < conns_[i].deadline_us) continue;
    if (!conns_[i].out.empty()) {
      close_conn(i);  // it does not read its reply
      continue;
    }
    reply_and_close(
        i,
        dialect_.error(408, "no request within " + std::to_string(kDeadlineUs / 1000) + " ms" +
                                (dialect_.same_uid_only ? "; send one line, e.g. 'status'" : "")));
  }
}

void ControlServer::finish_open(std::initializer_list<ControlServer*> servers, int64_t timeout_us) {
  // One deadline for all: a silent control connection does not delay a scrape's answer,
  // nor the exit, beyond it.
  const int64_t until = monotonic_us() + timeout_us;
  for (int64_t now = monotonic_us(); now < until; now = monotonic_us()) {
    std::vector<pollfd> fds;
    std::vector<ControlServer*> owner;
    for (ControlServer* s : servers) {
      for (const Conn& c : s->conns_) {
        if (c.waiting) continue;
        fds.push_back({c.fd.get(), static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
        owner.push_back(s);
      }
    }
    if (fds.empty()) return;
    if (::poll(fds.data(), fds.size(), static_cast<int>((until - now) / 1000) + 1) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) (void)owner[i]->on_fd(fds[i].fd);
    }
  }
}

void ControlServer::finish_waiters(const std::string& text, uint64_t attempt) {
  for (size_t i = conns_.size(); i-- > 0;) {
    if (conns_[i].waiting && conns_[i].attempt == attempt) reply_and_close(i, text);
  }
}

void ControlServer::reply_and_close(size_t i, std::string reply) {
  Conn& c = conns_[i];
  c.out = send_now(c.fd.get(), std::move(reply));
  if (c.out.empty()) return close_conn(i);
  // The rest when the peer reads: watched for writing only, within the deadline.
  c.waiting = false;
  c.deadline_us = monotonic_us() + kDeadlineUs;
  host_.unwatch(c.fd.get());
  if (!host_.watch(c.fd.get(), EPOLLOUT).ok()) close_conn(i);
}

void ControlServer::close_conn(size_t i) {
  host_.unwatch(conns_[i].fd.get());
  conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
}

}  // namespace baton
