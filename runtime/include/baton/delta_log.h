// DeltaLog: records the mutations made while an upgrade is capturing, each with an LSN,
// and batches them into checksummed frames. Outside an upgrade, recording is one branch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "baton/result.h"

namespace baton {

/// One decoded mutation, as replayed by a successor. Views point into the frame.
struct DeltaView {
  uint64_t lsn = 0;
  uint16_t section = 0;  // the incumbent's section id (its index in the checkpoint)
  uint8_t op = 0;
  std::string_view key;
  std::span<const std::string_view> args;
};

/// Frame layout constants; see docs/design.md ("Delta frames").
inline constexpr uint32_t kFrameMagic = 0x544c4442;  // "BDLT" little-endian
inline constexpr size_t kFrameHeaderSize = 32;
inline constexpr size_t kMaxDeltaArgs = 255;
/// A frame's payload length is a u32; the log never lets pending bytes reach it.
inline constexpr size_t kMaxFramePayload = (size_t{1} << 32) - (size_t{1} << 20);
/// The section id of a shadow probe record (docs/protocol.md, "Shadow verification"): a
/// read the sender served, mirrored at its place in the stream. Its key is the server's
/// encoding of the request, its one argument the reply the sender gave. It takes an LSN
/// like a mutation but changes nothing.
inline constexpr uint16_t kProbeSection = 0xffff;

/// Mutation log of one process. Sections call append() only while capturing().
class DeltaLog {
 public:
  /// `limit_bytes` bounds the pending (not yet framed) bytes; past it the log overflows.
  /// It is clamped to kMaxFramePayload, the most one frame can describe.
  explicit DeltaLog(size_t limit_bytes = size_t{256} << 20)
      : limit_bytes_(std::min(limit_bytes, kMaxFramePayload)) {}

  /// True while an upgrade captures deltas. This is the only cost of an idle log.
  bool capturing() const { return capturing_; }

  /// Starts capturing and returns L0: every mutation after this gets an LSN > L0.
  uint64_t begin_capture();
  /// Stops capturing and drops whatever is pending.
  void end_capture();

  /// Records one mutation of section `section`: `op`, its key and arguments.
  void append(uint16_t section, uint8_t op, std::string_view key,
              std::initializer_list<std::string_view> args);
  void append(uint16_t section, uint8_t op, std::string_view key,
              std::span<const std::string_view> args);

  /// Records a shadow probe (kProbeSection): `request` was answered with `reply` here.
  void append_probe(std::string_view request, std::string_view reply) {
    append(kProbeSection, 0, request, {reply});
  }

  uint64_t last_lsn() const { return last_lsn_; }
  size_t pending_bytes() const { return pending_.size(); }
  uint64_t pending_count() const { return pending_count_; }
  /// Pending records that are mutations, not probes: what a durable reply waits for.
  uint64_t pending_writes() const { return pending_writes_; }
  /// True once pending bytes passed the limit; the capture is then incomplete and the
  /// upgrade must abort. Cleared by end_capture().
  bool overflowed() const { return overflowed_; }
  size_t limit_bytes() const { return limit_bytes_; }

  /// Moves every pending record into one frame and returns it; empty when none pending.
  std::string take_frame();

  /// Appends the records of `frame`, another log's (a worker thread's, docs/design.md
  /// "Worker threads"), as this log's next LSNs, in their order: one stream carries every
  /// thread's deltas. kCorrupt for a frame that does not validate; the log may overflow.
  Result<void> append_frame(std::string_view frame);

 private:
  void overflow();

  bool capturing_ = false;
  bool overflowed_ = false;
  size_t limit_bytes_;
  uint64_t last_lsn_ = 0;
  uint64_t pending_first_lsn_ = 0;
  uint64_t pending_count_ = 0;
  uint64_t pending_writes_ = 0;
  std::string pending_;
};

/// A validated frame: the LSN range it carries and its records, still encoded.
struct FrameView {
  uint64_t first_lsn = 0;
  uint32_t count = 0;
  std::string_view payload;
  uint64_t last_lsn() const { return first_lsn + count - 1; }
};

/// Checks a frame's magic, length and checksum. `bytes` must hold exactly one frame.
Result<FrameView> decode_frame(std::string_view bytes);

/// Returns the total size of the frame starting at `bytes`, or 0 if more bytes are needed
/// to know. Errors for a header that cannot start a frame.
Result<size_t> frame_size(std::string_view bytes, size_t max_frame_bytes);

/// Calls `fn` for each record of a validated frame, in LSN order. Stops at fn's first error.
Result<void> for_each_delta(const FrameView& frame,
                            const std::function<Result<void>(const DeltaView&)>& fn);

}  // namespace baton
