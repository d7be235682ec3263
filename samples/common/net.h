// Plain socket plumbing for the samples, kept out of their main.cc so that it reads
// as the Baton API and nothing else.
#pragma once

#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "baton/fd.h"
#include "baton/result.h"

namespace sample {

/// "--flag value" pairs over `known` (flag -> default, "" = unset); a later flag wins.
/// Unknown flags, a missing value, or a non-number where `numeric` names the flag are
/// errors that say which.
inline baton::Result<std::map<std::string, std::string>> parse_flags(
    int argc, char** argv, std::map<std::string, std::string> known,
    std::initializer_list<std::string> numeric) {
  for (int i = 1; i < argc; i += 2) {
    std::string f = argv[i];
    if (!known.count(f)) {
      std::string all;
      for (auto& [name, def] : known) all += (all.empty() ? "" : ", ") + name;
      return baton::Error(baton::ErrorKind::kInvalidArgument,
                          "unknown flag '" + f + "'; the flags are " + all);
    }

    if (i + 1 >= argc) {
      return baton::Error(baton::ErrorKind::kInvalidArgument, f + " needs a value");
    }
    std::string v = argv[i + 1];
    for (const std::string& n : numeric) {
      if (n == f &&
          (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9)) {
        return baton::Error(baton::ErrorKind::kInvalidArgument,
                            f + " takes a whole number, got '" + v + "'");
      }
    }
    known[f] = v;
  }
  return known;
}

/// A server holds one fd per client: use the whole hard limit.
inline void raise_fd_limit() {
  rlimit fds;
  if (::getrlimit(RLIMIT_NOFILE, &fds) == 0) {
    fds.rlim_cur = fds.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }
}

inline baton::Error cannot_listen(const std::string& where) {
  return baton::Error(baton::ErrorKind::kSystem, "cannot listen on " + where, errno);
}

/// A nonblocking TCP listener on `ip` (IPv4 or IPv6) and `port` (0: any); sets `*bound`.
inline baton::Result<baton::UniqueFd> listen_tcp(const std::string& ip, uint16_t port,
                                                 uint16_t* bound) {
  const bool v6 = ip.find(':') != std::string::npos;
  baton::UniqueFd l(
      ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_storage a{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(&a);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&a);
  a4->sin_family = v6 ? AF_INET6 : AF_INET;
  (v6 ? a6->sin6_port : a4->sin_port) = htons(port);
  void* addr = v6 ? static_cast<void*>(&a6->sin6_addr) : static_cast<void*>(&a4->sin_addr);
  int one = 1;
  ::setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, ip.c_str(), addr) != 1) {
    return baton::Error(baton::ErrorKind::kInvalidArgument, "--bind '" + ip + "' is no IP address");
  }
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(l.get(), 1024) != 0 ||
      ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return cannot_listen(ip + " port " + std::to_string(port));
  }
  *bound = ntohs(v6 ? a6->sin6_port : a4->sin_port);
  return l;
}

/// A nonblocking Unix stream listener at `path` (a stale socket file is replaced).
inline baton::Result<baton::UniqueFd> listen_unix(const std::string& path) {
  baton::UniqueFd u(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un a{AF_UNIX, {}};
  if (path.size() >= sizeof a.sun_path) {
    return baton::Error(baton::ErrorKind::kInvalidArgument, "--unix path is too long");
  }
  std::memcpy(a.sun_path, path.data(), path.size());
  ::unlink(path.c_str());
  if (::bind(u.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(u.get(), 1024) != 0) {
    return cannot_listen(path);
  }
  return u;
}

}  // namespace sample
