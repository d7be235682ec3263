// Cell: a ready-made section holding one small set of named fields, for the state a
// server keeps beside its main tables: a config, a set of counters, a struct's fields.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "baton/result.h"
#include "baton/section.h"

namespace baton {

/// One section of named fields (bytes to bytes), checkpointed as one record, every change
/// logged as a field-level delta while an upgrade captures. Meant for small state: a
/// digest or a migration takes the whole cell at once.
///
///   baton::Cell stats("stats", 1);
///   registry.add(stats);
///   stats.add("requests", 1);          // a counter: an integer field
///   stats.set("motd", "hello");        // any bytes
///
/// Migrations (Section::migrations()) see the cell as one hash entry under the key "".
/// During replay they see one field at a time (an entry holding only the changed field),
/// so each must map a field on its own: rename it, convert its value, or drop it.
class Cell : public Section {
 public:
  Cell(std::string name, uint32_t schema_version);

  /// The field's bytes, or nullopt when it is not set.
  std::optional<std::string_view> get(std::string_view field) const;
  /// Sets a field to `value`.
  void set(std::string_view field, std::string_view value);
  /// Removes a field; false when it was not set.
  bool erase(std::string_view field);
  /// A counter: the field as a decimal integer, 0 when not set. kWrongType when the
  /// field holds something else.
  Result<int64_t> counter(std::string_view field) const;
  /// Adds `by` to a counter and returns its new value. kWrongType for a field that is
  /// not an integer; kCapacity on overflow (the field is then unchanged).
  Result<int64_t> add(std::string_view field, int64_t by);
  /// Every field.
  const Hash& fields() const { return *entry_.hash(); }

  // Section
  uint64_t estimate_bytes() const override { return entry_.payload_bytes() + 64; }
  void snapshot_begin() override;
  bool snapshot_step(SnapshotSink& sink, size_t budget_bytes) override;
  void snapshot_end() override { snapshotting_ = false; }
  Result<void> restore_begin(uint64_t records, std::shared_ptr<const void> backing) override;
  Result<void> restore_record(std::string&& key, Entry&& entry) override;
  Result<void> restore_end() override { return ok(); }
  Result<void> apply_delta(const DeltaView& delta) override;
  Result<bool> digest_begin(const DigestKey& key, uint32_t as_version) override;
  StateDigest digest_result() const override { return digest_; }

 private:
  // The cursor rule for one record: log a change unless the snapshot will still carry it.
  bool must_log() const {
    return log_ != nullptr && log_->capturing() && (!snapshotting_ || written_);
  }
  Result<void> merge_from_peer(Entry part);

  Entry entry_;  // always a hash
  bool snapshotting_ = false;
  bool written_ = false;  // the snapshot has written the record
  StateDigest digest_;
};

}  // namespace baton
