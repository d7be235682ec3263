// CheckpointWriter, restore_checkpoint and DeltaReplayer.
#include "baton/checkpoint.h"

#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstring>

#include "baton/crc32c.h"
#include "chunk_codec.h"
#include "format.h"
#include "segment.h"

namespace baton {
namespace {

using Clock = std::chrono::steady_clock;

int64_t micros_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

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
  std::vector<format::SectionDesc> descs;
  SnapshotSink sink;
  CheckpointStats stats;
  Clock::time_point started;
  size_t pos = format::kDataOffset;
  size_t current = 0;  // index of the section being written
  uint32_t section_crc = 0;
  bool failed = false;
  bool finished = false;

  ~Impl() {
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
  auto started = Clock::now();
  uint64_t estimate = 0;
  for (Section* s : registry.sections()) estimate += s->estimate_bytes();
  BATON_ASSIGN_OR_RETURN(
      auto segment, ShmSegment::create(capacity_for(estimate), options.pages, options.name_prefix));
  auto impl = std::make_unique<Impl>();
  impl->registry = &registry;
  impl->options = options;
  impl->started = started;
  impl->stats.capacity_bytes = segment->size();
  impl->stats.page_kind = segment->page_kind();
  impl->segment = std::move(segment);
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
  return CheckpointWriter(std::move(impl));
}

Result<bool> CheckpointWriter::step() {
  Impl& w = *impl_;
  if (w.failed) return Error(ErrorKind::kState, "checkpoint already failed; start a new one");
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
    auto encoded = serialization::encode_chunk(records, at + sizeof(format::ChunkHeader),
                                               room - sizeof(format::ChunkHeader));
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
  return w.current >= sections.size();
}

Result<Checkpoint> CheckpointWriter::finish() {
  Impl& w = *impl_;
  if (w.failed) return Error(ErrorKind::kState, "checkpoint already failed; start a new one");
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
  BATON_TRY(w.segment->shrink(w.pos));
  w.stats.segment_bytes = w.pos;
  w.stats.elapsed_us = micros_since(w.started);
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

Result<void> restore_section(const std::byte* base, const format::Header& h,
                             const format::SectionDesc& d, Section& s, uint64_t* records_out) {
  const std::string name = s.name();
  BATON_TRY(s.set_peer_version(d.schema_version));
  BATON_TRY(s.restore_begin(d.records));
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
    auto n = serialization::decode_chunk(std::span<const std::byte>(msg, bytes),
                                         [&](std::string_view key, Entry&& e) {
                                           s.migrate(key, e);
                                           return s.restore_record(key, std::move(e));
                                         });
    if (!n.ok()) return std::move(n).error().with_context(where(pos));
    if (n.value() != ch.records) {
      return corrupt(where(pos) + ": holds " + std::to_string(n.value()) +
                     " records, header says " + std::to_string(ch.records));
    }
    records += n.value();
    ++chunks;
    pos += sizeof ch + bytes;
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
  BATON_TRY(s.restore_end());
  *records_out += records;
  return ok();
}

}  // namespace

Result<RestoreResult> restore_checkpoint(int fd, Registry& registry,
                                         const RestoreOptions& options) {
  auto t0 = Clock::now();
  BATON_ASSIGN_OR_RETURN(auto seg, ShmSegment::map_readonly(fd, options.max_segment_bytes));
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
  // Validate every descriptor before touching any section.
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
    Section& s = *out.by_peer_id[i];
    try {
      BATON_TRY(restore_section(base, h, descs[i], s, &out.records));
    } catch (const std::bad_alloc&) {
      return Error(ErrorKind::kCapacity, "out of memory restoring checkpoint section '" + s.name() +
                                             "' (" + std::to_string(descs[i].bytes) + " bytes)");
    }
    if (s.peer_version() != s.schema_version()) {
      out.notes.push_back("section '" + s.name() + "' migrated from schema version " +
                          std::to_string(s.peer_version()) + " to " +
                          std::to_string(s.schema_version()));
    }
  }
  for (Section* s : registry.sections()) {
    bool present = false;
    for (Section* p : out.by_peer_id) present |= (p == s);
    if (present) continue;
    BATON_TRY(s->set_peer_version(s->schema_version()));
    BATON_TRY(s->restore_begin(0));
    BATON_TRY(s->restore_end());
    out.notes.push_back("section '" + s->name() + "' is not in the checkpoint; it starts empty");
  }
  out.elapsed_us = micros_since(t0);
  return out;
}

// ---------------------------------------------------------------- replay

Result<void> DeltaReplayer::apply_frame(std::string_view bytes) {
  BATON_ASSIGN_OR_RETURN(FrameView f, decode_frame(bytes));
  if (f.first_lsn != next_lsn_) {
    return corrupt("delta frame starts at LSN " + std::to_string(f.first_lsn) + ", expected " +
                   std::to_string(next_lsn_) +
                   (f.first_lsn > next_lsn_ ? " (deltas lost)" : " (frame replayed twice)"));
  }
  BATON_TRY(for_each_delta(f, [&](const DeltaView& d) -> Result<void> {
    if (d.section >= by_peer_id_.size()) {
      return corrupt("delta LSN " + std::to_string(d.lsn) + " names section id " +
                     std::to_string(d.section) + "; the checkpoint has " +
                     std::to_string(by_peer_id_.size()));
    }
    BATON_TRY(by_peer_id_[d.section]->apply_delta(d));
    ++next_lsn_;
    ++applied_;
    return ok();
  }));
  return ok();
}

}  // namespace baton
