// kvd: an in-memory key-value server for Redis clients that replaces its own binary on
// SIGUSR2 without dropping a connection or a write. One source, three builds:
//   kvd     schema v2, per-key expiry (SET EX/PX, EXPIRE, TTL)
//   kvd-v1  schema v1, no expiry; upgrades to kvd and back
//   kvd-bare  kvd without Baton, to measure what the runtime costs
//   kvd-divergent  kvd with a deliberate bug, as a successor, chosen by $KVD_DIVERGE:
//                  "get" (GET answers wrongly for one key in 1000), "get-after-commit"
//                  (the same, once it serves), "migration" (its v1 -> v2 migration
//                  corrupts one string value in 1000): what shadow verification must catch
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
  auto parsed =
      sample::parse_flags(argc, argv,
                          {{"--port", "6379"},
                           {"--bind", "127.0.0.1"},
                           {"--pidfile", ""},
                           {"--event-log", ""},
                           {"--control", ""},
                           {"--metrics", ""},
                           {"--maxclients", "10000"},
                           {"--probation-ms", "2000"},
                           {"--port-file", ""},
                           {"--shadow-rate", "0"},
                           {"--shadow-min-probes", "0"},
                           {"--shadow-max-mismatches", "0"},
                           {"--digest", "0"},
                           {"--checkpoint-share", "0.3"},
                           {"--restore-nice", "0"}},
                          {"--port", "--maxclients", "--probation-ms", "--shadow-min-probes",
                           "--shadow-max-mismatches", "--digest", "--restore-nice"});
  if (!parsed.ok()) return fail(parsed.error().message(), 2);
  auto& flag = parsed.value();
  const long port = std::atol(flag["--port"].c_str());
  const long maxclients = std::atol(flag["--maxclients"].c_str());
  if (port > 65535) return fail("--port is 0..65535 (0: any free port)", 2);
  if (maxclients < 1) return fail("--maxclients must be at least 1", 2);
  const long probation_ms = std::atol(flag["--probation-ms"].c_str());
  if (probation_ms < 0 || probation_ms > 3'600'000) {
    return fail("--probation-ms is 0..3600000 (0: no probation, the old process exits at commit)",
                2);
  }

  char* rate_end = nullptr;
  const double shadow_rate = std::strtod(flag["--shadow-rate"].c_str(), &rate_end);
  if (rate_end == flag["--shadow-rate"].c_str() || *rate_end != '\0' || !(shadow_rate >= 0) ||
      shadow_rate > 1) {
    return fail("--shadow-rate is the fraction of reads mirrored during an upgrade, 0..1 (got '" +
                    flag["--shadow-rate"] + "')",
                2);
  }
  char* share_end = nullptr;
  const double checkpoint_share = std::strtod(flag["--checkpoint-share"].c_str(), &share_end);
  if (share_end == flag["--checkpoint-share"].c_str() || *share_end != '\0' ||
      !(checkpoint_share > 0) || !(checkpoint_share < 1)) {
    return fail(
        "--checkpoint-share is the share of the server's busy time an upgrade's "
        "checkpoint takes, above 0 and below 1 (got '" +
            flag["--checkpoint-share"] + "')",
        2);
  }
  const long restore_nice = std::atol(flag["--restore-nice"].c_str());
  if (restore_nice < 0 || restore_nice > 19) {
    return fail(
        "--restore-nice is 0..19: how much lower a successor's restore runs than it "
        "serves (got '" +
            flag["--restore-nice"] + "')",
        2);
  }
  if (flag["--digest"] != "0" && flag["--digest"] != "1") {
    return fail("--digest is 0 or 1 (1: compare a state digest at the cut during probation)", 2);
  }

  // SIGTERM and SIGINT stop the server from its loop; SIGHUP and SIGUSR1 (a log rotator's,
  // an operator's stray kill) are logged and ignored rather than killing every key.
  // Blocked before any thread starts.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&handled, sig);
  sigprocmask(SIG_BLOCK, &handled, nullptr);
  UniqueFd signals(::signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC));

  TrackedMap map("kvd", KVD_SCHEMA);  // all of kvd's data, and all that survives an upgrade
  kvd::Rollback rollback;
  std::string diverge;  // kvd-divergent's bug, if any
#ifdef KVD_BARE
  Runtime* rt = nullptr;
#else
  RuntimeOptions opt;
  opt.pidfile = flag["--pidfile"];
  opt.event_log = flag["--event-log"];
  opt.control_socket = flag["--control"];
  opt.metrics_listen = flag["--metrics"];
  opt.probation_ms = static_cast<uint32_t>(probation_ms);
  opt.shadow.sample_rate = shadow_rate;
  opt.shadow.min_probes = std::strtoull(flag["--shadow-min-probes"].c_str(), nullptr, 10);
  opt.shadow.max_mismatches = std::strtoull(flag["--shadow-max-mismatches"].c_str(), nullptr, 10);
  opt.shadow.digest = flag["--digest"] == "1";
  opt.checkpoint_pacing.share = checkpoint_share;
  opt.restore_nice = static_cast<int>(restore_nice);
  auto created = Runtime::create(argc, argv, opt);
  if (!created.ok()) return fail(created.error().to_string(), 2);
  Runtime* rt = created->get();
#ifdef KVD_DIVERGENT
  if (const char* d = std::getenv("KVD_DIVERGE"); d != nullptr && rt->is_successor()) diverge = d;
#endif
  if (KVD_SCHEMA == 2) {
    if (diverge == "migration") {
      (void)map.migrations().add(1, 2, [](std::string_view k, Entry& e) {
        if (e.is_string() && std::hash<std::string_view>{}(k) % 1000 == 0) e.own_string() += "!";
      });
    } else {
      (void)map.migrations().add(1, 2, [](std::string_view, Entry&) {});  // v1 had no TTLs
    }
    // For the state digest only (a pure function, as a digest needs): the view of a v2
    // entry in v1, whose keys never expire. A v2 successor of v1 hashes its state so.
    (void)map.migrations().add(2, 1, [](std::string_view, Entry& e) { e.expires_at_ms = 0; });
  } else {
    rollback.now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    // Now, not at startup: a standby migrates the writes its v2 successor streams back.
    (void)map.migrations().add(2, 1, [&rollback](std::string_view k, Entry& e) {
      rollback.now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
      rollback.migrate(k, e);
    });
  }
  if (auto r = rt->registry().add(map); !r.ok()) return fail(r.error().to_string(), 2);
#endif

  ServerOptions options;
  options.maxclients = maxclients;
#ifdef KVD_CRASH_AFTER_MS
  if (rt != nullptr && rt->is_successor()) options.crash_after_ms = KVD_CRASH_AFTER_MS;
#endif
  Server server(rt, map, KVD_SCHEMA >= 2, options);
  if (rt != nullptr) rt->set_shadow_reads(&server);  // before take_over(): replay runs probes
  if (diverge == "get") server.store().set_diverge_get(true);
  // A rollback from a v2 successor: keys it streamed back already expired are dropped,
  // as after a take-over (docs/design.md, "kvd's schema versions").
  server.set_on_resume([&] {
    for (const std::string& key : rollback.expired) map.erase(key);
    if (!rollback.expired.empty() || rollback.ttls_removed != 0) {
      std::fprintf(stderr, "kvd[%d]: rolled back: %llu TTLs removed, %zu expired keys dropped\n",
                   ::getpid(), static_cast<unsigned long long>(rollback.ttls_removed),
                   rollback.expired.size());
    }
    rollback.expired.clear();
  });
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
    if (diverge == "get-after-commit") server.store().set_diverge_get(true);
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
  if (rt != nullptr) rt->serving(server, &server);  // pidfile, READY=1; ends a blackout
  return server.run(signals.get());
}
