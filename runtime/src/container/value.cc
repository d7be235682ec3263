// Value types of checkpoint records.
#include "baton/value.h"

namespace baton {

std::string_view to_string(ValueType type) {
  switch (type) {
    case ValueType::kString:
      return "string";
    case ValueType::kList:
      return "list";
    case ValueType::kSet:
      return "set";
    case ValueType::kHash:
      return "hash";
    case ValueType::kZSet:
      return "zset";
  }
  return "unknown";
}

bool ZSet::add(double score, std::string_view member) {
  auto it = scores_.find(std::string(member));
  if (it != scores_.end()) {
    if (it->second == score) return false;
    ordered_.erase({it->second, it->first});
    it->second = score;
    ordered_.emplace(score, it->first);
    return false;
  }
  scores_.emplace(std::string(member), score);
  ordered_.emplace(score, std::string(member));
  return true;
}

std::pair<std::string, double> ZSet::pop_min() {
  auto node = ordered_.extract(ordered_.begin());
  scores_.erase(node.value().second);
  return {std::move(node.value().second), node.value().first};
}

bool ZSet::erase(std::string_view member) {
  auto it = scores_.find(std::string(member));
  if (it == scores_.end()) return false;
  ordered_.erase({it->second, it->first});
  scores_.erase(it);
  return true;
}

namespace {

// Must match TrackedMap's running estimate, operation by operation.
struct PayloadBytes {
  template <typename T>
  size_t operator()(const Box<T>& b) const {
    return (*this)(*b);
  }
  size_t operator()(const CompactString& s) const { return s.size(); }
  size_t operator()(const Borrowed& b) const { return b.size; }
  size_t operator()(const List& l) const {
    size_t n = 0;
    for (const auto& v : l) n += v.size() + 8;
    return n;
  }
  size_t operator()(const Set& s) const {
    size_t n = 0;
    for (const auto& v : s) n += v.size() + 8;
    return n;
  }
  size_t operator()(const Hash& h) const {
    size_t n = 0;
    for (const auto& [f, v] : h) n += f.size() + v.size() + 16;
    return n;
  }
  size_t operator()(const ZSet& z) const {
    size_t n = 0;
    for (const auto& [score, m] : z.ordered()) n += m.size() + 16;
    return n;
  }
};

}  // namespace

size_t Entry::payload_bytes() const { return std::visit(PayloadBytes{}, value); }

}  // namespace baton
