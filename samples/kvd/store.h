// The commands kvd serves, executed against Baton's TrackedMap: everything they change is
// captured for a live upgrade without the commands knowing.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "baton/tracked_map.h"

namespace kvd {

/// What INFO and CONFIG GET report about the server around the store.
class ServerView {
 public:
  virtual ~ServerView() = default;
  /// "key:value" lines for INFO's Server, Clients, Stats and Baton sections.
  virtual std::string info(std::string_view section) const = 0;
  virtual int64_t maxclients() const = 0;
};

/// What a command asks of the connection that sent it.
struct Outcome {
  bool close = false;  // QUIT: close once the reply is written
};

class Store {
 public:
  /// `expiry` false is kvd-v1: no EX/PX, EXPIRE or TTL, and keys never expire.
  Store(baton::TrackedMap& map, bool expiry, const ServerView& server);

  /// Runs one request (args[0] is the command, any case) and appends its reply to `out`.
  Outcome execute(std::span<const std::string_view> args, std::string& out);

  /// The wall clock for expiry, set once per loop turn (Unix milliseconds).
  void set_now(int64_t now_ms) { now_ms_ = now_ms; }
  int64_t now() const { return now_ms_; }

  /// Reclaims expired keys nobody reads, a bounded number of slots per call.
  void sweep_expired(size_t budget);

  // --- shadow verification (docs/protocol.md, "Which reads to mirror")
  /// The reads kvd mirrors: those whose reply depends only on the keys they name and the
  /// clock the probe carries. Never SPOP, TTL, INFO or anything random or about the server.
  static bool mirrored(std::string_view command);
  /// The probe of request `args`, served at now(): the clock (8 bytes) and the arguments.
  std::string probe_request(std::span<const std::string_view> args) const;
  /// Runs a probe against the map as it is, read-only: the probe's clock, no lazy expiry
  /// erase, members of sets and hashes sorted. Returns the reply.
  std::string evaluate_probe(std::string_view request);
  /// A probe's reply as this process records it: the client's bytes, except for replies
  /// whose order is not part of their meaning (HGETALL, SMEMBERS), which are re-run sorted.
  std::string probe_reply(std::span<const std::string_view> args, std::string_view reply);
  /// "GET key": a probe for an operator.
  static std::string describe_probe(std::string_view request);
  /// kvd-divergent: GET answers wrongly for one key in a thousand (the shadow tests).
  void set_diverge_get(bool on) { diverge_get_ = on; }

  uint64_t commands() const { return commands_; }
  bool probing() const { return probing_; }
  uint64_t expired() const { return expired_; }
  bool expiry() const { return expiry_; }

  struct Command;

 private:
  using Args = std::span<const std::string_view>;
  static std::span<const Command> command_list();

  // The entry under `key`, erasing it first if it has expired (Redis's lazy expiry).
  const baton::Entry* live(std::string_view key);
  // Reply helpers for errors the TrackedMap reports.
  static void reply_failure(std::string& out, const baton::Error& e);

  void get(Args a, std::string& out);
  void set(Args a, std::string& out);
  void mset(Args a, std::string& out);
  void mget(Args a, std::string& out);
  void del(Args a, std::string& out);
  void exists(Args a, std::string& out);
  void incr(Args a, std::string& out, int64_t sign, bool by_arg);
  void push(Args a, std::string& out, baton::End end);
  void pop(Args a, std::string& out, baton::End end);
  void lrange(Args a, std::string& out);
  void llen(Args a, std::string& out);
  void sadd(Args a, std::string& out);
  void spop(Args a, std::string& out);
  void scard(Args a, std::string& out);
  void smembers(Args a, std::string& out);
  void hset(Args a, std::string& out);
  void hget(Args a, std::string& out);
  void hgetall(Args a, std::string& out);
  void zadd(Args a, std::string& out);
  void zpopmin(Args a, std::string& out);
  void zrange(Args a, std::string& out);
  void zcard(Args a, std::string& out);
  void expire(Args a, std::string& out, int64_t unit_ms);
  void ttl(Args a, std::string& out, int64_t unit_ms);
  void config(Args a, std::string& out);
  void info(Args a, std::string& out);

  baton::TrackedMap& map_;
  const bool expiry_;
  const ServerView& server_;
  int64_t now_ms_ = 0;
  uint64_t commands_ = 0;
  uint64_t expired_ = 0;
  uint64_t random_ = 0x9e3779b97f4a7c15ull;
  size_t sweep_cursor_ = 0;
  std::unordered_map<std::string_view, const Command*> table_;
  bool probing_ = false;  // evaluate_probe() runs: read-only, sorted members
  bool diverge_get_ = false;
};

}  // namespace kvd
