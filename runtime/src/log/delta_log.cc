// Delta records and frames. A record is [u16 section][u8 op][u8 argc][varint len, bytes]
// for the key and each argument; a frame is a 32-byte header and records. All
// little-endian; docs/design.md ("Delta frames") is the reference.
#include "baton/delta_log.h"

#include <array>
#include <bit>
#include <cstdio>
#include <cstring>

#include "baton/crc32c.h"

namespace baton {
namespace {

constexpr uint16_t kFrameVersion = 1;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <typename T>
void put_le(char* p, T v) {
  std::memcpy(p, &v, sizeof v);  // x86-64 and aarch64 are little-endian; see static_assert
}
template <typename T>
T get_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static_assert(std::endian::native == std::endian::little, "frames are little-endian");

// Reads a varint of at most 32 bits; false if truncated or too long.
bool get_varint(std::string_view& in, uint32_t& out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 35; shift += 7) {
    if (in.empty()) return false;
    auto b = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    v |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) {
      if (v > UINT32_MAX) return false;
      out = static_cast<uint32_t>(v);
      return true;
    }
  }
  return false;
}

uint32_t frame_checksum(const char* header, std::string_view payload) {
  uint32_t c = crc32c(0, header, 24);
  return crc32c(c, payload.data(), payload.size());
}

}  // namespace

uint64_t DeltaLog::begin_capture() {
  pending_.clear();
  pending_count_ = 0;
  pending_writes_ = 0;
  overflowed_ = false;
  capturing_ = true;
  pending_first_lsn_ = last_lsn_ + 1;
  return last_lsn_;
}

void DeltaLog::end_capture() {
  capturing_ = false;
  overflowed_ = false;
  pending_.clear();
  pending_.shrink_to_fit();
  pending_count_ = 0;
  pending_writes_ = 0;
}

void DeltaLog::append(uint16_t section, uint8_t op, std::string_view key,
                      std::initializer_list<std::string_view> args) {
  append(section, op, key, std::span<const std::string_view>(args.begin(), args.size()));
}

void DeltaLog::append(uint16_t section, uint8_t op, std::string_view key,
                      std::span<const std::string_view> args) {
  ++last_lsn_;
  if (overflowed_) return;
  if (pending_count_ == 0) pending_first_lsn_ = last_lsn_;
  char head[4];
  put_le<uint16_t>(head, section);
  head[2] = static_cast<char>(op);
  head[3] = static_cast<char>(args.size());
  pending_.append(head, 4);
  put_varint(pending_, key.size());
  pending_.append(key);
  for (std::string_view a : args) {
    put_varint(pending_, a.size());
    pending_.append(a);
  }
  ++pending_count_;
  if (section != kProbeSection) ++pending_writes_;
  if (pending_.size() > limit_bytes_) overflow();
}

void DeltaLog::overflow() {
  // The capture can no longer be complete; free the memory now and let the upgrade abort.
  overflowed_ = true;
  pending_.clear();
  pending_.shrink_to_fit();
  pending_count_ = 0;
  pending_writes_ = 0;
}

std::string DeltaLog::take_frame() {
  if (pending_count_ == 0 || overflowed_) return {};
  std::string frame(kFrameHeaderSize, '\0');
  char* h = frame.data();
  put_le<uint32_t>(h + 0, kFrameMagic);
  put_le<uint16_t>(h + 4, kFrameVersion);
  put_le<uint16_t>(h + 6, 0);
  put_le<uint32_t>(h + 8, static_cast<uint32_t>(pending_.size()));
  put_le<uint32_t>(h + 12, static_cast<uint32_t>(pending_count_));
  put_le<uint64_t>(h + 16, pending_first_lsn_);
  put_le<uint32_t>(h + 24, frame_checksum(h, pending_));
  put_le<uint32_t>(h + 28, 0);
  frame += pending_;
  pending_.clear();
  pending_count_ = 0;
  pending_writes_ = 0;
  pending_first_lsn_ = last_lsn_ + 1;
  return frame;
}

Result<void> DeltaLog::append_frame(std::string_view frame) {
  BATON_ASSIGN_OR_RETURN(FrameView f, decode_frame(frame));
  uint64_t writes = 0;
  BATON_TRY(for_each_delta(f, [&](const DeltaView& d) -> Result<void> {
    if (d.section != kProbeSection) ++writes;
    return ok();
  }));
  last_lsn_ += f.count;
  if (overflowed_) return ok();
  if (pending_count_ == 0) pending_first_lsn_ = last_lsn_ - f.count + 1;
  pending_.append(f.payload);  // records carry no LSN: theirs is their place in the frame
  pending_count_ += f.count;
  pending_writes_ += writes;
  if (pending_.size() > limit_bytes_) overflow();
  return ok();
}

Result<size_t> frame_size(std::string_view bytes, size_t max_frame_bytes) {
  if (bytes.size() < 12) return size_t{0};
  auto magic = get_le<uint32_t>(bytes.data());
  if (magic != kFrameMagic) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "delta frame has magic 0x%08x, expected 0x%08x", magic,
                  kFrameMagic);
    return Error(ErrorKind::kCorrupt,
                 std::string(buf) + " (stream out of sync or not a Baton peer)");
  }
  auto payload = get_le<uint32_t>(bytes.data() + 8);
  if (kFrameHeaderSize + size_t{payload} > max_frame_bytes) {
    return Error(ErrorKind::kCapacity, "delta frame of " + std::to_string(payload) +
                                           " payload bytes exceeds the limit of " +
                                           std::to_string(max_frame_bytes));
  }
  return kFrameHeaderSize + payload;
}

Result<FrameView> decode_frame(std::string_view bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return Error(ErrorKind::kCorrupt, "delta frame truncated: " + std::to_string(bytes.size()) +
                                          " bytes, header needs " +
                                          std::to_string(kFrameHeaderSize));
  }
  const char* h = bytes.data();
  if (get_le<uint32_t>(h) != kFrameMagic) {
    return Error(ErrorKind::kCorrupt, "delta frame has a foreign magic number");
  }
  if (auto v = get_le<uint16_t>(h + 4); v != kFrameVersion) {
    return Error(ErrorKind::kVersion, "delta frame version " + std::to_string(v) +
                                          " is not the supported version " +
                                          std::to_string(kFrameVersion));
  }
  if (get_le<uint16_t>(h + 6) != 0 || get_le<uint32_t>(h + 28) != 0) {
    return Error(ErrorKind::kCorrupt,
                 "delta frame sets flags or reserved bytes this version "
                 "does not define");
  }
  FrameView f;
  auto payload_len = get_le<uint32_t>(h + 8);
  f.count = get_le<uint32_t>(h + 12);
  f.first_lsn = get_le<uint64_t>(h + 16);
  if (bytes.size() != kFrameHeaderSize + payload_len) {
    return Error(ErrorKind::kCorrupt, "delta frame length mismatch: header says " +
                                          std::to_string(payload_len) + " payload bytes, got " +
                                          std::to_string(bytes.size() - kFrameHeaderSize));
  }
  f.payload = bytes.substr(kFrameHeaderSize);
  uint32_t want = get_le<uint32_t>(h + 24);
  uint32_t got = frame_checksum(h, f.payload);
  if (want != got) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "expected 0x%08x, got 0x%08x", want, got);
    return Error(ErrorKind::kCorrupt, "delta frame for LSN " + std::to_string(f.first_lsn) +
                                          " checksum mismatch (" + buf + ")");
  }
  if (f.count == 0 || f.first_lsn == 0) {
    return Error(ErrorKind::kCorrupt, "delta frame carries no records or LSN 0");
  }
  return f;
}

Result<void> for_each_delta(const FrameView& frame,
                            const std::function<Result<void>(const DeltaView&)>& fn) {
  std::string_view in = frame.payload;
  std::array<std::string_view, kMaxDeltaArgs> args;
  auto corrupt = [&](uint64_t lsn, const char* what) {
    return Error(ErrorKind::kCorrupt, "delta record LSN " + std::to_string(lsn) + ": " + what);
  };
  for (uint32_t i = 0; i < frame.count; ++i) {
    DeltaView d;
    d.lsn = frame.first_lsn + i;
    if (in.size() < 4) return corrupt(d.lsn, "truncated record header");
    d.section = get_le<uint16_t>(in.data());
    d.op = static_cast<uint8_t>(in[2]);
    auto argc = static_cast<uint8_t>(in[3]);
    in.remove_prefix(4);
    uint32_t len;
    if (!get_varint(in, len) || len > in.size()) return corrupt(d.lsn, "bad key length");
    d.key = in.substr(0, len);
    in.remove_prefix(len);
    for (uint8_t a = 0; a < argc; ++a) {
      if (!get_varint(in, len) || len > in.size()) return corrupt(d.lsn, "bad argument length");
      args[a] = in.substr(0, len);
      in.remove_prefix(len);
    }
    d.args = std::span<const std::string_view>(args.data(), argc);
    BATON_TRY(fn(d));
  }
  if (!in.empty()) return corrupt(frame.last_lsn(), "trailing bytes after the last record");
  return ok();
}

}  // namespace baton
