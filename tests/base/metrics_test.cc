// Metrics: the text format, what registration refuses, and how values continue across
// generations (carried() / adopt()).
#include "baton/metrics.h"

#include <gtest/gtest.h>

namespace baton {
namespace {

TEST(Metrics, WritesTheTextFormatFamilyByFamily) {
  Metrics m;
  Counter* ok = *m.counter("app_requests_total", "requests\nserved", {{"code", "200"}});
  Counter* bad = *m.counter("app_requests_total", "requests\nserved", {{"code", "a\"b\\"}});
  Gauge* g = *m.gauge("app_temperature", "degrees");
  ASSERT_TRUE(m.gauge_fn("app_open", "open things", {}, [] { return 3.0; }).ok());
  Histogram* h = *m.histogram("app_seconds", "durations", {0.001, 0.1, 10});
  ok->inc(5);
  bad->inc();
  g->set(-1.5);
  h->observe(0.0005);
  h->observe(0.05);
  h->observe(50);
  EXPECT_EQ(m.text(),
            "# HELP app_requests_total requests\\nserved\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{code=\"200\"} 5\n"
            "app_requests_total{code=\"a\\\"b\\\\\"} 1\n"
            "# HELP app_temperature degrees\n"
            "# TYPE app_temperature gauge\n"
            "app_temperature -1.5\n"
            "# HELP app_open open things\n"
            "# TYPE app_open gauge\n"
            "app_open 3\n"
            "# HELP app_seconds durations\n"
            "# TYPE app_seconds histogram\n"
            "app_seconds_bucket{le=\"0.001\"} 1\n"
            "app_seconds_bucket{le=\"0.1\"} 2\n"
            "app_seconds_bucket{le=\"10\"} 2\n"
            "app_seconds_bucket{le=\"+Inf\"} 3\n"
            "app_seconds_sum 50.0505\n"
            "app_seconds_count 3\n");
}

TEST(Metrics, RefusesWhatPrometheusWouldNotReadAndSaysWhy) {
  Metrics m;
  auto message = [](const auto& r) { return r.ok() ? std::string("ok") : r.error().message(); };
  EXPECT_EQ(message(m.counter("requests", "")), "metric requests: a counter's name ends in _total");
  EXPECT_EQ(message(m.gauge("open_total", "")),
            "metric open_total: only a counter's name ends in _total");
  EXPECT_EQ(message(m.counter("9lives_total", "")),
            "metric 9lives_total: not a valid name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
  EXPECT_EQ(message(m.counter("a_total", "", {{"bad-label", "x"}})),
            "metric a_total: label 'bad-label' is not a valid label name");
  EXPECT_EQ(message(m.histogram("h", "", {1}, {{"le", "x"}})),
            "metric h: a histogram may not have a label 'le'");
  EXPECT_EQ(message(m.histogram("h", "", {2, 1})),
            "metric h: bucket bounds must be finite and ascending");
  ASSERT_TRUE(m.counter("a_total", "", {{"k", "v"}}).ok());
  EXPECT_EQ(message(m.counter("a_total", "", {{"k", "v"}})),
            "metric a_total: series {k=\"v\"} registered twice");
  ASSERT_TRUE(m.gauge("c", "").ok());
  EXPECT_EQ(message(m.histogram("c", "", {1})), "metric c: registered already as a gauge");
}

TEST(Metrics, ASuccessorContinuesFromItsPredecessorsValues) {
  Metrics old_gen;
  (*old_gen.counter("x_total", "", {{"k", "a"}}))->inc(7);
  (*old_gen.counter("gone_total", "a series the next build dropped"))->inc(2);
  Histogram* h = *old_gen.histogram("d_seconds", "", {1});
  h->observe(0.5);
  h->observe(3);

  Metrics next;  // registers its series before it adopts, as a server does
  Counter* x = *next.counter("x_total", "", {{"k", "a"}});
  Histogram* d = *next.histogram("d_seconds", "", {1});
  next.adopt(old_gen.carried());
  EXPECT_EQ(x->value(), 7u);
  x->inc();
  d->observe(0.1);
  const std::string text = next.text();
  EXPECT_NE(text.find("x_total{k=\"a\"} 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_sum 3.6\n"), std::string::npos) << text;
  // A series this build does not register is carried on to the next one, and picked up
  // by a build that registers it later.
  Metrics third;
  third.adopt(next.carried());
  Counter* gone = *third.counter("gone_total", "");
  EXPECT_EQ(gone->value(), 2u);
  // A standby taking back adopts what its successor reached: never less than its own.
  Metrics standby;
  Counter* own = *standby.counter("x_total", "", {{"k", "a"}});
  own->inc(9);
  standby.adopt(old_gen.carried());
  EXPECT_EQ(own->value(), 9u);
  standby.adopt({{"x_total{k=\"a\"}", 12}, {"x_total{k=\"a\"}", -1}});
  EXPECT_EQ(own->value(), 12u);
}

// A build that changed a histogram's bounds adopts none of it: a _sum and _count that
// jumped while the buckets restarted would contradict each other.
TEST(Metrics, AHistogramWhoseBoundsChangedIsAdoptedWholeOrNotAtAll) {
  Metrics old_gen;
  Histogram* h = *old_gen.histogram("d_seconds", "", {1, 2});
  h->observe(0.5);
  h->observe(1.5);
  h->observe(7);
  const auto carried = old_gen.carried();

  Metrics fewer;  // a bound removed: the predecessor sent a bucket this build lacks
  Histogram* f = *fewer.histogram("d_seconds", "", {1});
  fewer.adopt(carried);
  Metrics more;  // a bound added: a bucket this build has was not sent
  Histogram* m = *more.histogram("d_seconds", "", {1, 2, 5});
  more.adopt(carried);
  for (Metrics* x : {&fewer, &more}) {
    const std::string text = x->text();
    EXPECT_NE(text.find("d_seconds_sum 0\n"), std::string::npos) << text;
    EXPECT_NE(text.find("d_seconds_count 0\n"), std::string::npos) << text;
    EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos) << text;
    // Its samples are not carried on either: the series is this build's, with other bounds.
    for (const auto& [key, value] : x->carried()) EXPECT_EQ(value, 0) << key;
  }
  f->observe(0.1);
  m->observe(0.1);
  EXPECT_NE(fewer.text().find("d_seconds_count 1\n"), std::string::npos) << fewer.text();

  Metrics same;  // the same bounds: every part, buckets included
  (void)*same.histogram("d_seconds", "", {1, 2});
  same.adopt(carried);
  const std::string text = same.text();
  EXPECT_NE(text.find("d_seconds_bucket{le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"2\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_sum 9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_count 3\n"), std::string::npos) << text;
}

// adopt() in one pass (it runs inside the freeze): every series finds its own value among
// many, names that are prefixes of others included, and the rest are carried on.
TEST(Metrics, AdoptMatchesEverySeriesAmongManyAndCarriesTheRest) {
  Metrics old_gen;
  for (int i = 0; i < 50; ++i) {
    const Labels l = {{"shard", std::to_string(i)}, {"kind", i % 2 ? "odd" : "even"}};
    (*old_gen.counter("req_total", "", l))->inc(static_cast<uint64_t>(i + 1));
    (*old_gen.counter("req_total_x_total", "", l))->inc(static_cast<uint64_t>(1000 + i));
    Histogram* h = *old_gen.histogram("req", "", {0.1, 1}, l);  // req_bucket, req_sum, ...
    for (int k = 0; k <= i; ++k) h->observe(k % 3 == 0 ? 0.05 : 0.5);
  }
  (*old_gen.counter("old_only_total", "", {{"a", "le=\"x\"}"}}))->inc(4);

  Metrics next;
  std::vector<Counter*> req, req_x;
  std::vector<Histogram*> hist;
  for (int i = 49; i >= 0; --i) {  // another order than the predecessor's
    const Labels l = {{"shard", std::to_string(i)}, {"kind", i % 2 ? "odd" : "even"}};
    req.push_back(*next.counter("req_total", "", l));
    req_x.push_back(*next.counter("req_total_x_total", "", l));
    hist.push_back(*next.histogram("req", "", {0.1, 1}, l));
  }
  auto samples = old_gen.carried();
  auto again = samples;  // a sample twice (a standby's own and its successor's): the larger
  for (auto& [key, value] : again) value /= 2;
  samples.insert(samples.end(), again.begin(), again.end());
  next.adopt(samples);
  for (int i = 0; i < 50; ++i) {
    const size_t at = static_cast<size_t>(49 - i);
    EXPECT_EQ(req[at]->value(), static_cast<uint64_t>(i + 1)) << i;
    EXPECT_EQ(req_x[at]->value(), static_cast<uint64_t>(1000 + i)) << i;
  }
  const std::string text = next.text();
  EXPECT_NE(text.find("req_bucket{shard=\"7\",kind=\"odd\",le=\"0.1\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("req_bucket{shard=\"7\",kind=\"odd\",le=\"+Inf\"} 8\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("req_count{shard=\"7\",kind=\"odd\"} 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("req_sum{shard=\"7\",kind=\"odd\"} 2.65\n"), std::string::npos) << text;
  // Not registered here: carried on once, to a build that registers it.
  Metrics third;
  third.adopt(next.carried());
  EXPECT_EQ((*third.counter("old_only_total", "", {{"a", "le=\"x\"}"}}))->value(), 4u);
}

// At exit the runtime answers scrapes it accepted already, after the server (whose state
// callback gauges read) may be gone: drop_callbacks() forgets them.
TEST(Metrics, DroppedCallbacksAreNeverCalledAndTheirSeriesAreLeftOut) {
  Metrics m;
  ASSERT_TRUE(m.gauge_fn("own_generation", "the runtime's", {}, [] { return 4.0; }).ok());
  const size_t own = m.callback_count();
  int calls = 0;
  ASSERT_TRUE(m.gauge_fn("app_open", "open things", {}, [&calls] { return ++calls; }).ok());
  (*m.counter("app_requests_total", "requests"))->inc(2);
  EXPECT_NE(m.text().find("app_open 1\n"), std::string::npos);
  m.drop_callbacks(own);
  EXPECT_EQ(m.text(),
            "# HELP own_generation the runtime's\n"
            "# TYPE own_generation gauge\n"
            "own_generation 4\n"
            "# HELP app_requests_total requests\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total 2\n");
  EXPECT_EQ(calls, 1);
  m.drop_callbacks();
  EXPECT_EQ(m.text().find("own_generation"), std::string::npos);
}

}  // namespace
}  // namespace baton
