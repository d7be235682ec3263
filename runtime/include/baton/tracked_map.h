// TrackedMap: a ready-made section. A hash map from byte-string keys to typed entries
// (string, list, set, hash, zset, with expiry) that records its own deltas.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/section.h"

namespace baton {

/// Which end of a list.
enum class End : uint8_t { kLeft = 0, kRight = 1 };

/// A tracked hash map section. Mutations made while the log captures are logged as
/// operations under the cursor rule (docs/design.md), so replay is exact even for
/// non-idempotent ones such as incr_by and push. Single-threaded, like the server loop
/// that owns it. Arguments must not view this map's own storage, except set()'s value,
/// which is copied first when it does.
class TrackedMap final : public Section {
 public:
  TrackedMap(std::string name, uint32_t schema_version);
  ~TrackedMap() override;

  size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  /// The entry under `key`, or nullptr. Valid until the next mutation.
  const Entry* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  /// Calls fn(key, entry) for every entry, in slot order.
  template <typename F>
  void for_each(F&& fn) const {
    for (const Slot& s : slots_)
      if (s.used) fn(std::string_view(s.key), s.entry);
  }
  /// Exact equality of contents, regardless of slot layout.
  bool same_contents(const TrackedMap& other) const;
  /// An order-independent 64-bit digest of the contents, for comparing across processes.
  uint64_t digest() const;
  /// The keyed digest of the whole map now, each entry hashed as it is (the reference the
  /// incremental digest_begin() .. digest_result() must equal).
  StateDigest full_digest(const DigestKey& key) const;

  // --- mutations; each is logged when the registry's log captures ---
  /// Sets a string value (replacing any type) with an optional expiry.
  void set(std::string_view key, std::string_view value, int64_t expires_at_ms = 0);
  /// Removes `key`; returns whether it existed.
  bool erase(std::string_view key);
  /// Removes every key.
  void clear();
  /// Adds `by` to the integer in a string value (missing = 0). Errors: kWrongType for a
  /// non-string, kInvalidArgument for a non-integer value or overflow.
  Result<int64_t> incr_by(std::string_view key, int64_t by);
  /// Pushes values onto a list (created if missing); returns the new length.
  Result<size_t> push(std::string_view key, End end, std::span<const std::string_view> values);
  /// Pops one value; nullopt if the key is missing. An emptied list removes the key.
  Result<std::optional<std::string>> pop(std::string_view key, End end);
  /// Adds members to a set; returns how many were new.
  Result<size_t> sadd(std::string_view key, std::span<const std::string_view> members);
  /// Removes members from a set; returns how many were there.
  Result<size_t> srem(std::string_view key, std::span<const std::string_view> members);
  /// Removes and returns a member chosen by `random`; logged as srem so replay is exact.
  Result<std::optional<std::string>> spop(std::string_view key, uint64_t random);
  /// Sets hash fields (pairs of field, value); returns how many fields were new.
  Result<size_t> hset(std::string_view key, std::span<const std::string_view> field_values);
  /// Removes hash fields; returns how many were there.
  Result<size_t> hdel(std::string_view key, std::span<const std::string_view> fields);
  /// Adds or rescores a member; returns 1 if it was new.
  Result<size_t> zadd(std::string_view key, double score, std::string_view member);
  /// Removes and returns the lowest-scored member; nullopt if the key is missing.
  Result<std::optional<std::pair<std::string, double>>> zpopmin(std::string_view key);
  /// Sets or clears (0) the expiry of `key`; returns whether the key exists.
  bool expire_at(std::string_view key, int64_t expires_at_ms);
  /// Erases entries whose expiry is at or before `now_ms` among up to `budget` slots from
  /// `*cursor` on (wrapping; the cursor advances), as erase() would. Returns how many it
  /// erased. A server calls it from its loop to reclaim keys nobody reads again.
  size_t erase_expired(int64_t now_ms, size_t budget, size_t* cursor);

  // --- Section ---
  uint64_t estimate_bytes() const override { return bytes_; }
  /// Recomputes estimate_bytes() from scratch (O(n)); tests check the running count.
  uint64_t recount_bytes() const;
  void snapshot_begin() override;
  bool snapshot_step(SnapshotSink& sink, size_t budget_bytes) override;
  void snapshot_end() override;
  Result<void> restore_begin(uint64_t records, std::shared_ptr<const void> backing) override;
  /// Entries whose string value still borrows from a restored checkpoint mapping. The
  /// mapping is released when this drops to zero.
  size_t borrowed() const { return borrowed_live_; }
  Result<void> restore_record(std::string&& key, Entry&& entry) override;
  Result<void> restore_end() override;
  Result<void> apply_delta(const DeltaView& delta) override;
  /// The digest is taken at the cut without stopping the server: the scan goes through
  /// the slots in slices, and a mutation of a slot the scan has not reached hashes the
  /// entry first (once: each entry is hashed at most once per digest, however often it
  /// changes, so a mutation costs O(1) amortized, not a rehash of its collection).
  Result<bool> digest_begin(const DigestKey& key, uint32_t as_version) override;
  bool digest_step(size_t budget_bytes) override;
  StateDigest digest_result() const override { return digest_acc_; }
  void digest_end() override;

  /// Delta op codes; stable across versions (they are part of the frame format).
  enum Op : uint8_t {
    kOpSet = 1,       // key, value, expires_at(8)
    kOpErase = 2,     // key
    kOpClear = 3,     // (empty key)
    kOpIncrBy = 4,    // key, by(8)
    kOpPush = 5,      // key, end(1), values...
    kOpPop = 6,       // key, end(1)
    kOpSAdd = 7,      // key, members...
    kOpSRem = 8,      // key, members...
    kOpHSet = 9,      // key, field, value, ...
    kOpHDel = 10,     // key, fields...
    kOpZAdd = 11,     // key, score(8), member
    kOpZPopMin = 12,  // key
    kOpExpire = 13,   // key, expires_at(8)
  };

 private:
  struct Slot {
    Slot() = default;
    Slot(Slot&&) noexcept = default;
    Slot& operator=(Slot&&) noexcept = default;
    CompactString key;
    Entry entry;
    uint32_t birth_epoch = 0;
    bool used = false;
    uint8_t digest_mark = 0;  // == digest_mark_: hashed by the current digest, or born after it
  };
  // 56 bytes: the part of a key's memory that is not its value's heap block or its share
  // of the index (docs/design.md, "Memory per key").
  static_assert(sizeof(Slot) == 56);
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  uint32_t lookup(std::string_view key, uint64_t hash) const;
  uint32_t lookup(std::string_view key) const;
  // Returns the slot of `key`, inserting an empty string entry if missing.
  std::pair<uint32_t, bool> find_or_insert(std::string_view key);
  // Inserts a key known to be absent, with its hash; returns its slot.
  uint32_t insert_new(std::string_view key, uint64_t hash);
  Result<void> flush_restore_batch();
  void remove_slot(uint32_t slot);
  void grow_index();
  // Typed access for collection ops; kWrongType if the key holds another type.
  template <typename T>
  Result<T*> typed(std::string_view key, bool create, uint32_t* slot_out);
  // The cursor rule: should a mutation of `slot` be logged now?
  bool must_log(uint32_t slot) const {
    return slot < snapshot_cursor_ || slots_[slot].birth_epoch == epoch_;
  }
  void log(uint32_t slot, uint8_t op, std::string_view key,
           std::initializer_list<std::string_view> args) {
    if (BATON_UNLIKELY(log_ != nullptr && log_->capturing()) && must_log(slot))
      log_->append(id(), op, key, args);
  }
  void log(uint32_t slot, uint8_t op, std::string_view key,
           std::span<const std::string_view> args) {
    if (BATON_UNLIKELY(log_ != nullptr && log_->capturing()) && must_log(slot))
      log_->append(id(), op, key, args);
  }
  void after_replay(std::string_view key);
  // Call before a slot's entry changes or goes: the digest at the cut hashes it first.
  void touch(uint32_t slot) {
    if (BATON_UNLIKELY(digesting_)) digest_touch(slot);
  }
  void digest_touch(uint32_t slot);
  void digest_slot(uint32_t slot);
  // Call before an entry's value is replaced or dropped: keeps borrowed_live_ exact.
  void forget_borrow(const Entry& e) {
    if (BATON_UNLIKELY(e.is_borrowed())) release_borrow();
  }
  void release_borrow() {
    if (--borrowed_live_ == 0) backings_.clear();
  }

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  // Open addressing, linear probing. A bucket holds a slot index (kNoSlot when empty) and
  // the hash's high bits, so most probes never touch the slot itself.
  struct Bucket {
    uint32_t slot;
    uint32_t tag;
  };
  std::vector<Bucket> index_;
  size_t live_ = 0;
  uint64_t bytes_ = 0;  // running estimate_bytes()
  // Snapshot state: slots below the cursor are written; entries born in the current
  // epoch are never written by the snapshot (all their mutations are logged instead).
  uint32_t epoch_ = 1;
  uint32_t snapshot_cursor_ = kNoSlot;
  uint32_t snapshot_end_ = 0;
  // Restore inserts in batches: each bucket is prefetched when its record arrives and
  // written a few records later, so index cache misses overlap with decoding.
  struct PendingRecord {
    std::string key;
    Entry entry;
    uint64_t hash;
  };
  std::vector<PendingRecord> restore_batch_;
  // Checkpoint mappings that restored entries borrow string bytes from.
  std::vector<std::shared_ptr<const void>> backings_;
  size_t borrowed_live_ = 0;
  // Digest at the cut: slots below digest_end_ whose mark differs from digest_mark_ are
  // still to hash, by the scan (from digest_cursor_) or by touch().
  bool digesting_ = false;
  uint8_t digest_mark_ = 0;
  uint32_t digest_cursor_ = 0;
  uint32_t digest_end_ = 0;
  DigestKey digest_key_;
  std::vector<const MigrationFn*> digest_path_;
  StateDigest digest_acc_;
  // Populates the reserved slot array just ahead of restore's inserts, on a helper thread.
  std::unique_ptr<class Prefaulter> slot_prefaulter_;
};

}  // namespace baton
