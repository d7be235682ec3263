// Handoff costs: passing fds with SCM_RIGHTS, and streaming delta frames through
// io_uring against plain writev on the same kind of socketpair.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>

#include <thread>
#include <vector>

#include "baton/unix_socket.h"
#include "stream/delta_sender.h"

namespace baton::bench {
namespace {

// N fds (dups of one socket) through a SEQPACKET pair, in messages of at most 253.
void BM_PassFds(benchmark::State& st) {
  const auto n = static_cast<size_t>(st.range(0));
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    st.SkipWithError("socketpair failed");
    return;
  }
  UniqueFd a(sv[0]), b(sv[1]);
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (size_t i = 0; i < n; ++i) {
    owned.emplace_back(::fcntl(a.get(), F_DUPFD_CLOEXEC, 0));
    fds.push_back(owned.back().get());
  }
  for (auto _ : st) {
    for (size_t at = 0; at < n; at += kMaxFdsPerMessage) {
      size_t k = std::min(kMaxFdsPerMessage, n - at);
      if (!send_fds(a.get(), "F", std::span<const int>(fds.data() + at, k)).ok()) {
        st.SkipWithError("send_fds failed (raise RLIMIT_NOFILE?)");
        return;
      }
      auto got = recv_fds(b.get(), 16);
      if (!got.ok() || got->fds.size() != k) {
        st.SkipWithError("recv_fds failed");
        return;
      }
    }  // received fds close here: owning them is part of the cost
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * n));
}

// 4 MiB of 64 KiB frames per iteration through one DeltaSender; a reader drains.
void BM_Stream(benchmark::State& st, DeltaSender::Backend backend) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    st.SkipWithError("socketpair failed");
    return;
  }
  UniqueFd w(sv[0]), r(sv[1]);
  const int buf = 4 << 20;
  for (int fd : {sv[0], sv[1]}) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  }
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    std::vector<char> sink(1 << 20);
    while (::read(r.get(), sink.data(), sink.size()) > 0) {
    }
  });
  auto sender = DeltaSender::create(w.get(), backend);
  if (!sender.ok() || (*sender)->backend() != backend) {
    ::shutdown(w.get(), SHUT_RDWR);
    reader.join();
    st.SkipWithError("this backend is not available here (io_uring disabled?)");
    return;
  }
  const std::string frame(64 << 10, 'd');
  constexpr int kFrames = 64;
  // The machine's own limit, paired inside each iteration: the same bytes written with
  // plain blocking write() calls to the same socket, same reader.
  using Clock = std::chrono::steady_clock;
  Clock::duration ours{}, baseline{};
  for (auto _ : st) {
    const auto t0 = Clock::now();
    for (int i = 0; i < kFrames; ++i) (*sender)->enqueue(frame);
    while (!(*sender)->idle()) {
      if (!(*sender)->pump().ok()) {
        st.SkipWithError("pump failed");
        break;
      }
    }
    const auto t1 = Clock::now();
    for (int i = 0; i < kFrames; ++i) {
      for (size_t off = 0; off < frame.size();) {
        ssize_t n = ::write(w.get(), frame.data() + off, frame.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
    }
    baseline += Clock::now() - t1;
    ours += t1 - t0;
    st.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());  // ours only
  }
  st.counters["ratio_to_socket"] =
      ours.count() > 0 ? static_cast<double>(baseline.count()) / static_cast<double>(ours.count())
                       : 0;

  sender->reset();
  ::shutdown(w.get(), SHUT_RDWR);
  reader.join();
  // Bytes through the DeltaSender only; the paired baseline's bytes are not counted.
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * kFrames * int64_t(frame.size()));
}

BENCHMARK(BM_PassFds)->Arg(1)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Stream, uring, DeltaSender::Backend::kUring)
    ->Name("BM_Stream/uring")
    ->UseManualTime();
BENCHMARK_CAPTURE(BM_Stream, writev, DeltaSender::Backend::kWritev)
    ->Name("BM_Stream/writev")
    ->UseManualTime();

}  // namespace
}  // namespace baton::bench
