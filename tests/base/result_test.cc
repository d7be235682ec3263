// Result, Error, BATON_SYSCALL, UniqueFd and CRC32C.
#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>

#include <gtest/gtest.h>

#include "baton/crc32c.h"
#include "baton/fd.h"
#include "baton/result.h"
#include "baton/syscall.h"

namespace baton {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0) return Error(ErrorKind::kInvalidArgument, std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> quarter(int x) {
  BATON_ASSIGN_OR_RETURN(int h, half(x));
  BATON_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

TEST(Result, CarriesValueOrErrorThroughMacros) {
  EXPECT_EQ(quarter(8).value(), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "3 is odd");
}

TEST(Result, ErrorTextNamesKindContextAndErrno) {
  Error e = Error(ErrorKind::kSystem, "open /nope", ENOENT).with_context("loading config");
  EXPECT_EQ(e.message(), "loading config: open /nope");
  EXPECT_EQ(e.to_string(),
            "system: loading config: open /nope: No such file or directory (errno 2)");
  EXPECT_EQ(Error(ErrorKind::kCorrupt, "bad").to_string(), "corrupt: bad");
}

TEST(Syscall, RecordsErrnoCallAndContext) {
  const char* path = "/definitely/not/here";
  auto r = BATON_SYSCALL(::open(path, O_RDONLY), "config file ", path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sys_errno(), ENOENT);
  EXPECT_NE(r.error().message().find("::open(path, O_RDONLY)"), std::string::npos);
  EXPECT_NE(r.error().message().find("config file /definitely/not/here"), std::string::npos);
}

TEST(Syscall, RetriesWhenInterrupted) {
  // A read on an empty pipe is interrupted by SIGALRM (no SA_RESTART); the wrapper must
  // retry rather than report EINTR, and then see the byte written by the handler's peer.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  static int attempts;
  attempts = 0;
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  ::sigaction(SIGALRM, &sa, nullptr);
  itimerval t{};
  t.it_value.tv_usec = 20000;
  ::setitimer(ITIMER_REAL, &t, nullptr);
  char c = 0;
  auto r = BATON_SYSCALL(([&] {
    if (++attempts == 2) {
      char x = 'x';
      (void)!::write(wr.get(), &x, 1);
    }
    return ::read(rd.get(), &c, 1);
  })());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r.value(), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_GE(attempts, 2);
  signal(SIGALRM, SIG_DFL);
}

TEST(UniqueFd, ClosesOnDestructionAndMove) {
  int raw;
  {
    UniqueFd a(::open("/dev/null", O_RDONLY));
    raw = a.get();
    ASSERT_GE(raw, 0);
    UniqueFd b = std::move(a);
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(Crc32c, MatchesTheStandardCheckValueAndStreams) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(0, s, 9), 0xe3069283u);
  uint32_t part = crc32c(crc32c(0, s, 4), s + 4, 5);
  EXPECT_EQ(part, 0xe3069283u);
  std::string big(1000, 'a');
  EXPECT_NE(crc32c(0, big.data(), big.size()), crc32c(0, big.data(), big.size() - 1));
}

// Bit-at-a-time CRC32C straight from the definition, as the reference.
uint32_t crc32c_reference(const unsigned char* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32c, AgreesWithTheDefinitionAtEveryLengthAndSplit) {
  std::string buf(70000, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& ch : buf) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = static_cast<char>(x);
  }
  auto* p = reinterpret_cast<const unsigned char*>(buf.data());
  for (size_t n : {0ul, 1ul, 7ul, 8ul, 9ul, 4095ul, 12287ul, 12288ul, 12289ul, 12295ul, 40000ul,
                   65537ul, 70000ul}) {
    EXPECT_EQ(crc32c(0, p, n), crc32c_reference(p, n)) << "length " << n;
  }
  // Streaming across arbitrary boundaries equals one pass.
  uint32_t c = 0;
  for (size_t at = 0; at < buf.size();) {
    size_t step = std::min<size_t>(buf.size() - at, 1 + (at * 7919) % 20000);
    c = crc32c(c, p + at, step);
    at += step;
  }
  EXPECT_EQ(c, crc32c_reference(p, buf.size()));
}

}  // namespace
}  // namespace baton
