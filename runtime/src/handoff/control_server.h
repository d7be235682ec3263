// ControlServer: the connections of the batonctl socket (RuntimeOptions::control_socket).
// The loop never blocks on them: a peer is checked (SO_PEERCRED) the moment it is
// accepted, a command is read as it arrives, at most kMaxConnections are open at once,
// and one that sends no full line within kDeadlineUs is closed with an error. Any local
// user who can reach the socket therefore costs the loop a few microseconds, not seconds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "baton/fd.h"

namespace baton {

struct Host;

class ControlServer {
 public:
  static constexpr size_t kMaxConnections = 8;
  static constexpr int64_t kDeadlineUs = 1'000'000;
  static constexpr size_t kMaxLine = 256;

  /// Runs one command line (without its newline) and returns the reply.
  using Commands = std::function<std::string(const std::string&)>;

  ControlServer(Host& host, Commands commands);
  ~ControlServer();

  /// Accepts every pending connection on `listener`.
  void accept_all(int listener);
  /// A watched connection is readable; false if `fd` is not one of ours.
  bool on_fd(int fd);
  /// Closes connections past their deadline.
  void tick();
  size_t open() const { return conns_.size(); }

 private:
  struct Conn {
    UniqueFd fd;
    std::string in;
    int64_t deadline_us = 0;
  };
  void reply_and_close(size_t i, const std::string& reply);

  Host& host_;
  Commands commands_;
  std::vector<Conn> conns_;
};

}  // namespace baton
