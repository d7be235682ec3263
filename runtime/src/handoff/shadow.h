// Shadow: a process's part in shadow verification (docs/protocol.md, "Shadow
// verification"). As the sender of a stream it samples reads and mirrors them as probe
// records; as its receiver it evaluates them through the server's ShadowReads and tallies
// the discrepancies; around probation it computes the state digest at the cut.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/runtime.h"
#include "baton/section.h"
#include "handoff/messages.h"

namespace baton {

/// Discrepancies kept per upgrade, in the tally and the timeline.
inline constexpr size_t kKeptDiscrepancies = 3;

class Shadow {
 public:
  explicit Shadow(const ShadowPolicy& policy);

  const ShadowPolicy& policy() const { return policy_; }
  /// A new stream starts (an upgrade, or probation): the counts start over.
  void reset();

  // --- sending side
  /// On while this process streams to a peer that evaluates probes.
  void mirror(bool on) { mirroring_ = on && threshold_ != 0; }
  bool mirroring() const { return mirroring_; }
  bool sample() {
    if (!mirroring_) return false;
    rng_ ^= rng_ << 13;  // xorshift64
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return rng_ <= threshold_;
  }
  void probe(DeltaLog& log, std::string_view request, std::string_view reply) {
    if (!mirroring_ || !log.capturing()) return;
    log.append_probe(request, reply);
    ++sent_;
  }
  uint64_t sent() const { return sent_; }

  // --- receiving side
  ShadowReads* reads = nullptr;
  /// Who sent and who evaluates the probes, for discrepancies: set by the roles.
  std::string sender = "the incumbent", evaluator = "the successor";
  /// Evaluates one probe record against this process's state now.
  void evaluate(const DeltaView& probe);
  /// What the receiving side evaluated: this process's own count when it receives, the
  /// peer's report (set_tally) when it sends.
  const handoff::ProbeTally& tally() const { return tally_; }
  void set_tally(handoff::ProbeTally t) { tally_ = std::move(t); }
  /// Non-empty when the tally breaks the policy: why the upgrade must stop. `who` names
  /// the process that evaluated ("the successor", "the standby").
  std::string verdict(std::string_view who) const;

  // --- the state digest at the cut
  /// Starts the digest of every section that has one, each hashed as the lower of its
  /// own schema version and its peer's (a downgrade's migration may drop what only the
  /// newer version holds: the lower is the view both states convert to exactly).
  Result<void> digest_begin(Registry& registry, const DigestKey& key);
  /// One slice; true once every section is hashed (and at once without a digest).
  bool digest_step();
  bool digest_running() const { return digesting_; }
  const std::vector<handoff::SectionDigest>& digests() const { return digests_; }
  void digest_abandon();
  /// Compares this process's digests with the peer's: "" when they agree, else which
  /// section differs and how. Sets digest_outcome either way.
  std::string digest_compare(const std::vector<handoff::SectionDigest>& theirs,
                             std::string_view them);
  std::string digest_outcome;  // ShadowStats::digest

 private:
  ShadowPolicy policy_;
  uint64_t threshold_;
  uint64_t rng_;
  bool mirroring_ = false;
  uint64_t sent_ = 0;
  handoff::ProbeTally tally_;
  bool digesting_ = false;
  std::vector<std::pair<Section*, uint32_t>> digest_sections_;  // section, version hashed as
  size_t digest_next_ = 0;
  std::vector<handoff::SectionDigest> digests_;
  int64_t digest_started_us_ = 0;
};

/// `s` cut to `max` bytes with non-printable bytes escaped, for logs and the timeline.
std::string shorten(std::string_view s, size_t max = 120);

}  // namespace baton
