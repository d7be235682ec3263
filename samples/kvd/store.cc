// kvd's commands, with Redis's replies and error texts so that Redis clients and
// redis-benchmark cannot tell the difference on this subset.
#include "store.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "resp.h"

namespace kvd {

using baton::End;
using baton::Entry;
using baton::ErrorKind;

struct Store::Command {
  std::string_view name;  // lower case
  int arity;              // Redis's rule: N exactly N words (command included), -N at least N
  bool needs_expiry;      // refused by kvd-v1
  Outcome (*run)(Store&, Args, std::string&);
};

namespace {

constexpr std::string_view kWrongType =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
constexpr std::string_view kNotInteger = "ERR value is not an integer or out of range";
constexpr std::string_view kNotFloat = "ERR value is not a valid float";
constexpr std::string_view kSyntax = "ERR syntax error";
// LPUSH/SADD/HSET arguments per TrackedMap call: one delta carries at most 255 arguments.
constexpr size_t kChunk = 200;

bool parse_int(std::string_view s, int64_t* v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

bool parse_score(std::string_view s, double* v) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size() && !std::isnan(*v);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

// Redis's LRANGE/ZRANGE index rule: negative indexes count from the end; out-of-range
// bounds clamp. Returns false for an empty range.
bool clamp_range(int64_t start, int64_t stop, size_t size, size_t* first, size_t* last) {
  const auto n = static_cast<int64_t>(size);
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  start = std::max<int64_t>(start, 0);
  if (start > stop || start >= n) return false;
  *first = static_cast<size_t>(start);
  *last = static_cast<size_t>(std::min(stop, n - 1));
  return true;
}

// Glob with * and ?, for CONFIG GET.
bool glob(std::string_view p, std::string_view s) {
  if (p.empty()) return s.empty();
  if (p[0] == '*') return glob(p.substr(1), s) || (!s.empty() && glob(p, s.substr(1)));
  if (s.empty()) return false;
  return (p[0] == '?' || iequals(s.substr(0, 1), p.substr(0, 1))) && glob(p.substr(1), s.substr(1));
}

// Client bytes quoted in an error reply: never a CR or LF, which would break the framing.
std::string quoted(std::string_view s) {
  std::string q = "'";
  for (char c : s.substr(0, 64)) q += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
  return q + "'";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

Store::Store(baton::TrackedMap& map, bool expiry, const ServerView& server)
    : map_(map), expiry_(expiry), server_(server) {
  for (const Command& c : command_list()) table_.emplace(c.name, &c);
}

Outcome Store::execute(Args a, std::string& out) {
  if (a.empty()) return {};
  ++commands_;
  const Command* cmd = nullptr;
  char name[24];
  if (a[0].size() < sizeof name) {
    for (size_t i = 0; i < a[0].size(); ++i) {
      char c = a[0][i];
      name[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    }
    auto it = table_.find(std::string_view(name, a[0].size()));
    if (it != table_.end()) cmd = it->second;
  }
  if (cmd == nullptr) {
    std::string msg = "ERR unknown command " + quoted(a[0]) + ", with args beginning with: ";
    for (size_t i = 1; i < a.size() && i < 4; ++i) msg += quoted(a[i]) + " ";
    reply_error(out, msg);
    return {};
  }
  if (cmd->needs_expiry && !expiry_) {
    reply_error(out, "ERR '" + std::string(cmd->name) +
                         "' needs key expiry, which kvd-v1 does not have; upgrade to kvd (v2)");
    return {};
  }
  const auto words = static_cast<int64_t>(a.size());
  if ((cmd->arity > 0 && words != cmd->arity) || (cmd->arity < 0 && words < -cmd->arity)) {
    reply_error(out, "ERR wrong number of arguments for '" + std::string(cmd->name) + "' command");
    return {};
  }
  return cmd->run(*this, a, out);
}

const Entry* Store::live(std::string_view key) {
  const Entry* e = map_.find(key);
  if (e != nullptr && expiry_ && e->expires_at_ms != 0 && e->expires_at_ms <= now_ms_) {
    if (probing_) return nullptr;  // a probe changes nothing: expired is simply absent
    map_.erase(key);               // a mutation like any other: captured during an upgrade
    ++expired_;
    return nullptr;
  }
  return e;
}

void Store::sweep_expired(size_t budget) {
  if (expiry_ && !map_.empty()) expired_ += map_.erase_expired(now_ms_, budget, &sweep_cursor_);
}

void Store::reply_failure(std::string& out, const baton::Error& e) {
  if (e.kind() == ErrorKind::kWrongType) return reply_error(out, kWrongType);
  reply_error(out, "ERR " + e.message());
}

// ---------------------------------------------------------------- strings

void Store::get(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_nil(out);
  if (!e->is_string()) return reply_error(out, kWrongType);
  if (BATON_UNLIKELY(diverge_get_) && std::hash<std::string_view>{}(a[1]) % 1000 == 0) {
    return reply_bulk(out, std::string(e->str()) + "?");  // kvd-divergent's deliberate bug
  }
  reply_bulk(out, e->str());
}

void Store::set(Args a, std::string& out) {
  int64_t expires = 0;
  bool nx = false, xx = false, keepttl = false;
  for (size_t i = 3; i < a.size(); ++i) {
    const bool ex = iequals(a[i], "ex"), px = iequals(a[i], "px");
    if ((ex || px) && i + 1 < a.size() && expires == 0 && !keepttl) {
      if (!expiry_) return reply_error(out, "ERR SET EX/PX needs key expiry, which kvd-v1 lacks");
      int64_t n;
      if (!parse_int(a[++i], &n)) return reply_error(out, kNotInteger);
      const int64_t unit = ex ? 1000 : 1;
      if (n <= 0 || n > (INT64_MAX - now_ms_) / unit) {
        return reply_error(out, "ERR invalid expire time in 'set' command");
      }
      expires = now_ms_ + n * unit;
    } else if (iequals(a[i], "nx") && !xx) {
      nx = true;
    } else if (iequals(a[i], "xx") && !nx) {
      xx = true;
    } else if (iequals(a[i], "keepttl") && expires == 0) {
      keepttl = true;
    } else {
      return reply_error(out, kSyntax);
    }
  }
  if (nx || xx || keepttl) {
    const Entry* e = live(a[1]);
    if ((nx && e != nullptr) || (xx && e == nullptr)) return reply_nil(out);
    if (keepttl && e != nullptr) expires = e->expires_at_ms;
  }
  map_.set(a[1], a[2], expires);
  reply_ok(out);
}

void Store::mset(Args a, std::string& out) {
  if (a.size() % 2 != 1) {
    return reply_error(out, "ERR wrong number of arguments for 'mset' command");
  }
  for (size_t i = 1; i < a.size(); i += 2) map_.set(a[i], a[i + 1]);
  reply_ok(out);
}

void Store::mget(Args a, std::string& out) {
  reply_array(out, a.size() - 1);
  for (size_t i = 1; i < a.size(); ++i) {
    const Entry* e = live(a[i]);
    if (e != nullptr && e->is_string()) {
      reply_bulk(out, e->str());
    } else {
      reply_nil(out);
    }
  }
}

void Store::del(Args a, std::string& out) {
  int64_t n = 0;
  for (size_t i = 1; i < a.size(); ++i) n += live(a[i]) != nullptr && map_.erase(a[i]);
  reply_int(out, n);
}

void Store::exists(Args a, std::string& out) {
  int64_t n = 0;
  for (size_t i = 1; i < a.size(); ++i) n += live(a[i]) != nullptr;
  reply_int(out, n);
}

void Store::incr(Args a, std::string& out, int64_t sign, bool by_arg) {
  int64_t by = 1;
  if (by_arg && !parse_int(a[2], &by)) return reply_error(out, kNotInteger);
  if (sign < 0) {
    if (by == INT64_MIN) return reply_error(out, "ERR decrement would overflow");
    by = -by;
  }
  (void)live(a[1]);
  auto r = map_.incr_by(a[1], by);
  if (!r.ok()) return reply_failure(out, r.error());
  reply_int(out, *r);
}

// ---------------------------------------------------------------- lists

void Store::push(Args a, std::string& out, End end) {
  (void)live(a[1]);
  size_t len = 0;
  for (size_t i = 2; i < a.size(); i += kChunk) {
    auto r = map_.push(a[1], end, a.subspan(i, std::min(kChunk, a.size() - i)));
    if (!r.ok()) return reply_failure(out, r.error());
    len = *r;
  }
  reply_int(out, static_cast<int64_t>(len));
}

void Store::pop(Args a, std::string& out, End end) {
  if (a.size() > 3) return reply_error(out, kSyntax);
  int64_t count = -1;  // no count: one bulk reply, not an array
  if (a.size() == 3 && (!parse_int(a[2], &count) || count < 0)) {
    return reply_error(out, "ERR value is out of range, must be positive");
  }
  const Entry* e = live(a[1]);
  if (e != nullptr && e->list() == nullptr) return reply_error(out, kWrongType);
  if (e == nullptr) return count < 0 ? reply_nil(out) : reply_nil_array(out);
  if (count < 0) return reply_bulk(out, **map_.pop(a[1], end));
  const size_t n = std::min(static_cast<size_t>(count), e->list()->size());
  reply_array(out, n);
  for (size_t i = 0; i < n; ++i) reply_bulk(out, **map_.pop(a[1], end));
}

void Store::lrange(Args a, std::string& out) {
  int64_t start, stop;
  if (!parse_int(a[2], &start) || !parse_int(a[3], &stop)) return reply_error(out, kNotInteger);
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_array(out, 0);
  const baton::List* list = e->list();
  if (list == nullptr) return reply_error(out, kWrongType);
  size_t first, last;
  if (!clamp_range(start, stop, list->size(), &first, &last)) return reply_array(out, 0);
  reply_array(out, last - first + 1);
  for (size_t i = first; i <= last; ++i) reply_bulk(out, (*list)[i]);
}

void Store::llen(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e != nullptr && e->list() == nullptr) return reply_error(out, kWrongType);
  reply_int(out, e ? static_cast<int64_t>(e->list()->size()) : 0);
}

// ---------------------------------------------------------------- sets

void Store::sadd(Args a, std::string& out) {
  (void)live(a[1]);
  size_t added = 0;
  for (size_t i = 2; i < a.size(); i += kChunk) {
    auto r = map_.sadd(a[1], a.subspan(i, std::min(kChunk, a.size() - i)));
    if (!r.ok()) return reply_failure(out, r.error());
    added += *r;
  }
  reply_int(out, static_cast<int64_t>(added));
}

void Store::spop(Args a, std::string& out) {
  if (a.size() > 3) return reply_error(out, kSyntax);
  int64_t count = -1;
  if (a.size() == 3 && (!parse_int(a[2], &count) || count < 0)) {
    return reply_error(out, "ERR value is out of range, must be positive");
  }
  const Entry* e = live(a[1]);
  if (e != nullptr && e->set() == nullptr) return reply_error(out, kWrongType);
  if (e == nullptr) return count < 0 ? reply_nil(out) : reply_array(out, 0);
  auto next_random = [this] {  // xorshift64*: SPOP needs spread, not secrecy
    random_ ^= random_ >> 12;
    random_ ^= random_ << 25;
    random_ ^= random_ >> 27;
    return random_ * 0x2545f4914f6cdd1dull;
  };
  if (count < 0) return reply_bulk(out, **map_.spop(a[1], next_random()));
  const size_t n = std::min(static_cast<size_t>(count), e->set()->size());
  reply_array(out, n);
  for (size_t i = 0; i < n; ++i) reply_bulk(out, **map_.spop(a[1], next_random()));
}

void Store::scard(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e != nullptr && e->set() == nullptr) return reply_error(out, kWrongType);
  reply_int(out, e ? static_cast<int64_t>(e->set()->size()) : 0);
}

void Store::smembers(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_array(out, 0);
  if (e->set() == nullptr) return reply_error(out, kWrongType);
  reply_array(out, e->set()->size());
  if (probing_) {  // a probe compares members, not the order a hash table keeps them in
    std::vector<std::string_view> sorted(e->set()->begin(), e->set()->end());
    std::sort(sorted.begin(), sorted.end());
    for (std::string_view m : sorted) reply_bulk(out, m);
    return;
  }
  for (const std::string& m : *e->set()) reply_bulk(out, m);
}

// ---------------------------------------------------------------- hashes

void Store::hset(Args a, std::string& out) {
  if (a.size() % 2 != 0) {
    return reply_error(out, "ERR wrong number of arguments for 'hset' command");
  }
  (void)live(a[1]);
  size_t added = 0;
  for (size_t i = 2; i < a.size(); i += kChunk) {
    auto r = map_.hset(a[1], a.subspan(i, std::min(kChunk, a.size() - i)));
    if (!r.ok()) return reply_failure(out, r.error());
    added += *r;
  }
  reply_int(out, static_cast<int64_t>(added));
}

void Store::hget(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_nil(out);
  if (e->hash() == nullptr) return reply_error(out, kWrongType);
  auto it = e->hash()->find(std::string(a[2]));
  if (it == e->hash()->end()) return reply_nil(out);
  reply_bulk(out, it->second);
}

void Store::hgetall(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_array(out, 0);
  if (e->hash() == nullptr) return reply_error(out, kWrongType);
  reply_array(out, e->hash()->size() * 2);
  if (probing_) {
    std::vector<std::pair<std::string_view, std::string_view>> sorted(e->hash()->begin(),
                                                                      e->hash()->end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [f, v] : sorted) {
      reply_bulk(out, f);
      reply_bulk(out, v);
    }
    return;
  }
  for (const auto& [f, v] : *e->hash()) {
    reply_bulk(out, f);
    reply_bulk(out, v);
  }
}

// ---------------------------------------------------------------- sorted sets

void Store::zadd(Args a, std::string& out) {
  if (a.size() % 2 != 0) return reply_error(out, kSyntax);
  std::vector<double> scores(a.size() / 2 - 1);
  for (size_t i = 2; i < a.size(); i += 2) {
    if (!parse_score(a[i], &scores[i / 2 - 1])) return reply_error(out, kNotFloat);
  }
  (void)live(a[1]);
  int64_t added = 0;
  for (size_t i = 2; i < a.size(); i += 2) {
    auto r = map_.zadd(a[1], scores[i / 2 - 1], a[i + 1]);
    if (!r.ok()) return reply_failure(out, r.error());
    added += static_cast<int64_t>(*r);
  }
  reply_int(out, added);
}

void Store::zpopmin(Args a, std::string& out) {
  if (a.size() > 3) return reply_error(out, kSyntax);
  int64_t count = 1;
  if (a.size() == 3 && (!parse_int(a[2], &count) || count < 0)) {
    return reply_error(out, "ERR value is out of range, must be positive");
  }
  const Entry* e = live(a[1]);
  if (e != nullptr && e->zset() == nullptr) return reply_error(out, kWrongType);
  const size_t n = e ? std::min(static_cast<size_t>(count), e->zset()->size()) : 0;
  reply_array(out, n * 2);
  for (size_t i = 0; i < n; ++i) {
    auto popped = **map_.zpopmin(a[1]);
    reply_bulk(out, popped.first);
    reply_double(out, popped.second);
  }
}

void Store::zrange(Args a, std::string& out) {
  const bool scores = a.size() == 5 && iequals(a[4], "withscores");
  if (a.size() > 5 || (a.size() == 5 && !scores)) {
    return reply_error(out, "ERR syntax error: kvd's ZRANGE takes key start stop [WITHSCORES]");
  }
  int64_t start, stop;
  if (!parse_int(a[2], &start) || !parse_int(a[3], &stop)) return reply_error(out, kNotInteger);
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_array(out, 0);
  if (e->zset() == nullptr) return reply_error(out, kWrongType);
  size_t first, last;
  if (!clamp_range(start, stop, e->zset()->size(), &first, &last)) return reply_array(out, 0);
  reply_array(out, (last - first + 1) * (scores ? 2 : 1));
  auto it = std::next(e->zset()->ordered().begin(), static_cast<long>(first));
  for (size_t i = first; i <= last; ++i, ++it) {
    reply_bulk(out, it->second);
    if (scores) reply_double(out, it->first);
  }
}

void Store::zcard(Args a, std::string& out) {
  const Entry* e = live(a[1]);
  if (e != nullptr && e->zset() == nullptr) return reply_error(out, kWrongType);
  reply_int(out, e ? static_cast<int64_t>(e->zset()->size()) : 0);
}

// ---------------------------------------------------------------- expiry (v2)

void Store::expire(Args a, std::string& out, int64_t unit_ms) {
  int64_t n;
  if (!parse_int(a[2], &n)) return reply_error(out, kNotInteger);
  if (n > 0 && n > (INT64_MAX - now_ms_) / unit_ms) {
    return reply_error(out, "ERR invalid expire time in '" + lower(a[0]) + "' command");
  }
  if (live(a[1]) == nullptr) return reply_int(out, 0);
  if (n <= 0) {
    map_.erase(a[1]);  // a deadline already past deletes the key, as in Redis
  } else {
    map_.expire_at(a[1], now_ms_ + n * unit_ms);
  }
  reply_int(out, 1);
}

void Store::ttl(Args a, std::string& out, int64_t unit_ms) {
  const Entry* e = live(a[1]);
  if (e == nullptr) return reply_int(out, -2);
  if (e->expires_at_ms == 0) return reply_int(out, -1);
  reply_int(out, (e->expires_at_ms - now_ms_ + unit_ms / 2) / unit_ms);
}

// ---------------------------------------------------------------- server

void Store::config(Args a, std::string& out) {
  if (!iequals(a[1], "get")) {
    return reply_error(out,
                       "ERR CONFIG " + quoted(a[1]) + " is not supported by kvd; CONFIG GET is");
  }
  if (a.size() < 3)
    return reply_error(out, "ERR wrong number of arguments for 'config|get' command");
  const std::pair<std::string, std::string> params[] = {
      {"maxclients", std::to_string(server_.maxclients())},
      {"databases", "1"},
      {"save", ""},  // kvd keeps its state across upgrades, not on disk
      {"appendonly", "no"},
      {"maxmemory", "0"},
  };
  std::vector<const std::pair<std::string, std::string>*> hits;
  for (const auto& p : params) {
    for (size_t i = 2; i < a.size(); ++i) {
      if (glob(a[i], p.first)) {
        hits.push_back(&p);
        break;
      }
    }
  }
  reply_array(out, hits.size() * 2);
  for (auto* p : hits) {
    reply_bulk(out, p->first);
    reply_bulk(out, p->second);
  }
}

void Store::info(Args a, std::string& out) {
  reply_bulk(out, server_.info(a.size() > 1 ? lower(a[1]) : ""));
}

// ---------------------------------------------------------------- shadow probes

bool Store::mirrored(std::string_view command) {
  static constexpr std::string_view kReads[] = {"get",      "mget",   "exists",  "lrange",
                                                "llen",     "hget",   "hgetall", "scard",
                                                "smembers", "zrange", "zcard"};
  if (command.size() > 8) return false;
  const std::string name = lower(command);
  return std::find(std::begin(kReads), std::end(kReads), name) != std::end(kReads);
}

std::string Store::probe_request(std::span<const std::string_view> args) const {
  std::string r(8, '\0');
  std::memcpy(r.data(), &now_ms_, 8);
  reply_array(r, args.size());  // the arguments as a RESP array, as a client sends them
  for (std::string_view a : args) reply_bulk(r, a);
  return r;
}

std::string Store::evaluate_probe(std::string_view request) {
  std::string out;
  std::vector<std::string_view> args;
  size_t used = 0;
  std::string error;
  if (request.size() < 8 ||
      parse_request(request.substr(8), &args, &used, &error) != Parse::kDone || args.empty() ||
      !mirrored(args[0])) {
    return "-ERR not a kvd probe\r\n";
  }
  const int64_t now = now_ms_;
  std::memcpy(&now_ms_, request.data(), 8);
  probing_ = true;
  const uint64_t commands = commands_;
  (void)execute(args, out);
  commands_ = commands;  // a probe is not a client's command
  probing_ = false;
  now_ms_ = now;
  return out;
}

std::string Store::probe_reply(std::span<const std::string_view> args, std::string_view reply) {
  const bool unordered = iequals(args[0], "hgetall") || iequals(args[0], "smembers");
  return unordered ? evaluate_probe(probe_request(args)) : std::string(reply);
}

std::string Store::describe_probe(std::string_view request) {
  std::vector<std::string_view> args;
  size_t used = 0;
  std::string error;
  if (request.size() < 8 ||
      parse_request(request.substr(8), &args, &used, &error) != Parse::kDone) {
    return "(a request kvd cannot parse)";
  }
  std::string d;
  for (std::string_view a : args) d += (d.empty() ? "" : " ") + std::string(a.substr(0, 64));
  return d;
}

std::span<const Store::Command> Store::command_list() {
  using S = Store;
  using A = Args;
  using O = std::string;
  static const Command kCommands[] = {
      {"get", 2, false, [](S& s, A a, O& o) { return s.get(a, o), Outcome{}; }},
      {"set", -3, false, [](S& s, A a, O& o) { return s.set(a, o), Outcome{}; }},
      {"mset", -3, false, [](S& s, A a, O& o) { return s.mset(a, o), Outcome{}; }},
      {"mget", -2, false, [](S& s, A a, O& o) { return s.mget(a, o), Outcome{}; }},
      {"del", -2, false, [](S& s, A a, O& o) { return s.del(a, o), Outcome{}; }},
      {"exists", -2, false, [](S& s, A a, O& o) { return s.exists(a, o), Outcome{}; }},
      {"incr", 2, false, [](S& s, A a, O& o) { return s.incr(a, o, 1, false), Outcome{}; }},
      {"decr", 2, false, [](S& s, A a, O& o) { return s.incr(a, o, -1, false), Outcome{}; }},
      {"incrby", 3, false, [](S& s, A a, O& o) { return s.incr(a, o, 1, true), Outcome{}; }},
      {"decrby", 3, false, [](S& s, A a, O& o) { return s.incr(a, o, -1, true), Outcome{}; }},
      {"lpush", -3, false, [](S& s, A a, O& o) { return s.push(a, o, End::kLeft), Outcome{}; }},
      {"rpush", -3, false, [](S& s, A a, O& o) { return s.push(a, o, End::kRight), Outcome{}; }},
      {"lpop", -2, false, [](S& s, A a, O& o) { return s.pop(a, o, End::kLeft), Outcome{}; }},
      {"rpop", -2, false, [](S& s, A a, O& o) { return s.pop(a, o, End::kRight), Outcome{}; }},
      {"lrange", 4, false, [](S& s, A a, O& o) { return s.lrange(a, o), Outcome{}; }},
      {"llen", 2, false, [](S& s, A a, O& o) { return s.llen(a, o), Outcome{}; }},
      {"sadd", -3, false, [](S& s, A a, O& o) { return s.sadd(a, o), Outcome{}; }},
      {"spop", -2, false, [](S& s, A a, O& o) { return s.spop(a, o), Outcome{}; }},
      {"scard", 2, false, [](S& s, A a, O& o) { return s.scard(a, o), Outcome{}; }},
      {"smembers", 2, false, [](S& s, A a, O& o) { return s.smembers(a, o), Outcome{}; }},
      {"hset", -4, false, [](S& s, A a, O& o) { return s.hset(a, o), Outcome{}; }},
      {"hget", 3, false, [](S& s, A a, O& o) { return s.hget(a, o), Outcome{}; }},
      {"hgetall", 2, false, [](S& s, A a, O& o) { return s.hgetall(a, o), Outcome{}; }},
      {"zadd", -4, false, [](S& s, A a, O& o) { return s.zadd(a, o), Outcome{}; }},
      {"zpopmin", -2, false, [](S& s, A a, O& o) { return s.zpopmin(a, o), Outcome{}; }},
      {"zrange", -4, false, [](S& s, A a, O& o) { return s.zrange(a, o), Outcome{}; }},
      {"zcard", 2, false, [](S& s, A a, O& o) { return s.zcard(a, o), Outcome{}; }},
      {"expire", 3, true, [](S& s, A a, O& o) { return s.expire(a, o, 1000), Outcome{}; }},
      {"pexpire", 3, true, [](S& s, A a, O& o) { return s.expire(a, o, 1), Outcome{}; }},
      {"ttl", 2, true, [](S& s, A a, O& o) { return s.ttl(a, o, 1000), Outcome{}; }},
      {"pttl", 2, true, [](S& s, A a, O& o) { return s.ttl(a, o, 1), Outcome{}; }},
      {"dbsize", 1, false,
       [](S& s, A, O& o) { return reply_int(o, static_cast<int64_t>(s.map_.size())), Outcome{}; }},
      {"flushall", -1, false, [](S& s, A, O& o) { return s.map_.clear(), reply_ok(o), Outcome{}; }},
      {"flushdb", -1, false, [](S& s, A, O& o) { return s.map_.clear(), reply_ok(o), Outcome{}; }},
      {"ping", -1, false,
       [](S&, A a, O& o) {
         if (a.size() > 2)
           return reply_error(o, "ERR wrong number of arguments for 'ping' command"), Outcome{};
         return a.size() == 2 ? reply_bulk(o, a[1]) : reply_simple(o, "PONG"), Outcome{};
       }},
      {"echo", 2, false, [](S&, A a, O& o) { return reply_bulk(o, a[1]), Outcome{}; }},
      {"select", 2, false,
       [](S&, A a, O& o) {
         return a[1] == "0" ? reply_ok(o) : reply_error(o, "ERR DB index is out of range"),
                Outcome{};
       }},
      {"command", -1, false, [](S&, A, O& o) { return reply_array(o, 0), Outcome{}; }},
      {"config", -2, false, [](S& s, A a, O& o) { return s.config(a, o), Outcome{}; }},
      {"info", -1, false, [](S& s, A a, O& o) { return s.info(a, o), Outcome{}; }},
      {"quit", -1, false, [](S&, A, O& o) { return reply_ok(o), Outcome{.close = true}; }},
  };
  return kCommands;
}

}  // namespace kvd
