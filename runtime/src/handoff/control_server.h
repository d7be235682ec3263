// ControlServer: the connections of one of the runtime's own listeners, never blocking
// the loop: batonctl's socket (RuntimeOptions::control_socket, one command line per
// connection, same uid only) and the metrics endpoint (RuntimeOptions::metrics_listen, one
// HTTP request per connection). A peer is checked the moment it is accepted, a request is
// read as it arrives, at most kMaxConnections are open at once, one that sends no full
// request within kDeadlineUs is closed with an error, and a reply the socket cannot take
// at once is sent as the peer reads it (within the same deadline). Any local user who can
// reach the socket therefore costs the loop a few microseconds, not seconds.
// A command may also ask to wait (`upgrade wait`): its connection then stays open, with
// no deadline, until finish_waiters() sends the outcome of the upgrade it started.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "baton/fd.h"

namespace baton {

struct Host;

class ControlServer {
 public:
  static constexpr size_t kMaxConnections = 8;
  static constexpr int64_t kDeadlineUs = 1'000'000;

  struct Reply {
    std::string text;
    bool wait = false;     // keep the connection open for finish_waiters()
    uint64_t attempt = 0;  // with `wait`: the upgrade whose outcome it waits for
  };
  /// Runs one request (for a line: without its newline) and returns the reply.
  using Commands = std::function<Reply(const std::string&)>;

  /// How a listener's peers talk.
  struct Dialect {
    const char* what;    // "control", "metrics": for the log
    bool same_uid_only;  // SO_PEERCRED: refuse other uids
    /// Where the request in `in` ends (its length, without the terminator), or npos: a
    /// line's newline, or the blank line after an HTTP head (CRLF or bare LF).
    size_t (*request_end)(std::string_view in);
    size_t max_request;  // bytes, with its end
    /// The reply to a refused or broken request; `http_status` for the HTTP dialect.
    std::string (*error)(int http_status, const std::string& text);
  };
  static const Dialect kControl;  // batonctl: "error: TEXT\n"
  static const Dialect kHttp;     // "HTTP/1.1 STATUS ...", text/plain

  ControlServer(Host& host, const Dialect& dialect, Commands commands);
  ~ControlServer();

  /// Accepts every pending connection on `listener`.
  void accept_all(int listener);
  /// A watched connection is readable or writable; false if `fd` is not one of ours.
  bool on_fd(int fd);
  /// Closes connections past their deadline.
  void tick();
  /// At exit: serves the connections the `servers` accepted already (not the waiting ones)
  /// for up to `timeout_us` in all, so that a scrape accepted just before a handoff is
  /// answered, not reset.
  static void finish_open(std::initializer_list<ControlServer*> servers, int64_t timeout_us);
  /// Sends `text` to the connections that wait for upgrade `attempt`, and closes them.
  void finish_waiters(const std::string& text, uint64_t attempt);
  size_t open() const { return conns_.size(); }

 private:
  struct Conn {
    UniqueFd fd;
    std::string in;
    int64_t deadline_us = 0;
    bool waiting = false;  // has its command; waits for finish_waiters()
    uint64_t attempt = 0;  // while waiting: the upgrade it waits for
    std::string out;       // a reply not yet sent in full: sent on EPOLLOUT, then closed
  };
  void reply_and_close(size_t i, std::string reply);
  void close_conn(size_t i);

  Host& host_;
  const Dialect& dialect_;
  Commands commands_;
  std::vector<Conn> conns_;
};

}  // namespace baton
