// Checkpoints: a fuzzy, sliced snapshot of every registered section, written as Cap'n
// Proto chunks into an unnamed-after-creation shared-memory segment, and its restore.
// docs/checkpoint-format.md describes the bytes; docs/design.md the consistency rule.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "baton/fd.h"
#include "baton/result.h"
#include "baton/section.h"

namespace baton {

/// Which pages back a checkpoint segment.
enum class PagePolicy {
  kAuto,   // huge pages when the system offers them, else 4 KiB pages
  kSmall,  // always 4 KiB pages
  kHuge,   // huge pages or an error saying why there are none
};

/// What a segment actually got.
enum class PageKind : uint32_t {
  kSmall = 0,            // tmpfs, 4 KiB pages
  kTransparentHuge = 1,  // tmpfs with shmem THP (sysfs shmem_enabled or a huge= mount)
  kHugetlb = 2,          // hugetlbfs pool pages (memfd_create MFD_HUGETLB)
};
std::string_view to_string(PageKind kind);

/// How much of the server's loop a checkpoint may take (docs/design.md, "Pacing"). A
/// checkpoint written on the server's own thread competes with its requests; pacing by
/// time keeps the share it takes, and so the latency it adds, the same whatever the
/// state's size or the cost of one record.
struct CheckpointPacing {
  /// The checkpoint's share of the server thread's busy time: each microsecond of CPU
  /// the server's own work takes between turns earns the checkpoint share / (1 - share)
  /// microseconds of writing. Time the thread spends idle (blocked, nothing to serve) is
  /// earned whole. In (0, 1); 0.3 aims at throughput near 70 % of steady.
  double share = 0.3;
  /// No slice starts once a turn() has written this long (one slice is always written,
  /// and the last may run past it); also the most credit idle time can bank.
  int64_t max_pause_us = 2000;
};

/// InvalidArgument naming the field unless 0 < share < 1 and max_pause_us >= 0.
Result<void> check_pacing(const CheckpointPacing& pacing);

/// The pacing rule alone, with the clocks passed in, so it is tested without a
/// checkpoint. The checkpoint holds a credit of microseconds: the server's time between
/// turns adds to it, writing spends it, and a slice that overruns it leaves a debt that
/// the server's next turns pay off before another slice is written.
class CheckpointPacer {
 public:
  explicit CheckpointPacer(CheckpointPacing pacing) : pacing_(pacing) {}
  /// The server's time counts from here: wall and thread CPU clocks, in microseconds.
  void start(int64_t wall_us, int64_t cpu_us);
  /// At a turn: credits the server's time since the last call, and returns how long the
  /// checkpoint may write now. Negative: not at all this turn (the server is owed time);
  /// 0 or more: at least one slice, and more until that many microseconds have passed.
  int64_t budget_us(int64_t wall_us, int64_t cpu_us);
  /// After the turn wrote for `spent_us`; the clocks as it ended.
  void spent(int64_t spent_us, int64_t wall_us, int64_t cpu_us);
  /// CPU the checkpoint used elsewhere (its prefault helper), charged like writing.
  void charge(int64_t us) { credit_us_ -= static_cast<double>(us); }
  /// How long before a turn may write again, if the server stays idle: 0 when it may now.
  int64_t wait_us() const;

 private:
  CheckpointPacing pacing_;
  double credit_us_ = 0;
  int64_t wall_us_ = 0, cpu_us_ = 0;
};

struct CheckpointOptions {
  PagePolicy pages = PagePolicy::kAuto;
  /// Payload bytes one step() writes at most (one record may exceed it): the granularity
  /// of turn()'s pacing. The default is about 0.1 ms of work on this project's machine.
  size_t slice_bytes = size_t{64} << 10;
  /// turn()'s share of the server's loop.
  CheckpointPacing pacing;
  /// Populate the segment's pages on a helper thread just ahead of the writer
  /// (MADV_POPULATE_WRITE), moving the page-fault cost off the server's thread.
  bool prefault = true;
  /// Prefix of the segment's short-lived name in /dev/shm.
  std::string name_prefix = "baton";
};

/// Figures of one checkpoint, for the upgrade timeline and the benchmarks.
struct CheckpointStats {
  uint64_t start_lsn = 0;       // L0: deltas after this LSN complete the snapshot
  uint64_t segment_bytes = 0;   // bytes used in the segment, header included
  uint64_t capacity_bytes = 0;  // bytes reserved (sparse) when the segment was created
  uint64_t payload_bytes = 0;   // key and value bytes written
  uint64_t records = 0;
  uint64_t chunks = 0;
  uint64_t slices = 0;
  int64_t elapsed_us = 0;      // begin() to finish(), including the server's own work between
  int64_t busy_us = 0;         // time spent inside step()
  int64_t max_slice_us = 0;    // the longest single step(): the pause a server sees
  int64_t p50_slice_us = 0;    // median step(), filled in by finish()
  int64_t p99_slice_us = 0;    // 99th percentile step(), filled in by finish()
  uint64_t turns = 0;          // turn() calls that wrote: the loop turns the checkpoint ran in
  uint64_t turns_skipped = 0;  // turn() calls that wrote nothing: the server was owed time
  uint64_t turns_waited = 0;   // turn() calls that wrote nothing: the helper's pages were not ready
  int64_t max_turn_us = 0;     // the longest turn(): the longest pause the server saw
  int64_t finish_stop_us = 0;  // finish(): stopping the page helper
  int64_t finish_shrink_us = 0;  // finish(): giving back the pages past the end
  PageKind page_kind = PageKind::kSmall;
  bool prefaulted = false;  // a helper thread populated pages ahead of the writer
};

class ShmSegment;

/// A sealed checkpoint: an fd for the successor, owned. Its memory is freed when the last
/// fd and mapping close; no name refers to it.
class Checkpoint {
 public:
  Checkpoint(std::unique_ptr<ShmSegment> segment, CheckpointStats stats);
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  /// The segment's fd, to pass to the successor (inherit or SCM_RIGHTS).
  int fd() const;
  const CheckpointStats& stats() const { return stats_; }

 private:
  std::unique_ptr<ShmSegment> segment_;
  CheckpointStats stats_;
};

/// Writes a checkpoint in bounded slices on the server's own thread:
///   auto w = CheckpointWriter::begin(registry, {});   // L0; the log starts capturing
///   while (!*w->turn()) serve_some_requests();         // paced by CheckpointPacing
///   auto checkpoint = w->finish();
/// Destroying an unfinished writer abandons it: the log stops capturing and the segment
/// is freed.
class CheckpointWriter {
 public:
  static Result<CheckpointWriter> begin(Registry& registry, const CheckpointOptions& options);
  CheckpointWriter(CheckpointWriter&&) noexcept;
  CheckpointWriter& operator=(CheckpointWriter&&) noexcept;
  ~CheckpointWriter();

  /// Writes one slice. Returns true once every section is written.
  Result<bool> step();
  /// Writes slices for this loop turn's share of time (CheckpointOptions::pacing): none
  /// while the server is owed time, else at least one. Call once per turn of the
  /// server's loop, on its thread. Returns true once every section is written.
  Result<bool> turn();
  /// Microseconds until turn() will write again if the server stays idle (0: now). A
  /// loop waits at most this long for its events.
  int64_t turn_wait_us() const;
  /// Seals the header. The log keeps capturing: deltas after L0 must follow.
  Result<Checkpoint> finish();
  const CheckpointStats& stats() const;

 private:
  struct Impl;
  explicit CheckpointWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct RestoreOptions {
  /// String values borrow their bytes from the read-only checkpoint mapping instead of
  /// being copied; the sections keep the mapping alive. Halves the memory a restore
  /// must fault in. Turn off to own every byte at once.
  bool borrow_strings = true;
  /// Refuse segments larger than this (a sanity bound, not an allocation).
  uint64_t max_segment_bytes = uint64_t{256} << 30;
  /// Called on the restoring thread at the start and after each decoded chunk (about
  /// every 256 KiB of state) with the records restored so far and the total: a sign of
  /// life for a restore that takes minutes. Empty: none.
  std::function<void(uint64_t records_done, uint64_t records_total)> progress;
  /// 0..19: the restore runs on threads this much nicer than the caller (which waits for
  /// them and keeps its own priority), so that a server on the same cores is served first.
  /// Then `progress` is called on the caller's thread instead, about every 50 ms in which
  /// the restore's threads used CPU: a starved restore still reports, a blocked one does
  /// not (other threads of the process count as the restore's; a successor has none yet).
  int nice = 0;
};

/// What a restore did. `by_peer_id` maps the incumbent's section ids (as used in delta
/// records) to this process's sections.
struct RestoreResult {
  uint64_t start_lsn = 0;
  uint64_t segment_bytes = 0;
  uint64_t records = 0;
  int64_t elapsed_us = 0;
  PageKind page_kind = PageKind::kSmall;
  bool borrowed = false;  // string values borrow from the mapping (kept by the sections)
  std::vector<Section*> by_peer_id;
  std::vector<std::string> notes;  // e.g. migrations applied, sections absent
};

/// Restores every registered section from the checkpoint segment `fd`, mapped read-only
/// and read in place. Every header field, offset and checksum is validated first; errors
/// name the section, offset and values. On error, sections may hold partial state.
Result<RestoreResult> restore_checkpoint(int fd, Registry& registry,
                                         const RestoreOptions& options = {});

/// Applies delta frames after a restore, strictly in LSN order from L0 + 1.
class DeltaReplayer {
 public:
  explicit DeltaReplayer(const RestoreResult& restored)
      : by_peer_id_(restored.by_peer_id), next_lsn_(restored.start_lsn + 1) {}
  /// Deltas whose section ids index `by_peer_id`, from `start_lsn` + 1 on (a standby's
  /// reverse stream, which follows no checkpoint).
  DeltaReplayer(std::vector<Section*> by_peer_id, uint64_t start_lsn)
      : by_peer_id_(std::move(by_peer_id)), next_lsn_(start_lsn + 1) {}

  /// Shadow probes (kProbeSection records) go to `fn`, in stream order, once the
  /// mutations before them are applied. Without one they are skipped.
  void on_probe(std::function<void(const DeltaView&)> fn) { on_probe_ = std::move(fn); }

  /// Validates and applies one frame. A gap, duplicate, bad checksum or divergent
  /// record is an error naming the LSN.
  Result<void> apply_frame(std::string_view frame);
  /// The LSN the next frame must start at.
  uint64_t next_lsn() const { return next_lsn_; }
  uint64_t applied() const { return applied_; }

 private:
  std::vector<Section*> by_peer_id_;
  std::function<void(const DeltaView&)> on_probe_;
  uint64_t next_lsn_;
  uint64_t applied_ = 0;
};

}  // namespace baton
