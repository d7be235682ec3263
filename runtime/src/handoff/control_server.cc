// ControlServer (control_server.h): batonctl's connections, never blocking the loop.
#include "handoff/control_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "baton/unix_socket.h"
#include "handoff/host.h"

namespace baton {
namespace {

// Replies are short (a status is about 1 KiB) and the socket buffer holds far more, so
// one non-blocking send nearly always takes it all; a peer that does not read loses it.
void send_now(int fd, const std::string& text) {
  (void)!::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Whatever the peer sent already, so that the close after our reply is a FIN, not an RST
// that could discard the reply before the peer reads it.
void drain(int fd) {
  char buf[512];
  for (int i = 0; i < 8 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
  }
}

}  // namespace

ControlServer::ControlServer(Host& host, Commands commands)
    : host_(host), commands_(std::move(commands)) {}

ControlServer::~ControlServer() {
  for (Conn& c : conns_) host_.unwatch(c.fd.get());
}

void ControlServer::accept_all(int listener) {
  for (int n = 0; n < 64; ++n) {  // bounded: a flood waits for the next turn
    UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn) return;
    auto cred = peer_credentials(conn.get());
    if (!cred.ok() || cred->uid != ::geteuid()) {
      const unsigned uid = cred.ok() ? cred->uid : ~0u;
      host_.say("refused a control connection from pid " +
                std::to_string(cred.ok() ? cred->pid : 0) + " uid " + std::to_string(uid));
      drain(conn.get());
      send_now(conn.get(), "error: uid " + std::to_string(uid) +
                               " may not control this process (SO_PEERCRED); only uid " +
                               std::to_string(::geteuid()) + " may\n");
      continue;
    }
    if (conns_.size() >= kMaxConnections) {
      drain(conn.get());
      send_now(conn.get(), "error: busy: " + std::to_string(kMaxConnections) +
                               " control connections are open already; try again\n");
      continue;
    }
    if (!host_.watch(conn.get()).ok()) continue;
    conns_.push_back({std::move(conn), {}, monotonic_us() + kDeadlineUs});
  }
}

bool ControlServer::on_fd(int fd) {
  size_t i = 0;
  while (i < conns_.size() && conns_[i].fd.get() != fd) ++i;
  if (i == conns_.size()) return false;
  Conn& c = conns_[i];
  char buf[kMaxLine];
  bool eof = false;
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > kMaxLine) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    eof = true;  // closed, or an error: what arrived is all there is
    break;
  }
  const size_t nl = c.in.find('\n');
  if (nl == std::string::npos && c.in.size() > kMaxLine) {
    reply_and_close(
        i, "error: a command is one line of at most " + std::to_string(kMaxLine) + " bytes\n");
    return true;
  }
  if (nl == std::string::npos && !eof) return true;  // more to come, before the deadline
  std::string cmd = c.in.substr(0, nl);
  while (!cmd.empty() && (cmd.back() == '\r' || cmd.back() == '\n')) cmd.pop_back();
  reply_and_close(i, commands_(cmd));
  return true;
}

void ControlServer::tick() {
  const int64_t now = monotonic_us();
  for (size_t i = conns_.size(); i-- > 0;) {
    if (now < conns_[i].deadline_us) continue;
    reply_and_close(i, "error: no command within " + std::to_string(kDeadlineUs / 1000) +
                           " ms; send one line, e.g. 'status'\n");
  }
}

void ControlServer::reply_and_close(size_t i, const std::string& reply) {
  const int fd = conns_[i].fd.get();
  send_now(fd, reply);
  host_.unwatch(fd);
  conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
}

}  // namespace baton
