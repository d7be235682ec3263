// Issue 14's cases against kvd as a real process: hostile environments (a small
// /dev/shm, PID 1 of a namespace), hostile users and signals. Each test failed before its
// fix. Loopback only, port 0, a temporary directory per test, bounded waits, all reaped.
// Tests that need a private mount or PID namespace make it in their own process (ctest
// runs each test alone), so nothing leaks into the machine's /dev/shm or process tree.
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

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

long status_kib(pid_t pid, const std::string& field) {
  const std::string s = testing::slurp("/proc/" + std::to_string(pid) + "/status");
  const auto at = s.find(field + ":");
  return at == std::string::npos ? -1 : std::atol(s.c_str() + at + field.size() + 1);
}

// The sockets among a process's fds.
size_t open_sockets(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    n += fs::read_symlink(it->path(), ec).string().rfind("socket:", 0) == 0;
  }
  return n;
}

// Upgrades through the control socket (pids in the pidfile are the namespace's, not
// ours to signal) and promotes; true once the new generation serves for good.
bool upgrade_and_promote(testing::ServerProcess& s) {
  const std::string ctl = s.dir() + "/ctl";
  const size_t before = s.events().size();
  if (testing::control_command(ctl, "upgrade").rfind("ok:", 0) != 0) return false;
  if (!eventually([&] { return s.events().size() > before; }, 60)) return false;
  if (s.events().back().find("\"outcome\":\"committed\"") == std::string::npos) return false;
  if (!eventually([&] {
        return testing::control_command(ctl, "status").find("\"phase\":\"probation\"") !=
               std::string::npos;
      })) {
    return false;
  }
  if (testing::control_command(ctl, "promote").rfind("ok:", 0) != 0) return false;
  return eventually([&] {
    return s.events().size() > before + 1 &&
           s.events().back().find("\"outcome\":\"promoted\"") != std::string::npos;
  });
}

// Case 2: kvd as PID 1 of a PID namespace (`docker run image kvd`). The old process used
// to exit after the handoff, and the kernel then killed its namespace, successor and all.
// Now PID 1 stays as the namespace's init, re-executed with none of the server's memory
// or fds, while two generations in turn serve every key; SIGTERM to it stops the server
// and then it, as `docker stop` does.
TEST(Hardening, Pid1OfANamespaceStaysAsItsInitAndTheSuccessorServes) {
  if (::unshare(CLONE_NEWPID) != 0) GTEST_SKIP() << "unshare(CLONE_NEWPID): " << strerror(errno);
  testing::ServerProcess s(KVD_BIN, {"--control", "{dir}/ctl"});
  ASSERT_TRUE(s.in_pid_namespace());
  ASSERT_EQ(s.serving_pid(), 1) << "the server is its namespace's init";
  const pid_t init = s.first_pid();  // the same process, by the pid we know it by
  RespClient c(s.port());
  ASSERT_TRUE(c.connected());
  constexpr int kKeys = 600;  // about 40 MB
  load(c, kKeys, kBigValue);
  const long rss_serving = status_kib(init, "VmRSS");
  ASSERT_GT(rss_serving, 30'000);

  ASSERT_TRUE(upgrade_and_promote(s)) << s.log();
  EXPECT_NE(s.serving_pid(), 1);
  ASSERT_TRUE(eventually([&] { return status_kib(init, "VmRSS") < rss_serving / 4; }, 10))
      << "PID 1 still holds " << status_kib(init, "VmRSS") << " KiB; it held " << rss_serving
      << " KiB serving\n"
      << s.log();
  EXPECT_EQ(open_sockets(init), 0u) << "PID 1 keeps no client's socket open";
  expect_loaded(c, kKeys, kBigValue);  // the same connection, served by the successor

  // The successor's own successor: the successor exits, and its child is PID 1's orphan.
  ASSERT_TRUE(upgrade_and_promote(s)) << s.log();
  expect_loaded(c, kKeys, kBigValue);
  EXPECT_EQ(c.call({"SET", "after", "two"}), "OK");

  ASSERT_EQ(::kill(init, SIGTERM), 0);
  const int status = testing::wait_process(init, 20);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n"
                                                             << s.log();
  EXPECT_NE(s.log().find("stopping"), std::string::npos) << "the serving kvd got the SIGTERM";
}

}  // namespace
}  // namespace baton
