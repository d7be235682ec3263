// SCM_RIGHTS send/receive and SO_PEERCRED.
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "baton/syscall.h"
#include "baton/unix_socket.h"

namespace baton {

Result<void> send_fds(int sock, std::string_view bytes, std::span<const int> fds) {
  if (bytes.empty()) {
    return Error(ErrorKind::kInvalidArgument, "send_fds needs at least one byte of payload");
  }
  if (fds.size() > kMaxFdsPerMessage) {
    return Error(ErrorKind::kInvalidArgument,
                 "send_fds: " + std::to_string(fds.size()) + " fds exceed " +
                     std::to_string(kMaxFdsPerMessage) + " per message; split them");
  }
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  BATON_ASSIGN_OR_RETURN(ssize_t n, BATON_SYSCALL(::sendmsg(sock, &msg, MSG_NOSIGNAL), "sending ",
                                                  fds.size(), " fds"));
  size_t sent = static_cast<size_t>(n);
  // The fds went with the first byte; the rest of a short write is ordinary data.
  while (sent < bytes.size()) {
    BATON_ASSIGN_OR_RETURN(ssize_t m, BATON_SYSCALL(::send(sock, bytes.data() + sent,
                                                           bytes.size() - sent, MSG_NOSIGNAL)));
    sent += static_cast<size_t>(m);
  }
  return ok();
}

Result<ReceivedMessage> recv_fds(int sock, size_t max_bytes) {
  if (max_bytes == 0) {
    return Error(ErrorKind::kInvalidArgument, "recv_fds needs room for at least one byte");
  }
  // On a message socket, ask the size first (MSG_PEEK | MSG_TRUNC reports a datagram's
  // whole length and reads nothing), so that a call finding nothing (EAGAIN) allocates
  // nothing, and a small message does not zero a max_bytes buffer.
  size_t room = max_bytes;
  int type = 0;
  socklen_t type_len = sizeof type;
  if (::getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 &&
      (type == SOCK_SEQPACKET || type == SOCK_DGRAM)) {
    ssize_t len;
    do {
      len = ::recv(sock, nullptr, 0, MSG_PEEK | MSG_TRUNC);
    } while (len < 0 && errno == EINTR);
    if (len < 0) return Error(ErrorKind::kSystem, "receiving fds", errno);
    // A longer message is received truncated and refused (MSG_TRUNC below).
    room = std::max<size_t>(1, std::min(static_cast<size_t>(len), max_bytes));
  }
  ReceivedMessage out;
  out.fds.reserve(kMaxFdsPerMessage);  // no allocation between recvmsg and owning the fds
  out.bytes.resize(room);
  iovec iov{out.bytes.data(), out.bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  BATON_ASSIGN_OR_RETURN(ssize_t n,
                         BATON_SYSCALL(::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC), "receiving fds"));
  out.bytes.resize(static_cast<size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.fds.emplace_back(fd);
    }
  }
  if (msg.msg_flags & MSG_TRUNC) {
    return Error(ErrorKind::kCorrupt, "received message exceeds " + std::to_string(max_bytes) +
                                          " bytes and was truncated");
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return Error(ErrorKind::kCorrupt,
                 "received message's fds were truncated (peer sent more "
                 "than " +
                     std::to_string(kMaxFdsPerMessage) + ")");
  }
  return out;
}

Result<PeerCredentials> peer_credentials(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  BATON_TRY(BATON_SYSCALL(::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len),
                          "SO_PEERCRED on fd ", sock));
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace baton
