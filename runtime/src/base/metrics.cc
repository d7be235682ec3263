// Metrics (baton/metrics.h): the registry and Prometheus's text format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), written here rather
// than with prometheus-cpp (docs/dependencies.md).
#include "baton/metrics.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

}  // namespace

struct Metrics::Series {
  Labels labels;
  std::string labels_text;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::function<double()> read;
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
  return ok();
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
  auto raise = [](auto& atomic, auto v) {
    if (v > atomic.load()) atomic.store(v);
  };
  for (const auto& [key, value] : samples) {
    if (!(value >= 0) || !std::isfinite(value)) continue;  // counters never are
    bool known = false;
    for (const auto& f : families_) {
      if (key.rfind(f->name, 0) != 0) continue;
      const std::string rest = key.substr(f->name.size());
      for (const auto& s : f->series) {
        if (s->counter && rest == s->labels_text) {
          raise(s->counter->value_, static_cast<uint64_t>(value));
          known = true;
        } else if (Histogram* h = s->histogram.get()) {
          if (rest == "_sum" + s->labels_text) {
            raise(h->sum_, value);
            known = true;
          } else if (rest == "_count" + s->labels_text) {
            raise(h->count_, static_cast<uint64_t>(value));
            known = true;
          }
          for (size_t i = 0; i <= h->bounds_.size() && !known; ++i) {
            const std::string le = bucket_label(h->bounds_, i);
            if (rest == "_bucket" + label_text(s->labels, le)) {
              raise(h->buckets_[i], static_cast<uint64_t>(value));
              known = true;
            }
          }
        }
        if (known) break;
      }
      if (known) break;
    }
    if (known) continue;
    auto same = [&](const Sample& s) { return s.first == key; };
    auto it = std::find_if(foreign_.begin(), foreign_.end(), same);
    if (it == foreign_.end()) {
      foreign_.emplace_back(key, value);
    } else {
      it->second = std::max(it->second, value);
    }
  }
}

}  // namespace baton
