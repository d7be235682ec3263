// Helpers for tests that look at or forge checkpoint bytes.
#pragma once

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "baton/fd.h"

namespace baton::testing {

/// Reads every byte of the file behind `fd`.
inline std::string read_all(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return {};
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

/// A nameless in-memory file holding `bytes`, as a forged checkpoint.
inline UniqueFd fd_with(const std::string& bytes) {
  UniqueFd fd(::memfd_create("baton-test-forged", MFD_CLOEXEC));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  return fd;
}

/// Names in /dev/shm that start with `prefix`.
inline int count_shm_names(const std::string& prefix) {
  int n = 0;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) ++n;
    ::closedir(d);
  }
  return n;
}

}  // namespace baton::testing
