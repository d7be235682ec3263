// Metrics (baton/metrics.h): the registry and Prometheus's text format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), written here rather
// than with prometheus-cpp (docs/dependencies.md).
#include "baton/metrics.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

namespace baton {

namespace {

enum Type { kCounter, kGauge, kGaugeFn, kHistogram };
const char* const kTypeName[] = {"counter", "gauge", "gauge", "histogram"};

bool valid_name(std::string_view n, bool label) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return !(label && n.rfind("__", 0) == 0);
}

// A label value or help text, escaped as the format wants.
std::string escape(std::string_view s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {  // 10, not 1e+01
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // %.17g is exact but noisy (0.1 -> 0.10000000000000001); the shortest form that reads
  // back equal is what people expect to see.
  for (int p = 1; p < 17; ++p) {
    char shorter[40];
    std::snprintf(shorter, sizeof shorter, "%.*g", p, v);
    if (std::strtod(shorter, nullptr) == v) return shorter;
  }
  return buf;
}

// "{a=\"x\",b=\"y\"}", or "" without labels; `extra` is appended (a bucket's le).
std::string label_text(const Labels& labels, std::string_view extra = {}) {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ',';
    out += k + "=\"" + escape(v, true) + "\"";
  }
  if (!extra.empty()) {
    if (out.size() > 1) out += ',';
    out += extra;
  }
  return out + "}";
}

// Bucket i's le="..." (the last one is +Inf).
std::string bucket_label(const std::vector<double>& bounds, size_t i) {
  return "le=\"" + (i < bounds.size() ? number(bounds[i]) : "+Inf") + "\"";
}

// A bucket's key up to its le (which label_text() puts last): "h_bucket{a=\"x\"," or
// "h_bucket{", or "" if `key` is not a bucket's. A label value cannot hide an le=" (its
// quotes are escaped).
std::string_view bucket_prefix(std::string_view key) {
  const size_t le = key.rfind("le=\"");
  if (le == std::string_view::npos || le == 0 || (key[le - 1] != '{' && key[le - 1] != ',') ||
      key.back() != '}') {
    return {};
  }
  return key.substr(0, le);
}

constexpr double kTwo64 = 18446744073709551616.0;  // a sample at or above is no uint64_t

// Raises `a` to `v` unless it holds more already; a CAS loop, since the server's threads
// may count at the same time.
template <typename T>
void raise_to(std::atomic<T>& a, T v) {
  T now = a.load(std::memory_order_relaxed);
  while (v > now && !a.compare_exchange_weak(now, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

struct Metrics::Series {
  Labels labels;
  std::string labels_text;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::function<double()> read;
  size_t callback = 0;  // with `read`: how many gauge_fn() series came before it
  std::unique_ptr<Histogram> histogram;
};

struct Metrics::Family {
  std::string name, help;
  int type = kCounter;
  std::vector<std::unique_ptr<Series>> series;
};

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Metrics::Metrics() = default;
Metrics::~Metrics() = default;

Result<Metrics::Series*> Metrics::add(std::string_view name, std::string_view help, int type,
                                      Labels labels) {
  auto bad = [&](std::string what) {
    return Error(ErrorKind::kInvalidArgument, "metric " + std::string(name) + ": " + what);
  };
  if (!valid_name(name, false)) return bad("not a valid name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
  const bool total = name.size() > 6 && name.substr(name.size() - 6) == "_total";
  if (type == kCounter && !total) return bad("a counter's name ends in _total");
  if (type != kCounter && total) return bad("only a counter's name ends in _total");
  for (const auto& [k, v] : labels) {
    if (!valid_name(k, true)) return bad("label '" + k + "' is not a valid label name");
    if (type == kHistogram && k == "le") return bad("a histogram may not have a label 'le'");
  }
  Family* family = nullptr;
  for (auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (family == nullptr) {
    families_.push_back(std::make_unique<Family>());
    family = families_.back().get();
    family->name = name;
    family->help = help;
    family->type = type;
  } else if ((family->type == kHistogram) != (type == kHistogram) ||
             (family->type == kCounter) != (type == kCounter)) {
    return bad(std::string("registered already as a ") + kTypeName[family->type]);
  }
  std::string text = label_text(labels);
  for (auto& s : family->series) {
    if (s->labels_text == text) return bad("series " + text + " registered twice");
  }
  family->series.push_back(std::make_unique<Series>());
  Series* s = family->series.back().get();
  s->labels = std::move(labels);
  s->labels_text = std::move(text);
  return s;
}

Result<Counter*> Metrics::counter(std::string_view name, std::string_view help, Labels labels) {
  BATON_ASSIGN_OR_RETURN(Series * s, add(name, help, kCounter, std::move(labels)));
  s->counter = std::make_unique<Counter>();
  adopt(std::exchange(foreign_, {}));  // a predecessor's value for it, if it sent one
  return s->counter.get();
}

Result<Gauge*> Metrics::gauge(std::string_view name, std::string_view help, Labels labels) {
  BATON_ASSIGN_OR_RETURN(Series * s, add(name, help, kGauge, std::move(labels)));
  s->gauge = std::make_unique<Gauge>();
  return s->gauge.get();
}

Result<void> Metrics::gauge_fn(std::string_view name, std::string_view help, Labels labels,
                               std::function<double()> read) {
  BATON_ASSIGN_OR_RETURN(Series * s, add(name, help, kGaugeFn, std::move(labels)));
  s->read = std::move(read);
  s->callback = callbacks_++;
  return ok();
}

void Metrics::drop_callbacks(size_t keep) {
  for (auto& f : families_) {
    for (auto& s : f->series) {
      if (s->read && s->callback >= keep) s->read = nullptr;
    }
  }
}

Result<Histogram*> Metrics::histogram(std::string_view name, std::string_view help,
                                      std::vector<double> upper_bounds, Labels labels) {
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i]) || (i > 0 && upper_bounds[i] <= upper_bounds[i - 1])) {
      return Error(ErrorKind::kInvalidArgument,
                   "metric " + std::string(name) + ": bucket bounds must be finite and ascending");
    }
  }
  BATON_ASSIGN_OR_RETURN(Series * s, add(name, help, kHistogram, std::move(labels)));
  s->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  adopt(std::exchange(foreign_, {}));
  return s->histogram.get();
}

std::string Metrics::text() const {
  std::string out;
  for (const auto& f : families_) {
    // A family of callback gauges after drop_callbacks() has nothing to show.
    const bool empty = std::none_of(f->series.begin(), f->series.end(), [](const auto& s) {
      return s->counter || s->gauge || s->read || s->histogram;
    });
    if (empty) continue;
    out += "# HELP " + f->name + " " + escape(f->help, false) + "\n";
    out += "# TYPE " + f->name + " " + kTypeName[f->type] + "\n";
    for (const auto& s : f->series) {
      if (s->counter) {
        out += f->name + s->labels_text + " " + std::to_string(s->counter->value()) + "\n";
      } else if (s->gauge) {
        out += f->name + s->labels_text + " " + number(s->gauge->value()) + "\n";
      } else if (s->read) {
        out += f->name + s->labels_text + " " + number(s->read()) + "\n";
      } else if (const Histogram* h = s->histogram.get()) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= h->bounds_.size(); ++i) {
          cumulative += h->buckets_[i].load(std::memory_order_relaxed);
          const std::string le = bucket_label(h->bounds_, i);
          out += f->name + "_bucket" + label_text(s->labels, le) + " " +
                 std::to_string(cumulative) + "\n";
        }
        out += f->name + "_sum" + s->labels_text + " " + number(h->sum_.load()) + "\n";
        out += f->name + "_count" + s->labels_text + " " + std::to_string(cumulative) + "\n";
      }
    }
  }
  return out;
}

std::vector<Metrics::Sample> Metrics::carried() const {
  std::vector<Sample> out = foreign_;
  for (const auto& f : families_) {
    for (const auto& s : f->series) {
      if (s->counter) {
        out.emplace_back(f->name + s->labels_text, static_cast<double>(s->counter->value()));
      } else if (const Histogram* h = s->histogram.get()) {
        for (size_t i = 0; i <= h->bounds_.size(); ++i) {
          const std::string le = bucket_label(h->bounds_, i);
          out.emplace_back(f->name + "_bucket" + label_text(s->labels, le),
                           static_cast<double>(h->buckets_[i].load()));
        }
        out.emplace_back(f->name + "_sum" + s->labels_text, h->sum_.load());
        out.emplace_back(f->name + "_count" + s->labels_text,
                         static_cast<double>(h->count_.load()));
      }
    }
  }
  return out;
}

void Metrics::adopt(const std::vector<Sample>& samples) {
  if (samples.empty()) return;  // each registration adopts foreign_, mostly empty
  // Where each key this build registers goes, built once: a counter, or a histogram's
  // bucket (0..bounds), sum or count. Then one pass over the samples.
  constexpr int kCounterPart = -1, kSumPart = -2, kCountPart = -3;
  struct Target {
    Series* series;
    int part;
  };
  std::unordered_map<std::string, Target> targets;
  std::unordered_map<std::string, Series*> buckets_of;  // bucket_prefix() -> its histogram
  for (const auto& f : families_) {
    for (const auto& s : f->series) {
      if (s->counter) {
        targets.emplace(f->name + s->labels_text, Target{s.get(), kCounterPart});
      } else if (const Histogram* h = s->histogram.get()) {
        std::string key;
        for (size_t i = 0; i <= h->bounds_.size(); ++i) {
          key = f->name + "_bucket" + label_text(s->labels, bucket_label(h->bounds_, i));
          targets.emplace(key, Target{s.get(), static_cast<int>(i)});
        }
        buckets_of.emplace(std::string(bucket_prefix(key)), s.get());
        targets.emplace(f->name + "_sum" + s->labels_text, Target{s.get(), kSumPart});
        targets.emplace(f->name + "_count" + s->labels_text, Target{s.get(), kCountPart});
      }
    }
  }
  // A histogram's samples are collected first: it is adopted only if they are complete.
  struct Received {
    std::vector<double> buckets;  // -1: not received
    double sum = -1, count = -1;
    bool foreign_bucket = false;  // a bucket at a bound this build does not have
  };
  std::unordered_map<Series*, Received> histograms;
  auto received = [&histograms](Series* s) -> Received& {
    Received& r = histograms[s];
    if (r.buckets.empty()) r.buckets.assign(s->histogram->bounds_.size() + 1, -1);
    return r;
  };
  std::unordered_map<std::string, size_t> foreign_at;
  for (size_t i = 0; i < foreign_.size(); ++i) foreign_at.emplace(foreign_[i].first, i);

  for (const Sample& sample : samples) {
    const std::string& key = sample.first;
    const double value = sample.second;
    if (!(value >= 0) || !std::isfinite(value)) continue;  // counters never are
    if (auto t = targets.find(key); t != targets.end()) {
      Series* s = t->second.series;
      if (t->second.part == kCounterPart) {
        if (value < kTwo64) raise_to(s->counter->value_, static_cast<uint64_t>(value));
        continue;
      }
      Received& r = received(s);
      double& slot = t->second.part == kSumPart ? r.sum
                     : t->second.part == kCountPart
                         ? r.count
                         : r.buckets[static_cast<size_t>(t->second.part)];
      slot = std::max(slot, value);
      continue;
    }
    if (const std::string_view prefix = bucket_prefix(key); !prefix.empty()) {
      if (auto h = buckets_of.find(std::string(prefix)); h != buckets_of.end()) {
        received(h->second).foreign_bucket = true;  // the bounds changed between builds
        continue;
      }
    }
    // A series this build does not register: carried on, in case the next one does.
    if (auto f = foreign_at.find(key); f != foreign_at.end()) {
      foreign_[f->second].second = std::max(foreign_[f->second].second, value);
    } else {
      foreign_at.emplace(key, foreign_.size());
      foreign_.emplace_back(key, value);
    }
  }

  for (auto& [s, r] : histograms) {
    const bool complete =
        !r.foreign_bucket && r.sum >= 0 && r.count >= 0 &&
        std::all_of(r.buckets.begin(), r.buckets.end(), [](double b) { return b >= 0; });
    if (!complete) continue;  // dropped whole: see adopt()'s comment in metrics.h
    Histogram& h = *s->histogram;
    for (size_t i = 0; i < r.buckets.size(); ++i) {
      if (r.buckets[i] < kTwo64) raise_to(h.buckets_[i], static_cast<uint64_t>(r.buckets[i]));
    }
    raise_to(h.sum_, r.sum);
    if (r.count < kTwo64) raise_to(h.count_, static_cast<uint64_t>(r.count));
  }
}

}  // namespace baton
