// RuntimeMetrics (host.h): the runtime's series, counted from the timeline records every
// role writes, so that metrics, the event log and `batonctl status` never disagree.
#include <algorithm>
#include <cstdint>
#include <string>

#include "handoff/host.h"
#include "handoff/messages.h"

namespace baton {

Result<void> RuntimeMetrics::init(Metrics& m, const uint64_t* generation) {
  const std::string id = build_id("/proc/self/exe");
  BATON_TRY(m.gauge_fn("baton_build_info", "the build that runs this process: 1",
                       {{"build_id", id.empty() ? "none" : id},
                        {"protocol", std::to_string(handoff::kProtocolVersion)}},
                       [] { return 1.0; }));
  BATON_TRY(m.gauge_fn("baton_generation",
                       "1 for a process started by hand, +1 per committed upgrade", {},
                       [generation] { return static_cast<double>(*generation); }));
  const char* const upgrades = "upgrades this server went through, by outcome";
  BATON_ASSIGN_OR_RETURN(committed,
                         m.counter("baton_upgrades_total", upgrades, {{"outcome", "committed"}}));
  BATON_ASSIGN_OR_RETURN(aborted,
                         m.counter("baton_upgrades_total", upgrades, {{"outcome", "aborted"}}));
  const char* const rollbacks =
      "rollbacks to the previous version during probation, by cause: the successor crashed, "
      "failed its health check, answered differently from the standby (shadow probes or the "
      "state digest), or an operator asked";
  BATON_ASSIGN_OR_RETURN(rollbacks_crashed,
                         m.counter("baton_rollbacks_total", rollbacks, {{"reason", "crashed"}}));
  BATON_ASSIGN_OR_RETURN(rollbacks_unhealthy,
                         m.counter("baton_rollbacks_total", rollbacks, {{"reason", "unhealthy"}}));
  BATON_ASSIGN_OR_RETURN(rollbacks_requested,
                         m.counter("baton_rollbacks_total", rollbacks, {{"reason", "requested"}}));
  BATON_ASSIGN_OR_RETURN(rollbacks_mismatch,
                         m.counter("baton_rollbacks_total", rollbacks, {{"reason", "mismatch"}}));
  const char* const probes =
      "shadow probes evaluated by the process receiving a stream, by result (the timeline's)";
  BATON_ASSIGN_OR_RETURN(probes_matched,
                         m.counter("baton_shadow_probes_total", probes, {{"result", "matched"}}));
  BATON_ASSIGN_OR_RETURN(probes_mismatched, m.counter("baton_shadow_probes_total", probes,
                                                      {{"result", "mismatched"}}));
  const char* const digests = "state digests compared at the cut during probation, by outcome";
  BATON_ASSIGN_OR_RETURN(digests_agreed,
                         m.counter("baton_state_digests_total", digests, {{"outcome", "agreed"}}));
  BATON_ASSIGN_OR_RETURN(digests_mismatched, m.counter("baton_state_digests_total", digests,
                                                       {{"outcome", "mismatch"}}));
  BATON_ASSIGN_OR_RETURN(promotions, m.counter("baton_promotions_total",
                                               "probations that ended with the new version kept"));
  BATON_ASSIGN_OR_RETURN(checkpoint_bytes,
                         m.counter("baton_checkpoint_bytes_total",
                                   "bytes of state checkpointed by committed upgrades"));
  BATON_ASSIGN_OR_RETURN(deltas, m.counter("baton_deltas_total",
                                           "deltas streamed to successors by committed upgrades"));
  BATON_ASSIGN_OR_RETURN(
      fds, m.counter("baton_fds_moved_total", "sockets handed over by committed upgrades"));
  // 100 us to 5 min: a blackout is sub-millisecond, a checkpoint of gigabytes minutes.
  const std::vector<double> bounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                      5,      10,      30,     60,    120,    300};
  const char* const phases =
      "durations of the phases of committed upgrades (the timeline's), in seconds";
  Histogram** each[] = {&spawn, &checkpoint, &catchup, &blackout, &total};
  const char* const names[] = {"spawn", "checkpoint", "catchup", "blackout", "total"};
  for (size_t i = 0; i < 5; ++i) {
    BATON_ASSIGN_OR_RETURN(*each[i], m.histogram("baton_upgrade_phase_seconds", phases, bounds,
                                                 {{"phase", names[i]}}));
  }
  return ok();
}

void RuntimeMetrics::record(const handoff::TimelineRecord& r) {
  if (committed == nullptr) return;
  probes_matched->inc(r.probes_evaluated - std::min(r.probes_evaluated, r.probe_mismatches));
  probes_mismatched->inc(r.probe_mismatches);
  // The successor compares the digests; the standby's record repeats its outcome.
  if (r.outcome == "promoted" || (r.outcome == "rolled back" && r.cause == "mismatch")) {
    if (r.digest.rfind("agreed", 0) == 0) digests_agreed->inc();
    if (r.digest.rfind("mismatch", 0) == 0) digests_mismatched->inc();
  }
  if (r.outcome == "aborted") {
    aborted->inc();
  } else if (r.outcome == "promoted") {
    promotions->inc();
  } else if (r.outcome == "rolled back") {
    (r.cause == "crashed"     ? rollbacks_crashed
     : r.cause == "unhealthy" ? rollbacks_unhealthy
     : r.cause == "mismatch"  ? rollbacks_mismatch
                              : rollbacks_requested)
        ->inc();
  } else if (r.outcome == "committed") {
    committed->inc();
    checkpoint_bytes->inc(r.checkpoint_bytes);
    deltas->inc(r.deltas);
    fds->inc(r.fds);
    spawn->observe(static_cast<double>(r.spawn_us) / 1e6);
    checkpoint->observe(static_cast<double>(r.checkpoint_us) / 1e6);
    catchup->observe(static_cast<double>(r.catchup_us) / 1e6);
    blackout->observe(static_cast<double>(r.blackout_us) / 1e6);
    total->observe(static_cast<double>(r.total_us) / 1e6);
  }
}

}  // namespace baton
