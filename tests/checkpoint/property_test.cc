// The consistency property: random mutations (INCR, LPUSH, SPOP, FLUSHALL, ...) race a
// sliced snapshot; restore + replay of the deltas must equal the live state exactly.
#include <gtest/gtest.h>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"

namespace baton {
namespace {

struct Outcome {
  bool equal = false;
  uint64_t deltas = 0;
  uint64_t records = 0;
};

Outcome run_seed(uint64_t seed) {
  Registry reg;
  TrackedMap live("kv", 1), side("side", 1);
  EXPECT_TRUE(reg.add(live).ok());
  EXPECT_TRUE(reg.add(side).ok());
  testing::RandomOps ops(seed, 40 + seed % 200);
  auto& rng = ops.rng();
  const int warmup = 200 + rng() % 800;
  for (int i = 0; i < warmup; ++i) ops.one(rng() % 4 ? live : side);

  CheckpointOptions opt;
  opt.slice_bytes = 1 + rng() % 600;  // from one record per slice to many
  // Odd seeds write as the runtime does, paced by time: several slices in one turn, with
  // no mutation between them, as many as the share and the clock allow (the seed fixes the
  // operations; the clock, how many slices each turn takes).
  const bool paced = seed % 2 == 1;
  opt.pacing.share = 0.1 + static_cast<double>(rng() % 80) / 100;
  opt.pacing.max_pause_us = static_cast<int64_t>(rng() % 200);
  // The prefault helper's CPU is charged to the pacing; a debt at a share of 0.1 would take
  // longer to repay than the guard below allows. Exactness does not depend on it.
  if (paced) opt.prefault = false;
  auto w = CheckpointWriter::begin(reg, opt);
  EXPECT_TRUE(w.ok());
  std::vector<std::string> frames;
  for (int guard = 0; guard < 100000; ++guard) {
    auto done = paced ? w->turn() : w->step();
    EXPECT_TRUE(done.ok());
    if (!done.ok() || done.value()) break;
    for (int n = rng() % 12; n > 0; --n) ops.one(rng() % 4 ? live : side);
    if (rng() % 5 == 0) frames.push_back(reg.log().take_frame());
  }
  auto cp = w->finish();
  EXPECT_TRUE(cp.ok());
  // Catch-up: the server keeps writing after the checkpoint is sealed.
  for (int n = rng() % 300; n > 0; --n) {
    ops.one(rng() % 4 ? live : side);
    if (rng() % 50 == 0) frames.push_back(reg.log().take_frame());
  }
  frames.push_back(reg.log().take_frame());
  EXPECT_FALSE(reg.log().overflowed());

  Registry reg2;
  TrackedMap live2("kv", 1), side2("side", 1);
  EXPECT_TRUE(reg2.add(live2).ok());
  EXPECT_TRUE(reg2.add(side2).ok());
  auto r = restore_checkpoint(cp->fd(), reg2);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (!r.ok()) return {};
  DeltaReplayer replay(*r);
  for (const auto& f : frames) {
    if (f.empty()) continue;
    auto a = replay.apply_frame(f);
    EXPECT_TRUE(a.ok()) << "seed " << seed << ": " << a.error().to_string();
    if (!a.ok()) return {};
  }
  EXPECT_EQ(replay.next_lsn(), reg.log().last_lsn() + 1);
  Outcome o;
  o.equal = live2.same_contents(live) && side2.same_contents(side) &&
            live2.estimate_bytes() == live2.recount_bytes();
  o.deltas = replay.applied();
  o.records = r->records;
  reg.log().end_capture();
  return o;
}

TEST(CheckpointProperty, RestorePlusReplayEqualsLiveStateOverManySeeds) {
  uint64_t total_deltas = 0, total_records = 0;
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    Outcome o = run_seed(seed);
    ASSERT_TRUE(o.equal) << "state diverged for seed " << seed;
    total_deltas += o.deltas;
    total_records += o.records;
  }
  // The property must have been exercised: both snapshot records and raced deltas.
  EXPECT_GT(total_deltas, 10000u);
  EXPECT_GT(total_records, 10000u);
}

TEST(CheckpointProperty, NaiveReplayOfEveryDeltaWouldDiverge) {
  // Guard against a vacuous property: replaying ALL mutations since L0 on top of the
  // fuzzy snapshot (ignoring the cursor rule) double-applies INCRs and pushes.
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  for (int i = 0; i < 100; ++i) (void)m.incr_by("c" + std::to_string(i), 1);
  CheckpointOptions opt;
  opt.slice_bytes = 1;
  auto w = CheckpointWriter::begin(reg, opt);
  ASSERT_TRUE(w.ok());
  ASSERT_FALSE(w->step().value());  // c0 written
  (void)m.incr_by("c0", 1);         // passed: logged
  (void)m.incr_by("c99", 1);        // not passed: the snapshot carries it
  EXPECT_EQ(reg.log().pending_count(), 1u);
  while (!w->step().value()) {
  }
  auto cp = w->finish();
  ASSERT_TRUE(cp.ok());
  Registry reg2;
  TrackedMap m2("kv", 1);
  ASSERT_TRUE(reg2.add(m2).ok());
  auto r = restore_checkpoint(cp->fd(), reg2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(m2.find("c99")->str(), "2");
  DeltaReplayer replay(*r);
  ASSERT_TRUE(replay.apply_frame(reg.log().take_frame()).ok());
  EXPECT_EQ(m2.find("c0")->str(), "2");
  EXPECT_TRUE(m2.same_contents(m));
  reg.log().end_capture();
}

TEST(CheckpointProperty, ReplayRefusesGapsAndDuplicates) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  auto cp = testing::checkpoint_now(reg);
  m.set("a", "1");
  std::string f1 = reg.log().take_frame();
  m.set("b", "2");
  std::string f2 = reg.log().take_frame();
  reg.log().end_capture();
  Registry reg2;
  TrackedMap m2("kv", 1);
  ASSERT_TRUE(reg2.add(m2).ok());
  auto r = restore_checkpoint(cp.fd(), reg2);
  ASSERT_TRUE(r.ok());
  DeltaReplayer replay(*r);
  auto gap = replay.apply_frame(f2);
  ASSERT_FALSE(gap.ok());
  EXPECT_NE(gap.error().message().find("deltas lost"), std::string::npos);
  ASSERT_TRUE(replay.apply_frame(f1).ok());
  auto dup = replay.apply_frame(f1);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message().find("replayed twice"), std::string::npos);
  ASSERT_TRUE(replay.apply_frame(f2).ok());
  EXPECT_TRUE(m2.same_contents(m));
}

}  // namespace
}  // namespace baton
