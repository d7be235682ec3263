// Runtime: the object a server builds in main(). It holds the process's Host and its
// current role, one class each (docs/protocol.md, "Roles"):
//   Incumbent    serving, maybe upgrading (incumbent.h)
//   Successor    taking over, inside take_over() (successor.h)
//   OnProbation  a successor serving on probation, beside its Incumbent (probation_shell.h)
//   Standby      the old process during probation (standby.h)
// Role changes happen between service() calls' work, never inside a role's own callback.
#include "baton/runtime.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "baton/unix_socket.h"
#include "handoff/control_server.h"
#include "handoff/host.h"
#include "handoff/incumbent.h"
#include "handoff/probation_shell.h"
#include "handoff/reaper.h"
#include "handoff/standby.h"
#include "handoff/successor.h"

namespace baton {

namespace {

constexpr const char* kEnvControl = "BATON_CONTROL_FD";
constexpr const char* kEnvStream = "BATON_STREAM_FD";
constexpr const char* kEnvGeneration = "BATON_GENERATION";
// At exit, the requests accepted already are answered within this (docs/protocol.md).
constexpr int64_t kFinishOpenUs = 200'000;

}  // namespace

class Runtime::Impl {
 public:
  Impl(RuntimeOptions options, FailPoints failpoints)
      : host_(std::move(options), std::move(failpoints)) {}

  ~Impl() {
    // From here on the process only answers what it accepted already (control_command()).
    // The server may be destroyed already (kvd's Server is, before its Runtime): no
    // gauge_fn callback of its may run; the runtime's own read what lives until the end.
    exiting_ = true;
    host_.metrics.drop_callbacks(own_callbacks_);
    finish_waiters();  // a commit without probation ends the process: tell batonctl first
    ControlServer::finish_open({&control_, &http_}, kFinishOpenUs);
    // Roles before the host they refer to; a standby never kills the successor it follows.
    standby_.reset();
    probation_.reset();
    incumbent_.reset();
    successor_.reset();
    if (!host_.handed_off) {  // a successor's pidfile and path are its own
      host_.remove_control_path();
      host_.remove_pidfile();
    }
    if (host_.handed_off && ::getpid() == 1) {
      // PID 1 of a namespace: exiting would kill the successor (handoff/reaper.h).
      std::vector<std::string> argv = host_.args;
      argv.insert(argv.begin(), host_.argv0);
      host_.say("PID 1 cannot re-execute as a reaper (" + exec_reaper(argv, host_.options.pidfile) +
                "); reaping with the server's memory still held");
      reap_in_place(host_.options.pidfile);
    }
  }

  Result<void> init(int argc, char** argv) {
    BATON_TRY(host_.init(argc, argv));
    for (const char* s :
         {"serving", "upgrading", "probation", "rolling-back", "standby", "taking-over"}) {
      BATON_TRY(host_.metrics.gauge_fn(
          "baton_state", "1 for what this process does now (batonctl status's state)",
          {{"state", s}}, [this, s] { return state() == s ? 1.0 : 0.0; }));
    }
    BATON_TRY(host_.metrics.gauge_fn(
        "baton_probation_remaining_seconds",
        "time left of the probation window this process takes part in; 0 outside one", {},
        [this] { return static_cast<double>(probation_remaining_ms()) / 1000.0; }));
    BATON_TRY(host_.metrics.gauge_fn(
        "baton_reverse_lag_bytes",
        "during probation: writes not yet in the reverse stream to the standby", {},
        [this] { return probation_ ? static_cast<double>(probation_->lag_bytes()) : 0.0; }));
    own_callbacks_ = host_.metrics.callback_count();  // the server's come after
    if (const char* c = std::getenv(kEnvControl)) {
      const char* s = std::getenv(kEnvStream);
      const char* g = std::getenv(kEnvGeneration);
      const int control = std::atoi(c), stream = s ? std::atoi(s) : -1;
      host_.generation = g ? std::strtoull(g, nullptr, 10) : 2;
      for (int fd : {control, stream}) {
        if (fd < 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
          return Error(ErrorKind::kInvalidArgument,
                       std::string(kEnvControl) + "/" + kEnvStream +
                           " do not name inherited fds; was this process started by Baton?");
        }
      }
      ::unsetenv(kEnvControl);
      ::unsetenv(kEnvStream);
      ::unsetenv(kEnvGeneration);
      successor_ = std::make_unique<Successor>(host_, UniqueFd(control), UniqueFd(stream));
      return ok();
    }
    BATON_TRY(host_.claim_pidfile());
    incumbent_ = std::make_unique<Incumbent>(host_);
    if (!host_.options.control_socket.empty()) BATON_TRY(host_.listen_control());
    if (!host_.options.metrics_listen.empty()) BATON_TRY(host_.listen_metrics());
    return ok();
  }

  // ---------------------------------------------------------------- successor

  Result<std::vector<InheritedSocket>> take_over(EarlySockets* early) {
    if (!successor_) {
      return Error(ErrorKind::kState,
                   is_successor_
                       ? "take_over() was called already"
                       : "take_over() is for a successor; this process was started by hand");
    }
    host_.early_sink = early;
    auto inherited = successor_->take_over(early);
    pending_timeline_ = std::move(successor_->pending_timeline());
    if (inherited.ok()) {
      if (auto start = successor_->take_probation_start()) {
        probation_ = std::make_unique<OnProbation>(host_, std::move(*start));
      }
      incumbent_ = std::make_unique<Incumbent>(host_);  // for the next upgrade
    }
    successor_.reset();
    return inherited;
  }

  // ---------------------------------------------------------------- loop

  void service() {
    announce();
    epoll_event events[16];
    const int n = ::epoll_wait(host_.epoll.get(), events, 16, 0);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == host_.signal_fd.get()) {
        read_signals();
      } else if (host_.control_listener && fd == host_.control_listener.get()) {
        control_.accept_all(fd);
      } else if (host_.metrics_listener && fd == host_.metrics_listener.get()) {
        http_.accept_all(fd);
      } else if (control_.on_fd(fd) || http_.on_fd(fd)) {
      } else if (probation_ && probation_->on_fd(fd)) {
      } else if (standby_ && standby_->on_fd(fd)) {
      } else if (incumbent_ && incumbent_->on_fd(fd)) {
      } else {
        host_.reap(fd);
      }
    }
    if (probation_) probation_->tick();
    if (standby_) standby_->tick();
    if (incumbent_) incumbent_->tick();
    control_.tick();
    http_.tick();
    change_roles();
    finish_waiters();
  }

  void change_roles() {
    if (incumbent_) {
      if (auto start = incumbent_->take_standby_start()) {
        incumbent_.reset();
        standby_ = std::make_unique<Standby>(host_, std::move(*start));
      }
    }
    if (probation_ && probation_->over()) probation_.reset();
    if (standby_ && standby_->serving()) {
      host_.reap_later(standby_->successor_pid(), standby_->take_pidfd());
      standby_.reset();
      incumbent_ = std::make_unique<Incumbent>(host_);
    }
  }

  void read_signals() {
    signalfd_siginfo info;
    while (::read(host_.signal_fd.get(), &info, sizeof info) == sizeof info) {
      host_.say("SIGUSR2 from pid " + std::to_string(info.ssi_pid));
      (void)request_upgrade();
    }
  }

  Result<void> request_upgrade() {
    // An outcome not sent yet is the previous upgrade's (it aborted in this epoll batch):
    // tagged as such now, before a new upgrade's waiters join, and sent from service().
    take_outcome();
    if (standby_) {
      const std::string why = "upgrade request ignored: this process is the standby of pid " +
                              std::to_string(standby_->successor_pid()) +
                              "; signal the process that serves";
      host_.say(why);
      return Error(ErrorKind::kState, why);
    }
    if (probation_) {
      const std::string why =
          "upgrade request refused: generation " + std::to_string(host_.generation) +
          " is on probation for " + handoff::seconds_text(probation_->machine().remaining_us()) +
          " more; promote it (batonctl promote) or roll it back (batonctl rollback) first";
      host_.say(why);
      return Error(ErrorKind::kState, why);
    }
    if (!incumbent_) return Error(ErrorKind::kState, "this process does not serve yet");
    BATON_TRY(incumbent_->machine().request_upgrade());
    ++upgrade_attempt_;
    // systemd shows the unit "reloading" until whichever process serves sends READY=1.
    host_.notify_systemd("RELOADING=1\nSTATUS=upgrading to generation " +
                         std::to_string(host_.generation + 1) +
                         "\nMONOTONIC_USEC=" + std::to_string(monotonic_us()) + "\n");
    return ok();
  }

  Result<void> promote() {
    if (!probation_) return Error(ErrorKind::kState, "no upgrade is on probation here");
    BATON_TRY(probation_->machine().promote("promoted by request"));
    return ok();
  }

  Result<void> rollback(std::string reason) {
    if (!probation_) return Error(ErrorKind::kState, "no upgrade is on probation here");
    return probation_->machine().rollback(std::move(reason));
  }

  // ---------------------------------------------------------------- batonctl socket

  ControlServer::Reply control_command(const std::string& cmd) {
    auto error = [](const Error& e) {
      return ControlServer::Reply{"error: " + e.message() + "\n"};
    };
    if (exiting_ && cmd != "status" && cmd != "metrics") {
      // An upgrade started now would spawn a successor only to kill it, and a waiter
      // would never hear its outcome.
      return {"error: this process is exiting (it handed off or is stopping); retry '" +
              cmd.substr(0, 64) + "' against the server that serves now\n"};
    }
    if (cmd == "upgrade" || cmd == "upgrade wait") {
      if (auto r = request_upgrade(); !r.ok()) return error(r.error());
      // `wait`: the outcome follows on this connection when the incumbent knows it
      // (Host::upgrade_outcome, sent from service()).
      return {"ok: upgrade to generation " + std::to_string(host_.generation + 1) + " started\n",
              cmd == "upgrade wait", upgrade_attempt_};
    }
    if (cmd == "status") return {status_json() + "\n"};
    if (cmd == "metrics") return {host_.metrics.text()};
    if (cmd == "rollback") {
      if (auto r = rollback("rollback requested by batonctl"); !r.ok()) return error(r.error());
      return {"ok: rolling back to generation " + std::to_string(host_.generation + 1) + "\n"};
    }
    if (cmd == "promote") {
      if (auto r = promote(); !r.ok()) return error(r.error());
      return {"ok: generation " + std::to_string(host_.generation) + " promoted\n"};
    }
    return {"error: unknown command '" + cmd.substr(0, 64) +
            "'; use upgrade, upgrade wait, status, metrics, rollback or promote\n"};
  }

  // The metrics endpoint: GET /metrics (or /), nothing else.
  ControlServer::Reply http_request(const std::string& head) {
    std::string line = head.substr(0, head.find('\n'));  // CRLF, or a bare LF
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t sp1 = line.find(' '), sp2 = line.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos ||
        line.compare(sp2 + 1, 5, "HTTP/") != 0) {
      return {ControlServer::kHttp.error(400, "not an HTTP request line: " + line.substr(0, 80))};
    }
    const std::string method = line.substr(0, sp1), path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method != "GET" && method != "HEAD") {
      return {ControlServer::kHttp.error(
          405, method.substr(0, 16) + " is not allowed; GET " + "/metrics")};
    }
    const std::string bare = path.substr(0, path.find('?'));
    if (bare != "/metrics" && bare != "/") {
      return {ControlServer::kHttp.error(404, "no " + bare.substr(0, 80) + " here; GET /metrics")};
    }
    const std::string body = host_.metrics.text();
    return {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
        (method == "GET" ? body : std::string())};
  }

  // The incumbent's outcome (Host::upgrade_outcome) is the latest attempt's: the next
  // one starts only after it, in request_upgrade(), which takes it first.
  void take_outcome() {
    if (host_.upgrade_outcome.empty()) return;
    outcomes_.emplace_back(upgrade_attempt_, std::exchange(host_.upgrade_outcome, {}));
  }

  // Sends each upgrade's outcome to the batonctl connections that wait for that upgrade.
  void finish_waiters() {
    take_outcome();
    for (const auto& [attempt, text] : outcomes_) control_.finish_waiters(text, attempt);
    outcomes_.clear();
  }

  std::string status_json() const {
    const std::string last_abort = incumbent_ ? incumbent_->machine().last_abort() : "";
    return "{\"pid\":" + std::to_string(::getpid()) +
           ",\"generation\":" + std::to_string(host_.generation) + ",\"state\":\"" + state() +
           "\",\"phase\":\"" + phase() +
           "\",\"probation_left_ms\":" + std::to_string(probation_remaining_ms()) +
           ",\"reverse_lag_bytes\":" + std::to_string(probation_ ? probation_->lag_bytes() : 0) +
           ",\"last_abort\":\"" + handoff::json_escape(last_abort) +
           "\",\"shadow\":" + shadow_json() + ",\"last_upgrade\":" +
           (host_.last_timeline.empty() ? std::string("null") : host_.last_timeline) + "}";
  }

  std::string shadow_json() const {
    const ShadowStats s = shadow_stats();
    return "{\"probes_sent\":" + std::to_string(s.probes_sent) +
           ",\"probes_evaluated\":" + std::to_string(s.probes_evaluated) +
           ",\"probe_mismatches\":" + std::to_string(s.probe_mismatches) + ",\"digest\":\"" +
           handoff::json_escape(s.digest) + "\"}";
  }

  ShadowStats shadow_stats() const {
    const Shadow& sh = host_.shadow;
    return {sh.sent(), sh.tally().evaluated, sh.tally().mismatched, sh.digest_outcome};
  }

  // ---------------------------------------------------------------- status

  std::string phase() const {
    if (standby_) return std::string(handoff::to_string(standby_->machine().phase()));
    if (probation_) return std::string(handoff::to_string(probation_->machine().phase()));
    if (successor_) return "taking-over";
    if (incumbent_ && upgrading()) {
      return std::string(handoff::to_string(incumbent_->machine().phase()));
    }
    return "serving";
  }

  // What this process does, in one word: "serving", "upgrading" (phase() says how far),
  // "probation" (serving, with a standby), "standby", "rolling-back" or "taking-over".
  std::string state() const {
    if (standby_) return "standby";
    if (probation_) {
      return probation_->machine().phase() == handoff::ProbationPhase::kOn ? "probation"
                                                                           : "rolling-back";
    }
    if (successor_) return "taking-over";
    return upgrading() ? "upgrading" : "serving";
  }

  int64_t probation_remaining_ms() const {
    if (standby_) return standby_->machine().remaining_us() / 1000;
    if (probation_) return probation_->machine().remaining_us() / 1000;
    return 0;
  }

  bool upgrading() const {
    if (!incumbent_) return false;
    const auto p = incumbent_->machine().phase();
    return p != handoff::IncumbentPhase::kIdle && p != handoff::IncumbentPhase::kCommitted;
  }

  int service_interval_ms() const {
    if (announce_pending_) return 0;
    // A standby reads the reverse stream in batches: a wake-up per frame cost the
    // successor's clients CPU on two cores. It wakes at once for its successor's death
    // (pidfd) and for control messages, so a rollback does not wait for this.
    // Its digest at the cut runs a slice per call: sooner, so that probation need not wait.
    if (standby_ && standby_->machine().phase() == handoff::StandbyPhase::kStandingBy) {
      return host_.shadow.digest_running() ? 1 : 5;
    }
    // A checkpoint takes its share of the loop's turns (CheckpointPacing), so the loop
    // must turn without sleeping while it may write.
    if (upgrading() && incumbent_->checkpoint_may_write()) return 0;
    if (upgrading() || probation_ || standby_) return 1;
    return control_.open() + http_.open() > 0 ? 50 : -1;  // a silent peer's deadline
  }

  // ---------------------------------------------------------------- serving

  void serving(UpgradeHooks& hooks, EarlySockets* early) {
    host_.hooks = &hooks;
    if (early != nullptr) host_.early_sink = early;
    served_at_us_ = monotonic_us();  // a successor's blackout ends here
    announce_pending_ = true;
    if (!pending_timeline_) announce();  // started by hand: no clients wait yet
  }

  // The pidfile, systemd and the timeline: after serving() the server's loop runs first
  // (a successor's clients wait for it), and this follows at its first service() call.
  void announce() {
    if (!announce_pending_) return;
    announce_pending_ = false;
    host_.announce_serving();
    // Last: whoever sees the upgrade's line in the event log finds the pidfile current.
    if (pending_timeline_) {
      handoff::TimelineRecord& r = *pending_timeline_;
      r.blackout_us = r.blackout_us ? served_at_us_ - r.blackout_us : 0;
      for (int64_t& w : r.worker_blackout_us) w = w ? served_at_us_ - w : 0;
      r.total_us = r.total_us ? served_at_us_ - r.total_us : 0;
      host_.write_timeline(r);
      pending_timeline_.reset();
    }
  }

  Host host_;
  ControlServer control_{host_, ControlServer::kControl,
                         [this](const std::string& c) { return control_command(c); }};
  ControlServer http_{host_, ControlServer::kHttp,
                      [this](const std::string& r) { return http_request(r); }};
  bool is_successor_ = false;
  std::unique_ptr<Successor> successor_;
  std::unique_ptr<Incumbent> incumbent_;
  std::unique_ptr<OnProbation> probation_;
  std::unique_ptr<Standby> standby_;
  std::optional<handoff::TimelineRecord> pending_timeline_;
  bool announce_pending_ = false;
  int64_t served_at_us_ = 0;
  uint64_t upgrade_attempt_ = 0;  // upgrades started by this process; tags waiters
  std::vector<std::pair<uint64_t, std::string>> outcomes_;  // attempt, outcome: not sent yet
  bool exiting_ = false;      // ~Impl runs: only status and metrics are answered
  size_t own_callbacks_ = 0;  // the runtime's gauge_fn() series: registered first
};

Result<std::unique_ptr<Runtime>> Runtime::create(int argc, char** argv, RuntimeOptions options) {
  run_reaper_if_asked();  // PID 1 re-executed after a handoff never returns from here
  const char* spec = std::getenv("BATON_FAILPOINTS");
  BATON_ASSIGN_OR_RETURN(FailPoints fp, FailPoints::parse(spec ? spec : ""));
  if (options.worker_threads > kMaxWorkers) {
    return Error(ErrorKind::kInvalidArgument, "RuntimeOptions::worker_threads is " +
                                                  std::to_string(options.worker_threads) +
                                                  "; at most " + std::to_string(kMaxWorkers));
  }
  if (options.worker_threads > 0 && options.probation_ms > 0) {
    return Error(ErrorKind::kInvalidArgument,
                 "RuntimeOptions::probation_ms with worker_threads is not supported yet: the "
                 "standby's reverse stream carries one thread's deltas (set one of them to 0)");
  }
  if (options.restore_nice < 0 || options.restore_nice > 19) {
    return Error(ErrorKind::kInvalidArgument,
                 "RuntimeOptions::restore_nice is " + std::to_string(options.restore_nice) +
                     "; it is 0..19 (how much lower a successor's restore runs; 0: as it serves)");
  }
  if (auto r = check_pacing(options.checkpoint_pacing); !r.ok()) {
    return std::move(r).error().with_context("RuntimeOptions::checkpoint_pacing");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(fp));
  BATON_TRY(impl->init(argc, argv));
  impl->is_successor_ = impl->successor_ != nullptr;
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;
Registry& Runtime::registry() { return impl_->host_.registry; }
Worker& Runtime::worker(unsigned index) {
  Workers& w = impl_->host_.workers;
  if (index < 1 || index > w.count()) {
    // A bug in main(), not input: no Worker to return, and nothing serves yet.
    std::fprintf(stderr,
                 "baton: Runtime::worker(%u): the workers are 1 to %u "
                 "(RuntimeOptions::worker_threads; 0 is the main thread's registry())\n",
                 index, w.count());
    std::abort();
  }
  return w.at(index);
}
Metrics& Runtime::metrics() { return impl_->host_.metrics; }
bool Runtime::is_successor() const { return impl_->is_successor_; }
uint64_t Runtime::generation() const { return impl_->host_.generation; }
Result<std::vector<InheritedSocket>> Runtime::take_over(EarlySockets* early) {
  return impl_->take_over(early);
}
void Runtime::serving(UpgradeHooks& hooks, EarlySockets* early) { impl_->serving(hooks, early); }
const std::string& Runtime::last_upgrade() const { return impl_->host_.last_timeline; }
int Runtime::poll_fd() const { return impl_->host_.epoll.get(); }
int Runtime::service_interval_ms() const { return impl_->service_interval_ms(); }
void Runtime::service() { impl_->service(); }
Result<void> Runtime::request_upgrade() { return impl_->request_upgrade(); }
bool Runtime::upgrading() const { return impl_->upgrading(); }
std::string Runtime::phase() const { return impl_->phase(); }
int64_t Runtime::probation_remaining_ms() const { return impl_->probation_remaining_ms(); }
bool Runtime::on_probation() const {
  return impl_->probation_ != nullptr &&
         impl_->probation_->machine().phase() == handoff::ProbationPhase::kOn;
}
bool Runtime::writes_durable() {
  return BATON_LIKELY(!impl_->probation_) || impl_->probation_->writes_durable();
}
void Runtime::accepted(int fd) {
  if (BATON_UNLIKELY(impl_->probation_ != nullptr)) impl_->probation_->accepted(fd);
}
void Runtime::report_unhealthy(std::string reason) {
  if (impl_->probation_) impl_->probation_->report_unhealthy(std::move(reason));
}
Result<void> Runtime::promote() { return impl_->promote(); }
void Runtime::set_shadow_reads(ShadowReads* reads) { impl_->host_.shadow.reads = reads; }
bool Runtime::shadow_sample() { return BATON_UNLIKELY(impl_->host_.shadow.sample()); }
void Runtime::shadow_probe(std::string_view request, std::string_view reply) {
  impl_->host_.shadow.probe(impl_->host_.registry.log(), request, reply);
}
ShadowStats Runtime::shadow_stats() const { return impl_->shadow_stats(); }
Result<void> Runtime::rollback(std::string reason) { return impl_->rollback(std::move(reason)); }

}  // namespace baton
