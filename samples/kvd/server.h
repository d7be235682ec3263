// kvd's event loop: one thread, edge-triggered epoll, pipelined RESP requests, and the
// hooks through which Baton freezes it and hands its sockets to a successor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "baton/fd.h"
#include "baton/runtime.h"
#include "baton/tracked_map.h"
#include "store.h"

namespace kvd {

struct ServerOptions {
  int64_t maxclients = 10000;
  std::string upgrade_note;  // reported by INFO, e.g. what a rollback did to expiries
  /// kvd-crashy only (a deliberately broken build for the demo and tests): abort() this
  /// long after run() starts, as a successor. 0: never.
  int64_t crash_after_ms = 0;
};

class Server final : public baton::UpgradeHooks,
                     public baton::EarlySockets,
                     public baton::ShadowReads,
                     public ServerView {
 public:
  /// `runtime` is null in kvd-bare, the build without Baton that measures its overhead.
  Server(baton::Runtime* runtime, baton::TrackedMap& map, bool expiry, ServerOptions options);
  ~Server() override;

  /// `registered`: already watched, as an early socket (early_socket()).
  void listen_on(baton::UniqueFd fd, bool registered = false);
  /// A connection inherited from the previous generation, with the state freeze() gave it.
  void adopt(baton::UniqueFd fd, std::string_view state, bool registered = false);
  void set_upgrade_note(std::string note) { options_.upgrade_note = std::move(note); }
  /// Called when a rollback makes this process serve again (after resume()).
  void set_on_resume(std::function<void()> fn) { on_resume_ = std::move(fn); }
  /// Serves until committed() or a stop signal arrives on `signal_fd` (SIGTERM, SIGINT).
  /// Returns the process's exit status.
  int run(int signal_fd);

  // --- baton::UpgradeHooks
  std::vector<baton::FrozenSocket> early() override;
  std::vector<baton::FrozenSocket> freeze() override;
  void unfreeze() override;
  void throttle(bool on) override { throttled_ = on; }
  void committed() override { done_ = true; }
  void standby() override;
  void resume(std::vector<baton::InheritedSocket> sockets) override;

  // --- baton::EarlySockets (successor): watched now, served once take_over() returns
  void early_socket(int fd, const std::string& tag) override;
  void early_socket_withdrawn(int fd) override;

  // --- baton::ShadowReads: probes are kvd requests (Store::probe_request)
  std::string evaluate(std::string_view request) override { return store_.evaluate_probe(request); }
  std::string describe(std::string_view request) override { return Store::describe_probe(request); }
  /// kvd-divergent (KVD_DIVERGE=get...): see Store::set_diverge_get.
  Store& store() { return store_; }

  // --- ServerView
  std::string info(std::string_view section) const override;
  int64_t maxclients() const override { return options_.maxclients; }

 private:
  struct Conn;
  void accept_from(int listener);
  Conn* add_conn(baton::UniqueFd fd, bool registered = false);
  void watch(int fd, bool listener);

  void serve(Conn& c);
  // Parses and runs the complete requests in `data`; returns the bytes consumed.
  size_t process(Conn& c, std::string_view data);
  void feed(Conn& c, const char* data, size_t n);
  void flush(Conn& c);
  // After serving `c`: write its replies now, or hold them until their writes are in the
  // reverse stream (probation).
  void finish(Conn& c);
  // Writes held replies once Runtime::writes_durable() says their writes are safe.
  void release_held();
  void drop_if_done(Conn& c);
  void drop(Conn& c);
  void reap_dropped();
  void stop();

  baton::Runtime* rt_;
  baton::TrackedMap& map_;
  Store store_;
  ServerOptions options_;
  baton::UniqueFd epoll_;
  std::vector<baton::UniqueFd> listeners_;
  std::vector<std::unique_ptr<Conn>> conns_;  // indexed by fd
  std::vector<int> ready_;                    // connections with input left to serve next turn
  std::vector<int> dropped_;                  // closed at the end of the loop turn
  std::vector<int> accept_more_;
  std::vector<int> accept_retry_;  // listeners that hit EMFILE: retried at accept_retry_at_ms_
  int64_t accept_retry_at_ms_ = 0;
  int64_t emfile_logged_ms_ = 0;
  std::vector<int> held_;  // connections whose replies wait for writes_durable()
  bool holding_ = false;   // this loop turn, replies wait (probation)
  std::vector<std::string_view> args_;
  std::unique_ptr<char[]> rbuf_;
  int64_t clients_ = 0;
  uint64_t serials_ = 0;

  uint64_t connections_received_ = 0;
  uint64_t rejected_ = 0;
  baton::Counter* commands_total_ = nullptr;  // Runtime::metrics(); null in kvd-bare
  baton::Counter* connections_total_ = nullptr;
  baton::Counter* rejected_total_ = nullptr;
  int64_t started_ms_ = 0;
  bool frozen_ = false;
  bool throttled_ = false;
  int turn_budget_ = 0;  // requests left this loop turn while throttled

  bool done_ = false;
  int64_t crash_at_ms_ = 0;
  std::function<void()> on_resume_;
};

}  // namespace kvd
