// Shared-memory segments for checkpoints: page-kind choice, creation, mapping, sweeping.
#include "segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "baton/syscall.h"

namespace bip = boost::interprocess;

namespace baton {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

// Lets Boost's mapped_region map any fd we own (an unlinked shm object or a memfd).
struct FdMappable {
  int fd;
  bip::mode_t mode;
  bip::mapping_handle_t get_mapping_handle() const {
    return bip::ipcdetail::mapping_handle_from_file_handle(fd);
  }
  bip::mode_t get_mode() const { return mode; }
};

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where transparent huge pages can back a checkpoint. A /dev/shm mount follows its own
// huge= option; sysfs shmem_enabled governs the kernel's internal shm mount, which is
// what memfd_create uses ("force" applies to both).
enum class ThpSource { kNone, kDevShm, kMemfd };

ThpSource shmem_thp_source() {
  std::istringstream mounts(read_file("/proc/mounts"));
  std::string line;
  while (std::getline(mounts, line)) {
    if (line.find(" /dev/shm ") == std::string::npos) continue;
    for (const char* opt : {"huge=always", "huge=within_size", "huge=advise"})
      if (line.find(opt) != std::string::npos) return ThpSource::kDevShm;
  }
  std::string s = read_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  for (const char* mode : {"[always]", "[within_size]", "[advise]", "[force]"})
    if (s.find(mode) != std::string::npos) return ThpSource::kMemfd;
  return ThpSource::kNone;
}

struct HugetlbPool {
  size_t page_bytes = size_t{2} << 20;
  size_t free_bytes = 0;  // free and not reserved by someone else's mapping
};

HugetlbPool hugetlb_pool() {
  std::istringstream in(read_file("/proc/meminfo"));
  std::string line;
  size_t free_pages = 0, reserved = 0, page_kb = 0;
  while (std::getline(in, line)) {
    if (line.rfind("HugePages_Free:", 0) == 0) free_pages = std::stoul(line.substr(15));
    if (line.rfind("HugePages_Rsvd:", 0) == 0) reserved = std::stoul(line.substr(15));
    if (line.rfind("Hugepagesize:", 0) == 0) page_kb = std::stoul(line.substr(13));
  }
  HugetlbPool pool;
  if (page_kb != 0) pool.page_bytes = page_kb * 1024;
  pool.free_bytes = free_pages > reserved ? (free_pages - reserved) * pool.page_bytes : 0;
  return pool;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string unique_name(std::string_view prefix) {
  static std::atomic<uint64_t> seq{0};
  std::random_device rd;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.*s-%d-%llu-%08x", static_cast<int>(prefix.size()),
                prefix.data(), static_cast<int>(::getpid()),
                static_cast<unsigned long long>(seq.fetch_add(1)), rd());
  return buf;
}

// Creates the named object with mode 0600, keeps a dup of its fd and removes the name.
Result<UniqueFd> create_unlinked_shm(std::string_view prefix) {
  std::string name = unique_name(prefix);
  try {
    bip::permissions perm(0600);
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, perm);
    int fd = ::fcntl(shm.get_mapping_handle().handle, F_DUPFD_CLOEXEC, 0);
    int saved = errno;
    bip::shared_memory_object::remove(name.c_str());
    if (fd < 0) return Error(ErrorKind::kSystem, "dup of shm fd for " + name, saved);
    return UniqueFd(fd);
  } catch (const bip::interprocess_exception& e) {
    bip::shared_memory_object::remove(name.c_str());
    return Error(ErrorKind::kSystem, "creating shared memory /dev/shm/" + name + ": " + e.what(),
                 e.get_native_error());
  }
}

Result<std::unique_ptr<bip::mapped_region>> map_fd(int fd, bip::mode_t mode, size_t size) {
  try {
    return std::make_unique<bip::mapped_region>(FdMappable{fd, mode}, mode, 0, size);
  } catch (const bip::interprocess_exception& e) {
    return Error(ErrorKind::kSystem,
                 "mapping " + std::to_string(size) + " bytes of checkpoint segment: " + e.what(),
                 e.get_native_error());
  }
}

}  // namespace

std::string_view to_string(PageKind kind) {
  switch (kind) {
    case PageKind::kSmall:
      return "4k";
    case PageKind::kTransparentHuge:
      return "thp-shmem";
    case PageKind::kHugetlb:
      return "hugetlb";
  }
  return "unknown";
}

ShmSegment::~ShmSegment() = default;

Result<std::unique_ptr<ShmSegment>> ShmSegment::create(size_t capacity, PagePolicy policy,
                                                       std::string_view name_prefix) {
  sweep_stale_segments(name_prefix);
  std::unique_ptr<ShmSegment> seg(new ShmSegment());
  PageKind kind = PageKind::kSmall;
  ThpSource thp = ThpSource::kNone;
  HugetlbPool pool;
  if (policy != PagePolicy::kSmall) {
    pool = hugetlb_pool();
    thp = shmem_thp_source();
    if (pool.free_bytes >= round_up(capacity, pool.page_bytes)) {
      kind = PageKind::kHugetlb;
    } else if (thp != ThpSource::kNone) {
      kind = PageKind::kTransparentHuge;
    } else if (policy == PagePolicy::kHuge) {
      return Error(ErrorKind::kInvalidArgument,
                   "huge pages requested, but the hugetlb pool has " +
                       std::to_string(pool.free_bytes) + " free bytes (need " +
                       std::to_string(round_up(capacity, pool.page_bytes)) +
                       "), /dev/shm has no huge= mount option and shmem THP is off; set "
                       "vm.nr_hugepages or /sys/kernel/mm/transparent_hugepage/shmem_enabled, "
                       "or use kAuto");
    }
  }
  // Every path leaves no name behind: memfds never have one, and the /dev/shm object's
  // name is removed before create_unlinked_shm returns.
  std::string name = unique_name(name_prefix);
  if (kind == PageKind::kHugetlb) {
    auto fd = BATON_SYSCALL(::memfd_create(name.c_str(), MFD_HUGETLB | MFD_CLOEXEC), name);
    if (!fd.ok()) return std::move(fd).error();
    seg->fd_.reset(fd.value());
    BATON_TRY(BATON_SYSCALL(::fchmod(seg->fd_.get(), 0600), name));  // memfds start 0777
    capacity = round_up(capacity, pool.page_bytes);
    seg->huge_page_bytes_ = pool.page_bytes;
  } else if (kind == PageKind::kTransparentHuge && thp == ThpSource::kDevShm) {
    // Only a /dev/shm mounted with huge= gives these pages; its size= bounds them.
    BATON_ASSIGN_OR_RETURN(seg->fd_, create_unlinked_shm(name_prefix));
    seg->in_dev_shm_ = true;
    capacity = round_up(capacity, kHugePage);
  } else {
    // 4 KiB pages, or THP where shmem_enabled governs the kernel's own shm mount: a memfd,
    // which /dev/shm's size= (64 MiB in a default Docker container) does not bound.
    auto fd = BATON_SYSCALL(::memfd_create(name.c_str(), MFD_CLOEXEC), name);
    if (!fd.ok()) return std::move(fd).error();
    seg->fd_.reset(fd.value());
    BATON_TRY(BATON_SYSCALL(::fchmod(seg->fd_.get(), 0600), name));  // memfds start 0777
    if (kind == PageKind::kTransparentHuge) capacity = round_up(capacity, kHugePage);
  }
  BATON_TRY(BATON_SYSCALL(::ftruncate(seg->fd_.get(), static_cast<off_t>(capacity)),
                          "checkpoint segment of ", capacity, " bytes"));
  BATON_ASSIGN_OR_RETURN(seg->region_, map_fd(seg->fd_.get(), bip::read_write, capacity));
  seg->data_ = static_cast<std::byte*>(seg->region_->get_address());
  seg->size_ = capacity;
  if (kind == PageKind::kTransparentHuge) {
    // Needed where the mode is "advise"; harmless where it is "always".
    (void)::madvise(seg->data_, capacity, MADV_HUGEPAGE);
  }
  seg->kind_ = kind;
  return seg;
}

std::string_view ShmSegment::backing() const {
  if (in_dev_shm_) return "/dev/shm";
  return kind_ == PageKind::kHugetlb ? "the hugetlb pool (memfd)" : "memory (memfd)";
}

Result<void> ShmSegment::reserve(size_t end) {
  const size_t page = kind_ == PageKind::kHugetlb ? huge_page_bytes_ : size_t{4096};
  end = std::min(round_up(end, page), size_);
  size_t from = reserved_.load(std::memory_order_acquire);
  if (end <= from) return ok();
  int rc;
  do {
    rc = ::fallocate(fd_.get(), 0, static_cast<off_t>(from), static_cast<off_t>(end - from));
  } while (rc != 0 && errno == EINTR);  // tmpfs stops a long fallocate for any signal
  if (rc != 0) {
    const int err = errno;
    std::string what = "cannot allocate " + std::to_string(end - from) + " bytes of " +
                       std::string(backing()) + " for the checkpoint after " +
                       std::to_string(from) + " bytes";
    struct statfs fs;
    if (in_dev_shm_ && ::statfs("/dev/shm", &fs) == 0) {
      what += " (/dev/shm: " + std::to_string(static_cast<uint64_t>(fs.f_bsize) * fs.f_blocks) +
              " bytes, " + std::to_string(static_cast<uint64_t>(fs.f_bsize) * fs.f_bavail) +
              " free)";
    }
    return Error(err == ENOSPC || err == ENOMEM ? ErrorKind::kCapacity : ErrorKind::kSystem, what,
                 err);
  }
  // Another thread may have gone further meanwhile: keep the larger mark.
  while (from < end && !reserved_.compare_exchange_weak(from, end, std::memory_order_acq_rel)) {
  }
  return ok();
}

Result<std::unique_ptr<ShmSegment>> ShmSegment::map_readonly(int fd, size_t max_bytes) {
  struct stat st;
  BATON_TRY(BATON_SYSCALL(::fstat(fd, &st), "checkpoint fd ", fd));
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorKind::kInvalidArgument,
                 "checkpoint fd " + std::to_string(fd) + " is not a shared-memory segment");
  }
  auto size = static_cast<size_t>(st.st_size);
  if (size > max_bytes) {
    return Error(ErrorKind::kCapacity, "checkpoint segment of " + std::to_string(size) +
                                           " bytes exceeds the restore limit of " +
                                           std::to_string(max_bytes));
  }
  std::unique_ptr<ShmSegment> seg(new ShmSegment());
  BATON_ASSIGN_OR_RETURN(int dup, BATON_SYSCALL(::fcntl(fd, F_DUPFD_CLOEXEC, 0)));
  seg->fd_.reset(dup);
  seg->size_ = size;
  if (size == 0) return seg;
  BATON_ASSIGN_OR_RETURN(seg->region_, map_fd(dup, bip::read_only, size));
  seg->data_ = static_cast<std::byte*>(seg->region_->get_address());
  seg->fd_.reset();  // the mapping keeps the memory; restored sections may hold it long
  return seg;
}

Result<void> ShmSegment::shrink(size_t bytes) {
  if (kind_ == PageKind::kHugetlb) bytes = round_up(bytes, huge_page_bytes_);  // whole pages
  BATON_TRY(BATON_SYSCALL(::ftruncate(fd_.get(), static_cast<off_t>(bytes)),
                          "shrinking checkpoint segment to ", bytes, " bytes"));
  size_ = std::min(size_, bytes);
  reserved_.store(std::min(reserved(), bytes), std::memory_order_release);
  return ok();
}

size_t sweep_stale_segments(std::string_view name_prefix) {
  size_t removed = 0;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return 0;
  std::string prefix = std::string(name_prefix) + "-";
  while (dirent* e = ::readdir(dir)) {
    std::string_view name(e->d_name);
    if (name.substr(0, prefix.size()) != prefix) continue;
    long pid = std::strtol(std::string(name.substr(prefix.size())).c_str(), nullptr, 10);
    if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) continue;
    if (bip::shared_memory_object::remove(std::string(name).c_str())) ++removed;
  }
  ::closedir(dir);
  return removed;
}

}  // namespace baton
