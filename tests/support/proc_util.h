// What a process holds, read from /proc: its fds with their targets, its mappings and
// its threads. For leak checks that can fail: a leaked checkpoint segment has no name in
// /dev/shm (a memfd, or an object unlinked at creation), but it stays an fd or a mapping.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace baton::testing {

/// One open fd of a process and what it points at (readlink of /proc/<pid>/fd/<n>):
/// "socket:[123]", "anon_inode:[eventfd]", "/memfd:baton-... (deleted)", a path.
struct OpenFd {
  int fd = -1;
  std::string target;
};

/// A snapshot of what a process holds. Empty vectors and threads == 0 when the process
/// is gone (or not ours to read).
struct ProcessHoldings {
  std::vector<OpenFd> fds;
  std::vector<std::string> maps;  // the lines of /proc/<pid>/maps
  long threads = 0;               // Threads: in /proc/<pid>/status

  /// The fds whose target does not start with any of `prefixes` (e.g. "socket:" to leave
  /// out client connections that come and go).
  size_t fds_except(std::initializer_list<std::string_view> prefixes) const {
    return static_cast<size_t>(std::count_if(fds.begin(), fds.end(), [&](const OpenFd& f) {
      return std::none_of(prefixes.begin(), prefixes.end(),
                          [&](std::string_view p) { return f.target.starts_with(p); });
    }));
  }
  /// Fds and mappings that point at shared memory a checkpoint lives in: a memfd
  /// ("/memfd:") or a /dev/shm object ("/dev/shm/"), one line each, for a message.
  std::vector<std::string> segments() const {
    std::vector<std::string> out;
    auto is_segment = [](std::string_view s) {
      return s.find("/memfd:") != std::string_view::npos ||
             s.find("/dev/shm/") != std::string_view::npos;
    };
    for (const OpenFd& f : fds)
      if (is_segment(f.target)) out.push_back("fd " + std::to_string(f.fd) + " -> " + f.target);
    for (const std::string& m : maps)
      if (is_segment(m)) out.push_back("map " + m);
    return out;
  }
  /// Every fd with its target, one a line, for a failure message.
  std::string describe_fds() const {
    std::string out;
    for (const OpenFd& f : fds) out += std::to_string(f.fd) + " -> " + f.target + "\n";
    return out;
  }
};

/// The fds of `pid`, in fd order, with their targets.
inline std::vector<OpenFd> open_fds(pid_t pid) {
  namespace fs = std::filesystem;
  std::vector<OpenFd> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code link_ec;
    const fs::path target = fs::read_symlink(it->path(), link_ec);
    if (link_ec) continue;  // closed between the listing and the readlink
    out.push_back({std::atoi(it->path().filename().c_str()), target.string()});
  }
  std::sort(out.begin(), out.end(), [](const OpenFd& a, const OpenFd& b) { return a.fd < b.fd; });
  return out;
}

/// The lines of /proc/<pid>/maps.
inline std::vector<std::string> mappings(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

/// A number field of /proc/<pid>/status ("Threads", "VmRSS" in KiB, ...); -1 if absent.
inline long status_field(pid_t pid, std::string_view name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ':') {
      return std::atol(line.c_str() + name.size() + 1);
    }
  }
  return -1;
}

/// What `pid` holds now.
inline ProcessHoldings holdings(pid_t pid) {
  ProcessHoldings h;
  h.fds = open_fds(pid);
  h.maps = mappings(pid);
  h.threads = std::max(0L, status_field(pid, "Threads"));
  return h;
}

}  // namespace baton::testing
