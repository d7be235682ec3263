// TrackedMap: slot vector + open-addressing index. The slot index is the snapshot's
// cursor, which is what makes the capture rule cheap: see docs/design.md.
#include "baton/tracked_map.h"

#include "checkpoint/prefault.h"

#include <sys/mman.h>

#include <bit>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <new>
#include <stdexcept>

namespace baton {
namespace {

// Snapshot bytes charged per key beyond its payload (record struct, pointers, padding).
constexpr uint64_t kRecordOverhead = 48;

// Restores reserving at least this much slot memory populate it on a helper thread.
constexpr size_t kPrefaultMinBytes = size_t{16} << 20;
constexpr size_t kPrefaultWindow = size_t{32} << 20;

// Bucket arrays at least this large are mapped (fresh zero pages, touched only when
// used) instead of calloc'd.
constexpr size_t kMapMinBytes = size_t{256} << 10;

// What each step gives back of a retired index: 16 pages, about 60 us on this machine.
constexpr size_t kReleaseBytes = size_t{64} << 10;
// What each step populates of a doubling index before keys move: 16 pages, about 15 us.
constexpr size_t kPopulateBytes = size_t{64} << 10;

uint64_t hash_key(std::string_view k) { return std::hash<std::string_view>{}(k); }

// Asks for transparent huge pages on the whole 2 MiB pages inside a large array: one
// fault per 2 MiB instead of 512 when a restore fills it. A hint; failure is harmless.
void advise_huge(const void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  auto begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  auto end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

uint64_t mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Le64 {
  char bytes[8];
  explicit Le64(int64_t v) { std::memcpy(bytes, &v, 8); }
  explicit Le64(double v) { std::memcpy(bytes, &v, 8); }
  std::string_view view() const { return {bytes, 8}; }
};

Error diverged(std::string_view key, const std::string& what) {
  return Error(ErrorKind::kCorrupt,
               "delta replay diverged at key '" + std::string(key) + "': " + what);
}

Result<int64_t> arg_i64(std::string_view key, std::string_view a) {
  if (a.size() != 8) return diverged(key, "integer argument is not 8 bytes");
  int64_t v;
  std::memcpy(&v, a.data(), 8);
  return v;
}

Result<double> arg_f64(std::string_view key, std::string_view a) {
  if (a.size() != 8) return diverged(key, "score argument is not 8 bytes");
  double v;
  std::memcpy(&v, a.data(), 8);
  return v;
}

Result<End> arg_end(std::string_view key, std::string_view a) {
  if (a.size() != 1 || (a[0] != 0 && a[0] != 1)) return diverged(key, "bad list end");
  return static_cast<End>(a[0]);
}

Error wrong_type() {
  return Error(ErrorKind::kWrongType,
               "WRONGTYPE Operation against a key holding the wrong kind of value");
}

}  // namespace

TrackedMap::TrackedMap(std::string name, uint32_t schema_version)
    : Section(std::move(name), schema_version), index_(16) {}

TrackedMap::~TrackedMap() = default;

// ---------------------------------------------------------------- storage

uint32_t TrackedMap::SlotBlocks::emplace_back() {
  // A bucket holds a slot's number + 1, and kNoSlot is UINT32_MAX.
  if (size_ >= UINT32_MAX - 1) throw std::length_error("a TrackedMap holds at most 2^32-2 slots");
  if (size_ == blocks_.size() * size_t{kPerBlock}) {
    // No huge pages here: the insert that touched a fresh one would zero 2 MiB (80 us
    // measured) where a 4 KiB page costs about a microsecond every 73 slots.
    if (!map_blocks(1)) throw std::bad_alloc();
  }
  Slot* s = &(*this)[size_];
  new (s) Slot();
  return size_++;
}

std::byte* TrackedMap::SlotBlocks::reserve(size_t n) {
  if (!empty() || n == 0) return nullptr;
  const size_t blocks = (n + kPerBlock - 1) / kPerBlock;
  if (blocks > (size_t{UINT32_MAX} + 1) / kPerBlock || !map_blocks(blocks)) return nullptr;
  return static_cast<std::byte*>(regions_.back().first);
}

bool TrackedMap::SlotBlocks::map_blocks(size_t count) {
  const size_t bytes = count * kBlockBytes;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  regions_.emplace_back(p, bytes);
  for (size_t i = 0; i < count; ++i)
    blocks_.push_back(reinterpret_cast<Slot*>(static_cast<std::byte*>(p) + i * kBlockBytes));
  return true;
}

void TrackedMap::SlotBlocks::clear() {
  for (uint32_t i = 0; i < size_; ++i) (*this)[i].~Slot();
  for (auto [p, bytes] : regions_) ::munmap(p, bytes);
  regions_.clear();
  blocks_.clear();
  size_ = 0;
}

TrackedMap::BucketArray::BucketArray(size_t n) : size_(n) {
  const size_t bytes = n * sizeof(Bucket);
  if (bytes >= kMapMinBytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<Bucket*>(p);
    mapped_ = true;
  } else {
    data_ = static_cast<Bucket*>(std::calloc(n, sizeof(Bucket)));
    if (data_ == nullptr) throw std::bad_alloc();
  }
}

bool TrackedMap::BucketArray::populate_some(size_t bytes) {
  const size_t total = size_ * sizeof(Bucket);
  if (!mapped_ || populated_ >= total) return true;
  const size_t n = std::min(bytes, total - populated_);
  if (::madvise(reinterpret_cast<std::byte*>(data_) + populated_, n, MADV_POPULATE_WRITE) != 0) {
    populated_ = total;  // EINVAL before Linux 5.14, ENOMEM: the faults happen as they come
    return true;
  }
  populated_ += n;
  return populated_ >= total;
}

bool TrackedMap::BucketArray::release_some(size_t bytes) {
  const size_t total = size_ * sizeof(Bucket);
  if (!mapped_) return true;
  const size_t n = std::min(bytes, total - released_);
  if (n > 0) ::madvise(reinterpret_cast<std::byte*>(data_) + released_, n, MADV_DONTNEED);
  released_ += n;
  return released_ >= total;
}

TrackedMap::BucketArray::~BucketArray() {
  if (mapped_) {
    ::munmap(data_, size_ * sizeof(Bucket));
  } else {
    std::free(data_);
  }
}

// ---------------------------------------------------------------- index

uint32_t TrackedMap::probe(const BucketArray& index, std::string_view key, uint64_t h) const {
  const size_t mask = index.mask();
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Bucket b = index[i];
    if (b.slot1 == 0) return kNoSlot;
    if (b.tag == tag && slots_[b.slot1 - 1].key == key) return b.slot1 - 1;
  }
}

void TrackedMap::place(BucketArray& index, uint32_t s, uint64_t h) {
  const size_t mask = index.mask();
  size_t i = h & mask;
  while (index[i].slot1 != 0) i = (i + 1) & mask;
  index[i] = Bucket{s + 1, static_cast<uint32_t>(h >> 32)};
}

bool TrackedMap::unplace(BucketArray& index, uint32_t s, uint64_t h) {
  const size_t mask = index.mask();
  size_t i = h & mask;
  for (;; i = (i + 1) & mask) {
    if (index[i].slot1 == 0) return false;
    if (index[i].slot1 == s + 1) break;
  }
  // Backward-shift deletion keeps probe chains intact without tombstones.
  for (size_t j = i;;) {
    j = (j + 1) & mask;
    if (index[j].slot1 == 0) break;
    size_t home = hash_key(slots_[index[j].slot1 - 1].key) & mask;
    bool movable = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      index[i] = index[j];
      i = j;
    }
  }
  index[i] = Bucket{0, 0};
  return true;
}

uint32_t TrackedMap::lookup(std::string_view key, uint64_t h) const {
  const uint32_t s = probe(index_, key, h);
  if (s != kNoSlot || BATON_LIKELY(old_index_.size() == 0)) return s;
  return probe(old_index_, key, h);
}

uint32_t TrackedMap::lookup(std::string_view key) const { return lookup(key, hash_key(key)); }

size_t TrackedMap::index_bytes() const {
  auto held = [](const BucketArray& a) { return a.size() * sizeof(Bucket) - a.released(); };
  return held(index_) + held(old_index_) + held(retired_);
}

const Entry* TrackedMap::find(std::string_view key) const {
  uint32_t s = lookup(key);
  return s == kNoSlot ? nullptr : &slots_[s].entry;
}

void TrackedMap::grow_index() {
  // Only when most slots are free can a doubling outlast the next one's trigger.
  if (old_index_.size() != 0) {
    index_.populate_some(SIZE_MAX);
    move_keys(UINT32_MAX);
  }
  if (retired_.size() != 0) release_retired(SIZE_MAX);
  BucketArray bigger(index_.size() * 2);
  old_index_ = std::move(index_);
  index_ = std::move(bigger);
  index_gen_ ^= 1;  // every slot's key is now "not yet in index_"
  grow_cursor_ = 0;
  grow_end_ = slots_.size();
}

void TrackedMap::release_retired(size_t bytes) {
  if (!retired_.release_some(bytes)) return;
  if (retired_.mapped()) {
    emptied_.push_back(std::move(retired_));  // address space only, unmapped at the end
  } else {
    retired_ = BucketArray();  // a small heap block: freeing it costs nothing
  }
}

void TrackedMap::grow_step(uint32_t budget) {
  if (old_index_.size() == 0) {
    release_retired(kReleaseBytes);
    return;
  }
  // Moving keys into fresh pages faulted a page per key (64 faults, 7.5 ms, in the first
  // step at 16 M buckets): populate the new index first, a piece per step. New keys land
  // in it meanwhile.
  if (!index_.populate_some(kPopulateBytes)) return;
  move_keys(budget);
}

void TrackedMap::move_keys(uint32_t budget) {
  while (grow_cursor_ < grow_end_ && budget-- > 0) {
    Slot& slot = slots_[grow_cursor_];
    if (slot.used && slot.index_gen != index_gen_) {
      place(index_, grow_cursor_, hash_key(slot.key));
      slot.index_gen = index_gen_;
    }
    ++grow_cursor_;
  }
  if (grow_cursor_ >= grow_end_) retired_ = std::move(old_index_);
}

std::pair<uint32_t, bool> TrackedMap::find_or_insert(std::string_view key) {
  uint64_t h = hash_key(key);
  if (uint32_t s = lookup(key, h); s != kNoSlot) return {s, false};
  return {insert_new(key, h), true};
}

uint32_t TrackedMap::insert_new(std::string_view key, uint64_t h) {
  if ((live_ + 1) * 10 > index_.size() * 7) grow_index();
  uint32_t s;
  if (!free_slots_.empty()) {
    s = free_slots_.back();
    free_slots_.pop_back();
  } else {
    s = slots_.emplace_back();
  }
  Slot& slot = slots_[s];
  bytes_ += key.size() + kRecordOverhead;
  slot.key.assign(key);
  slot.entry = Entry{};
  slot.birth_epoch = epoch_;
  slot.used = true;
  slot.digest_mark = digesting_ ? digest_mark_ : 0;  // a new key is not part of the cut
  slot.index_gen = index_gen_;
  place(index_, s, h);
  ++live_;
  return s;
}

void TrackedMap::remove_slot(uint32_t s) {
  const uint64_t h = hash_key(slots_[s].key);
  if (slots_[s].index_gen == index_gen_) unplace(index_, s, h);
  if (BATON_UNLIKELY(old_index_.size() != 0)) {
    unplace(old_index_, s, h);  // it is there unless it was inserted during the doubling
  }
  bytes_ -= slots_[s].key.size() + kRecordOverhead + slots_[s].entry.payload_bytes();
  forget_borrow(slots_[s].entry);
  slots_[s] = Slot{};
  free_slots_.push_back(s);
  --live_;
}

template <typename T>
Result<T*> TrackedMap::typed(std::string_view key, bool create, uint32_t* slot_out) {
  advance_growth();
  uint32_t s = lookup(key);
  if (s == kNoSlot) {
    *slot_out = kNoSlot;
    if (!create) return static_cast<T*>(nullptr);
    s = find_or_insert(key).first;
    slots_[s].entry.value.template emplace<Box<T>>();
  } else if (!std::holds_alternative<Box<T>>(slots_[s].entry.value)) {
    return wrong_type();
  } else {
    touch(s);  // every caller mutates the entry next
  }
  *slot_out = s;
  return &*std::get<Box<T>>(slots_[s].entry.value);
}

// ---------------------------------------------------------------- mutations

void TrackedMap::set(std::string_view key, std::string_view value, int64_t expires_at_ms) {
  advance_growth();
  // `value` may view this map's own storage (another entry's inline bytes): slots never
  // move, and assign() copies from its own bytes safely.
  auto [s, inserted] = find_or_insert(key);
  if (!inserted) touch(s);
  Entry& e = slots_[s].entry;
  const bool was_borrowed = !inserted && e.is_borrowed();
  if (!inserted) bytes_ -= e.payload_bytes();
  if (auto* str = std::get_if<CompactString>(&e.value)) {
    str->assign(value);
  } else {
    e.value = CompactString(value);  // built before a borrow is released: `value` may be it
  }
  if (was_borrowed) release_borrow();
  e.expires_at_ms = expires_at_ms;
  bytes_ += value.size();
  log(s, kOpSet, key, {value, Le64(expires_at_ms).view()});
}

bool TrackedMap::erase(std::string_view key) {
  advance_growth();
  uint32_t s = lookup(key);
  if (s == kNoSlot) return false;
  touch(s);
  log(s, kOpErase, key, {});
  remove_slot(s);
  return true;
}

void TrackedMap::clear() {
  if (BATON_UNLIKELY(log_ != nullptr && log_->capturing())) log_->append(id(), kOpClear, {}, {});
  if (BATON_UNLIKELY(digesting_)) {
    // Everything the digest has not reached goes now: hash it first (clear is O(n) anyway).
    for (uint32_t s = 0; s < digest_end_ && s < slots_.size(); ++s) digest_touch(s);
    digest_cursor_ = digest_end_ = 0;
  }
  slot_prefaulter_.reset();  // before the array it populates goes away
  slots_.clear();
  free_slots_.clear();
  backings_.clear();
  borrowed_live_ = 0;
  old_index_ = BucketArray();
  retired_ = BucketArray();
  emptied_.clear();
  index_ = BucketArray(16);
  grow_cursor_ = grow_end_ = 0;
  live_ = 0;
  bytes_ = 0;
  // Nothing that existed when the snapshot began is left for it to write.
  if (snapshot_cursor_ != kNoSlot) snapshot_end_ = 0;
}

Result<int64_t> TrackedMap::incr_by(std::string_view key, int64_t by) {
  advance_growth();
  uint32_t s = lookup(key);
  int64_t current = 0;
  if (s != kNoSlot) {
    if (!slots_[s].entry.is_string()) return wrong_type();
    std::string_view str = slots_[s].entry.str();
    auto [ptr, ec] = std::from_chars(str.data(), str.data() + str.size(), current);
    if (ec != std::errc() || ptr != str.data() + str.size() || str.empty()) {
      return Error(ErrorKind::kInvalidArgument, "value is not an integer or out of range");
    }
  }
  int64_t next;
  if (__builtin_add_overflow(current, by, &next)) {
    return Error(ErrorKind::kInvalidArgument, "increment or decrement would overflow");
  }
  if (s == kNoSlot) s = find_or_insert(key).first;
  touch(s);
  Entry& e = slots_[s].entry;
  bytes_ -= e.payload_bytes();
  if (e.is_borrowed()) {
    // `current` is already parsed; drop the borrowed bytes without reading them again.
    e.value = CompactString();
    release_borrow();
  }
  auto& str = std::get<CompactString>(e.value);
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, next);
  str.assign(buf, static_cast<size_t>(end - buf));
  bytes_ += str.size();
  log(s, kOpIncrBy, key, {Le64(by).view()});
  return next;
}

Result<size_t> TrackedMap::push(std::string_view key, End end,
                                std::span<const std::string_view> values) {
  if (values.empty() || values.size() >= kMaxDeltaArgs) {
    return Error(ErrorKind::kInvalidArgument, "push takes 1 to 254 values");
  }
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(List * list, typed<List>(key, true, &s));
  for (std::string_view v : values) {
    if (end == End::kLeft) {
      list->emplace_front(v);
    } else {
      list->emplace_back(v);
    }
    bytes_ += v.size() + 8;
  }
  if (BATON_UNLIKELY(log_ != nullptr && log_->capturing()) && must_log(s)) {
    std::string_view args[kMaxDeltaArgs];
    const char end_byte = static_cast<char>(end);
    args[0] = std::string_view(&end_byte, 1);
    for (size_t i = 0; i < values.size(); ++i) args[i + 1] = values[i];
    log_->append(id(), kOpPush, key, std::span<const std::string_view>(args, values.size() + 1));
  }
  return list->size();
}

Result<std::optional<std::string>> TrackedMap::pop(std::string_view key, End end) {
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(List * list, typed<List>(key, false, &s));
  if (list == nullptr || list->empty()) return std::optional<std::string>();
  const char end_byte = static_cast<char>(end);
  log(s, kOpPop, key, {std::string_view(&end_byte, 1)});
  std::string v;
  if (end == End::kLeft) {
    v = std::move(list->front());
    list->pop_front();
  } else {
    v = std::move(list->back());
    list->pop_back();
  }
  bytes_ -= v.size() + 8;
  if (list->empty()) remove_slot(s);
  return std::optional<std::string>(std::move(v));
}

Result<size_t> TrackedMap::sadd(std::string_view key, std::span<const std::string_view> members) {
  if (members.empty() || members.size() >= kMaxDeltaArgs) {
    return Error(ErrorKind::kInvalidArgument, "sadd takes 1 to 254 members");
  }
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(Set * set, typed<Set>(key, true, &s));
  size_t added = 0;
  for (std::string_view m : members) {
    if (set->emplace(m).second) {
      ++added;
      bytes_ += m.size() + 8;
    }
  }
  log(s, kOpSAdd, key, members);
  return added;
}

Result<size_t> TrackedMap::srem(std::string_view key, std::span<const std::string_view> members) {
  if (members.empty() || members.size() >= kMaxDeltaArgs) {
    return Error(ErrorKind::kInvalidArgument, "srem takes 1 to 254 members");
  }
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(Set * set, typed<Set>(key, false, &s));
  if (set == nullptr) return size_t{0};
  log(s, kOpSRem, key, members);
  size_t removed = 0;
  for (std::string_view m : members) {
    if (set->erase(std::string(m)) > 0) {
      ++removed;
      bytes_ -= m.size() + 8;
    }
  }
  if (set->empty()) remove_slot(s);
  return removed;
}

Result<std::optional<std::string>> TrackedMap::spop(std::string_view key, uint64_t random) {
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(Set * set, typed<Set>(key, false, &s));
  if (set == nullptr || set->empty()) return std::optional<std::string>();
  // A random bucket, then the next non-empty one: O(buckets / size), kept small by
  // shrinking the bucket array of a set that emptied out. Not uniform per member (a
  // member alone in its bucket is likelier), which SPOP does not promise.
  if (set->size() * 8 < set->bucket_count()) set->rehash(0);
  const size_t buckets = set->bucket_count();
  size_t b = static_cast<size_t>(random % buckets);
  while (set->bucket_size(b) == 0) b = (b + 1) % buckets;
  auto it = set->find(*set->begin(b));
  std::string member = *it;
  // Logged by effect: the successor's set may iterate in another order.
  log(s, kOpSRem, key, {std::string_view(member)});
  set->erase(it);
  bytes_ -= member.size() + 8;
  if (set->empty()) remove_slot(s);
  return std::optional<std::string>(std::move(member));
}

Result<size_t> TrackedMap::hset(std::string_view key,
                                std::span<const std::string_view> field_values) {
  if (field_values.empty() || field_values.size() % 2 != 0 ||
      field_values.size() >= kMaxDeltaArgs) {
    return Error(ErrorKind::kInvalidArgument, "hset takes 1 to 127 field/value pairs");
  }
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(Hash * hash, typed<Hash>(key, true, &s));
  size_t added = 0;
  for (size_t i = 0; i < field_values.size(); i += 2) {
    auto [it, inserted] = hash->try_emplace(std::string(field_values[i]));
    if (inserted) {
      ++added;
      bytes_ += it->first.size() + 16;
    } else {
      bytes_ -= it->second.size();
    }
    it->second.assign(field_values[i + 1]);
    bytes_ += it->second.size();
  }
  log(s, kOpHSet, key, field_values);
  return added;
}

Result<size_t> TrackedMap::hdel(std::string_view key, std::span<const std::string_view> fields) {
  if (fields.empty() || fields.size() >= kMaxDeltaArgs) {
    return Error(ErrorKind::kInvalidArgument, "hdel takes 1 to 254 fields");
  }
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(Hash * hash, typed<Hash>(key, false, &s));
  if (hash == nullptr) return size_t{0};
  log(s, kOpHDel, key, fields);
  size_t removed = 0;
  for (std::string_view f : fields) {
    auto it = hash->find(std::string(f));
    if (it == hash->end()) continue;
    bytes_ -= it->first.size() + it->second.size() + 16;
    hash->erase(it);
    ++removed;
  }
  if (hash->empty()) remove_slot(s);
  return removed;
}

Result<size_t> TrackedMap::zadd(std::string_view key, double score, std::string_view member) {
  if (score != score) return Error(ErrorKind::kInvalidArgument, "score is not a number");
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(ZSet * z, typed<ZSet>(key, true, &s));
  bool added = z->add(score, member);
  if (added) bytes_ += member.size() + 16;
  log(s, kOpZAdd, key, {Le64(score).view(), member});
  return size_t{added ? 1u : 0u};
}

Result<std::optional<std::pair<std::string, double>>> TrackedMap::zpopmin(std::string_view key) {
  using Out = std::optional<std::pair<std::string, double>>;
  uint32_t s;
  BATON_ASSIGN_OR_RETURN(ZSet * z, typed<ZSet>(key, false, &s));
  if (z == nullptr || z->empty()) return Out();
  log(s, kOpZPopMin, key, {});
  auto popped = z->pop_min();
  bytes_ -= popped.first.size() + 16;
  if (z->empty()) remove_slot(s);
  return Out(std::move(popped));
}

bool TrackedMap::expire_at(std::string_view key, int64_t expires_at_ms) {
  advance_growth();
  uint32_t s = lookup(key);
  if (s == kNoSlot) return false;
  touch(s);
  slots_[s].entry.expires_at_ms = expires_at_ms;
  log(s, kOpExpire, key, {Le64(expires_at_ms).view()});
  return true;
}

size_t TrackedMap::erase_expired(int64_t now_ms, size_t budget, size_t* cursor) {
  // The server's periodic call: a doubling advances by the same budget, so it ends even
  // when requests only read.
  if (BATON_UNLIKELY(growing()) && budget > 0)
    grow_step(static_cast<uint32_t>(std::min<size_t>(budget, UINT32_MAX)));
  size_t erased = 0;
  for (size_t n = 0; n < budget && !slots_.empty(); ++n) {
    if (*cursor >= slots_.size()) *cursor = 0;
    const uint32_t s = static_cast<uint32_t>((*cursor)++);
    const int64_t at = slots_[s].entry.expires_at_ms;
    if (!slots_[s].used || at == 0 || at > now_ms) continue;
    touch(s);
    log(s, kOpErase, slots_[s].key, {});
    remove_slot(s);
    ++erased;
  }
  return erased;
}

// ---------------------------------------------------------------- comparison

bool TrackedMap::same_contents(const TrackedMap& other) const {
  if (live_ != other.live_) return false;
  bool same = true;
  slots_.for_each([&](const Slot& s) {
    if (!same || !s.used) return;
    const Entry* e = other.find(s.key);
    if (e == nullptr || !(*e == s.entry)) same = false;
  });
  return same;
}

uint64_t TrackedMap::digest() const {
  auto h = [](std::string_view v) { return mix(hash_key(v)); };
  uint64_t total = 0;
  slots_.for_each([&](const Slot& s) {
    if (!s.used) return;
    uint64_t d = mix(h(s.key) ^ (uint64_t(s.entry.type()) << 56) ^
                     mix(static_cast<uint64_t>(s.entry.expires_at_ms)));
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, CompactString>) {
            d = mix(d ^ h(v));
          } else if constexpr (std::is_same_v<T, Borrowed>) {
            d = mix(d ^ h(v.view()));
          } else if constexpr (std::is_same_v<T, Box<List>>) {
            for (const auto& x : *v) d = mix(d ^ h(x));
          } else if constexpr (std::is_same_v<T, Box<Set>>) {
            uint64_t sum = 0;
            for (const auto& x : *v) sum += h(x);
            d = mix(d ^ sum);
          } else if constexpr (std::is_same_v<T, Box<Hash>>) {
            uint64_t sum = 0;
            for (const auto& [f, x] : *v) sum += mix(h(f) ^ (h(x) * 31));
            d = mix(d ^ sum);
          } else {
            for (const auto& [score, m] : v->ordered())
              d = mix(d ^ h(m) ^ std::bit_cast<uint64_t>(score));
          }
        },
        s.entry.value);
    total += d;
  });
  return total;
}

StateDigest TrackedMap::full_digest(const DigestKey& key) const {
  const EntryHasher hasher(key);
  StateDigest d;
  slots_.for_each([&](const Slot& s) {
    if (s.used) d.add(hasher.entry(s.key, s.entry));
  });
  return d;
}

// ---------------------------------------------------------------- digest at the cut

Result<bool> TrackedMap::digest_begin(const DigestKey& key, uint32_t as_version) {
  digest_end();
  std::vector<const MigrationFn*> path;
  if (as_version != schema_version()) {
    BATON_ASSIGN_OR_RETURN(path, migrations().path(name(), schema_version(), as_version));
  }
  if (++digest_mark_ == 0) {  // the mark wrapped: no slot may keep an old digest's
    for (uint32_t s = 0; s < slots_.size(); ++s) slots_[s].digest_mark = 0;
    digest_mark_ = 1;
  }
  digest_key_ = key;
  digest_path_ = std::move(path);
  digest_acc_ = {};
  digest_cursor_ = 0;
  digest_end_ = static_cast<uint32_t>(slots_.size());
  digesting_ = true;
  return true;
}

void TrackedMap::digest_slot(uint32_t s) {
  Slot& slot = slots_[s];
  slot.digest_mark = digest_mark_;
  const EntryHasher hasher(digest_key_);
  if (digest_path_.empty()) return digest_acc_.add(hasher.entry(slot.key, slot.entry));
  Entry as_peer = slot.entry;  // a copy owns its bytes; the migration must not see ours
  for (const MigrationFn* step : digest_path_) (*step)(slot.key, as_peer);
  digest_acc_.add(hasher.entry(slot.key, as_peer));
}

void TrackedMap::digest_touch(uint32_t s) {
  if (s < digest_end_ && slots_[s].used && slots_[s].digest_mark != digest_mark_) digest_slot(s);
}

bool TrackedMap::digest_step(size_t budget_bytes) {
  if (!digesting_) return true;
  size_t scan_left = std::max<size_t>(4096, budget_bytes / 16);
  size_t bytes = 0;
  while (digest_cursor_ < digest_end_ && bytes < budget_bytes && scan_left-- > 0) {
    const uint32_t s = digest_cursor_++;
    if (!slots_[s].used || slots_[s].digest_mark == digest_mark_) continue;
    bytes += slots_[s].key.size() + slots_[s].entry.payload_bytes();
    digest_slot(s);
  }
  return digest_cursor_ >= digest_end_;
}

void TrackedMap::digest_end() {
  digesting_ = false;
  digest_path_.clear();
  digest_cursor_ = digest_end_ = 0;
}

// ---------------------------------------------------------------- Section

void TrackedMap::snapshot_begin() {
  ++epoch_;
  snapshot_cursor_ = 0;
  snapshot_end_ = static_cast<uint32_t>(slots_.size());
}

bool TrackedMap::snapshot_step(SnapshotSink& sink, size_t budget_bytes) {
  // Empty slots cost time too, so the scan is bounded as well as the bytes.
  size_t scan_left = std::max<size_t>(4096, budget_bytes / 16);
  while (snapshot_cursor_ < snapshot_end_ && sink.bytes() < budget_bytes && scan_left-- > 0) {
    const Slot& s = slots_[snapshot_cursor_];
    if (s.used && s.birth_epoch != epoch_) sink.add(s.key, s.entry);
    ++snapshot_cursor_;
  }
  return snapshot_cursor_ >= snapshot_end_;
}

void TrackedMap::snapshot_end() {
  snapshot_cursor_ = kNoSlot;
  snapshot_end_ = 0;
}

Result<void> TrackedMap::restore_begin(uint64_t records, std::shared_ptr<const void> backing) {
  clear();
  restore_batch_.clear();
  if (backing) backings_.push_back(std::move(backing));
  if (records > UINT32_MAX - 1) {
    return Error(ErrorKind::kCapacity, "section '" + name() + "' has " + std::to_string(records) +
                                           " records; a TrackedMap holds at most 2^32-2");
  }
  slot_prefaulter_.reset();
  // The records' slots in one region, so their pages can be populated on a helper thread
  // ahead of the inserts. Keys added later get blocks of their own; nothing moves.
  const size_t slot_bytes = records * sizeof(Slot);
  if (records > 0) {
    std::byte* region = slots_.reserve(records);
    if (region == nullptr) {
      return Error(ErrorKind::kCapacity,
                   "section '" + name() + "': cannot map " + std::to_string(slot_bytes >> 20) +
                       " MiB for the slots of its " + std::to_string(records) +
                       " records; free memory or raise the overcommit limit");
    }
    advise_huge(region, slot_bytes);
    if (slot_bytes >= kPrefaultMinBytes) {
      slot_prefaulter_ = std::make_unique<Prefaulter>(region, slot_bytes, Prefaulter::Mode::kWrite,
                                                      kPrefaultWindow);
    }
  }
  size_t buckets = 16;
  while (buckets * 7 < records * 10 + 10) buckets *= 2;
  index_ = BucketArray(buckets);  // zero pages: empty without being written
  // Huge pages for a restore's index, which its inserts fill all at once; not for a
  // doubling's, where each insert would meet a fresh one (BM_NewKeyAtIndexGrowth).
  advise_huge(index_.data(), buckets * sizeof(Bucket));
  // Populated now, in one pass, as filling it with empty buckets used to: left to the
  // inserts' random faults, kvd's restore under load took 40 % longer (docs/design.md).
  index_.populate_some(SIZE_MAX);
  return ok();
}

Result<void> TrackedMap::restore_record(std::string&& key, Entry&& entry) {
  constexpr size_t kBatch = 16;
  uint64_t h = hash_key(key);
  __builtin_prefetch(&index_[h & index_.mask()], 1);
  restore_batch_.push_back(PendingRecord{std::move(key), std::move(entry), h});
  if (restore_batch_.size() >= kBatch) return flush_restore_batch();
  return ok();
}

Result<void> TrackedMap::flush_restore_batch() {
  for (PendingRecord& r : restore_batch_) {
    if (lookup(r.key, r.hash) != kNoSlot) {
      std::string key = std::move(r.key);
      restore_batch_.clear();
      return Error(ErrorKind::kCorrupt, "section '" + name() + "' holds key '" + key + "' twice");
    }
    uint32_t s = insert_new(r.key, r.hash);
    bytes_ += r.entry.payload_bytes();
    if (r.entry.is_borrowed()) ++borrowed_live_;
    slots_[s].entry = std::move(r.entry);
  }
  restore_batch_.clear();
  if (slot_prefaulter_) slot_prefaulter_->advance(slots_.size() * sizeof(Slot));
  return ok();
}

Result<void> TrackedMap::restore_end() {
  auto r = flush_restore_batch();
  slot_prefaulter_.reset();
  if (borrowed_live_ == 0) backings_.clear();  // nothing borrows: let the mapping go now
  return r;
}

void TrackedMap::after_replay(std::string_view key) {
  if (!migrating()) return;
  uint32_t s = lookup(key);
  if (s == kNoSlot) return;
  Entry& e = slots_[s].entry;
  // payload_bytes() walks a collection: measuring a big list around every replayed push
  // made replay quadratic (a 2M-element list under LPUSH load never converged). Strings
  // are measured; a migration that resizes a collection's members leaves estimate_bytes()
  // approximate. TODO(perf): keep a byte count per collection to make both exact and O(1).
  const bool measure = e.is_string();
  if (measure) bytes_ -= e.payload_bytes();
  const bool was_borrowed = e.is_borrowed();
  migrate(key, e);
  if (was_borrowed && !e.is_borrowed()) release_borrow();  // the migration replaced it
  if (measure) bytes_ += e.payload_bytes();
}

Result<void> TrackedMap::apply_delta(const DeltaView& d) {
  const auto& a = d.args;
  auto need = [&](size_t n) -> Result<void> {
    if (a.size() < n) return diverged(d.key, "op " + std::to_string(d.op) + " lacks arguments");
    return ok();
  };
  auto check = [&](auto&& r) -> Result<void> {
    if (!r.ok()) return diverged(d.key, r.error().message());
    return ok();
  };
  switch (d.op) {
    case kOpSet: {
      BATON_TRY(need(2));
      BATON_ASSIGN_OR_RETURN(int64_t exp, arg_i64(d.key, a[1]));
      set(d.key, a[0], exp);
      break;
    }
    case kOpErase:
      if (!erase(d.key)) return diverged(d.key, "erase of a missing key");
      break;
    case kOpClear:
      clear();
      break;
    case kOpIncrBy: {
      BATON_TRY(need(1));
      BATON_ASSIGN_OR_RETURN(int64_t by, arg_i64(d.key, a[0]));
      BATON_TRY(check(incr_by(d.key, by)));
      break;
    }
    case kOpPush: {
      BATON_TRY(need(2));
      BATON_ASSIGN_OR_RETURN(End end, arg_end(d.key, a[0]));
      BATON_TRY(check(push(d.key, end, a.subspan(1))));
      break;
    }
    case kOpPop: {
      BATON_TRY(need(1));
      BATON_ASSIGN_OR_RETURN(End end, arg_end(d.key, a[0]));
      auto r = pop(d.key, end);
      BATON_TRY(check(r));
      if (!r.value()) return diverged(d.key, "pop from a missing list");
      break;
    }
    case kOpSAdd:
      BATON_TRY(need(1));
      BATON_TRY(check(sadd(d.key, a)));
      break;
    case kOpSRem:
      BATON_TRY(need(1));
      BATON_TRY(check(srem(d.key, a)));
      break;
    case kOpHSet:
      BATON_TRY(need(2));
      BATON_TRY(check(hset(d.key, a)));
      break;
    case kOpHDel:
      BATON_TRY(need(1));
      BATON_TRY(check(hdel(d.key, a)));
      break;
    case kOpZAdd: {
      BATON_TRY(need(2));
      BATON_ASSIGN_OR_RETURN(double score, arg_f64(d.key, a[0]));
      BATON_TRY(check(zadd(d.key, score, a[1])));
      break;
    }
    case kOpZPopMin: {
      auto r = zpopmin(d.key);
      BATON_TRY(check(r));
      if (!r.value()) return diverged(d.key, "zpopmin from a missing zset");
      break;
    }
    case kOpExpire: {
      BATON_TRY(need(1));
      BATON_ASSIGN_OR_RETURN(int64_t exp, arg_i64(d.key, a[0]));
      if (!expire_at(d.key, exp)) return diverged(d.key, "expire of a missing key");
      break;
    }
    default:
      return Error(ErrorKind::kCorrupt, "section '" + name() + "': unknown delta op " +
                                            std::to_string(d.op) + " at LSN " +
                                            std::to_string(d.lsn));
  }
  after_replay(d.key);
  return ok();
}

uint64_t TrackedMap::recount_bytes() const {
  uint64_t n = 0;
  slots_.for_each([&](const Slot& s) {
    if (s.used) n += s.key.size() + kRecordOverhead + s.entry.payload_bytes();
  });
  return n;
}

}  // namespace baton
