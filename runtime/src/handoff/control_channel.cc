// ControlChannel: encode, send with fds, receive and decode.
#include "handoff/control_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <time.h>

#include <algorithm>

#include "baton/unix_socket.h"
#include "control_codec.h"

namespace baton::handoff {

namespace {

int64_t now_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

}  // namespace

Result<ControlChannel> ControlChannel::create(UniqueFd sock) {
  const int flags = ::fcntl(sock.get(), F_GETFL);
  if (flags < 0 || ::fcntl(sock.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return Error(ErrorKind::kSystem, "making the control channel nonblocking", errno);
  }
  return ControlChannel(std::move(sock));
}

Result<void> ControlChannel::send(const Message& m, std::span<const int> fds,
                                  int64_t wait_until_us) {
  if (!sock_) return Error(ErrorKind::kState, "the control channel is closed");
  const std::string bytes = serialization::encode_message(m);
  for (;;) {
    auto r = send_fds(sock_.get(), bytes, fds);
    if (r.ok()) return ok();
    if (r.error().sys_errno() != EAGAIN) {
      return std::move(r).error().with_context("sending " + std::string(message_name(m)));
    }
    const int64_t left_us = wait_until_us - now_us();
    if (left_us <= 0) {
      return Error(ErrorKind::kCapacity,
                   "sending " + std::string(message_name(m)) + " (" + std::to_string(bytes.size()) +
                       " bytes): the peer has left its control socket's buffer full; it reads "
                       "nothing");
    }
    pollfd p{sock_.get(), POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>((left_us + 999) / 1000, 1000)));
  }
}

Result<ControlChannel::Status> ControlChannel::try_receive(Received* out) {
  if (!sock_) return Status::kClosed;
  for (int resets = 0;; ++resets) {
    auto msg = recv_fds(sock_.get(), kMaxMessageBytes);
    if (!msg.ok()) {
      const int e = msg.error().sys_errno();
      if (e == EAGAIN) return Status::kNone;
      // A peer that closed with unread data makes the socket report ECONNRESET once; its
      // last messages are still queued behind it.
      if (e == ECONNRESET && resets == 0) continue;
      if (e == ECONNRESET) return Status::kClosed;
      return std::move(msg).error().with_context("reading the control channel");
    }
    if (msg->bytes.empty()) return Status::kClosed;
    BATON_ASSIGN_OR_RETURN(Message m, serialization::decode_message(msg->bytes));
    out->message = std::move(m);
    out->fds = std::move(msg->fds);
    return Status::kMessage;
  }
}

}  // namespace baton::handoff
