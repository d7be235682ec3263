// spill_state, read_spilled_state and describe_socket.
#include "socket/spilled_state.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "baton/syscall.h"

namespace baton {

Result<UniqueFd> spill_state(std::string_view bytes) {
  BATON_ASSIGN_OR_RETURN(int raw, BATON_SYSCALL(::memfd_create("baton-socket-state",
                                                               MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  UniqueFd fd(raw);
  for (size_t done = 0; done < bytes.size();) {
    BATON_ASSIGN_OR_RETURN(
        ssize_t n, BATON_SYSCALL(::pwrite(fd.get(), bytes.data() + done, bytes.size() - done,
                                          static_cast<off_t>(done)),
                                 "socket state of ", bytes.size(), " bytes"));
    done += static_cast<size_t>(n);
  }
  // Sealed, the receiver can trust the size it reads, and the sender cannot change it.
  BATON_TRY(BATON_SYSCALL(
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)));
  return fd;
}

Result<std::string> read_spilled_state(int fd, size_t max_bytes) {
  BATON_ASSIGN_OR_RETURN(int seals, BATON_SYSCALL(::fcntl(fd, F_GET_SEALS)));
  if ((seals & (F_SEAL_SHRINK | F_SEAL_WRITE)) != (F_SEAL_SHRINK | F_SEAL_WRITE)) {
    return Error(ErrorKind::kCorrupt, "a socket's state file is not sealed against writes");
  }
  struct stat st {};
  BATON_TRY(BATON_SYSCALL(::fstat(fd, &st)));
  const auto size = static_cast<size_t>(st.st_size);
  if (size > max_bytes) {
    return Error(ErrorKind::kCorrupt, "a socket's state file holds " + std::to_string(size) +
                                          " bytes, more than the " + std::to_string(max_bytes) +
                                          " accepted");
  }
  std::string out(size, '\0');
  for (size_t done = 0; done < size;) {
    BATON_ASSIGN_OR_RETURN(ssize_t n, BATON_SYSCALL(::pread(fd, out.data() + done, size - done,
                                                            static_cast<off_t>(done))));
    if (n == 0) return Error(ErrorKind::kCorrupt, "a socket's state file ended early");
    done += static_cast<size_t>(n);
  }
  return out;
}

std::string describe_socket(int fd) {
  std::string out = "fd " + std::to_string(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return out;
  char host[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    return out + ", peer " + host + ":" + std::to_string(ntohs(a.sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return out + ", peer [" + host + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  if (ss.ss_family == AF_UNIX) return out + ", unix peer";
  return out;
}

}  // namespace baton
