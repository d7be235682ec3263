// Entry: the typed value stored under one key of a section, as checkpoints carry it.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>

namespace baton {

/// The value types a checkpoint record can carry.
enum class ValueType : uint8_t { kString = 0, kList = 1, kSet = 2, kHash = 3, kZSet = 4 };

/// Returns "string", "list", "set", "hash" or "zset".
std::string_view to_string(ValueType type);

using List = std::deque<std::string>;
using Set = std::unordered_set<std::string>;
using Hash = std::unordered_map<std::string, std::string>;

/// A sorted set: members ordered by (score, member), with score lookup by member.
class ZSet {
 public:
  /// Inserts or rescores `member`; returns true if it was new.
  bool add(double score, std::string_view member);
  /// Removes and returns the lowest (score, member); the set must not be empty.
  std::pair<std::string, double> pop_min();
  bool erase(std::string_view member);
  size_t size() const { return scores_.size(); }
  bool empty() const { return scores_.empty(); }
  /// Members in (score, member) order.
  const std::set<std::pair<double, std::string>>& ordered() const { return ordered_; }
  bool operator==(const ZSet& other) const { return ordered_ == other.ordered_; }

 private:
  std::set<std::pair<double, std::string>> ordered_;
  std::unordered_map<std::string, double> scores_;
};

/// A heap-held T with value semantics (deep copy, deep equality). It keeps collections
/// out of line so an Entry stays 48 bytes: strings dominate real state.
template <typename T>
class Box {
 public:
  Box() : p_(std::make_unique<T>()) {}
  explicit Box(T v) : p_(std::make_unique<T>(std::move(v))) {}
  Box(const Box& o) : p_(std::make_unique<T>(*o.p_)) {}
  Box& operator=(const Box& o) {
    p_ = std::make_unique<T>(*o.p_);
    return *this;
  }
  Box(Box&&) noexcept = default;
  Box& operator=(Box&&) noexcept = default;
  T& operator*() const { return *p_; }
  T* operator->() const { return p_.get(); }
  bool operator==(const Box& o) const { return *p_ == *o.p_; }

 private:
  std::unique_ptr<T> p_;
};

/// One key's value and its expiry (Unix milliseconds; 0 means it never expires).
struct Entry {
  /// Alternatives are in ValueType order.
  std::variant<std::string, Box<List>, Box<Set>, Box<Hash>, Box<ZSet>> value;
  int64_t expires_at_ms = 0;

  Entry() = default;
  Entry(const Entry&) = default;
  Entry& operator=(const Entry&) = default;
  // noexcept on purpose: std::deque's move may allocate, which would make vectors of
  // entries copy on growth. An allocation failure there terminates, as OOM does anyway.
  Entry(Entry&&) noexcept = default;
  Entry& operator=(Entry&&) noexcept = default;

  ValueType type() const { return static_cast<ValueType>(value.index()); }
  /// The value as one type, or nullptr if it holds another.
  const std::string* string() const { return std::get_if<std::string>(&value); }
  const List* list() const { return unbox<List>(); }
  const Set* set() const { return unbox<Set>(); }
  const Hash* hash() const { return unbox<Hash>(); }
  const ZSet* zset() const { return unbox<ZSet>(); }
  std::string* string() { return std::get_if<std::string>(&value); }
  List* list() { return unbox<List>(); }
  Set* set() { return unbox<Set>(); }
  Hash* hash() { return unbox<Hash>(); }
  ZSet* zset() { return unbox<ZSet>(); }
  /// Bytes of keys and values this entry holds, the unit of snapshot budgets and estimates.
  size_t payload_bytes() const;
  bool operator==(const Entry& other) const = default;

 private:
  template <typename T>
  T* unbox() const {
    auto* b = std::get_if<Box<T>>(&value);
    return b ? &**b : nullptr;
  }
};

}  // namespace baton
