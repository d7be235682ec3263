// Worker threads: each checkpoints and captures on its own thread; the main thread
// collects their segments and frames, and freezes them all at once.
#include "handoff/workers.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "handoff/host.h"

namespace baton {

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() = default;
unsigned Worker::index() const { return impl_->index(); }
Registry& Worker::registry() { return impl_->registry(); }
int Worker::poll_fd() const { return impl_->poll_fd(); }
int Worker::service_interval_ms() const { return impl_->service_interval_ms(); }
bool Worker::service(WorkerHooks& hooks) { return impl_->service(hooks); }

Worker::Impl::Impl(unsigned index, size_t delta_limit_bytes, CheckpointPacing pacing)
    : index_(index),
      registry_(delta_limit_bytes, static_cast<uint16_t>(index * Registry::kIdsPerWorker)),
      pacing_(pacing),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

int Worker::Impl::service_interval_ms() const {
  std::lock_guard lock(mu_);
  if (!upgrading_) return -1;
  // A checkpoint still to write takes its share of the turns (CheckpointPacing): the loop
  // must not sleep while it may write.
  return may_write_.load(std::memory_order_relaxed) ? 0 : 1;
}

void Worker::Impl::wake() {
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

bool Worker::Impl::service(WorkerHooks& hooks) {
  if (!active_.load(std::memory_order_acquire)) return true;  // no upgrade: nothing to do
  uint64_t drained;
  (void)!::read(wake_.get(), &drained, sizeof drained);
  std::unique_lock lock(mu_);
  if (attempt_ != my_attempt_ || ask_ == Ask::kEnd) {
    // A new attempt, or the end of one: whatever this thread still holds of the last goes.
    lock.unlock();
    writer_.reset();  // abandons an unfinished checkpoint
    may_write_.store(false, std::memory_order_relaxed);
    registry_.log().end_capture();
    checkpointed_ = false;
    lock.lock();
    my_attempt_ = attempt_;
    if (ask_ == Ask::kEnd) {
      ask_ = Ask::kNone;
      upgrading_ = false;
      active_.store(false, std::memory_order_release);  // under mu_: begin() sets it under mu_
    }
  }
  const Ask ask = ask_;
  lock.unlock();

  if (ask == Ask::kCheckpoint || ask == Ask::kFreeze) {
    if (!writer_ && !checkpointed_) {
      // L0 of this thread's log and its sections' snapshots, in one turn of this thread.
      CheckpointOptions options;
      options.pacing = pacing_;
      auto w = CheckpointWriter::begin(registry_, options);
      if (!w.ok()) {
        std::lock_guard g(mu_);
        checkpoint_.emplace(Error(w.error().kind(),
                                  "worker " + std::to_string(index_) + ": " + w.error().message()));
        checkpointed_ = true;
      } else {
        writer_.emplace(std::move(w).value());
      }
    }
    if (writer_) {
      auto done = writer_->turn();
      if (!done.ok() || *done) {
        std::optional<Result<Checkpoint>> result;
        if (!done.ok()) {
          result.emplace(Error(done.error().kind(),
                               "worker " + std::to_string(index_) + ": " + done.error().message()));
        } else {
          auto cp = writer_->finish();
          if (cp.ok()) {
            result.emplace(std::move(cp).value());
          } else {
            result.emplace(Error(cp.error().kind(),
                                 "worker " + std::to_string(index_) + ": " + cp.error().message()));
          }
        }
        writer_.reset();
        checkpointed_ = true;
        std::lock_guard g(mu_);
        checkpoint_ = std::move(result);
      }
    }
    // service_interval_ms() may be asked from any thread: it reads only this.
    may_write_.store(writer_.has_value() && writer_->turn_wait_us() == 0,
                     std::memory_order_relaxed);
    // This thread's deltas since the last turn, for the main thread to stream.
    DeltaLog& log = registry_.log();
    if (log.capturing()) {
      std::string frame = log.take_frame();
      std::lock_guard g(mu_);
      if (log.overflowed() && !capture_error_) {
        capture_error_ =
            Error(ErrorKind::kCapacity, "worker " + std::to_string(index_) +
                                            "'s delta log passed its limit of " +
                                            std::to_string(log.limit_bytes()) + " bytes");
      }
      if (!frame.empty()) frames_.push_back(std::move(frame));
    }
  }
  lock.lock();
  const bool early_wanted = early_asked_ && !early_ready_;
  lock.unlock();
  if (early_wanted) {
    // Duplicates: this thread serves on and may close a socket (its number then reused)
    // before the main thread has sent it; the main thread owns and closes the copies.
    std::vector<FrozenSocket> early;
    for (FrozenSocket& s : hooks.early()) {
      const int copy = ::fcntl(s.fd, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) continue;  // it moves at the freeze instead
      s.fd = copy;
      early.push_back(std::move(s));
    }
    std::lock_guard g(mu_);
    if (early_asked_) {
      early_ = std::move(early);
      early_ready_ = true;
      cv_.notify_all();
    } else {
      for (FrozenSocket& s : early) ::close(s.fd);  // the main thread stopped waiting
    }
  }
  if (ask != Ask::kFreeze) return true;

  // The freeze: this thread's sockets, then a wait for the outcome. The main thread
  // decides it within its freeze deadline; the wait here is only bounded in case it
  // never does (a bug): then serving on is the choice that loses nothing.
  std::vector<FrozenSocket> sockets = hooks.freeze();
  std::string last = registry_.log().capturing() ? registry_.log().take_frame() : std::string();
  lock.lock();
  if (!last.empty()) frames_.push_back(std::move(last));
  sockets_ = std::move(sockets);
  frozen_ = true;
  frozen_at_us_ = monotonic_us();
  cv_.notify_all();
  const bool decided =
      cv_.wait_for(lock, std::chrono::seconds(60), [&] { return verdict_ != Verdict::kNone; });
  const Verdict v = decided ? verdict_ : Verdict::kResume;
  verdict_ = Verdict::kNone;
  frozen_ = false;
  sockets_.clear();
  if (ask_ == Ask::kFreeze) ask_ = Ask::kCheckpoint;  // captured on: the attempt may go on
  lock.unlock();
  if (v == Verdict::kCommitted) return false;
  hooks.unfreeze();
  return true;
}

void Worker::Impl::begin(uint64_t attempt) {
  {
    std::lock_guard lock(mu_);
    attempt_ = attempt;
    ask_ = Ask::kCheckpoint;
    upgrading_ = true;
    active_.store(true, std::memory_order_release);
    checkpoint_.reset();
    frames_.clear();
    capture_error_.reset();
  }
  wake();
}

std::optional<Result<Checkpoint>> Worker::Impl::take_checkpoint() {
  std::lock_guard lock(mu_);
  if (!checkpoint_) return std::nullopt;
  std::optional<Result<Checkpoint>> out = std::move(checkpoint_);
  checkpoint_.reset();
  return out;
}

Result<void> Worker::Impl::drain_into(DeltaLog& log) {
  std::deque<std::string> frames;
  {
    std::lock_guard lock(mu_);
    if (capture_error_) return *capture_error_;
    frames.swap(frames_);
  }
  for (const std::string& f : frames) BATON_TRY(log.append_frame(f));
  return ok();
}

void Worker::Impl::ask_freeze() {
  {
    std::lock_guard lock(mu_);
    ask_ = Ask::kFreeze;
    verdict_ = Verdict::kNone;
    active_.store(true, std::memory_order_release);
  }
  wake();
}

bool Worker::Impl::wait_frozen(int64_t until_us) {
  std::unique_lock lock(mu_);
  const int64_t left = until_us - monotonic_us();
  return cv_.wait_for(lock, std::chrono::microseconds(std::max<int64_t>(left, 0)),
                      [&] { return frozen_; });
}

namespace {

// The inode, never the server's own ids: each thread numbers its sockets from 1, and an
// id is what matches a socket sent early with itself at the freeze.
std::vector<handoff::HandoffSocket> tagged(const std::vector<FrozenSocket>& sockets,
                                           unsigned worker, bool with_state) {
  std::vector<handoff::HandoffSocket> out;
  for (const FrozenSocket& s : sockets) {
    struct stat st {};
    const uint64_t id = ::fstat(s.fd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
    out.push_back({s.fd, s.tag, with_state ? s.state : std::string(), id, false,
                   static_cast<uint16_t>(worker)});
  }
  return out;
}

}  // namespace

std::vector<handoff::HandoffSocket> Worker::Impl::frozen_sockets() {
  std::lock_guard lock(mu_);
  return tagged(sockets_, index_, true);
}

void Worker::Impl::ask_early() {
  {
    std::lock_guard lock(mu_);
    early_asked_ = true;
    early_ready_ = false;
    early_.clear();
    active_.store(true, std::memory_order_release);
  }
  wake();
}

std::vector<handoff::HandoffSocket> Worker::Impl::take_early(int64_t until_us) {
  std::unique_lock lock(mu_);
  const int64_t left = until_us - monotonic_us();
  const bool ready = cv_.wait_for(lock, std::chrono::microseconds(std::max<int64_t>(left, 0)),
                                  [&] { return early_ready_; });
  early_asked_ = false;
  if (!ready) return {};
  auto out = tagged(early_, index_, false);  // duplicates: the caller closes them
  early_.clear();
  return out;
}

int64_t Worker::Impl::frozen_at_us() const {
  std::lock_guard lock(mu_);
  return frozen_at_us_;
}

void Worker::Impl::release(bool committed) {
  std::lock_guard lock(mu_);
  if (ask_ != Ask::kFreeze && !frozen_) return;
  verdict_ = committed ? Verdict::kCommitted : Verdict::kResume;
  if (!frozen_) ask_ = Ask::kCheckpoint;  // asked but not yet frozen: it need not
  cv_.notify_all();
}

void Worker::Impl::end() {
  {
    std::lock_guard lock(mu_);
    ask_ = Ask::kEnd;
    active_.store(true, std::memory_order_release);  // so that the worker ends its capture
    checkpoint_.reset();
    frames_.clear();
    capture_error_.reset();
  }
  wake();
}

RestoreResult merge_restores(RestoreResult main, const std::vector<RestoreResult>& workers) {
  for (unsigned i = 0; i < workers.size(); ++i) {
    const size_t base = size_t{i + 1} * Registry::kIdsPerWorker;
    if (main.by_peer_id.size() < base + Registry::kIdsPerWorker) {
      main.by_peer_id.resize(base + Registry::kIdsPerWorker, nullptr);
    }
    for (size_t j = 0; j < workers[i].by_peer_id.size(); ++j) {
      main.by_peer_id[base + j] = workers[i].by_peer_id[j];
    }
    main.records += workers[i].records;
  }
  return main;
}

// ---------------------------------------------------------------- Workers

Workers::Workers(unsigned count, size_t delta_limit_bytes, CheckpointPacing pacing) {
  for (unsigned i = 1; i <= count; ++i) {
    workers_.push_back(
        std::make_unique<Worker>(std::make_unique<Worker::Impl>(i, delta_limit_bytes, pacing)));
  }
}

std::vector<Section*> Workers::sections() {
  std::vector<Section*> out;
  for (auto& w : workers_) {
    for (Section* s : w->registry().sections()) out.push_back(s);
  }
  return out;
}

void Workers::begin() {
  ++attempt_;
  segments_.clear();
  segments_.resize(workers_.size());
  for (auto& w : workers_) w->impl().begin(attempt_);
}

Result<bool> Workers::checkpoints_done() {
  bool all = true;
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (segments_[i]) continue;
    auto cp = workers_[i]->impl().take_checkpoint();
    if (!cp) {
      all = false;
      continue;
    }
    if (!cp->ok()) return std::move(*cp).error();
    segments_[i].emplace(std::move(*cp).value());
  }
  return all;
}

std::vector<int> Workers::segment_fds(uint64_t* bytes) const {
  std::vector<int> out;
  for (const auto& s : segments_) {
    if (!s) continue;
    out.push_back(s->fd());
    if (bytes != nullptr) *bytes += s->stats().segment_bytes;
  }
  return out;
}

Result<void> Workers::drain_into(DeltaLog& log) {
  for (auto& w : workers_) BATON_TRY(w->impl().drain_into(log));
  return ok();
}

Result<std::vector<handoff::HandoffSocket>> Workers::freeze(int64_t until_us,
                                                            std::vector<int64_t>* frozen_at_us) {
  frozen_ = true;
  for (auto& w : workers_) w->impl().ask_freeze();
  std::vector<handoff::HandoffSocket> out;
  for (auto& w : workers_) {
    if (!w->impl().wait_frozen(until_us)) {
      return Error(ErrorKind::kTimeout, "worker " + std::to_string(w->index()) +
                                            " did not freeze within the freeze deadline (is "
                                            "its thread calling Worker::service()?)");
    }
    auto sockets = w->impl().frozen_sockets();
    out.insert(out.end(), sockets.begin(), sockets.end());
    if (frozen_at_us != nullptr) frozen_at_us->push_back(w->impl().frozen_at_us());
  }
  return out;
}

std::vector<handoff::HandoffSocket> Workers::early_sockets(int64_t until_us) {
  for (auto& w : workers_) w->impl().ask_early();  // all at once: they answer in parallel
  std::vector<handoff::HandoffSocket> out;
  for (auto& w : workers_) {
    auto theirs = w->impl().take_early(until_us);
    out.insert(out.end(), theirs.begin(), theirs.end());
  }
  return out;
}

void Workers::release(bool committed) {
  if (!frozen_) return;
  frozen_ = false;
  for (auto& w : workers_) w->impl().release(committed);
}

void Workers::end() {
  segments_.clear();
  for (auto& w : workers_) w->impl().end();
}

}  // namespace baton
