// TrackedMap: operation semantics, type errors, the byte estimate, and the cursor rule.
#include <gtest/gtest.h>

#include <set>

#include "baton/tracked_map.h"
#include "checkpoint_util.h"

namespace baton {
namespace {

TEST(TrackedMap, StringsIntegersAndErase) {
  TrackedMap m("kv", 1);
  m.set("a", "hello");
  EXPECT_EQ(m.find("a")->str(), "hello");
  EXPECT_EQ(m.incr_by("n", 5).value(), 5);
  EXPECT_EQ(m.incr_by("n", -7).value(), -2);
  auto bad = m.incr_by("a", 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kInvalidArgument);
  m.set("big", "9223372036854775807");
  EXPECT_FALSE(m.incr_by("big", 1).ok());
  EXPECT_TRUE(m.erase("a"));
  EXPECT_FALSE(m.erase("a"));
  EXPECT_EQ(m.size(), 2u);
}

TEST(TrackedMap, CollectionsBehaveLikeRedisAndEmptyOnesVanish) {
  TrackedMap m("kv", 1);
  std::string_view abc[] = {"a", "b", "c"};
  EXPECT_EQ(m.push("l", End::kLeft, abc).value(), 3u);  // c b a
  EXPECT_EQ(m.pop("l", End::kLeft).value().value(), "c");
  EXPECT_EQ(m.pop("l", End::kRight).value().value(), "a");
  EXPECT_EQ(m.pop("l", End::kRight).value().value(), "b");
  EXPECT_FALSE(m.contains("l"));
  EXPECT_FALSE(m.pop("l", End::kLeft).value().has_value());

  EXPECT_EQ(m.sadd("s", abc).value(), 3u);
  EXPECT_EQ(m.sadd("s", abc).value(), 0u);
  EXPECT_EQ(m.srem("s", std::span(abc, 1)).value(), 1u);
  EXPECT_TRUE(m.spop("s", 7).value().has_value());
  EXPECT_TRUE(m.spop("s", 7).value().has_value());
  EXPECT_FALSE(m.contains("s"));

  std::string_view fv[] = {"f", "1", "g", "2"};
  EXPECT_EQ(m.hset("h", fv).value(), 2u);
  EXPECT_EQ(m.hdel("h", std::span(fv, 1)).value(), 1u);
  EXPECT_EQ(m.find("h")->hash()->at("g"), "2");

  EXPECT_EQ(m.zadd("z", 2.0, "two").value(), 1u);
  EXPECT_EQ(m.zadd("z", 1.0, "one").value(), 1u);
  EXPECT_EQ(m.zadd("z", 3.0, "one").value(), 0u);  // rescore
  auto min = m.zpopmin("z").value();
  EXPECT_EQ(min->first, "two");
  EXPECT_EQ(min->second, 2.0);
}

TEST(TrackedMap, WrongTypeIsAnErrorAndChangesNothing) {
  TrackedMap m("kv", 1);
  m.set("s", "x");
  std::string_view v[] = {"a"};
  for (auto r : {m.push("s", End::kLeft, v).ok(), m.sadd("s", v).ok(), m.hset("s", v).ok()}) {
    EXPECT_FALSE(r);
  }
  auto r = m.sadd("s", v);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kWrongType);
  EXPECT_EQ(m.find("s")->str(), "x");
}

TEST(TrackedMap, RunningByteEstimateMatchesARecount) {
  TrackedMap m("kv", 1);
  testing::RandomOps ops(42, 200);
  for (int i = 0; i < 20000; ++i) {
    ops.one(m);
    if (i % 997 == 0) {
      ASSERT_EQ(m.estimate_bytes(), m.recount_bytes()) << "after op " << i;
    }
  }
  EXPECT_EQ(m.estimate_bytes(), m.recount_bytes());
}

TEST(TrackedMap, IndexSurvivesHeavyChurn) {
  TrackedMap m("kv", 1);
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 5000; ++i) m.set("key" + std::to_string(i), std::to_string(i + round));
    for (int i = 0; i < 5000; i += 2) ASSERT_TRUE(m.erase("key" + std::to_string(i)));
    for (int i = 1; i < 5000; i += 2) {
      const Entry* e = m.find("key" + std::to_string(i));
      ASSERT_NE(e, nullptr);
      ASSERT_EQ(e->str(), std::to_string(i + round));
    }
    for (int i = 0; i < 5000; i += 2) ASSERT_EQ(m.find("key" + std::to_string(i)), nullptr);
  }
}

TEST(TrackedMap, IdleMutationsLogNothing) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  m.set("a", "1");
  (void)m.incr_by("n", 1);
  EXPECT_EQ(reg.log().pending_count(), 0u);
  EXPECT_EQ(reg.log().last_lsn(), 0u);
}

TEST(TrackedMap, CursorRuleLogsOnlyEntriesTheSnapshotHasPassedOrWillSkip) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  for (int i = 0; i < 10; ++i) m.set("k" + std::to_string(i), "v");
  reg.log().begin_capture();
  m.snapshot_begin();
  SnapshotSink sink;
  // A tiny budget writes one entry per step: k0 only.
  EXPECT_FALSE(m.snapshot_step(sink, 1));
  ASSERT_EQ(sink.records().size(), 1u);
  EXPECT_EQ(sink.records()[0].first, "k0");
  m.set("k0", "passed");  // behind the cursor: logged
  m.set("k5", "ahead");   // ahead of the cursor: the snapshot will carry it
  m.set("new", "born");   // born during the snapshot: logged, never written
  EXPECT_EQ(reg.log().pending_count(), 2u);
  std::vector<std::string> written;
  for (int i = 0; i < 100; ++i) {
    sink.clear();
    bool done = m.snapshot_step(sink, 1);
    for (auto& [k, e] : sink.records()) written.emplace_back(k);
    if (done) break;
  }
  EXPECT_EQ(written.size(), 9u);  // k1..k9; "new" is skipped
  for (auto& k : written) EXPECT_NE(k, "new");
  m.snapshot_end();
  m.set("k5", "after");  // after the snapshot everything is logged
  EXPECT_EQ(reg.log().pending_count(), 3u);
  reg.log().end_capture();
}

TEST(TrackedMap, EraseExpiredSweepsInBudgetedStepsAndLogsErases) {
  Registry reg;
  TrackedMap m("kv", 2);
  ASSERT_TRUE(reg.add(m).ok());
  for (int i = 0; i < 100; ++i) m.set("k" + std::to_string(i), "v", i % 2 ? 1000 : 0);
  m.set("later", "v", 5000);
  reg.log().begin_capture();  // no snapshot runs: every mutation is logged
  size_t cursor = 0, erased = 0;
  for (int step = 0; step < 100 && erased < 50; ++step) {
    size_t n = m.erase_expired(/*now_ms=*/2000, 10, &cursor);
    EXPECT_LE(n, 10u);
    erased += n;
  }
  EXPECT_EQ(erased, 50u);
  EXPECT_EQ(m.size(), 51u);
  EXPECT_TRUE(m.contains("later"));
  EXPECT_TRUE(m.contains("k0"));
  EXPECT_FALSE(m.contains("k1"));
  EXPECT_EQ(reg.log().pending_count(), 50u);
  EXPECT_EQ(m.erase_expired(2000, 1000, &cursor), 0u);
  EXPECT_EQ(m.recount_bytes(), m.estimate_bytes());
  reg.log().end_capture();
}

TEST(TrackedMap, SpopReachesEveryMemberAndShrinksASparseSet) {
  TrackedMap m("kv", 1);
  std::vector<std::string> members;
  for (int i = 0; i < 2000; ++i) members.push_back("m" + std::to_string(i));
  for (size_t i = 0; i < members.size(); i += 100) {
    std::vector<std::string_view> chunk(members.begin() + i, members.begin() + i + 100);
    ASSERT_TRUE(m.sadd("s", chunk).ok());
  }
  std::set<std::string> popped;
  for (uint64_t r = 0; r < 2000; ++r) {
    auto p = m.spop("s", r * 0x9e3779b97f4a7c15ull);
    ASSERT_TRUE(p.ok() && p->has_value());
    EXPECT_TRUE(popped.insert(**p).second) << **p << " popped twice";
  }
  EXPECT_EQ(popped.size(), 2000u);
  EXPECT_FALSE(m.contains("s"));
}

TEST(Registry, RejectsDuplicateAndBadNames) {
  Registry reg;
  TrackedMap a("kv", 1), b("kv", 1), c(std::string(48, 'x'), 1), d("", 1);
  EXPECT_TRUE(reg.add(a).ok());
  auto dup = reg.add(b);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message().find("already registered"), std::string::npos);
  EXPECT_FALSE(reg.add(c).ok());
  EXPECT_FALSE(reg.add(d).ok());
}

}  // namespace
}  // namespace baton
