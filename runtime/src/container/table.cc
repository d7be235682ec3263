// Table: typed records over a TrackedMap; every record from a peer is checked before it is
// stored, because reads are unchecked (docs/design.md, "Typed sections").
#include "baton/table.h"

#include <cstdint>

#include "schema_codec.h"

namespace baton {
namespace {

bool aligned(const char* p) { return reinterpret_cast<uintptr_t>(p) % sizeof(capnp::word) == 0; }

}  // namespace

TableBase::TableBase(std::string name, uint32_t schema_version, capnp::StructSchema type)
    : Section(name, schema_version),
      map_(std::move(name), schema_version),
      schema_(serialization::describe_schema(type)) {}

bool TableBase::erase(std::string_view key) {
  share_with(map_);
  return map_.erase(key);
}

bool TableBase::expire_at(std::string_view key, int64_t expires_at_ms) {
  share_with(map_);
  return map_.expire_at(key, expires_at_ms);
}

std::optional<int64_t> TableBase::expires_at(std::string_view key) const {
  const Entry* e = map_.find(key);
  if (e == nullptr) return std::nullopt;
  return e->expires_at_ms;
}

size_t TableBase::erase_expired(int64_t now_ms, size_t budget, size_t* cursor) {
  share_with(map_);
  return map_.erase_expired(now_ms, budget, cursor);
}

const capnp::word* TableBase::find_words(std::string_view key) const {
  const Entry* e = map_.find(key);
  if (e == nullptr) return nullptr;
  return reinterpret_cast<const capnp::word*>(e->str().data());
}

void TableBase::store(std::string_view key, kj::ArrayPtr<const capnp::word> canonical,
                      int64_t expires_at_ms) {
  share_with(map_);
  auto bytes = canonical.asBytes();
  // An owned string is heap memory, or for a record of one word the string's own inline
  // buffer: 8-aligned either way, as unchecked reads need.
  map_.set(key, std::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()),
           expires_at_ms);
}

void TableBase::snapshot_begin() {
  share_with(map_);
  map_.snapshot_begin();
}

bool TableBase::snapshot_step(SnapshotSink& sink, size_t budget_bytes) {
  return map_.snapshot_step(sink, budget_bytes);
}

void TableBase::snapshot_end() { map_.snapshot_end(); }

Result<void> TableBase::restore_begin(uint64_t records, std::shared_ptr<const void> backing) {
  share_with(map_);
  return map_.restore_begin(records, std::move(backing));
}

Result<void> TableBase::restore_record(std::string&& key, Entry&& entry) {
  if (!entry.is_string()) {
    return Error(ErrorKind::kCorrupt,
                 "typed section '" + name() + "' got a " + std::string(to_string(entry.type())) +
                     " record under key '" + key + "'; its records are " + schema_.type_name +
                     " messages (is the peer's section of that name a Table?)");
  }
  if (!aligned(entry.str().data())) entry.own_string();  // borrowed at an odd offset
  if (auto r = serialization::check_record(entry.str()); !r.ok()) {
    return Error(ErrorKind::kCorrupt, "typed section '" + name() + "', key '" + key +
                                          "': the record is not a " + schema_.type_name + ": " +
                                          r.error().message());
  }
  return map_.restore_record(std::move(key), std::move(entry));
}

Result<void> TableBase::restore_end() { return map_.restore_end(); }

Result<void> TableBase::apply_delta(const DeltaView& d) {
  share_with(map_);
  switch (d.op) {
    case TrackedMap::kOpSet: {
      if (d.args.empty()) break;  // the map names it
      std::string_view bytes = d.args[0];
      std::string copy;
      if (!aligned(bytes.data())) bytes = copy.assign(bytes);
      if (auto r = serialization::check_record(bytes); !r.ok()) {
        return Error(ErrorKind::kCorrupt, "delta replay diverged in typed section '" + name() +
                                              "' at key '" + std::string(d.key) +
                                              "': the record is not a " + schema_.type_name + ": " +
                                              r.error().message());
      }
      break;
    }
    case TrackedMap::kOpErase:
    case TrackedMap::kOpClear:
    case TrackedMap::kOpExpire:
      break;
    default:
      return Error(ErrorKind::kCorrupt, "delta replay diverged in typed section '" + name() +
                                            "' at key '" + std::string(d.key) + "': op " +
                                            std::to_string(d.op) +
                                            " is not a change a Table makes");
  }
  BATON_TRY(map_.apply_delta(d));
  // A migration on replay runs inside the map (share_with gave it this section's path):
  // its output is checked as a peer's record is.
  if (migrating()) {
    if (const Entry* e = map_.find(d.key)) {
      auto r = e->is_string() ? serialization::check_record(e->str())
                              : Result<void>(Error(ErrorKind::kCorrupt,
                                                   "it is a " + std::string(to_string(e->type()))));
      if (!r.ok()) {
        return Error(ErrorKind::kCorrupt,
                     "typed section '" + name() + "', key '" + std::string(d.key) +
                         "': the migration from version " + std::to_string(peer_version()) +
                         " made a record that is not a " + schema_.type_name + ": " +
                         r.error().message());
      }
    }
  }
  return ok();
}

Result<bool> TableBase::digest_begin(const DigestKey& key, uint32_t as_version) {
  share_with(map_);
  map_.migrations() = migrations();  // hashing as another version takes the steps themselves
  return map_.digest_begin(key, as_version);
}

}  // namespace baton
