// Worker threads (docs/design.md, "Worker threads"): each owns a registry and a delta log;
// the main thread asks, the worker does its part on its own thread inside
// Worker::service(), and they meet only here, under one mutex per worker, off the hot path.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "baton/checkpoint.h"
#include "baton/fd.h"
#include "baton/runtime.h"
#include "handoff/machines.h"

namespace baton {

class Worker::Impl {
 public:
  Impl(unsigned index, size_t delta_limit_bytes, CheckpointPacing pacing);

  unsigned index() const { return index_; }
  Registry& registry() { return registry_; }
  int poll_fd() const { return wake_.get(); }
  int service_interval_ms() const;

  // --- the worker's own thread
  bool service(WorkerHooks& hooks);

  // --- the main thread
  /// Starts an upgrade attempt: this worker begins its checkpoint (L0 of its log, its
  /// sections' snapshots) at its next service() and captures from then on.
  void begin(uint64_t attempt);
  /// Its checkpoint: nullopt while it runs; an error; or the sealed segment (once).
  std::optional<Result<Checkpoint>> take_checkpoint();
  /// Moves its captured frames, in order, into `log` (the main thread's, which streams).
  Result<void> drain_into(DeltaLog& log);
  /// Asks for its early sockets (WorkerHooks::early()), then waits for them until
  /// `until_us`: none if it does not answer by then (they then move at the freeze). Their
  /// fds are duplicates the caller owns: the worker serves on meanwhile.
  void ask_early();
  std::vector<handoff::HandoffSocket> take_early(int64_t until_us);
  /// Asks it to freeze; true once it has (its sockets and freeze instant then available).
  void ask_freeze();
  bool wait_frozen(int64_t until_us);
  std::vector<handoff::HandoffSocket> frozen_sockets();
  int64_t frozen_at_us() const;
  /// The outcome after a freeze: committed (service() returns false) or serve on.
  void release(bool committed);
  /// Ends the attempt: the worker drops its checkpoint and stops capturing.
  void end();

 private:
  enum class Ask { kNone, kCheckpoint, kFreeze, kEnd };
  void wake();

  const unsigned index_;
  Registry registry_;
  const CheckpointPacing pacing_;
  UniqueFd wake_;  // an eventfd
  // The owner's checkpoint may write a slice now: published after each service() for
  // service_interval_ms(), which any thread may call.
  std::atomic<bool> may_write_{false};

  // Owner thread only.
  std::optional<CheckpointWriter> writer_;
  uint64_t my_attempt_ = 0;
  bool checkpointed_ = false;

  // Set by the main thread before it asks anything, cleared by this worker once an attempt
  // has ended: between upgrades service() costs this one load.
  std::atomic<bool> active_{false};

  // Shared, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Ask ask_ = Ask::kNone;
  uint64_t attempt_ = 0;
  bool upgrading_ = false;
  std::optional<Result<Checkpoint>> checkpoint_;
  std::deque<std::string> frames_;
  std::optional<Error> capture_error_;
  bool frozen_ = false;
  int64_t frozen_at_us_ = 0;
  std::vector<FrozenSocket> sockets_;
  bool early_asked_ = false;
  bool early_ready_ = false;
  std::vector<FrozenSocket> early_;
  enum class Verdict { kNone, kCommitted, kResume } verdict_ = Verdict::kNone;
};

/// The main thread's restore and every worker's, as one: the delta stream names a
/// worker's sections by the ids its registry gave them, kIdsPerWorker apart.
RestoreResult merge_restores(RestoreResult main, const std::vector<RestoreResult>& workers);

/// Every worker of this process, as the main thread drives them.
class Workers {
 public:
  Workers(unsigned count, size_t delta_limit_bytes, CheckpointPacing pacing);
  unsigned count() const { return static_cast<unsigned>(workers_.size()); }
  Worker& at(unsigned index) { return *workers_.at(index - 1); }  // 1-based
  Worker::Impl& impl(unsigned index) { return at(index).impl(); }
  /// Every section of every worker, in worker order.
  std::vector<Section*> sections();

  void begin();
  /// True once every worker's checkpoint is sealed (then in segments()); an error names
  /// the worker.
  Result<bool> checkpoints_done();
  /// The sealed segments' fds, in worker order (worker i's is the i-th after the main
  /// thread's); adds their sizes to `*bytes`.
  std::vector<int> segment_fds(uint64_t* bytes) const;
  Result<void> drain_into(DeltaLog& log);
  /// Freezes every worker: their sockets, tagged with their index, and when each froze.
  /// kTimeout naming the first that did not within `until_us`.
  Result<std::vector<handoff::HandoffSocket>> freeze(int64_t until_us,
                                                     std::vector<int64_t>* frozen_at_us);
  void release(bool committed);
  void end();
  /// Every worker's early sockets, tagged with its index, as duplicates the caller closes;
  /// waits at most until `until_us`.
  std::vector<handoff::HandoffSocket> early_sockets(int64_t until_us);

 private:
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::optional<Checkpoint>> segments_;  // by worker, index - 1
  uint64_t attempt_ = 0;
  bool frozen_ = false;
};

}  // namespace baton
