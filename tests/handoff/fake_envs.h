// Fake environments for the handoff machines: each records what it was asked to do.
// Templates over the interface, so that the probation environments (which extend the
// incumbent's and the successor's) reuse them.
#pragma once

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "handoff/machines.h"

namespace baton::handoff {

inline int open_fd() { return ::eventfd(0, EFD_CLOEXEC); }
inline bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

struct Sent {
  Message message;
  std::vector<int> fds;
};

template <typename Base = IncumbentEnv>
class FakeIncumbentOf : public Base {
 public:
  int64_t now = 1'000'000;
  std::vector<std::string> events;  // actions in order: "spawn", "kill", "freeze", ...
  std::vector<Sent> sent;
  std::vector<TimelineRecord> timelines;
  std::vector<std::string> logs;
  std::vector<SectionVersion> mine = {{"kv", 2}};
  std::vector<SectionSchema> typed;  // of `mine`, the typed sections
  int steps_to_finish = 3;
  int steps = 0;
  uint64_t backlog = 0;
  uint64_t lsn = 100;
  size_t sockets_at_freeze = 2;
  bool fail_step = false;
  int segment_fd = open_fd();
  std::vector<int> socket_fds;

  ~FakeIncumbentOf() override {
    ::close(segment_fd);
    for (int fd : socket_fds) ::close(fd);
  }
  int64_t now_us() override { return now; }
  Result<void> spawn_successor() override {
    events.push_back("spawn");
    return ok();
  }
  void kill_successor() override { events.push_back("kill"); }
  Result<void> send(const Message& m, std::span<const int> fds) override {
    sent.push_back({m, std::vector<int>(fds.begin(), fds.end())});
    return ok();
  }
  std::vector<SectionVersion> sections() override { return mine; }
  std::vector<SectionSchema> typed_sections() override { return typed; }
  Result<void> checkpoint_begin() override {
    events.push_back("checkpoint_begin");
    return ok();
  }
  Result<bool> checkpoint_step() override {
    if (fail_step) return Error(ErrorKind::kCapacity, "segment full");
    return ++steps >= steps_to_finish;
  }
  Result<CheckpointReady> checkpoint_finish(int* fd) override {
    *fd = segment_fd;
    return CheckpointReady{lsn, 4096};
  }
  void checkpoint_drop() override { events.push_back("checkpoint_drop"); }
  bool pump_fails = false;  // the stream's peer is gone
  bool exiting = false;     // ... and not reaped yet
  Result<void> pump_deltas() override {
    if (pump_fails) return Error(ErrorKind::kSystem, "streaming deltas", EPIPE);
    return ok();
  }
  bool successor_exiting() override { return exiting; }
  uint64_t backlog_bytes() override { return backlog; }
  uint64_t last_lsn() override { return lsn; }
  uint64_t deltas_sent() override { return 7; }
  std::vector<HandoffSocket> early;      // what early_sockets() offers
  std::vector<HandoffSocket> at_freeze;  // when set, what freeze() returns
  std::vector<HandoffSocket> early_sockets() override { return early; }
  std::vector<HandoffSocket> freeze() override {
    events.push_back("freeze");
    if (!at_freeze.empty()) return at_freeze;
    std::vector<HandoffSocket> out;
    for (size_t i = 0; i < sockets_at_freeze; ++i) {
      socket_fds.push_back(open_fd());
      out.push_back({socket_fds.back(), i == 0 ? "listener" : "conn", "state" + std::to_string(i)});
    }
    return out;
  }
  void unfreeze() override { events.push_back("unfreeze"); }
  void throttle(bool on) override { events.push_back(on ? "throttle" : "unthrottle"); }
  uint32_t committed_probation_ms = 0;
  void committed(const Serving&, uint32_t probation_ms) override {
    events.push_back("committed");
    committed_probation_ms = probation_ms;
  }
  void log(std::string_view line) override { logs.emplace_back(line); }
  void timeline(const TimelineRecord& r) override { timelines.push_back(r); }
  bool mirroring = false;  // shadow probes
  uint64_t probes = 0;
  void mirror_probes(bool on) override {
    events.push_back(on ? "mirror" : "unmirror");
    mirroring = on;
  }
  uint64_t probes_sent() override { return probes; }
  std::pair<uint64_t, uint64_t> new_digest_key() override { return {11, 22}; }
  std::vector<UniqueFd> spilled;  // a copy of every memfd the machine had made
  Result<UniqueFd> spill_state(std::string_view state) override {
    auto fd = baton::spill_state(state);
    if (fd.ok()) spilled.emplace_back(::fcntl(fd->get(), F_DUPFD_CLOEXEC, 0));
    return fd;
  }
  std::string describe_socket(int fd) override {
    return "fd " + std::to_string(fd) + ", peer 192.0.2.7:4242";
  }
  std::function<void()> on_drain;  // what has "arrived" when the machine drains control
  int drains = 0;
  void drain_control() override {
    ++drains;
    if (auto f = std::exchange(on_drain, nullptr)) f();
  }

  template <typename T>
  std::vector<const T*> sent_of() const {
    std::vector<const T*> out;
    for (const Sent& s : sent)
      if (auto* m = std::get_if<T>(&s.message)) out.push_back(m);
    return out;
  }
};
using FakeIncumbent = FakeIncumbentOf<>;

template <typename Base = SuccessorEnv>
class FakeSuccessorOf : public Base {
 public:
  int64_t now = 1'000'000;
  std::vector<Message> sent;
  uint64_t applied = 0;
  bool restore_fails = false;
  std::optional<std::string> failed;
  std::vector<HandoffSocket> served;
  bool served_as_takeover = false;
  bool serving = false;

  ~FakeSuccessorOf() override {
    for (auto& s : served) ::close(s.fd);
  }
  int64_t now_us() override { return now; }
  Result<void> send(const Message& m) override {
    sent.push_back(m);
    return ok();
  }
  std::vector<SectionRange> readable_sections() override { return {{"kv", 1, 2}}; }
  std::string schema_refusal;  // non-empty: check_schemas() refuses with it
  std::vector<SectionSchema> schemas_checked;
  Result<void> check_schemas(const std::vector<SectionSchema>& theirs) override {
    schemas_checked = theirs;
    if (!schema_refusal.empty()) return Error(ErrorKind::kVersion, schema_refusal);
    return ok();
  }
  Result<Restored> restore(UniqueFd fd) override {
    if (restore_fails) return Error(ErrorKind::kCorrupt, "checkpoint header checksum mismatch");
    return Restored{10, 20};
  }
  Result<uint64_t> replay_available() override { return applied; }
  void serve(std::vector<HandoffSocket> sockets, const Commit&, bool incumbent_gone) override {
    served = std::move(sockets);
    served_as_takeover = incumbent_gone;
    serving = true;
  }
  void fail(std::string_view reason) override { failed = std::string(reason); }
  int reverse_streams = 0;
  void begin_reverse_stream(Serving* s) override {
    ++reverse_streams;
    s->reverse_start_lsn = 77;
    s->sections = {{"kv", 2}};
  }
  std::vector<int> early, withdrawn;
  void early_socket(int fd, std::string_view, unsigned) override { early.push_back(fd); }
  void early_socket_withdrawn(int fd) override { withdrawn.push_back(fd); }
};
using FakeSuccessor = FakeSuccessorOf<>;

}  // namespace baton::handoff
