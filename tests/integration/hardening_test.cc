// Issue 14's cases against kvd as a real process: hostile environments (a small
// /dev/shm, PID 1 of a namespace), hostile users and signals. Each test failed before its
// fix. Loopback only, port 0, a temporary directory per test, bounded waits, all reaped.
// Tests that need a private mount or PID namespace make it in their own process (ctest
// runs each test alone), so nothing leaks into the machine's /dev/shm or process tree.
#include <sched.h>
#include <sys/mount.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "kvd_process.h"
#include "server_process.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::Kvd;
using testing::RespClient;

// Gives this test process (and the servers it starts) its own /dev/shm: a tmpfs mounted
// with `options` in a private mount namespace. Empty on success, else why not.
std::string private_dev_shm(const std::string& options) {
  if (::unshare(CLONE_NEWNS) != 0) return std::string("unshare(CLONE_NEWNS): ") + strerror(errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return std::string("making / private: ") + strerror(errno);
  }
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    return "mounting a tmpfs with " + options + " on /dev/shm: " + strerror(errno);
  }
  return "";
}

// `count` values of `bytes` each under "big:<i>", pipelined in batches.
void load(RespClient& c, int count, size_t bytes) {
  for (int i = 0; i < count;) {
    std::string batch;
    const int end = std::min(count, i + 32);
    for (int k = i; k < end; ++k) {
      const std::string key = "big:" + std::to_string(k);
      const std::string value(bytes, static_cast<char>('a' + k % 26));
      batch += "*3\r\n$3\r\nSET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n$" +
               std::to_string(value.size()) + "\r\n" + value + "\r\n";
    }
    ASSERT_TRUE(c.send_raw(batch));
    for (int k = i; k < end; ++k) ASSERT_EQ(c.reply(), "OK") << "key " << k;
    i = end;
  }
}

void expect_loaded(RespClient& c, int count, size_t bytes) {
  ASSERT_EQ(c.call({"DBSIZE"}), std::to_string(count));
  for (int k = 0; k < count; k += 97) {
    EXPECT_EQ(c.call({"GET", "big:" + std::to_string(k)}),
              std::string(bytes, static_cast<char>('a' + k % 26)))
        << k;
  }
}

constexpr int kBigKeys = 1300;          // 85 MB of values: more than Docker's /dev/shm
constexpr size_t kBigValue = 64 << 10;  //

// Case 1, Docker's default: a 64 MiB /dev/shm and 85 MB of state. The checkpoint used to
// be a sparse /dev/shm object; the writer touched a page tmpfs could not supply, and the
// incumbent died of SIGBUS with every key. Now the segment is a memfd, which /dev/shm's
// size does not bound, and the upgrade commits.
TEST(Hardening, SmallDevShmDoesNotBoundTheCheckpoint) {
  if (std::string why = private_dev_shm("size=64m"); !why.empty()) GTEST_SKIP() << why;
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  load(c, kBigKeys, kBigValue);
  const pid_t next = s.upgrade_to(KVD_BIN);
  ASSERT_GT(next, 0) << s.log();
  RespClient after(s.port());
  expect_loaded(after, kBigKeys, kBigValue);
}

// Case 1, where the checkpoint must live in /dev/shm (its huge= option is what gives
// transparent huge pages) and it is too small: the upgrade aborts, naming /dev/shm, what
// was free and what the state needs; the incumbent serves on with every key.
TEST(Hardening, FullDevShmAbortsTheUpgradeWithWhatWasNeeded) {
  if (std::string why = private_dev_shm("size=64m,huge=always"); !why.empty()) {
    GTEST_SKIP() << why;
  }
  Kvd s(KVD_BIN);
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  load(c, kBigKeys, kBigValue);
  const pid_t before = s.serving_pid();
  EXPECT_EQ(s.upgrade_to(KVD_BIN), 0) << "the checkpoint cannot fit; the upgrade must abort";
  ASSERT_FALSE(s.events().empty()) << s.log();
  const std::string e = s.events().back();
  EXPECT_NE(e.find("\"outcome\":\"aborted\""), std::string::npos) << e;
  EXPECT_NE(e.find("/dev/shm"), std::string::npos) << e;
  EXPECT_NE(e.find("free"), std::string::npos) << e;
  EXPECT_NE(e.find("--shm-size"), std::string::npos) << e;
  EXPECT_EQ(s.serving_pid(), before);
  expect_loaded(c, kBigKeys, kBigValue);
}

}  // namespace
}  // namespace baton
