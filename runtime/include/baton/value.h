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

#include "baton/compact_string.h"

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
/// out of line so an Entry stays 32 bytes: strings dominate real state.
template <typename T>
class Box {
 public:
  Box() : p_(std::make_unique<T>()) {}
  explicit Box(T v) : p_(std::make_unique<T>(std::move(v))) {}
  Box(const Box& o) : p_(o.p_ ? std::make_unique<T>(*o.p_) : nullptr) {}
  Box& operator=(const Box& o) {
    p_ = o.p_ ? std::make_unique<T>(*o.p_) : nullptr;
    return *this;
  }
  Box(Box&&) noexcept = default;
  Box& operator=(Box&&) noexcept = default;
  T& operator*() const { return *p_; }
  T* operator->() const { return p_.get(); }
  bool operator==(const Box& o) const { return p_ && o.p_ ? *p_ == *o.p_ : p_ == o.p_; }

 private:
  std::unique_ptr<T> p_;
};

/// String bytes borrowed from a read-only checkpoint mapping that the owning section
/// keeps alive. A restore borrows instead of copying; the first write makes them owned.
struct Borrowed {
  const char* data = nullptr;
  size_t size = 0;
  std::string_view view() const { return {data, size}; }
  bool operator==(const Borrowed& o) const { return view() == o.view(); }
};

/// One key's value and its expiry (Unix milliseconds; 0 means it never expires). 32 bytes:
/// a string is a CompactString, a collection is boxed.
struct Entry {
  /// The first five alternatives are in ValueType order; Borrowed is also a string.
  std::variant<CompactString, Box<List>, Box<Set>, Box<Hash>, Box<ZSet>, Borrowed> value;
  int64_t expires_at_ms = 0;

  Entry() = default;
  /// A copy owns its bytes: a Borrowed view is only valid while the section that
  /// restored it holds the mapping, which a copy cannot know.
  Entry(const Entry& o) : value(o.value), expires_at_ms(o.expires_at_ms) {
    if (auto* b = std::get_if<Borrowed>(&value)) value = CompactString(b->view());
  }
  Entry& operator=(const Entry& o) {
    if (this != &o) *this = Entry(o);
    return *this;
  }
  // noexcept on purpose: std::deque's move may allocate, which would make vectors of
  // entries copy on growth. An allocation failure there terminates, as OOM does anyway.
  Entry(Entry&&) noexcept = default;
  Entry& operator=(Entry&&) noexcept = default;

  ValueType type() const {
    return is_borrowed() ? ValueType::kString : static_cast<ValueType>(value.index());
  }
  bool is_string() const { return type() == ValueType::kString; }
  bool is_borrowed() const { return std::holds_alternative<Borrowed>(value); }
  /// The string value, owned or borrowed. Requires is_string().
  std::string_view str() const {
    if (auto* b = std::get_if<Borrowed>(&value)) return b->view();
    return std::get<CompactString>(value);
  }
  /// The string value as owned bytes to modify, copying borrowed bytes first.
  /// Requires is_string().
  CompactString& own_string() {
    if (auto* b = std::get_if<Borrowed>(&value)) value = CompactString(b->view());
    return std::get<CompactString>(value);
  }
  /// The value as one collection type, or nullptr if it holds another.
  const List* list() const { return unbox<List>(); }
  const Set* set() const { return unbox<Set>(); }
  const Hash* hash() const { return unbox<Hash>(); }
  const ZSet* zset() const { return unbox<ZSet>(); }
  List* list() { return unbox<List>(); }
  Set* set() { return unbox<Set>(); }
  Hash* hash() { return unbox<Hash>(); }
  ZSet* zset() { return unbox<ZSet>(); }
  /// Bytes of keys and values this entry holds, the unit of snapshot budgets and estimates.
  size_t payload_bytes() const;
  /// Equal type, contents and expiry; owned and borrowed strings compare by bytes.
  bool operator==(const Entry& other) const {
    if (expires_at_ms != other.expires_at_ms) return false;
    if (is_string() || other.is_string()) {
      return is_string() && other.is_string() && str() == other.str();
    }
    return value == other.value;
  }

 private:
  template <typename T>
  T* unbox() const {
    auto* b = std::get_if<Box<T>>(&value);
    return b ? &**b : nullptr;
  }
};

static_assert(sizeof(Entry) == 32, "an Entry is part of every key's slot: keep it small");

}  // namespace baton
