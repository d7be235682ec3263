// TrackedMap: a ready-made section. A hash map from byte-string keys to typed entries
// (string, list, set, hash, zset, with expiry) that records its own deltas.
#pragma once

#include <algorithm>
#include <cstddef>
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
/// that owns it. Arguments must not view this map's own storage, except set()'s value.
/// Growing never stalls a request for the size of the map: slots live in blocks that
/// never move, and a full index doubles by moving a few keys per mutation; a server that
/// calls erase_expired() from its loop also moves them while requests only read
/// (docs/design.md, "Growing without a stall").
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
    slots_.for_each([&](const Slot& s) {
      if (s.used) fn(std::string_view(s.key), s.entry);
    });
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
  /// erased. A server calls it from its loop to reclaim keys nobody reads again; it also
  /// moves up to `budget` keys of a doubling index.
  size_t erase_expired(int64_t now_ms, size_t budget, size_t* cursor);

  /// Bytes of index the map holds now: its index, and while it doubles, the old one until
  /// every page of it is given back (docs/design.md, "Growing without a stall").
  size_t index_bytes() const;

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
    uint8_t index_gen = 0;    // == index_gen_: the key is in index_ (see old_index_)
  };
  // 56 bytes: the part of a key's memory that is not its value's heap block or its share
  // of the index (docs/design.md, "Memory per key").
  static_assert(sizeof(Slot) == 56);
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  // The slots, in blocks of kPerBlock mapped apart and never moved: adding a block does
  // not copy the others, so a growing map never stalls a request for its size. A slot's
  // number is its block and its place in it.
  class SlotBlocks {
   public:
    static constexpr unsigned kBits = 16;
    static constexpr uint32_t kPerBlock = uint32_t{1} << kBits;  // 3.5 MiB of slots
    static constexpr size_t kBlockBytes = size_t{kPerBlock} * sizeof(Slot);
    SlotBlocks() = default;
    SlotBlocks(const SlotBlocks&) = delete;
    SlotBlocks& operator=(const SlotBlocks&) = delete;
    ~SlotBlocks() { clear(); }

    uint32_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    Slot& operator[](uint32_t i) { return blocks_[i >> kBits][i & (kPerBlock - 1)]; }
    const Slot& operator[](uint32_t i) const { return blocks_[i >> kBits][i & (kPerBlock - 1)]; }
    /// Constructs slot size(), mapping a block when the last is full (std::bad_alloc when
    /// the kernel refuses), and returns its number.
    uint32_t emplace_back();
    /// On an empty array: maps the blocks for `n` slots as one region, so a restore can
    /// populate them ahead of its inserts. Returns the region, or nullptr if refused.
    std::byte* reserve(size_t n);
    /// Destroys every slot and unmaps every block.
    void clear();
    template <typename F>
    void for_each(F&& fn) const {
      // Blocks past size() may be mapped (a restore maps them all first): stop at size().
      for (uint32_t b = 0; b < blocks_.size() && size_t{b} * kPerBlock < size_; ++b) {
        const uint32_t n = std::min(kPerBlock, size_ - b * kPerBlock);
        for (uint32_t j = 0; j < n; ++j) fn(blocks_[b][j]);
      }
    }

   private:
    bool map_blocks(size_t count);

    std::vector<Slot*> blocks_;
    std::vector<std::pair<void*, size_t>> regions_;  // mappings, for munmap
    uint32_t size_ = 0;
  };

  // Open addressing, linear probing. A bucket holds its slot's number + 1 (0 when empty,
  // so fresh zero pages are an empty index and sizing one touches no memory) and the
  // hash's high bits, so most probes never touch the slot itself.
  struct Bucket {
    uint32_t slot1;
    uint32_t tag;
  };
  class BucketArray {
   public:
    BucketArray() = default;
    explicit BucketArray(size_t n);  // n: a power of two; all empty. bad_alloc if refused
    BucketArray(BucketArray&& o) noexcept { swap(o); }
    BucketArray& operator=(BucketArray&& o) noexcept {
      BucketArray(std::move(o)).swap(*this);
      return *this;
    }
    ~BucketArray();
    void swap(BucketArray& o) noexcept {
      std::swap(data_, o.data_);
      std::swap(size_, o.size_);
      std::swap(mapped_, o.mapped_);
      std::swap(released_, o.released_);
      std::swap(populated_, o.populated_);
    }
    size_t size() const { return size_; }
    size_t mask() const { return size_ - 1; }
    bool mapped() const { return mapped_; }
    size_t released() const { return released_; }
    /// Gives back the next `bytes` of a mapped array's pages to the kernel (their buckets
    /// read as empty after); returns whether none is left.
    bool release_some(size_t bytes);
    /// Populates the next `bytes` of a mapped array's pages in one call (a page costs
    /// 0.9 us so, and 11 us as the fault of a write to a random bucket); returns whether
    /// every page is. A hint: a kernel without MADV_POPULATE_WRITE counts them done.
    bool populate_some(size_t bytes);
    Bucket* data() { return data_; }
    Bucket& operator[](size_t i) { return data_[i]; }
    const Bucket& operator[](size_t i) const { return data_[i]; }

   private:
    Bucket* data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;   // mmap'd (large) rather than calloc'd
    size_t released_ = 0;   // bytes given back by release_some()
    size_t populated_ = 0;  // bytes populated by populate_some()
  };

  uint32_t probe(const BucketArray& index, std::string_view key, uint64_t hash) const;
  static void place(BucketArray& index, uint32_t slot, uint64_t hash);
  bool unplace(BucketArray& index, uint32_t slot, uint64_t hash);
  uint32_t lookup(std::string_view key, uint64_t hash) const;
  uint32_t lookup(std::string_view key) const;
  // Returns the slot of `key`, inserting an empty string entry if missing.
  std::pair<uint32_t, bool> find_or_insert(std::string_view key);
  // Inserts a key known to be absent, with its hash; returns its slot.
  uint32_t insert_new(std::string_view key, uint64_t hash);
  Result<void> flush_restore_batch();
  void remove_slot(uint32_t slot);
  // Starts doubling the index: the full one becomes old_index_ (finishing a doubling
  // still under way first).
  void grow_index();
  // Populates a piece of index_ until all of it is, then moves up to `slots` slots' keys
  // from old_index_ into it. When every key is in index_, old_index_ retires, and each
  // later step gives back a piece of its memory.
  void grow_step(uint32_t slots);
  // Moves up to `slots` slots' keys into index_; retires old_index_ after the last.
  void move_keys(uint32_t slots);
  // Gives back up to `bytes` more of retired_; once all, keeps its emptied mapping.
  void release_retired(size_t bytes);
  bool growing() const { return (old_index_.size() | retired_.size()) != 0; }
  // Every mutation (an insert or not) takes a step, so a doubling ends under any writes.
  void advance_growth() {
    if (BATON_UNLIKELY(growing())) grow_step(kGrowStep);
  }
  // Slots whose keys each mutation moves into a doubling index. The new index reaches the
  // load that doubles it again after as many inserts as the old one held keys, so any
  // step of 2 or more ends in time unless most slots are free. 64 ends a doubling of n
  // keys within n / 64 mutations, so the old index is not held for long (with 16 per
  // insert, kvd's bench measured it in its steady memory: 11 bytes a key), and costs a
  // mutation a few microseconds while one runs (BM_NewKeyAtIndexGrowth).
  static constexpr uint32_t kGrowStep = 64;
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

  SlotBlocks slots_;
  std::vector<uint32_t> free_slots_;
  // Where lookups look first and inserts go. While it doubles, old_index_ is the index it
  // replaces: it still holds every key that was in it and is not erased, some of them
  // already in index_ too (a slot's index_gen says). Each mutation takes a step
  // (grow_step); the last retires old_index_. Lookups probe both meanwhile.
  BucketArray index_;
  BucketArray old_index_;
  // A doubling's old index, its pages given back a piece per step (releasing 128 MiB at
  // once stalled one insert for 23 ms: BM_NewKeyAtIndexGrowth/16777216). Emptied, it stays
  // mapped, address space without memory, until clear() or the map's end: unmapping it
  // while the map grows stalled an insert as long (docs/design.md, "Growing without a
  // stall"). Together they are smaller than index_.
  BucketArray retired_;
  std::vector<BucketArray> emptied_;
  uint32_t grow_cursor_ = 0;  // slots below it are in index_
  uint32_t grow_end_ = 0;     // slots at the start of the doubling
  uint8_t index_gen_ = 0;
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
