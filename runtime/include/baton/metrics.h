// Metrics: counters, gauges and histograms in Prometheus's text format (version 0.0.4),
// served by the runtime on the control socket (`batonctl metrics`) and on an optional HTTP
// listener that moves at an upgrade like the server's own (RuntimeOptions::metrics_listen).
// Counters and histograms continue across generations: the incumbent sends them with
// FROZEN and the successor adopts them (docs/protocol.md, "Metrics"). A server registers
// its own next to the runtime's (Runtime::metrics()).
//
// Updates are atomic (relaxed), so any thread may count; registration and text() are for
// the server's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/result.h"

namespace baton {

/// Label name/value pairs of one series, e.g. {{"outcome", "committed"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  friend class Metrics;
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  friend class Metrics;
  std::vector<double> bounds_;                        // ascending, finite
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf), not cumulative
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// Registers a series; the pointer lives as long as this object. A name is
  /// [a-zA-Z_:][a-zA-Z0-9_:]*, a counter's ends in "_total"; one name has one type and
  /// help, and each label set once. Errors (kInvalidArgument) name what is wrong.
  Result<Counter*> counter(std::string_view name, std::string_view help, Labels labels = {});
  Result<Gauge*> gauge(std::string_view name, std::string_view help, Labels labels = {});
  /// A gauge read when scraped, e.g. the number of open connections. `read` runs on the
  /// server's thread from text(), until drop_callbacks().
  Result<void> gauge_fn(std::string_view name, std::string_view help, Labels labels,
                        std::function<double()> read);
  /// How many gauge_fn() series are registered: a mark for drop_callbacks().
  size_t callback_count() const { return callbacks_; }
  /// Destroys the callbacks of every gauge_fn() series but the first `keep` registered;
  /// text() leaves those series out from then on. The runtime calls it as it is
  /// destroyed, keeping its own, before it answers the scrapes it accepted already: by
  /// then the server whose state the others read may be gone.
  void drop_callbacks(size_t keep = 0);
  /// `upper_bounds` ascending and finite; "+Inf" is added.
  Result<Histogram*> histogram(std::string_view name, std::string_view help,
                               std::vector<double> upper_bounds, Labels labels = {});

  /// Every family, in registration order, in the text exposition format.
  std::string text() const;

  /// What continues across generations: one sample per counter, and per histogram bucket
  /// (not cumulative), sum and count, keyed by its series text (name{labels}). Samples
  /// adopted for series this build does not register are carried on too.
  using Sample = std::pair<std::string, double>;
  std::vector<Sample> carried() const;
  /// Takes the predecessor's samples: each known series becomes the larger of its own and
  /// the received value (a successor counts from zero; a standby taking back counts on
  /// from what its successor reached). A histogram is adopted whole or not at all: only if
  /// the samples hold exactly its buckets (the same bounds), else its samples are dropped,
  /// since a _sum and _count that jumped without their buckets would contradict them. One
  /// pass over the samples: it runs inside the freeze.
  void adopt(const std::vector<Sample>& samples);

 private:
  struct Family;
  struct Series;
  Result<Series*> add(std::string_view name, std::string_view help, int type, Labels labels);
  std::vector<std::unique_ptr<Family>> families_;
  std::vector<Sample> foreign_;  // adopted samples of series not registered here
  size_t callbacks_ = 0;         // gauge_fn() series so far
};

}  // namespace baton
