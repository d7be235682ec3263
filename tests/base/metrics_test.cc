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

}  // namespace
}  // namespace baton
