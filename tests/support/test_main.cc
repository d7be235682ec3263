// Test main for every Baton test binary: after each test, /dev/shm must hold no segment
// name created by this process.
#include <dirent.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace {

class ShmLeakCheck : public testing::EmptyTestEventListener {
  void OnTestEnd(const testing::TestInfo& info) override {
    std::string mine = "baton-" + std::to_string(::getpid()) + "-";
    DIR* d = ::opendir("/dev/shm");
    if (d == nullptr) return;
    while (dirent* e = ::readdir(d)) {
      if (std::string(e->d_name).rfind(mine, 0) == 0) {
        ADD_FAILURE() << info.name() << " left /dev/shm/" << e->d_name;
      }
    }
    ::closedir(d);
  }
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::UnitTest::GetInstance()->listeners().Append(new ShmLeakCheck);
  return RUN_ALL_TESTS();
}
