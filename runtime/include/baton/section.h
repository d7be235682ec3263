// Section: a named, versioned part of a server's state that Baton checkpoints, restores,
// migrates between schema versions and keeps current with deltas.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/delta_log.h"
#include "baton/digest.h"
#include "baton/result.h"
#include "baton/value.h"

namespace baton {

/// Collects the records of one snapshot slice. Baton encodes them after
/// Section::snapshot_step() returns, in the same CheckpointWriter::step() call, before the
/// server's loop runs again.
class SnapshotSink {
 public:
  SnapshotSink() = default;
  SnapshotSink(const SnapshotSink&) = delete;
  SnapshotSink& operator=(const SnapshotSink&) = delete;

  /// Adds one record by reference, without a copy. `key` and `entry` must stay valid and
  /// unchanged until the slice is encoded: after snapshot_step() returns, until the
  /// CheckpointWriter::step() that called it returns. An entry the section's own
  /// container holds qualifies; one built inside snapshot_step() (a local, a temporary, a
  /// conversion of the server's own type) does not: give that to add_copy().
  void add(std::string_view key, const Entry& entry) {
    records_.emplace_back(key, &entry);
    bytes_ += key.size() + entry.payload_bytes();
  }
  /// Adds one record the sink owns until the slice is encoded: for an entry built for
  /// the snapshot.
  void add_copy(std::string key, Entry entry) {
    auto& [k, e] = owned_.emplace_back(std::move(key), std::move(entry));
    add(k, e);
  }
  /// Payload bytes added in this slice; sections compare it with their budget.
  size_t bytes() const { return bytes_; }
  /// The slice's records, in order.
  const std::vector<std::pair<std::string_view, const Entry*>>& records() const { return records_; }

 private:
  friend class CheckpointWriter;  // starts each slice
  void clear() {
    records_.clear();
    owned_.clear();
    bytes_ = 0;
  }

  std::vector<std::pair<std::string_view, const Entry*>> records_;
  std::deque<std::pair<std::string, Entry>> owned_;  // a deque: its elements never move
  size_t bytes_ = 0;
};

/// The schema of a section of typed records (baton/table.h): its root struct's Cap'n
/// Proto id and name, and the struct with every node it depends on, encoded
/// (serialization/schema.capnp). WELCOME carries it; the successor compares it with its
/// own before any state moves (docs/protocol.md, "Typed sections").
struct TypedSchema {
  uint64_t type_id = 0;
  std::string type_name;
  std::string encoded;
};

/// Converts one entry between adjacent schema versions, in place.
using MigrationFn = std::function<void(std::string_view key, Entry& entry)>;

/// The schema migrations a section knows, between adjacent versions (v1->v2, v2->v1, ...).
class Migrations {
 public:
  /// Registers the step from `from` to `to`; they must differ by one.
  Result<void> add(uint32_t from, uint32_t to, MigrationFn fn);
  /// The steps from `from` to `to` in order; empty when equal. A kVersion error names both
  /// versions and the missing step.
  Result<std::vector<const MigrationFn*>> path(std::string_view section, uint32_t from,
                                               uint32_t to) const;

 private:
  std::map<std::pair<uint32_t, uint32_t>, MigrationFn> steps_;
};

/// Base class of every section. Implementations must follow the capture rule of
/// docs/design.md: while the log captures, log a mutation iff the snapshot has already
/// written that entry (or will never write it); replay then yields exactly the live state.
class Section {
 public:
  Section(std::string name, uint32_t schema_version)
      : name_(std::move(name)), schema_version_(schema_version) {}
  virtual ~Section() = default;
  Section(const Section&) = delete;
  Section& operator=(const Section&) = delete;

  const std::string& name() const { return name_; }
  uint32_t schema_version() const { return schema_version_; }
  Migrations& migrations() { return migrations_; }

  // --- incumbent side ---
  /// An upper bound on the payload bytes a snapshot will write now.
  virtual uint64_t estimate_bytes() const = 0;
  /// Starts a fuzzy snapshot; called at L0, in the same loop turn as the log's capture.
  virtual void snapshot_begin() = 0;
  /// Adds records to `sink` until about `budget_bytes`; returns true when all are written.
  virtual bool snapshot_step(SnapshotSink& sink, size_t budget_bytes) = 0;
  /// Ends (or abandons) the snapshot.
  virtual void snapshot_end() = 0;

  // --- successor side ---
  /// Prepares to restore `records` records. String values may be Borrowed from
  /// `backing` (the read-only checkpoint mapping): the section must keep `backing` alive
  /// while any entry may still borrow from it. Null when nothing is borrowed.
  virtual Result<void> restore_begin(uint64_t records, std::shared_ptr<const void> backing) = 0;
  /// Takes one record, already migrated to this section's schema version. Records come
  /// in checkpoint order, on the thread that called restore_checkpoint.
  virtual Result<void> restore_record(std::string&& key, Entry&& entry) = 0;
  virtual Result<void> restore_end() = 0;
  /// Applies one replayed mutation; the touched entry must then be passed to migrate().
  virtual Result<void> apply_delta(const DeltaView& delta) = 0;

  /// Chooses the migration path from the peer's schema version to ours.
  Result<void> set_peer_version(uint32_t peer_version);
  uint32_t peer_version() const { return peer_version_; }
  /// True when restored data needs migrating (peer version differs).
  bool migrating() const { return !path_.empty(); }
  /// Applies the chosen migration path to one entry (no-op when versions match).
  void migrate(std::string_view key, Entry& entry) const {
    for (const MigrationFn* step : path_) (*step)(key, entry);
  }

  // --- state digest at the cut (optional; docs/protocol.md, "State digest at the cut")
  /// Starts a digest of the state as it is at this instant, each entry hashed as schema
  /// version `as_version` (through this section's registered migrations, which must then
  /// be pure). Mutations may go on meanwhile: a section hashes an entry before its first
  /// change, so the result is the state of this instant. False: this section has none.
  virtual Result<bool> digest_begin(const DigestKey& key, uint32_t as_version) {
    (void)key;
    (void)as_version;
    return false;
  }
  /// Hashes about `budget_bytes` more of the state; true when the digest is complete.
  virtual bool digest_step(size_t budget_bytes) {
    (void)budget_bytes;
    return true;
  }
  /// The digest, once digest_step() returned true.
  virtual StateDigest digest_result() const { return {}; }
  /// Ends (or abandons) the digest.
  virtual void digest_end() {}

  /// A section of typed records returns its schema; null (the default): untyped.
  virtual const TypedSchema* typed_schema() const { return nullptr; }

  /// The section's id in its registry's log (its index in the checkpoint).
  uint16_t id() const { return id_; }

 protected:
  DeltaLog* log_ = nullptr;  // the registry's, once added; log only while capturing()
  uint16_t id_ = 0;

  /// For a section built around another it owns (a Table around a TrackedMap): `inner`
  /// logs as this section, under its id, and replays along the migration path chosen for
  /// this one (the steps stay this section's). Cheap; call it before handing `inner` a
  /// mutation, a snapshot, a restore or a delta.
  void share_with(Section& inner) const {
    inner.log_ = log_;
    inner.id_ = id_;
    inner.peer_version_ = peer_version_;
    inner.path_ = path_;
  }

 private:
  friend class Registry;  // only Registry::add connects a section to a log
  void attach(DeltaLog* log, uint16_t id) {
    log_ = log;
    id_ = id;
  }

  std::string name_;
  uint32_t schema_version_;
  uint32_t peer_version_ = 0;
  Migrations migrations_;
  std::vector<const MigrationFn*> path_;
};

/// The sections of one process and the log they share. Built in main(); never global.
class Registry {
 public:
  /// `first_id`: the id of the first section added (the next get the next ids). A worker
  /// thread's registry starts at its worker number times kIdsPerWorker, so that one delta
  /// stream can carry every thread's records (docs/design.md, "Worker threads").
  explicit Registry(size_t delta_limit_bytes = size_t{256} << 20, uint16_t first_id = 0)
      : log_(delta_limit_bytes), first_id_(first_id) {}
  // Sections point at this registry's log: it must not move.
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  /// Registers `section` (not owned; it must outlive the registry). Names are unique,
  /// at most 47 bytes, and at most kMaxSections sections.
  Result<void> add(Section& section);
  const std::vector<Section*>& sections() const { return sections_; }
  Section* find(std::string_view name) const;
  DeltaLog& log() { return log_; }

  static constexpr size_t kMaxSections = 40;
  static constexpr size_t kMaxNameBytes = 47;
  static constexpr uint16_t kIdsPerWorker = 64;
  uint16_t first_id() const { return first_id_; }

 private:
  DeltaLog log_;
  uint16_t first_id_;
  std::vector<Section*> sections_;
};

}  // namespace baton
