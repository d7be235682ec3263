// kvd: an in-memory key-value server for Redis clients that replaces its own binary on
// SIGUSR2 without dropping a connection or a write. One source, three builds:
//   kvd     schema v2, per-key expiry (SET EX/PX, EXPIRE, TTL)
//   kvd-v1  schema v1, no expiry; upgrades to kvd and back
//   kvd-bare  kvd without Baton, to measure what the runtime costs
#include <signal.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "../common/net.h"
#include "baton/runtime.h"
#include "baton/tracked_map.h"
#include "rollback.h"
#include "server.h"

#ifndef KVD_SCHEMA
#define KVD_SCHEMA 2
#endif

using namespace baton;
using kvd::Server;
using kvd::ServerOptions;

namespace {

int fail(const std::string& what, int status) {
  std::fprintf(stderr, "kvd: %s\n", what.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  sample::raise_fd_limit();
  auto parsed = sample::parse_flags(argc, argv,
                                    {{"--port", "6379"},
                                     {"--bind", "127.0.0.1"},
                                     {"--pidfile", ""},
                                     {"--event-log", ""},
                                     {"--control", ""},
                                     {"--maxclients", "10000"},
                                     {"--port-file", ""}},
                                    {"--port", "--maxclients"});
  if (!parsed.ok()) return fail(parsed.error().message(), 2);
  auto& flag = parsed.value();
  const long port = std::atol(flag["--port"].c_str());
  const long maxclients = std::atol(flag["--maxclients"].c_str());
  if (port > 65535) return fail("--port is 0..65535 (0: any free port)", 2);
  if (maxclients < 1) return fail("--maxclients must be at least 1", 2);

  // SIGTERM and SIGINT stop the server from its loop; blocked before any thread starts.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  UniqueFd signals(::signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC));

  TrackedMap map("kvd", KVD_SCHEMA);  // all of kvd's data, and all that survives an upgrade
  kvd::Rollback rollback;
#ifdef KVD_BARE
  Runtime* rt = nullptr;
#else
  RuntimeOptions opt;
  opt.pidfile = flag["--pidfile"];
  opt.event_log = flag["--event-log"];
  opt.control_socket = flag["--control"];
  auto created = Runtime::create(argc, argv, opt);
  if (!created.ok()) return fail(created.error().to_string(), 2);
  Runtime* rt = created->get();
  if (KVD_SCHEMA == 2) {
    (void)map.migrations().add(1, 2, [](std::string_view, Entry&) {});  // v1 had no TTLs
  } else {
    rollback.now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    (void)map.migrations().add(
        2, 1, [&rollback](std::string_view k, Entry& e) { rollback.migrate(k, e); });
  }
  if (auto r = rt->registry().add(map); !r.ok()) return fail(r.error().to_string(), 2);
#endif

  ServerOptions options;
  options.maxclients = maxclients;
  Server server(rt, map, KVD_SCHEMA >= 2, options);
  if (rt != nullptr && rt->is_successor()) {
    // Restores the state and receives the sockets; most arrive early, into `server`.
    auto taken = rt->take_over(&server);
    if (!taken.ok()) return fail(taken.error().to_string(), 1);
    if (map.migrating()) {
      for (const std::string& key : rollback.expired) map.erase(key);
      std::string note = KVD_SCHEMA == 1
                             ? "rolled back from schema v" + std::to_string(map.peer_version()) +
                                   ": " + std::to_string(rollback.ttls_removed) +
                                   " TTLs removed (those keys no longer expire), " +
                                   std::to_string(rollback.expired.size()) + " expired keys dropped"
                             : "upgraded from schema v" + std::to_string(map.peer_version());
      std::fprintf(stderr, "kvd[%d]: %s\n", ::getpid(), note.c_str());
      server.set_upgrade_note(std::move(note));
    }
    for (InheritedSocket& s : *taken) {
      if (s.tag == "listener") {
        server.listen_on(std::move(s.fd), s.early);
      } else {
        server.adopt(std::move(s.fd), s.state, s.early);
      }
    }
  } else {
    uint16_t bound = 0;
    auto l = sample::listen_tcp(flag["--bind"], static_cast<uint16_t>(port), &bound);
    if (!l.ok()) return fail(l.error().to_string(), 2);
    server.listen_on(std::move(l).value());
    if (!flag["--port-file"].empty()) std::ofstream(flag["--port-file"]) << bound << "\n";
    std::fprintf(stderr, "kvd[%d]: schema v%d, serving %s port %u\n", ::getpid(), KVD_SCHEMA,
                 flag["--bind"].c_str(), bound);
  }
  if (rt != nullptr) rt->serving(server);  // pidfile, systemd READY=1; ends a blackout
  return server.run(signals.get());
}
