// Shadow verification's sampling, evaluation, policy and digest bookkeeping.
#include "handoff/shadow.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "handoff/host.h"

namespace baton {

std::string shorten(std::string_view s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max) {
      out += "... (" + std::to_string(s.size()) + " bytes)";
      break;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

Shadow::Shadow(const ShadowPolicy& policy) : policy_(policy) {
  const double rate = std::clamp(policy.sample_rate, 0.0, 1.0);
  threshold_ = rate >= 1.0   ? UINT64_MAX
               : rate <= 0.0 ? 0
                             : static_cast<uint64_t>(std::ldexp(rate, 64));
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  rng_ = (static_cast<uint64_t>(ts.tv_nsec) << 20) ^ static_cast<uint64_t>(::getpid()) ^
         0x9e3779b97f4a7c15ULL;
  if (rng_ == 0) rng_ = 1;
}

void Shadow::reset() {
  mirroring_ = false;
  sent_ = 0;
  tally_ = {};
  digest_abandon();
  digests_.clear();
  digest_outcome.clear();
}

void Shadow::evaluate(const DeltaView& probe) {
  const std::string_view expected = probe.args.empty() ? std::string_view() : probe.args[0];
  ++tally_.evaluated;
  std::string got;
  std::string request;
  if (reads == nullptr) {
    got = "(this build registers no ShadowReads: Runtime::set_shadow_reads)";
    request = shorten(probe.key);
  } else {
    got = reads->evaluate(probe.key);
    if (got == expected) return;
    request = shorten(reads->describe(probe.key));
  }
  ++tally_.mismatched;
  if (tally_.discrepancies.size() >= kKeptDiscrepancies) return;
  tally_.discrepancies.push_back("LSN " + std::to_string(probe.lsn) + ": " + request + " -> " +
                                 sender + " replied \"" + shorten(expected) + "\", " + evaluator +
                                 " \"" + shorten(got) + "\"");
}

std::string Shadow::verdict(std::string_view who) const {
  if (tally_.mismatched <= policy_.max_mismatches) return "";
  std::string why = "shadow probe mismatch: " + std::to_string(tally_.mismatched) + " of " +
                    std::to_string(tally_.evaluated) + " probes evaluated by " + std::string(who) +
                    " answered differently (tolerated " + std::to_string(policy_.max_mismatches) +
                    ")";
  if (!tally_.discrepancies.empty()) why += "; first: " + tally_.discrepancies.front();
  return why;
}

Result<void> Shadow::digest_begin(Registry& registry, const DigestKey& key) {
  digest_abandon();
  digests_.clear();
  for (Section* s : registry.sections()) {
    const uint32_t as =
        std::min(s->schema_version(), s->peer_version() ? s->peer_version() : s->schema_version());
    auto begun = s->digest_begin(key, as);
    if (!begun.ok()) {
      digest_abandon();
      return Error(begun.error().kind(), "section '" + s->name() +
                                             "' cannot be digested as schema version " +
                                             std::to_string(as) + ": " + begun.error().message());
    }
    if (*begun) digest_sections_.emplace_back(s, as);
  }
  digesting_ = true;
  digest_next_ = 0;
  digest_started_us_ = monotonic_us();
  digest_outcome = "running";
  return ok();
}

bool Shadow::digest_step() {
  if (!digesting_) return true;
  while (digest_next_ < digest_sections_.size()) {
    auto [s, as] = digest_sections_[digest_next_];
    if (!s->digest_step(policy_.digest_slice_bytes)) return false;
    const StateDigest d = s->digest_result();
    digests_.push_back({s->name(), as, d.sum, d.entries});
    s->digest_end();
    ++digest_next_;
  }
  digesting_ = false;
  digest_sections_.clear();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f ms",
                static_cast<double>(monotonic_us() - digest_started_us_) / 1e3);
  digest_outcome = std::string("computed in ") + buf;
  return true;
}

void Shadow::digest_abandon() {
  if (digesting_) digest_outcome = "not completed: probation ended first";
  for (size_t i = digest_next_; i < digest_sections_.size(); ++i)
    digest_sections_[i].first->digest_end();
  digest_sections_.clear();
  digest_next_ = 0;
  digesting_ = false;
}

std::string Shadow::digest_compare(const std::vector<handoff::SectionDigest>& theirs,
                                   std::string_view them) {
  uint64_t entries = 0;
  for (const handoff::SectionDigest& mine : digests_) {
    auto it = std::find_if(theirs.begin(), theirs.end(),
                           [&](const handoff::SectionDigest& t) { return t.name == mine.name; });
    if (it == theirs.end()) continue;  // the other build has no digest for it
    char buf[160];
    if (it->version != mine.version) {
      std::snprintf(buf, sizeof buf, "hashed as schema versions %u and %u", it->version,
                    mine.version);
    } else if (it->sum != mine.sum || it->entries != mine.entries) {
      std::snprintf(buf, sizeof buf,
                    "%s has %" PRIu64 " entries, digest %016" PRIx64 "; this process %" PRIu64
                    " entries, digest %016" PRIx64,
                    std::string(them).c_str(), it->entries, it->sum, mine.entries, mine.sum);
    } else {
      entries += mine.entries;
      continue;
    }
    digest_outcome = "mismatch: section '" + mine.name + "' (schema version " +
                     std::to_string(mine.version) + "): " + buf;
    return "state digest mismatch in section '" + mine.name + "' at the cut (schema version " +
           std::to_string(mine.version) + "): " + buf;
  }
  digest_outcome = "agreed: " + std::to_string(digests_.size()) + " section(s), " +
                   std::to_string(entries) + " entries at the cut; " + digest_outcome;
  return "";
}

}  // namespace baton
