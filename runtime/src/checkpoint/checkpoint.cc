// CheckpointWriter, restore_checkpoint and DeltaReplayer.
#include "baton/checkpoint.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "baton/crc32c.h"
#include "chunk_codec.h"
#include "format.h"
#include "prefault.h"
#include "segment.h"

namespace baton {
namespace {

using Clock = std::chrono::steady_clock;

int64_t micros_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

int64_t now_us() { return micros_since(Clock::time_point{}); }

// This thread's CPU time: the server's own work between turns, as opposed to time it
// spent blocked with nothing to serve.
int64_t thread_cpu_us() { return clock_us(CLOCK_THREAD_CPUTIME_ID); }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08" PRIx32, v);
  return buf;
}

uint32_t header_checksum(const std::byte* base, size_t header_bytes) {
  // The checksum field itself counts as zero.
  constexpr size_t at = offsetof(format::Header, header_checksum);
  const uint32_t zero = 0;
  uint32_t c = crc32c(0, base, at);
  c = crc32c(c, &zero, 4);
  return crc32c(c, base + at + 4, header_bytes - at - 4);
}

// Reservation for a checkpoint: generous because tmpfs reserves nothing until touched,
// and a slice that does not fit fails the checkpoint.
size_t capacity_for(uint64_t estimate) {
  return format::kDataOffset + 2 * estimate + (size_t{64} << 20);
}

Error no_room(Error e, uint64_t estimate) {
  return Error(e.kind(),
               e.message() + "; a checkpoint of about " + std::to_string(estimate) +
                   " bytes of state needs that memory: give the server more (in a container, a "
                   "larger --shm-size or memory limit) and upgrade again",
               e.sys_errno());
}

// How far ahead of the writer pages are populated: enough to hide a slice's faults,
// small enough that little beyond the end is populated and then truncated away.
constexpr size_t kPrefaultWindow = size_t{32} << 20;
// How far past its position the writer wants pages populated before a step: a chunk's
// reservation is about twice its slice's payload plus 64 bytes a record (see step()),
// under 512 KiB for 64 KiB slices of records of 16 bytes or more. Less than the window,
// or the writer would wait for pages the helper does not populate.
constexpr size_t kWriteAhead = size_t{512} << 10;
static_assert(kWriteAhead < (size_t{2} << 20), "the smallest prefault window");

}  // namespace

// ---------------------------------------------------------------- Checkpoint

Checkpoint::Checkpoint(std::unique_ptr<ShmSegment> segment, CheckpointStats stats)
    : segment_(std::move(segment)), stats_(stats) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;
int Checkpoint::fd() const { return segment_->fd(); }

// ---------------------------------------------------------------- writer

struct CheckpointWriter::Impl {
  Registry* registry;
  CheckpointOptions options;
  std::unique_ptr<ShmSegment> segment;
  std::unique_ptr<Prefaulter> prefaulter;  // declared after segment: stops before unmap
  std::vector<format::SectionDesc> descs;
  SnapshotSink sink;
  CheckpointStats stats;
  std::vector<int32_t> slice_us;  // every step()'s duration, for percentiles
  Clock::time_point started;
  size_t pos = format::kDataOffset;
  size_t current = 0;  // index of the section being written
  uint32_t section_crc = 0;
  bool failed = false;
  bool finished = false;
  uint64_t estimate = 0;  // the sections' own guess of their size, for messages
  CheckpointPacer pacer{CheckpointPacing{}};
  int64_t helper_cpu_us = 0;       // the prefaulter's CPU already charged to the pacer
  bool waiting_for_pages = false;  // the last turn stopped where the helper had not populated

  // Makes [0, end) of the segment safe to write; a full /dev/shm or memory limit fails
  // the checkpoint here, with what was needed, instead of faulting later.
  Result<void> reserve(size_t end) {
    auto r = segment->reserve(end);
    if (r.ok()) return ok();
    failed = true;
    return no_room(std::move(r).error(), estimate);
  }

  ~Impl() {
    if (prefaulter) prefaulter->stop();
    if (finished) return;
    // Abandoned: every section leaves snapshot mode and nothing is captured any more.
    for (Section* s : registry->sections()) s->snapshot_end();
    registry->log().end_capture();
  }
};

CheckpointWriter::CheckpointWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CheckpointWriter::CheckpointWriter(CheckpointWriter&&) noexcept = default;
CheckpointWriter& CheckpointWriter::operator=(CheckpointWriter&&) noexcept = default;
CheckpointWriter::~CheckpointWriter() = default;
const CheckpointStats& CheckpointWriter::stats() const { return impl_->stats; }

Result<CheckpointWriter> CheckpointWriter::begin(Registry& registry,
                                                 const CheckpointOptions& options) {
  if (registry.log().capturing()) {
    return Error(ErrorKind::kState, "a checkpoint is already in progress for this registry");
  }
  if (options.slice_bytes == 0) {
    return Error(ErrorKind::kInvalidArgument, "CheckpointOptions::slice_bytes must be > 0");
  }
  BATON_TRY(check_pacing(options.pacing));
  auto started = Clock::now();
  uint64_t estimate = 0;
  for (Section* s : registry.sections()) estimate += s->estimate_bytes();
  BATON_ASSIGN_OR_RETURN(
      auto segment, ShmSegment::create(capacity_for(estimate), options.pages, options.name_prefix));
  if (auto r = segment->reserve(format::kDataOffset); !r.ok()) {  // the header's page
    return no_room(std::move(r).error(), estimate);
  }
  auto impl = std::make_unique<Impl>();
  impl->registry = &registry;
  impl->options = options;
  impl->started = started;
  impl->pacer = CheckpointPacer(options.pacing);
  impl->stats.capacity_bytes = segment->size();
  impl->stats.page_kind = segment->page_kind();
  impl->segment = std::move(segment);
  impl->estimate = estimate;
  if (options.prefault) {
    ShmSegment* seg = impl->segment.get();
    impl->prefaulter = std::make_unique<Prefaulter>(
        seg->data(), seg->size(), Prefaulter::Mode::kWrite,
        // A small state needs no 32 MiB populated ahead of it (the helper's CPU is charged
        // to the checkpoint's pacing).
        std::min(kPrefaultWindow, std::max<size_t>(size_t{2} << 20, 2 * estimate)),
        [seg](size_t end) { return seg->reserve(end).ok(); });
    impl->stats.prefaulted = impl->prefaulter->active();
  }
  impl->descs.resize(registry.sections().size());
  // L0 and every section's snapshot start in the same loop turn: nothing can slip between.
  impl->stats.start_lsn = registry.log().begin_capture();
  for (size_t i = 0; i < registry.sections().size(); ++i) {
    Section* s = registry.sections()[i];
    auto& d = impl->descs[i];
    std::memset(&d, 0, sizeof d);
    std::memcpy(d.name, s->name().data(), s->name().size());
    d.schema_version = s->schema_version();
    s->snapshot_begin();
  }
  if (!impl->descs.empty()) impl->descs[0].offset = impl->pos;
  impl->pacer.start(now_us(), thread_cpu_us());
  return CheckpointWriter(std::move(impl));
}

Result<void> check_pacing(const CheckpointPacing& pacing) {
  if (!(pacing.share > 0.0 && pacing.share < 1.0)) {
    return Error(ErrorKind::kInvalidArgument,
                 "CheckpointPacing::share must be above 0 and below 1, not " +
                     std::to_string(pacing.share) +
                     " (0.3 gives the checkpoint 30 % of a busy server's CPU)");
  }
  if (pacing.max_pause_us < 0) {
    return Error(ErrorKind::kInvalidArgument,
                 "CheckpointPacing::max_pause_us must be >= 0 (0: one slice per turn), not " +
                     std::to_string(pacing.max_pause_us));
  }
  return ok();
}

void CheckpointPacer::start(int64_t wall_us, int64_t cpu_us) {
  wall_us_ = wall_us;
  cpu_us_ = cpu_us;
  credit_us_ = 0;
}

int64_t CheckpointPacer::budget_us(int64_t wall_us, int64_t cpu_us) {
  const double wall = static_cast<double>(std::max<int64_t>(0, wall_us - wall_us_));
  const double busy = std::min(wall, static_cast<double>(std::max<int64_t>(0, cpu_us - cpu_us_)));
  const double share = pacing_.share;
  credit_us_ += busy * share / (1.0 - share) + (wall - busy);
  credit_us_ = std::min(credit_us_, static_cast<double>(pacing_.max_pause_us));
  wall_us_ = wall_us;
  cpu_us_ = cpu_us;
  return static_cast<int64_t>(std::floor(credit_us_));
}

void CheckpointPacer::spent(int64_t spent_us, int64_t wall_us, int64_t cpu_us) {
  credit_us_ -= static_cast<double>(spent_us);
  wall_us_ = wall_us;
  cpu_us_ = cpu_us;
}

int64_t CheckpointPacer::wait_us() const {
  return credit_us_ < 0 ? static_cast<int64_t>(std::ceil(-credit_us_)) : 0;
}

int64_t CheckpointWriter::turn_wait_us() const {
  // Waiting for the helper's pages: a loop may sleep for its events meanwhile.
  return impl_->waiting_for_pages ? std::max<int64_t>(1, impl_->pacer.wait_us())
                                  : impl_->pacer.wait_us();
}

Result<bool> CheckpointWriter::turn() {
  Impl& w = *impl_;
  if (w.failed) return Error(ErrorKind::kState, "checkpoint already failed; start a new one");
  if (w.finished) return Error(ErrorKind::kState, "checkpoint already finished");
  const int64_t start = now_us();
  // The prefault helper's CPU is the checkpoint's too: on a machine whose cores the
  // server and its clients use, it is taken from them.
  if (w.prefaulter) {
    const int64_t helper = w.prefaulter->cpu_us();
    if (helper > w.helper_cpu_us) {
      w.pacer.charge(helper - w.helper_cpu_us);
      w.helper_cpu_us = helper;
    }
  }
  const int64_t budget = w.pacer.budget_us(start, thread_cpu_us());
  if (budget < 0) {
    w.stats.turns_skipped += 1;
    return w.current >= w.registry->sections().size();
  }
  bool done = false, stepped = false;
  int64_t now = start;
  w.waiting_for_pages = false;
  do {
    // Writing into pages the helper is still allocating would wait on its locks: the
    // server's thread waited in D state for milliseconds so. It serves meanwhile instead.
    if (w.prefaulter && !w.prefaulter->covers(w.pos + kWriteAhead)) {
      w.waiting_for_pages = true;
      break;
    }
    BATON_ASSIGN_OR_RETURN(done, step());
    stepped = true;
    now = now_us();
  } while (!done && now - start < budget);
  if (!stepped) {  // waited for pages before writing anything
    w.stats.turns_waited += 1;
    return false;
  }
  w.pacer.spent(now - start, now, thread_cpu_us());
  w.stats.turns += 1;
  w.stats.max_turn_us = std::max(w.stats.max_turn_us, now - start);
  return done;
}

Result<bool> CheckpointWriter::step() {
  Impl& w = *impl_;
  if (w.failed) return Error(ErrorKind::kState, "checkpoint already failed; start a new one");
  if (w.finished) return Error(ErrorKind::kState, "checkpoint already finished");
  const auto& sections = w.registry->sections();
  if (w.current >= sections.size()) return true;
  auto t0 = Clock::now();
  Section* s = sections[w.current];
  auto& desc = w.descs[w.current];
  w.sink.clear();
  bool section_done = s->snapshot_step(w.sink, w.options.slice_bytes);
  if (!w.sink.records().empty()) {
    const size_t room = w.segment->size() - w.pos;
    if (room < sizeof(format::ChunkHeader) + 64) {
      w.failed = true;
      return Error(ErrorKind::kCapacity,
                   "checkpoint section '" + s->name() + "' outgrew the segment reserved at " +
                       std::to_string(w.segment->size()) + " bytes (state grew >2x during it)");
    }
    std::byte* at = w.segment->data() + w.pos;
    auto& records = w.sink.records();
    // Reserve what the chunk likely needs (its payload plus Cap'n Proto's framing); one
    // that needs more gets twice the room, until the segment's end.
    size_t want = sizeof(format::ChunkHeader) + 2 * w.sink.bytes() + 64 * records.size() + 4096;
    Result<size_t> encoded = 0;
    for (;;) {
      want = std::min(want, room);
      BATON_TRY(w.reserve(w.pos + want));
      encoded = serialization::encode_chunk(records, at + sizeof(format::ChunkHeader),
                                            want - sizeof(format::ChunkHeader));
      if (encoded.ok() || encoded.error().kind() != ErrorKind::kCapacity || want == room) break;
      std::memset(at, 0, want);  // the encoder writes into zeroed memory only
      want *= 2;
    }
    if (!encoded.ok()) {
      w.failed = true;
      return std::move(encoded).error().with_context("checkpoint section '" + s->name() + "'");
    }
    size_t bytes = encoded.value();
    format::ChunkHeader ch{};
    ch.magic = format::kChunkMagic;
    ch.checksum = crc32c(0, at + sizeof ch, bytes);
    ch.records = static_cast<uint32_t>(records.size());
    ch.message_words = static_cast<uint32_t>(bytes / 8);
    std::memcpy(at, &ch, sizeof ch);
    w.section_crc = crc32c(w.section_crc, &ch, sizeof ch);
    w.pos += sizeof ch + bytes;
    if (w.prefaulter) w.prefaulter->advance(w.pos);
    desc.bytes += sizeof ch + bytes;
    desc.records += records.size();
    desc.chunks += 1;
    w.stats.records += records.size();
    w.stats.payload_bytes += w.sink.bytes();
    w.stats.chunks += 1;
  }
  if (section_done) {
    s->snapshot_end();
    desc.section_checksum = w.section_crc;
    w.section_crc = 0;
    ++w.current;
    if (w.current < sections.size()) w.descs[w.current].offset = w.pos;
  }
  int64_t us = micros_since(t0);
  w.stats.slices += 1;
  w.stats.busy_us += us;
  w.stats.max_slice_us = std::max(w.stats.max_slice_us, us);
  w.slice_us.push_back(static_cast<int32_t>(std::min<int64_t>(us, INT32_MAX)));
  return w.current >= sections.size();
}

Result<Checkpoint> CheckpointWriter::finish() {
  Impl& w = *impl_;
  if (w.failed) return Error(ErrorKind::kState, "checkpoint already failed; start a new one");
  if (w.finished) return Error(ErrorKind::kState, "checkpoint already finished");
  if (w.current < w.registry->sections().size()) {
    return Error(ErrorKind::kState, "checkpoint not complete: call step() until it returns true");
  }
  format::Header h{};
  std::memcpy(h.magic, format::kMagic, sizeof h.magic);
  h.format_version = format::kFormatVersion;
  h.section_count = static_cast<uint32_t>(w.descs.size());
  h.header_bytes = static_cast<uint32_t>(sizeof h + w.descs.size() * sizeof(format::SectionDesc));
  h.start_lsn = w.stats.start_lsn;
  h.total_bytes = w.pos;
  h.created_unix_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  h.writer_pid = static_cast<uint32_t>(::getpid());
  h.page_kind = static_cast<uint32_t>(w.segment->page_kind());
  std::byte* base = w.segment->data();
  std::memcpy(base, &h, sizeof h);
  if (!w.descs.empty()) {
    std::memcpy(base + sizeof h, w.descs.data(), w.descs.size() * sizeof(format::SectionDesc));
  }
  uint32_t crc = header_checksum(base, h.header_bytes);
  std::memcpy(base + offsetof(format::Header, header_checksum), &crc, 4);
  const int64_t stop_at = now_us();
  if (w.prefaulter) w.prefaulter->stop();  // before the object shrinks under it
  const int64_t shrink_at = now_us();
  BATON_TRY(w.segment->shrink(w.pos));
  w.stats.finish_stop_us = shrink_at - stop_at;
  w.stats.finish_shrink_us = now_us() - shrink_at;
  w.stats.segment_bytes = w.pos;
  w.stats.elapsed_us = micros_since(w.started);
  if (!w.slice_us.empty()) {
    auto pct = [&](size_t p) {
      size_t k = (w.slice_us.size() - 1) * p / 100;
      std::nth_element(w.slice_us.begin(), w.slice_us.begin() + static_cast<long>(k),
                       w.slice_us.end());
      return int64_t{w.slice_us[k]};
    };
    w.stats.p50_slice_us = pct(50);
    w.stats.p99_slice_us = pct(99);
  }
  w.finished = true;
  return Checkpoint(std::move(w.segment), w.stats);
}

// ---------------------------------------------------------------- restore

namespace {

Error corrupt(std::string msg) { return Error(ErrorKind::kCorrupt, std::move(msg)); }

Result<format::Header> validate_header(const std::byte* base, size_t size) {
  format::Header h;
  if (size < sizeof h) {
    return corrupt("checkpoint truncated: segment is " + std::to_string(size) +
                   " bytes, the header alone needs " + std::to_string(sizeof h));
  }
  std::memcpy(&h, base, sizeof h);
  if (std::memcmp(h.magic, format::kMagic, sizeof h.magic) != 0) {
    std::string seen;
    for (char c : h.magic) seen += (c >= 32 && c < 127) ? c : '?';
    return corrupt("not a Baton checkpoint: magic is '" + seen +
                   "', expected 'BATONCK'; the fd given is foreign or overwritten");
  }
  if (h.format_version > format::kFormatVersion) {
    return Error(ErrorKind::kVersion,
                 "checkpoint format version " + std::to_string(h.format_version) +
                     " is newer than this build reads (" + std::to_string(format::kFormatVersion) +
                     "); upgrade through a build that reads it");
  }
  if (h.format_version == 0) return corrupt("checkpoint format version is 0");
  if (h.section_count > format::kMaxSections) {
    return corrupt("checkpoint header claims " + std::to_string(h.section_count) +
                   " sections; at most " + std::to_string(format::kMaxSections) + " exist");
  }
  size_t want = sizeof h + size_t{h.section_count} * sizeof(format::SectionDesc);
  if (h.header_bytes != want) {
    return corrupt("checkpoint header size is " + std::to_string(h.header_bytes) + ", expected " +
                   std::to_string(want) + " for " + std::to_string(h.section_count) + " sections");
  }
  if (size < format::kDataOffset) {
    return corrupt("checkpoint truncated: segment is " + std::to_string(size) +
                   " bytes, the header area needs " + std::to_string(format::kDataOffset));
  }
  uint32_t got = header_checksum(base, h.header_bytes);
  if (got != h.header_checksum) {
    return corrupt("checkpoint header checksum mismatch (expected " + hex32(h.header_checksum) +
                   ", got " + hex32(got) + ")");
  }
  if (h.total_bytes > size || h.total_bytes < format::kDataOffset) {
    return corrupt("checkpoint truncated: header says " + std::to_string(h.total_bytes) +
                   " bytes, segment holds " + std::to_string(size));
  }
  if (h.page_kind > static_cast<uint32_t>(PageKind::kHugetlb)) {
    return corrupt("checkpoint header has unknown page kind " + std::to_string(h.page_kind));
  }
  return h;
}

// One decoded chunk (or a section's end, or an error) handed from the decoding thread
// to the thread that owns the sections.
struct DecodedBatch {
  size_t section = 0;
  std::vector<std::pair<std::string, Entry>> records;
  bool section_end = false;
  std::optional<Error> error;
};

// A bounded single-producer, single-consumer queue; memory stays at a few chunks.
class BatchQueue {
 public:
  static constexpr size_t kDepth = 8;
  // False once the consumer cancelled.
  bool push(DecodedBatch&& b) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return cancelled_ || q_.size() < kDepth; });
    if (cancelled_) return false;
    q_.push_back(std::move(b));
    not_empty_.notify_one();
    return true;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_one();
  }
  std::optional<DecodedBatch> pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || !q_.empty(); });
    if (q_.empty()) return std::nullopt;
    DecodedBatch b = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return b;
  }
  void cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    q_.clear();
    not_full_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<DecodedBatch> q_;
  bool closed_ = false;
  bool cancelled_ = false;
};

// Decoding side: verifies and decodes every chunk of one section, in order. Touches only
// the read-only mapping and its own allocations, never a Section.
Result<void> decode_section(const std::byte* base, const format::SectionDesc& d, size_t index,
                            bool borrow, BatchQueue& out) {
  const std::string name(d.name);
  uint64_t pos = d.offset, end = d.offset + d.bytes, records = 0, chunks = 0;
  uint32_t section_crc = 0;
  auto where = [&](uint64_t at) {
    return "checkpoint section '" + name + "' chunk at offset " + std::to_string(at);
  };
  while (pos < end) {
    format::ChunkHeader ch;
    if (end - pos < sizeof ch) return corrupt(where(pos) + ": header truncated");
    std::memcpy(&ch, base + pos, sizeof ch);
    if (ch.magic != format::kChunkMagic) {
      return corrupt(where(pos) + ": bad chunk magic " + hex32(ch.magic));
    }
    uint64_t bytes = uint64_t{ch.message_words} * 8;
    if (bytes > end - pos - sizeof ch) {
      return corrupt(where(pos) + ": message of " + std::to_string(bytes) +
                     " bytes overruns the section end at " + std::to_string(end));
    }
    const std::byte* msg = base + pos + sizeof ch;
    uint32_t got = crc32c(0, msg, bytes);
    if (got != ch.checksum) {
      return corrupt(where(pos) + ": checksum mismatch (expected " + hex32(ch.checksum) + ", got " +
                     hex32(got) + ")");
    }
    section_crc = crc32c(section_crc, &ch, sizeof ch);
    DecodedBatch batch;
    batch.section = index;
    auto decoded = serialization::decode_chunk(std::span<const std::byte>(msg, bytes), ch.records,
                                               borrow, batch.records);
    if (!decoded.ok()) return std::move(decoded).error().with_context(where(pos));
    records += ch.records;
    ++chunks;
    pos += sizeof ch + bytes;
    if (!out.push(std::move(batch))) return Error(ErrorKind::kAborted, "restore cancelled");
  }
  if (records != d.records || chunks != d.chunks) {
    return corrupt("checkpoint section '" + name + "' has " + std::to_string(records) +
                   " records in " + std::to_string(chunks) + " chunks, header says " +
                   std::to_string(d.records) + " in " + std::to_string(d.chunks));
  }
  if (section_crc != d.section_checksum) {
    return corrupt("checkpoint section '" + name + "' checksum mismatch (expected " +
                   hex32(d.section_checksum) + ", got " + hex32(section_crc) + ")");
  }
  DecodedBatch done;
  done.section = index;
  done.section_end = true;
  if (!out.push(std::move(done))) return Error(ErrorKind::kAborted, "restore cancelled");
  return ok();
}

// Restores every section with a two-stage pipeline: a helper thread verifies checksums
// and decodes (page faults on the mapping and allocation happen there), while this
// thread migrates and inserts. A section sees restore_begin, its records in checkpoint
// order, then restore_end, all on the calling thread.
Result<uint64_t> restore_sections(const std::shared_ptr<const ShmSegment>& segment, bool borrow,
                                  const std::vector<format::SectionDesc>& descs,
                                  const std::vector<Section*>& sections,
                                  const RestoreOptions& options) {
  const std::byte* base = segment->data();
  BatchQueue queue;
  std::thread decoder([&] {
    auto fail = [&](Error e) {
      DecodedBatch failed;
      failed.error = std::move(e);
      queue.push(std::move(failed));
    };
    try {
      for (size_t i = 0; i < descs.size(); ++i) {
        auto r = decode_section(base, descs[i], i, borrow, queue);
        if (!r.ok()) {
          fail(std::move(r).error());
          break;
        }
      }
    } catch (const std::bad_alloc&) {
      fail(Error(ErrorKind::kCapacity, "out of memory decoding the checkpoint"));
    } catch (const std::exception& e) {
      fail(Error(ErrorKind::kCorrupt, std::string("decoding the checkpoint: ") + e.what()));
    }
    queue.close();
  });
  struct Joiner {
    BatchQueue& q;
    std::thread& t;
    ~Joiner() {
      q.cancel();
      t.join();
    }
  } joiner{queue, decoder};

  uint64_t total = 0, expected = 0;
  for (const format::SectionDesc& d : descs) expected += d.records;
  if (options.progress) options.progress(0, expected);
  size_t current = SIZE_MAX;
  while (auto batch = queue.pop()) {
    if (batch->error) return std::move(*batch->error);
    Section& s = *sections[batch->section];
    if (batch->section != current) {
      BATON_TRY(s.restore_begin(descs[batch->section].records,
                                borrow ? std::shared_ptr<const void>(segment) : nullptr));
      current = batch->section;
    }
    const bool migrating = s.migrating();
    for (auto& [key, entry] : batch->records) {
      if (migrating) s.migrate(key, entry);
      BATON_TRY(s.restore_record(std::move(key), std::move(entry)));
    }
    total += batch->records.size();
    if (batch->section_end) BATON_TRY(s.restore_end());
    if (options.progress) options.progress(total, expected);
  }
  return total;
}

}  // namespace

namespace {
Result<RestoreResult> restore_here(int fd, Registry& registry, const RestoreOptions& options);
}  // namespace

Result<RestoreResult> restore_checkpoint(int fd, Registry& registry,
                                         const RestoreOptions& options) {
  if (options.nice < 0 || options.nice > 19) {
    return Error(ErrorKind::kInvalidArgument,
                 "RestoreOptions::nice is 0..19 (how much lower the restore's priority is than "
                 "the caller's), not " +
                     std::to_string(options.nice));
  }
  if (options.nice == 0) return restore_here(fd, registry, options);
  // On a thread of its own: a thread may lower its priority without privileges but not
  // raise it again, and the caller must keep its own. Threads the restore starts (its
  // decoder, the slot prefaulter) inherit the lowered priority. The caller waits, so the
  // sections are still touched by one thread at a time.
  //
  // A nicer restore is a slower one when the cores are busy, and a slow restore must not
  // pass for a hung one: progress is reported from the waiting caller, every 50 ms in
  // which the restore's threads used any CPU, with the records restored so far. Threads
  // that are blocked for good use none, so a hang still shows.
  std::optional<Result<RestoreResult>> out;
  std::string note;
  std::atomic<uint64_t> done_records{0}, total_records{0};
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  RestoreOptions inner = options;
  inner.progress = [&](uint64_t done, uint64_t total) {
    done_records.store(done, std::memory_order_relaxed);
    total_records.store(total, std::memory_order_relaxed);
  };
  std::optional<std::thread> restorer;
  try {
    restorer.emplace([&] {
      errno = 0;
      const int mine = ::getpriority(PRIO_PROCESS, 0);
      const int want = std::min(19, mine + options.nice);
      if (errno != 0 || ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), want) != 0) {
        note = std::string("restored at the caller's priority: setting nice ") +
               std::to_string(want) + " failed: " + std::strerror(errno);
      }
      auto r = restore_here(fd, registry, inner);
      std::lock_guard lock(mu);
      out.emplace(std::move(r));
      finished = true;
      cv.notify_one();
    });
  } catch (const std::system_error& e) {  // no thread to be had: restore here, unniced
    note = std::string("restored at the caller's priority: no thread for a nicer restore: ") +
           e.what();
    out.emplace(restore_here(fd, registry, options));
  }
  if (restorer) {
    // The restore's threads (the restorer, its decoder and prefaulters) are the process's
    // CPU less this waiting thread's own.
    const auto others_cpu_us = [] {
      return clock_us(CLOCK_PROCESS_CPUTIME_ID) - clock_us(CLOCK_THREAD_CPUTIME_ID);
    };
    int64_t last_cpu = others_cpu_us();
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return finished; })) {
      const int64_t cpu = others_cpu_us();
      if (cpu <= last_cpu || !options.progress) continue;
      last_cpu = cpu;
      lock.unlock();
      options.progress(done_records.load(std::memory_order_relaxed),
                       total_records.load(std::memory_order_relaxed));
      lock.lock();
    }
    lock.unlock();
    restorer->join();
    if (options.progress) options.progress(done_records.load(), total_records.load());
  }
  if (out->ok() && !note.empty()) out->value().notes.push_back(note);
  return std::move(*out);
}

namespace {
Result<RestoreResult> restore_here(int fd, Registry& registry, const RestoreOptions& options) {
  auto t0 = Clock::now();
  BATON_ASSIGN_OR_RETURN(std::shared_ptr<const ShmSegment> seg,
                         ShmSegment::map_readonly(fd, options.max_segment_bytes));
  const std::byte* base = seg->data();
  BATON_ASSIGN_OR_RETURN(format::Header h, validate_header(base, seg->size()));
  std::vector<format::SectionDesc> descs(h.section_count);
  if (h.section_count > 0) {
    std::memcpy(descs.data(), base + sizeof h, descs.size() * sizeof(format::SectionDesc));
  }
  RestoreResult out;
  out.start_lsn = h.start_lsn;
  out.segment_bytes = h.total_bytes;
  out.page_kind = static_cast<PageKind>(h.page_kind);
  // Validate every descriptor, and every schema version, before touching any section.
  uint64_t prev_end = format::kDataOffset;
  for (size_t i = 0; i < descs.size(); ++i) {
    auto& d = descs[i];
    if (std::memchr(d.name, '\0', sizeof d.name) == nullptr || d.name[0] == '\0') {
      return corrupt("checkpoint section " + std::to_string(i) + " has no valid name");
    }
    std::string name(d.name);
    if (d.offset % 8 != 0 || d.offset < prev_end || d.bytes > h.total_bytes ||
        d.offset > h.total_bytes - d.bytes) {
      return corrupt("checkpoint section '" + name + "' spans [" + std::to_string(d.offset) +
                     ", +" + std::to_string(d.bytes) + ") outside the data area [" +
                     std::to_string(prev_end) + ", " + std::to_string(h.total_bytes) + ")");
    }
    // A record is at least a 32-byte list element, so its count is bounded by the bytes;
    // without this a damaged count would size the restore's reservations.
    if (d.records > d.bytes / format::kMinRecordBytes || d.chunks > d.bytes / 16) {
      return corrupt("checkpoint section '" + name + "' claims " + std::to_string(d.records) +
                     " records in " + std::to_string(d.chunks) + " chunks, more than " +
                     std::to_string(d.bytes) + " bytes can hold");
    }
    prev_end = d.offset + d.bytes;
    for (size_t j = 0; j < i; ++j) {
      if (name == descs[j].name) return corrupt("checkpoint names section '" + name + "' twice");
    }
    Section* s = registry.find(name);
    if (s == nullptr) {
      return Error(ErrorKind::kVersion, "checkpoint has section '" + name +
                                            "' that this build does not register; restoring "
                                            "would drop it");
    }
    out.by_peer_id.push_back(s);
  }
  for (size_t i = 0; i < descs.size(); ++i) {
    BATON_TRY(out.by_peer_id[i]->set_peer_version(descs[i].schema_version));
  }
  try {
    BATON_ASSIGN_OR_RETURN(
        out.records, restore_sections(seg, options.borrow_strings, descs, out.by_peer_id, options));
    out.borrowed = options.borrow_strings;
  } catch (const std::bad_alloc&) {
    return Error(ErrorKind::kCapacity, "out of memory restoring the checkpoint (" +
                                           std::to_string(h.total_bytes) + " bytes)");
  } catch (const std::length_error& e) {  // a migration grew a string past CompactString's limit
    return Error(ErrorKind::kCapacity, std::string("restoring the checkpoint: ") + e.what());
  }
  for (Section* s : out.by_peer_id) {
    if (s->peer_version() != s->schema_version()) {
      out.notes.push_back("section '" + s->name() + "' migrated from schema version " +
                          std::to_string(s->peer_version()) + " to " +
                          std::to_string(s->schema_version()));
    }
  }
  for (Section* s : registry.sections()) {
    bool present = false;
    for (Section* p : out.by_peer_id) present |= (p == s);
    if (present) continue;
    BATON_TRY(s->set_peer_version(s->schema_version()));
    BATON_TRY(s->restore_begin(0, nullptr));
    BATON_TRY(s->restore_end());
    out.notes.push_back("section '" + s->name() + "' is not in the checkpoint; it starts empty");
  }
  out.elapsed_us = micros_since(t0);
  return out;
}
}  // namespace

// ---------------------------------------------------------------- replay

Result<void> DeltaReplayer::apply_frame(std::string_view bytes) {
  BATON_ASSIGN_OR_RETURN(FrameView f, decode_frame(bytes));
  if (f.first_lsn != next_lsn_) {
    return corrupt("delta frame starts at LSN " + std::to_string(f.first_lsn) + ", expected " +
                   std::to_string(next_lsn_) +
                   (f.first_lsn > next_lsn_ ? " (deltas lost)" : " (frame replayed twice)"));
  }
  BATON_TRY(for_each_delta(f, [&](const DeltaView& d) -> Result<void> {
    if (BATON_UNLIKELY(d.section == kProbeSection)) {
      if (on_probe_) on_probe_(d);
      ++next_lsn_;
      return ok();
    }
    if (d.section >= by_peer_id_.size()) {
      return corrupt("delta LSN " + std::to_string(d.lsn) + " names section id " +
                     std::to_string(d.section) + "; the checkpoint has " +
                     std::to_string(by_peer_id_.size()));
    }
    if (by_peer_id_[d.section] == nullptr) {
      return Error(ErrorKind::kCorrupt, "delta LSN " + std::to_string(d.lsn) + " names section " +
                                            std::to_string(d.section) +
                                            ", which no restored checkpoint holds");
    }
    BATON_TRY(by_peer_id_[d.section]->apply_delta(d));
    ++next_lsn_;
    ++applied_;
    return ok();
  }));
  return ok();
}

}  // namespace baton
