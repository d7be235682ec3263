// Cell: one record of named fields, logged field by field (docs/design.md, "Sections").
#include "baton/cell.h"

#include <charconv>

namespace baton {
namespace {

enum : uint8_t {
  kOpSetField = 1,    // key: the field; args: the value
  kOpEraseField = 2,  // key: the field
};

Error diverged(const std::string& section, std::string_view field, std::string_view what) {
  return Error(ErrorKind::kCorrupt, "delta replay diverged in cell '" + section + "' at field '" +
                                        std::string(field) + "': " + std::string(what));
}

Entry empty_hash() {
  Entry e;
  e.value = Box<Hash>();
  return e;
}

}  // namespace

Cell::Cell(std::string name, uint32_t schema_version)
    : Section(std::move(name), schema_version), entry_(empty_hash()) {}

std::optional<std::string_view> Cell::get(std::string_view field) const {
  const Hash& h = fields();
  auto it = h.find(std::string(field));
  if (it == h.end()) return std::nullopt;
  return it->second;
}

void Cell::set(std::string_view field, std::string_view value) {
  (*entry_.hash())[std::string(field)] = std::string(value);
  if (must_log()) log_->append(id_, kOpSetField, field, {value});
}

bool Cell::erase(std::string_view field) {
  if (entry_.hash()->erase(std::string(field)) == 0) return false;
  if (must_log()) log_->append(id_, kOpEraseField, field, {});
  return true;
}

Result<int64_t> Cell::counter(std::string_view field) const {
  const auto v = get(field);
  if (!v) return int64_t{0};
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size()) {
    return Error(ErrorKind::kWrongType, "field '" + std::string(field) + "' of cell '" + name() +
                                            "' is not a decimal integer: it holds " +
                                            std::to_string(v->size()) + " other bytes");
  }
  return n;
}

Result<int64_t> Cell::add(std::string_view field, int64_t by) {
  BATON_ASSIGN_OR_RETURN(int64_t n, counter(field));
  int64_t sum = 0;
  if (__builtin_add_overflow(n, by, &sum)) {
    return Error(ErrorKind::kCapacity, "counter '" + std::string(field) + "' of cell '" + name() +
                                           "' would overflow: " + std::to_string(n) + " + " +
                                           std::to_string(by));
  }
  // Logged as the new value, not the increment: replay sets, so it is exact whatever ran
  // before it.
  set(field, std::to_string(sum));
  return sum;
}

void Cell::snapshot_begin() {
  snapshotting_ = true;
  written_ = false;
}

bool Cell::snapshot_step(SnapshotSink& sink, size_t budget_bytes) {
  (void)budget_bytes;  // one record, however large: a cell is small state
  // An empty cell writes no record (a checkpoint refuses an empty hash); the restore of
  // none leaves the cell empty. The section holds its record until the slice is encoded.
  if (!written_ && !entry_.hash()->empty()) sink.add("", entry_);
  written_ = true;
  return true;
}

Result<void> Cell::restore_begin(uint64_t records, std::shared_ptr<const void> backing) {
  (void)backing;  // a hash's fields are copied, never borrowed
  if (records > 1) {
    return Error(ErrorKind::kCorrupt, "cell '" + name() + "' restored from " +
                                          std::to_string(records) +
                                          " records; a cell is one record (is the peer's section "
                                          "of that name a cell?)");
  }
  entry_ = empty_hash();
  return ok();
}

Result<void> Cell::restore_record(std::string&& key, Entry&& entry) {
  if (!key.empty() || entry.hash() == nullptr) {
    return Error(ErrorKind::kCorrupt, "cell '" + name() + "' got a " +
                                          std::string(to_string(entry.type())) +
                                          " record under key '" + key +
                                          "'; a cell is one hash under the key \"\" (is the "
                                          "peer's section of that name a cell?)");
  }
  entry_ = std::move(entry);
  return ok();
}

Result<void> Cell::merge_from_peer(Entry part) {
  migrate("", part);
  const Hash* h = part.hash();
  if (h == nullptr) {
    return diverged(name(), "",
                    "a migration turned a field into a " + std::string(to_string(part.type())) +
                        ", not a hash");
  }
  for (const auto& [f, v] : *h) (*entry_.hash())[f] = v;
  return ok();
}

Result<void> Cell::apply_delta(const DeltaView& d) {
  const std::string field(d.key);
  switch (d.op) {
    case kOpSetField: {
      if (d.args.size() != 1) return diverged(name(), d.key, "a set without its value");
      if (!migrating()) {
        (*entry_.hash())[field] = std::string(d.args[0]);
        return ok();
      }
      Entry part = empty_hash();
      (*part.hash())[field] = std::string(d.args[0]);
      return merge_from_peer(std::move(part));
    }
    case kOpEraseField: {
      if (!migrating()) {
        if (entry_.hash()->erase(field) == 0)
          return diverged(name(), d.key, "erase of a missing field");
        return ok();
      }
      // The peer's field may have another name here: erase what its migration maps to.
      Entry part = empty_hash();
      (*part.hash())[field] = "";
      migrate("", part);
      if (const Hash* h = part.hash()) {
        for (const auto& [f, v] : *h) entry_.hash()->erase(f);
      }
      return ok();
    }
    default:
      return diverged(name(), d.key, "unknown op " + std::to_string(d.op));
  }
}

Result<bool> Cell::digest_begin(const DigestKey& key, uint32_t as_version) {
  // A cell is small: hashed whole, now, which is the state at the cut.
  Entry as_peer = entry_;
  if (as_version != schema_version()) {
    BATON_ASSIGN_OR_RETURN(auto path, migrations().path(name(), schema_version(), as_version));
    for (const MigrationFn* step : path) (*step)("", as_peer);
  }
  digest_ = {};
  digest_.add(EntryHasher(key).entry("", as_peer));
  return true;
}

}  // namespace baton
