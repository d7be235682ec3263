// batonctl: asks a Baton server to upgrade, roll back or promote, or reports its status,
// over its control socket (RuntimeOptions::control_socket; '@' prefix = abstract namespace).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  static const char* const kCommands[] = {"upgrade", "status", "rollback", "promote"};
  bool known = false;
  for (const char* c : kCommands) known = known || (argc == 4 && std::strcmp(argv[3], c) == 0);
  if (argc != 4 || std::strcmp(argv[1], "--socket") != 0 || !known) {
    std::fprintf(stderr,
                 "usage: batonctl --socket PATH upgrade|status|rollback|promote\n"
                 "  upgrade   start a live upgrade to the binary the server was started from\n"
                 "  status    print pid, generation, phase, probation time left and the last\n"
                 "            abort as JSON\n"
                 "  rollback  during probation: hand service back to the previous version\n"
                 "  promote   during probation: keep the new version and let the old one go\n");
    return 2;
  }
  std::string path = argv[2];
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    std::fprintf(stderr, "batonctl: socket path '%s' is empty or too long\n", path.c_str());
    return 2;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    std::fprintf(stderr,
                 "batonctl: cannot connect to %s: %s (is the server running with "
                 "that control socket?)\n",
                 path.c_str(), std::strerror(errno));
    return 1;
  }
  std::string cmd = std::string(argv[3]) + "\n";
  // MSG_NOSIGNAL: a server that refuses us may already have answered and closed; its
  // answer is still ours to read.
  if (::send(fd, cmd.data(), cmd.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(cmd.size()) &&
      errno != EPIPE && errno != ECONNRESET) {
    std::perror("batonctl: send");
    return 1;
  }

  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) reply.append(buf, static_cast<size_t>(n));
  std::fputs(reply.c_str(), stdout);
  return reply.rfind("error", 0) == 0 || reply.empty() ? 1 : 0;
}
