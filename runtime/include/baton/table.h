// Table<T>: a section of records whose type is the server's own Cap'n Proto struct.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "baton/result.h"
#include "baton/section.h"
#include "baton/tracked_map.h"

namespace baton {

/// The untyped half of Table<T>: records are the canonical Cap'n Proto encoding of one
/// struct, checked whenever they come from a peer, kept in a TrackedMap, which gives them
/// the checkpoint, the capture rule, expiry and the digest.
class TableBase : public Section {
 public:
  size_t size() const { return map_.size(); }
  bool empty() const { return map_.empty(); }
  bool contains(std::string_view key) const { return map_.contains(key); }
  /// Removes `key`; false when it was not there.
  bool erase(std::string_view key);
  /// Sets the record's expiry (Unix ms, 0: never); false when `key` is not there.
  bool expire_at(std::string_view key, int64_t expires_at_ms);
  /// The record's expiry (0: never), or nullopt when `key` is not there.
  std::optional<int64_t> expires_at(std::string_view key) const;
  /// Erases up to `budget` records expired at `now_ms`, resuming at `*cursor`
  /// (TrackedMap::erase_expired).
  size_t erase_expired(int64_t now_ms, size_t budget, size_t* cursor);
  /// The records' Cap'n Proto struct, its id and its encoded schema nodes.
  const TypedSchema* typed_schema() const override { return &schema_; }
  /// Exact equality of contents (keys, record bytes, expiry).
  bool same_contents(const TableBase& other) const { return map_.same_contents(other.map_); }

  // Section: forwarded to the map, with every record from a peer checked first.
  uint64_t estimate_bytes() const override { return map_.estimate_bytes(); }
  void snapshot_begin() override;
  bool snapshot_step(SnapshotSink& sink, size_t budget_bytes) override;
  void snapshot_end() override;
  Result<void> restore_begin(uint64_t records, std::shared_ptr<const void> backing) override;
  Result<void> restore_record(std::string&& key, Entry&& entry) override;
  Result<void> restore_end() override;
  Result<void> apply_delta(const DeltaView& delta) override;
  Result<bool> digest_begin(const DigestKey& key, uint32_t as_version) override;
  bool digest_step(size_t budget_bytes) override { return map_.digest_step(budget_bytes); }
  StateDigest digest_result() const override { return map_.digest_result(); }
  void digest_end() override { map_.digest_end(); }

 protected:
  TableBase(std::string name, uint32_t schema_version, capnp::StructSchema type);

  /// The canonical words of `key`'s record, or null. Valid until the next change.
  const capnp::word* find_words(std::string_view key) const;
  /// Stores canonical words (capnp::canonicalize) under `key`.
  void store(std::string_view key, kj::ArrayPtr<const capnp::word> canonical,
             int64_t expires_at_ms);
  template <typename F>
  void for_each_words(F&& fn) const {
    map_.for_each([&](std::string_view key, const Entry& e) {
      fn(key, reinterpret_cast<const capnp::word*>(e.str().data()));
    });
  }

 private:
  TrackedMap map_;
  TypedSchema schema_;
};

/// A section of records of the server's Cap'n Proto struct `T`, by key, each with an
/// optional expiry. Cap'n Proto's evolution rules hold across an upgrade: a field added
/// at a higher ordinal reads as its default in the old version and survives its writes,
/// so an additive change keeps the section's schema version and needs no migration. The
/// two versions' schemas are compared at HELLO (Cap'n Proto's SchemaLoader); anything
/// else is refused there, before any state moves. A breaking change takes a new schema
/// version and migrations in both directions (Table::migration()).
///
///   baton::Table<Session> sessions("sessions", 1);
///   registry.add(sessions);
///   sessions.update("id-42", [](Session::Builder s) { s.setHits(s.getHits() + 1); });
///   if (auto s = sessions.get("id-42")) use(s->getUser());
///
/// Readers returned by get() and for_each() are valid until the next change to the table.
template <typename T>
class Table : public TableBase {
 public:
  using Reader = typename T::Reader;
  using Builder = typename T::Builder;

  Table(std::string name, uint32_t schema_version)
      : TableBase(std::move(name), schema_version, capnp::Schema::from<T>()) {}

  /// The record under `key`, or nullopt.
  std::optional<Reader> get(std::string_view key) const {
    const capnp::word* w = find_words(key);
    if (w == nullptr) return std::nullopt;
    return capnp::readMessageUnchecked<T>(w);  // checked when it came in
  }
  /// Stores a copy of `record` under `key`, replacing any, with the expiry given.
  void set(std::string_view key, Reader record, int64_t expires_at_ms = 0) {
    store(key, capnp::canonicalize(record), expires_at_ms);
  }
  /// Changes the record under `key` in place: `fill` gets a builder holding the current
  /// record (or a default one), fields this build does not know included, so a change
  /// made by an older version keeps a newer version's fields. The expiry is kept.
  template <typename F>
  void update(std::string_view key, F&& fill) {
    capnp::MallocMessageBuilder message;
    const int64_t expiry = expires_at(key).value_or(0);
    if (auto current = get(key)) {
      message.setRoot(*current);
    } else {
      message.initRoot<T>();
    }
    fill(message.getRoot<T>());
    set(key, message.getRoot<T>().asReader(), expiry);
  }
  /// Calls fn(key, reader) for every record.
  template <typename F>
  void for_each(F&& fn) const {
    for_each_words([&](std::string_view key, const capnp::word* w) {
      fn(key, capnp::readMessageUnchecked<T>(w));
    });
  }

  /// A migration step for Section::migrations(), written against the two versions'
  /// types: `convert` reads the old record and fills the new one (a default `To`).
  ///   table.migrations().add(1, 2, Table<SessionV2>::migration<SessionV1>(
  ///       [](SessionV1::Reader from, SessionV2::Builder to) { ... }));
  /// A record that is not a valid `From` is left as it is, for the restore to refuse.
  template <typename From, typename F>
  static MigrationFn migration(F convert) {
    return [convert](std::string_view, Entry& entry) {
      if (!entry.is_string()) return;
      std::string_view bytes = entry.str();
      if (bytes.size() % sizeof(capnp::word) != 0 || bytes.empty()) return;
      auto aligned = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
      std::memcpy(aligned.begin(), bytes.data(), bytes.size());
      kj::ArrayPtr<const capnp::word> segments[1] = {aligned};
      try {
        capnp::SegmentArrayMessageReader in(segments);
        capnp::MallocMessageBuilder out;
        convert(in.getRoot<From>(), out.initRoot<T>());
        auto words = capnp::canonicalize(out.getRoot<T>().asReader());
        entry.own_string().assign(reinterpret_cast<const char*>(words.begin()),
                                  words.size() * sizeof(capnp::word));
      } catch (const kj::Exception&) {
        // Not a valid `From`: the record stays, and restore_record() names it.
      }
    };
  }
};

}  // namespace baton
