// samples/sessiond against real HTTP clients (h2load --h1, curl) and real upgrades: ten
// upgrades v1 to v2 and back under load with 500 idle keep-alive connections, every count
// exact afterwards by a client-side model; bad HTTP answered 400 on that connection only;
// an incompatible schema refused at WELCOME, before any state moves.
// Loopback only, port 0, a private directory per test, bounded waits, everything reaped.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kvd_process.h"
#include "server_process.h"

namespace baton {
namespace {

namespace http = boost::beast::http;
using testing::eventually;
using testing::field;
using testing::InstalledServer;

struct Response {
  int status = 0;  // 0: no response (closed, or timed out)
  std::string body;
  bool closed = false;  // the server closed the connection after it
};

// One keep-alive HTTP/1.1 connection; responses read by Beast's parser.
class HttpConn {
 public:
  explicit HttpConn(int port) {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  bool connected() const { return connected_; }
  bool send_raw(std::string_view bytes) {
    return ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  Response request(std::string_view method, std::string_view target, std::string_view body = "") {
    std::string req =
        std::string(method) + " " + std::string(target) +
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + std::string(body);
    if (!send_raw(req)) return {};
    return read_response();
  }
  Response read_response() {
    http::response_parser<http::string_body> p;
    p.eager(true);
    boost::beast::error_code ec;
    for (int reads = 0; reads < 10'000 && !p.is_done(); ++reads) {
      while (!buf_.empty() && !p.is_done()) {
        const size_t n = p.put(boost::asio::buffer(buf_), ec);
        buf_.erase(0, n);
        if (ec == http::error::need_more) break;
        if (ec) return {};
        if (n == 0) break;
      }
      if (p.is_done()) break;
      char chunk[16384];
      const ssize_t n = ::read(fd_.get(), chunk, sizeof chunk);
      if (n <= 0) return {0, "", true};
      buf_.append(chunk, static_cast<size_t>(n));
    }
    if (!p.is_done()) return {};
    Response r{static_cast<int>(p.get().result_int()), p.get().body(), !p.get().keep_alive()};
    return r;
  }
  // True when the server closed the connection (read returns 0 within 5 s).
  bool closed_by_server() {
    timeval tv{5, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    return ::read(fd_.get(), &c, 1) == 0;
  }

 private:
  UniqueFd fd_;
  bool connected_ = false;
  std::string buf_;
};

int json_int(const std::string& body, const std::string& name) {
  const std::string v = field(body, name);
  return v.empty() ? -1 : std::atoi(v.c_str());
}

class Sessiond : public InstalledServer {
 public:
  explicit Sessiond(const std::string& binary) : InstalledServer("sessiond", binary) {}
};

// h2load's summary lines, e.g. "requests: 10 total, 10 started, 10 done, 10 succeeded, 0
// failed, 0 errored, 0 timeout" and "status codes: 10 2xx, 0 3xx, 0 4xx, 0 5xx". (sscanf,
// not std::regex: the load threads parse at once, and libstdc++'s regex compiler fills a
// shared locale cache without a lock.)
std::map<std::string, long> h2load_summary(const std::string& out) {
  std::map<std::string, long> m;
  long v[7];
  if (size_t at = out.find("requests: ");
      at != std::string::npos &&
      std::sscanf(out.c_str() + at,
                  "requests: %ld total, %ld started, %ld done, %ld succeeded, %ld failed, %ld "
                  "errored, %ld timeout",
                  &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) == 7) {
    const char* names[] = {"total", "started", "done", "succeeded", "failed", "errored", "timeout"};
    for (int i = 0; i < 7; ++i) m[names[i]] = v[i];
  }
  if (size_t at = out.find("status codes: ");
      at != std::string::npos &&
      std::sscanf(out.c_str() + at, "status codes: %ld 2xx, %ld 3xx, %ld 4xx, %ld 5xx", &v[0],
                  &v[1], &v[2], &v[3]) == 4) {
    m["2xx"] = v[0];
    m["4xx"] = v[2];
    m["5xx"] = v[3];
  }
  return m;
}

constexpr int kSessions = 100;
constexpr int kIdle = 500;
constexpr int kUpgrades = 10;

// sessiond's shard function (main.cc, Sessions::owner): FNV-1a of the id.
unsigned owner(const std::string& id, unsigned workers) {
  uint32_t h = 2166136261u;
  for (char c : id) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return workers == 0 ? 0 : h % workers;  // an index into the ports
}

// Ten upgrades v1 to v2 and back under h2load with 500 idle connections, then every count
// checked against what the clients saw. `workers` 0: one thread and one port; else that
// many worker threads, each with its port and its shard of the sessions.
void ten_upgrades_under_load(unsigned workers) {
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/h2load"))
      << "h2load (Debian nghttp2-client) is missing: run tools/test.sh, which installs it";
  std::vector<std::string> args;
  if (workers > 0) args = {"--workers", std::to_string(workers)};
  InstalledServer s("sessiond", SESSIOND_V1_BIN, args);
  ASSERT_GT(s.port(), 0) << s.log();
  std::vector<int> ports;
  {
    std::istringstream in(testing::slurp(s.dir() + "/port"));
    for (int p; in >> p;) ports.push_back(p);
  }
  ASSERT_EQ(ports.size(), std::max(workers, 1u)) << testing::slurp(s.dir() + "/port");
  std::vector<std::unique_ptr<HttpConn>> admin;
  for (int p : ports) {
    admin.push_back(std::make_unique<HttpConn>(p));
    ASSERT_TRUE(admin.back()->connected());
  }
  auto id = [](int i) { return "s" + std::to_string(i); };
  auto at = [&](int i) -> HttpConn& { return *admin[owner(id(i), workers)]; };
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_EQ(at(i).request("PUT", "/sessions/" + id(i), "user" + std::to_string(i)).status, 201);
  }
  if (workers > 0) {  // a session asked of the wrong thread: 421, naming the right port
    const int i = 0, wrong = (owner(id(i), workers) + 1) % workers;
    Response r = admin[wrong]->request("GET", "/sessions/" + id(i));
    EXPECT_EQ(r.status, 421);
    EXPECT_NE(r.body.find("port " + std::to_string(ports[owner(id(i), workers)])),
              std::string::npos)
        << r.body;
  }
  // 500 idle keep-alive connections over every port, each proven live first.
  std::vector<std::unique_ptr<HttpConn>> idle;
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(std::make_unique<HttpConn>(ports[i % ports.size()]));
    ASSERT_TRUE(idle.back()->connected()) << "idle connection " << i;
  }
  for (auto& c : idle) ASSERT_EQ(c->request("GET", "/stats").status, 200);

  // h2load --h1 per port: 50 keep-alive connections (split over the ports) hitting every
  // session of that port's shard in turn, in runs of 20,000 requests back to back until the
  // upgrades are done. Each run completes, so each summary is exact (a run cut short by -D
  // leaves requests served but not counted).
  const std::string body = s.dir() + "/body";
  std::ofstream(body) << "x";  // h2load -d maps the file: it must not be empty
  std::atomic<bool> upgrades_done{false};
  std::mutex mu;
  std::map<std::string, long> sum;
  std::string failures;
  int runs = 0;
  std::vector<std::thread> load;
  for (size_t p = 0; p < ports.size(); ++p) {
    const std::string uris = s.dir() + "/uris." + std::to_string(p);
    {
      std::ofstream u(uris);
      for (int i = 0; i < kSessions; ++i) {
        if (owner(id(i), workers) == p)
          u << "http://127.0.0.1:" << ports[p] << "/sessions/" << id(i) << "/hit\n";
      }
    }
    const std::string conns = std::to_string(50 / ports.size());
    load.emplace_back([&, p, uris, conns] {
      for (int n = 0; n == 0 || !upgrades_done; ++n) {
        const std::string out_path = uris + ".h2load." + std::to_string(n);
        const pid_t pid = testing::spawn_process({"/usr/bin/h2load", "--h1", "-c", conns, "-m", "1",
                                                  "-n", "20000", "-i", uris, "-d", body},
                                                 out_path);
        const int status = pid > 0 ? testing::wait_process(pid, 300) : -1;
        const std::string out = testing::slurp(out_path);
        auto run = h2load_summary(out);
        std::lock_guard lock(mu);
        ++runs;
        if (status != 0 || run.size() != 10) {
          failures += "h2load on port " + std::to_string(ports[p]) + " (status " +
                      std::to_string(status) + "):\n" + out;
          return;
        }
        for (auto& [k, v] : run) sum[k] += v;
      }
    });
  }
  struct JoinAtExit {  // an assertion below returns early: stop the load first
    std::atomic<bool>& done;
    std::vector<std::thread>& t;
    ~JoinAtExit() {
      done = true;
      for (auto& x : t)
        if (x.joinable()) x.join();
    }
  } join_at_exit{upgrades_done, load};
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  std::vector<long> blackouts;
  std::vector<std::vector<long>> per_worker(workers);
  for (int i = 0; i < kUpgrades; ++i) {
    {
      std::lock_guard lock(mu);
      if (!failures.empty()) break;
    }
    const std::string to = i % 2 == 0 ? SESSIOND_V2_BIN : SESSIOND_V1_BIN;
    const size_t before = s.events().size();
    const pid_t next = s.upgrade_to(to);
    ASSERT_GT(next, 0) << "upgrade " << i << ":\n" << s.log();
    const std::string e = s.events()[before];
    ASSERT_EQ(field(e, "outcome"), "committed") << e;
    blackouts.push_back(std::stol(field(e, "blackout_us")));
    for (unsigned w = 0; w < workers; ++w) {  // "worker_blackout_us":{"1":..,"2":..}
      const std::string key = "\"" + std::to_string(w + 1) + "\":";
      const size_t obj = e.find("\"worker_blackout_us\":{");
      ASSERT_NE(obj, std::string::npos) << e;
      const size_t k = e.find(key, obj);
      ASSERT_NE(k, std::string::npos) << e;
      per_worker[w].push_back(std::stol(e.substr(k + key.size())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  upgrades_done = true;
  for (auto& t : load) t.join();
  ASSERT_TRUE(failures.empty()) << failures;
  EXPECT_GT(sum["succeeded"], 1000) << runs << " runs";
  EXPECT_EQ(sum["failed"], 0);
  EXPECT_EQ(sum["errored"], 0);
  EXPECT_EQ(sum["timeout"], 0);
  EXPECT_EQ(sum["2xx"], sum["succeeded"]);
  EXPECT_EQ(sum["done"], sum["total"]) << "no request left unanswered";

  // The model: every hit h2load saw answered is in exactly one session, once.
  long hits = 0;
  for (int i = 0; i < kSessions; ++i) {
    Response r = at(i).request("GET", "/sessions/" + id(i));
    ASSERT_EQ(r.status, 200) << i;
    EXPECT_EQ(field(r.body, "user"), "user" + std::to_string(i));
    hits += json_int(r.body, "hits");
  }
  EXPECT_EQ(hits, sum["2xx"]) << "hits counted by the sessions against 2xx seen by h2load";

  // Every idle connection survived the ten handoffs and is served by the last build.
  for (size_t i = 0; i < idle.size(); ++i) {
    Response r = idle[i]->request("GET", "/stats");
    ASSERT_EQ(r.status, 200) << "idle connection " << i << " after " << kUpgrades << " upgrades";
    ASSERT_EQ(json_int(r.body, "schema"), 1);  // ten upgrades from v1 end on v1
  }
  // The request counters (a Cell per thread) are exact too: setup, the 421, idle probes,
  // h2load, reads, and these.
  long requests = 0, created = 0;
  for (auto& a : admin) {
    Response stats = a->request("GET", "/stats");
    requests += json_int(stats.body, "requests");
    created += json_int(stats.body, "sessions_created");
  }
  const long probe421 = workers > 0 ? 1 : 0;
  EXPECT_EQ(requests, kSessions + probe421 + kIdle + sum["2xx"] + kSessions + kIdle +
                          static_cast<long>(admin.size()));
  EXPECT_EQ(created, kSessions);

  // The field only v2 writes survives v1's updates: v2 hits every session, v1 hits it
  // again (its update starts from the stored record), and v2 reads v2's value back.
  ASSERT_GT(s.upgrade_to(SESSIOND_V2_BIN), 0) << s.log();
  std::vector<std::string> last_hit(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_EQ(at(i).request("POST", "/sessions/" + id(i) + "/hit").status, 200);
    last_hit[i] = field(at(i).request("GET", "/sessions/" + id(i)).body, "lastHitMs");
    ASSERT_NE(last_hit[i], "0");
  }
  ASSERT_GT(s.upgrade_to(SESSIOND_V1_BIN), 0) << s.log();
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_EQ(at(i).request("POST", "/sessions/" + id(i) + "/hit").status, 200);
  }
  ASSERT_GT(s.upgrade_to(SESSIOND_V2_BIN), 0) << s.log();
  for (int i = 0; i < kSessions; ++i) {
    const std::string body = at(i).request("GET", "/sessions/" + id(i)).body;
    EXPECT_EQ(field(body, "lastHitMs"), last_hit[i]) << "v2's field after v1's update: " << body;
  }

  auto median = [](std::vector<long> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "sessiond, %u worker threads: %d upgrades under h2load (%d runs, %ld requests, "
      "%ld 2xx) with %d idle connections; blackout median %ld us, max %ld us",
      workers, kUpgrades, runs, sum["total"], sum["2xx"], kIdle, median(blackouts),
      *std::max_element(blackouts.begin(), blackouts.end()));
  for (unsigned w = 0; w < workers; ++w) {
    std::printf("; worker %u median %ld us", w + 1, median(per_worker[w]));
  }
  std::printf("\n");
}

TEST(Sessiond, TenUpgradesV1ToV2AndBackUnderH2loadLoseNoRequestConnectionOrCount) {
  ten_upgrades_under_load(0);
}

TEST(Sessiond, TwoWorkerThreadsUpgradeTenTimesWithEveryShardExact) { ten_upgrades_under_load(2); }

TEST(Sessiond, RealClientsWorkAndBadHttpGetsA400ClosingOnlyThatConnection) {
  Sessiond s(SESSIOND_BIN);
  const std::string base = "http://127.0.0.1:" + std::to_string(s.port());
  const std::string curl_out = s.dir() + "/curl.out";
  auto curl = [&](std::vector<std::string> args) {
    std::filesystem::remove(curl_out);
    args.insert(args.begin(),
                {"/usr/bin/curl", "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}\n"});
    const pid_t p = testing::spawn_process(args, curl_out);
    EXPECT_EQ(testing::wait_process(p, 20), 0);
    return testing::slurp(curl_out);
  };
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/curl")) << "curl is missing: run tools/test.sh";
  EXPECT_NE(curl({"-X", "PUT", "--data-binary", "ada", base + "/sessions/a1"}).find("\n201\n"),
            std::string::npos);
  EXPECT_NE(curl({"-X", "POST", base + "/sessions/a1/hit"}).find("1\n\n200\n"), std::string::npos);
  const std::string got = curl({base + "/sessions/a1"});
  EXPECT_NE(got.find("\"user\":\"ada\",\"hits\":1"), std::string::npos) << got;
  EXPECT_NE(got.find("\"lastHitMs\":"), std::string::npos) << "v2's field: " << got;
  EXPECT_NE(curl({base + "/sessions/nobody"}).find("\n404\n"), std::string::npos);
  EXPECT_NE(curl({base + "/sessions/bad%20id"}).find("\n400\n"), std::string::npos);
  EXPECT_NE(curl({"-X", "PATCH", base + "/sessions/a1"}).find("\n405\n"), std::string::npos);

  HttpConn good(s.port());
  ASSERT_EQ(good.request("GET", "/sessions/a1").status, 200);
  struct Bad {
    std::string bytes;
    int status;
  };
  for (const Bad& b :
       {Bad{"GARBAGE\r\n\r\n", 400}, Bad{"GET / HTTP/9.9\r\n\r\n", 400},
        Bad{"GET /stats HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400},
        Bad{"GET /stats HTTP/1.1\r\nX: " + std::string(10'000, 'a') + "\r\n\r\n", 400},
        Bad{"PUT /sessions/big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 413}}) {
    HttpConn bad(s.port());
    ASSERT_TRUE(bad.send_raw(b.bytes));
    Response r = bad.read_response();
    EXPECT_EQ(r.status, b.status) << b.bytes.substr(0, 40);
    EXPECT_TRUE(r.closed) << "Connection: close";
    EXPECT_TRUE(bad.closed_by_server()) << b.bytes.substr(0, 40);
    EXPECT_EQ(good.request("GET", "/sessions/a1").status, 200) << "the other connection serves on";
  }
  HttpConn pipelined(s.port());  // two requests in one write, answered in order
  ASSERT_TRUE(
      pipelined.send_raw("POST /sessions/a1/hit HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                         "GET /sessions/a1 HTTP/1.1\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(pipelined.read_response().body, "2\n");
  Response last = pipelined.read_response();
  EXPECT_NE(last.body.find("\"hits\":2"), std::string::npos) << last.body;
  EXPECT_TRUE(last.closed);
  Response stats = good.request("GET", "/stats");
  EXPECT_EQ(json_int(stats.body, "bad_requests"), 5) << stats.body;
}

TEST(Sessiond, AnIncompatibleSchemaIsRefusedAtWelcomeAndTheIncumbentServesOn) {
  Sessiond s(SESSIOND_V1_BIN);
  HttpConn c(s.port());
  ASSERT_EQ(c.request("PUT", "/sessions/k", "kim").status, 201);
  ASSERT_EQ(c.request("POST", "/limits/client1").status, 200);
  const pid_t before = s.serving_pid();
  const size_t events_before = s.events().size();
  ASSERT_TRUE(s.signal_upgrade(SESSIOND_BREAKING_BIN));
  ASSERT_TRUE(eventually([&] { return s.events().size() > events_before; }, 30)) << s.log();
  const std::string e = s.events()[events_before];
  EXPECT_EQ(field(e, "outcome"), "aborted") << e;
  EXPECT_NE(e.find("typed section 'limits' (Limit)"), std::string::npos) << e;
  EXPECT_NE(e.find("field 'count' (@1) of session.capnp:Limit is UInt64 here and UInt32 in the "
                   "peer"),
            std::string::npos)
      << e;
  EXPECT_EQ(field(e, "checkpoint_bytes"), "0") << "refused before any state moved: " << e;
  EXPECT_EQ(s.serving_pid(), before);
  EXPECT_NE(c.request("GET", "/sessions/k").body.find("\"user\":\"kim\""), std::string::npos);
  EXPECT_EQ(c.request("POST", "/limits/client1").status, 200);
}

}  // namespace
}  // namespace baton
