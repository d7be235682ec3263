// checkpoint_demo: the incumbent fills a TrackedMap, keeps writing while it checkpoints in
// slices, spawns a successor (posix_spawn), hands it the segment over SCM_RIGHTS and
// streams the deltas; the successor restores, replays and reports a digest that must
// equal the incumbent's. The checkpoint layer alone; samples/counter uses the Runtime.

#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "baton/checkpoint.h"
#include "baton/syscall.h"
#include "baton/tracked_map.h"
#include "baton/unix_socket.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point kStart = Clock::now();

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

#define SAY(...)                                  \
  do {                                            \
    std::printf("[%9.3f ms] ", ms_since(kStart)); \
    std::printf(__VA_ARGS__);                     \
    std::printf("\n");                            \
    std::fflush(stdout);                          \
  } while (0)

struct Options {
  uint64_t mib = 256;
  uint64_t value_bytes = 100;
  uint64_t slice_kib = 256;
  uint64_t writes_per_slice = 20;
  uint64_t catchup_writes = 50000;
  baton::PagePolicy pages = baton::PagePolicy::kAuto;
  int successor_fd = -1;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "checkpoint_demo: %s\n"
               "usage: checkpoint_demo [--mib N] [--value-bytes N] [--slice-kib N]\n"
               "                       [--writes-per-slice N] [--catchup-writes N]\n"
               "                       [--pages auto|small|huge]\n",
               why);
  std::exit(2);
}

uint64_t number(const char* flag, const char* v, uint64_t lo, uint64_t hi) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = v ? std::strtoull(v, &end, 10) : 0;
  if (!v || *v == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi) {
    std::string why = std::string(flag) + " takes a whole number from " + std::to_string(lo) +
                      " to " + std::to_string(hi) + ", got '" + (v ? v : "") + "'";
    usage(why.c_str());
  }
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--mib")
      o.mib = number("--mib", v, 1, 65536), ++i;
    else if (a == "--value-bytes")
      o.value_bytes = number("--value-bytes", v, 1, 1 << 20), ++i;
    else if (a == "--slice-kib")
      o.slice_kib = number("--slice-kib", v, 1, 1 << 20), ++i;
    else if (a == "--writes-per-slice")
      o.writes_per_slice = number(a.c_str(), v, 0, 1 << 20), ++i;
    else if (a == "--catchup-writes")
      o.catchup_writes = number(a.c_str(), v, 0, 1 << 30), ++i;
    else if (a == "--successor")
      o.successor_fd = static_cast<int>(number(a.c_str(), v, 0, 1 << 20)), ++i;
    else if (a == "--pages") {
      std::string p = v ? v : "";
      if (p == "auto")
        o.pages = baton::PagePolicy::kAuto;
      else if (p == "small")
        o.pages = baton::PagePolicy::kSmall;
      else if (p == "huge")
        o.pages = baton::PagePolicy::kHuge;
      else
        usage("--pages takes auto, small or huge");
      ++i;
    } else if (a == "--help" || a == "-h")
      usage("live checkpoint and restore demo");
    else
      usage(("unknown option '" + a + "'").c_str());
  }
  return o;
}

[[noreturn]] void die(const baton::Error& e, const char* what) {
  std::fprintf(stderr, "checkpoint_demo: %s: %s\n", what, e.to_string().c_str());
  std::exit(1);
}

template <typename T>
T must(baton::Result<T> r, const char* what) {
  if (!r.ok()) die(r.error(), what);
  return std::move(r).value();
}
void must(baton::Result<void> r, const char* what) {
  if (!r.ok()) die(r.error(), what);
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    auto n = must(BATON_SYSCALL(::write(fd, bytes.data(), bytes.size())), "stream write");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

// The server's own traffic: non-idempotent writes that race the snapshot.
struct Workload {
  std::mt19937_64 rng{12345};
  uint64_t keys;
  uint64_t writes = 0;
  void one(baton::TrackedMap& kv) {
    uint64_t r = rng();
    std::string n = std::to_string(r % 1000);
    switch (r % 10) {
      case 0:
      case 1:
      case 2:
      case 3:
        (void)kv.incr_by("counter:" + n, 1);
        break;
      case 4:
      case 5:
      case 6: {
        std::string_view v[] = {n};
        (void)kv.push("list:" + std::to_string(r % 100), baton::End::kLeft, v);
        break;
      }
      default:
        kv.set("key:" + std::to_string(r % keys), "rewritten-" + n);
        break;
    }
    ++writes;
  }
};

int successor(int sock) {
  baton::Registry reg;
  baton::TrackedMap kv("kv", 1);
  must(reg.add(kv), "register");
  auto msg = must(baton::recv_fds(sock, 16), "receiving the checkpoint fd");
  if (msg.fds.size() != 1) {
    std::fprintf(stderr, "checkpoint_demo successor: expected 1 fd, got %zu\n", msg.fds.size());
    return 1;
  }
  auto restored = must(baton::restore_checkpoint(msg.fds[0].get(), reg), "restore");
  msg.fds.clear();  // the segment's memory goes with the last fd and mapping
  baton::DeltaReplayer replay(restored);
  std::string buf;
  char chunk[1 << 16];
  for (;;) {
    auto n = must(BATON_SYSCALL(::read(sock, chunk, sizeof chunk)), "stream read");
    if (n == 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t used = 0;
    for (;;) {
      size_t len = must(baton::frame_size(std::string_view(buf).substr(used), 1 << 30), "frame");
      if (len == 0 || buf.size() - used < len) break;
      must(replay.apply_frame(std::string_view(buf).substr(used, len)), "replay");
      used += len;
    }
    buf.erase(0, used);
  }
  if (!buf.empty()) {
    std::fprintf(stderr, "checkpoint_demo successor: stream ended inside a frame\n");
    return 1;
  }
  char report[256];
  std::snprintf(report, sizeof report,
                "digest=%016" PRIx64 " keys=%zu records=%" PRIu64 " restore_us=%" PRId64
                " deltas=%" PRIu64 "\n",
                kv.digest(), kv.size(), restored.records, restored.elapsed_us, replay.applied());
  write_all(sock, report);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  if (opt.successor_fd >= 0) return successor(opt.successor_fd);

  baton::Registry reg;
  baton::TrackedMap kv("kv", 1);
  must(reg.add(kv), "register");

  auto t = Clock::now();
  const uint64_t keys = std::max<uint64_t>(1, (opt.mib << 20) / opt.value_bytes);
  std::string value(opt.value_bytes, 'v');
  for (uint64_t i = 0; i < keys; ++i) {
    std::memcpy(value.data(), &i, std::min<size_t>(8, value.size()));
    kv.set("key:" + std::to_string(i), value);
  }
  SAY("fill: %" PRIu64 " keys of %" PRIu64 " bytes (%" PRIu64 " MiB) in %.1f ms", keys,
      opt.value_bytes, opt.mib, ms_since(t));

  // Spawn the successor first, as a live upgrade does; it waits for the segment.
  int sv[2];
  must(BATON_SYSCALL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)), "socketpair");
  baton::UniqueFd sock(sv[0]), child_end(sv[1]);
  t = Clock::now();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, child_end.get(), 3);  // dup2 clears CLOEXEC
  std::string exe = "/proc/self/exe";
  char* child_argv[] = {argv[0], const_cast<char*>("--successor"), const_cast<char*>("3"), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, child_argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die(baton::Error(baton::ErrorKind::kSystem, "posix_spawn " + exe, rc), "spawn");
  child_end.reset();
  SAY("spawn: successor pid %d in %.3f ms (posix_spawn)", pid, ms_since(t));

  // Checkpoint in slices while the server keeps writing.
  Workload work{.keys = keys};
  baton::CheckpointOptions copt;
  copt.slice_bytes = opt.slice_kib << 10;
  copt.pages = opt.pages;
  auto writer = must(baton::CheckpointWriter::begin(reg, copt), "checkpoint begin");
  SAY("checkpoint: begin at L0=%" PRIu64 ", segment %s pages, %" PRIu64 " MiB reserved",
      writer.stats().start_lsn, std::string(baton::to_string(writer.stats().page_kind)).c_str(),
      writer.stats().capacity_bytes >> 20);
  while (!must(writer.step(), "checkpoint step")) {
    for (uint64_t i = 0; i < opt.writes_per_slice; ++i) work.one(kv);
  }
  auto cp = must(writer.finish(), "checkpoint finish");
  const auto& s = cp.stats();
  SAY("checkpoint: %" PRIu64 " records, %.1f MiB in %" PRIu64
      " slices; busy %.1f ms (%.2f GB/s of payload); slice p50 %.3f ms, p99 %.3f ms, "
      "max %.3f ms; %" PRIu64 " writes raced it",
      s.records, s.segment_bytes / 1048576.0, s.slices, s.busy_us / 1000.0,
      s.payload_bytes / (s.busy_us * 1000.0 + 1), s.p50_slice_us / 1000.0, s.p99_slice_us / 1000.0,
      s.max_slice_us / 1000.0, work.writes);

  int fds[] = {cp.fd()};
  must(baton::send_fds(sock.get(), "C", fds), "sending the checkpoint fd");
  SAY("handoff: segment fd sent with SCM_RIGHTS");

  // Catch-up: keep serving and stream the deltas in frames.
  uint64_t frames = 0, frame_bytes = 0;
  for (uint64_t i = 0; i <= opt.catchup_writes; ++i) {
    if (i < opt.catchup_writes) work.one(kv);
    if (i % 4096 == 0 || i == opt.catchup_writes) {
      if (reg.log().overflowed()) {
        std::fprintf(stderr, "checkpoint_demo: delta log overflowed its %zu-byte limit\n",
                     reg.log().limit_bytes());
        return 1;
      }
      std::string f = reg.log().take_frame();
      if (f.empty()) continue;
      write_all(sock.get(), f);
      ++frames;
      frame_bytes += f.size();
    }
  }
  // Freeze: no more writes; the last frame is out. End the stream.
  const uint64_t last_lsn = reg.log().last_lsn();
  reg.log().end_capture();
  ::shutdown(sock.get(), SHUT_WR);
  SAY("stream: %" PRIu64 " frames, %.1f KiB, deltas through LSN %" PRIu64, frames,
      frame_bytes / 1024.0, last_lsn);

  t = Clock::now();
  std::string report;
  char buf[512];
  for (;;) {
    pollfd p{sock.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, 120000);
    if (ready <= 0) {
      std::fprintf(stderr, "checkpoint_demo: successor silent for 120 s; killing pid %d\n", pid);
      ::kill(pid, SIGKILL);
      break;
    }
    ssize_t n = ::read(sock.get(), buf, sizeof buf);
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  char mine[32];
  std::snprintf(mine, sizeof mine, "digest=%016" PRIx64, kv.digest());
  SAY("successor: exited %d after %.1f ms more; report: %s",
      WIFEXITED(status) ? WEXITSTATUS(status) : -1, ms_since(t),
      report.empty() ? "(none)\n" : report.c_str());
  bool match = WIFEXITED(status) && WEXITSTATUS(status) == 0 && report.rfind(mine, 0) == 0 &&
               report.find(" keys=" + std::to_string(kv.size()) + " ") != std::string::npos;
  if (!match) {
    SAY("RESULT: MISMATCH: incumbent %s keys=%zu", mine, kv.size());
    return 1;
  }
  SAY("RESULT: restored state matches the incumbent exactly (%zu keys, %s)", kv.size(), mine);
  return 0;
}
