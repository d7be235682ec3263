// Schema migration on restore and replay: v1 -> v2, v2 -> v1, and missing steps.
#include <gtest/gtest.h>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"

namespace baton {
namespace {

using testing::checkpoint_now;

// The kvd-style pair: v2 adds per-key expiry; rolling back to v1 drops it (counted).
struct Versioned {
  explicit Versioned(uint32_t version) : map("kv", version) {
    EXPECT_TRUE(reg.add(map).ok());
    EXPECT_TRUE(map.migrations().add(1, 2, [](std::string_view, Entry&) {}).ok());
    EXPECT_TRUE(map.migrations()
                    .add(2, 1,
                         [this](std::string_view, Entry& e) {
                           if (e.expires_at_ms != 0) ++dropped_expiries;
                           e.expires_at_ms = 0;
                         })
                    .ok());
  }
  Registry reg;
  TrackedMap map;
  int dropped_expiries = 0;
};

TEST(Migration, V1CheckpointRestoresIntoV2WithoutExpiries) {
  Versioned v1(1);
  v1.map.set("a", "1");
  std::string_view l[] = {"x", "y"};
  (void)v1.map.push("l", End::kLeft, l);
  auto cp = checkpoint_now(v1.reg);
  v1.reg.log().end_capture();

  Versioned v2(2);
  auto r = restore_checkpoint(cp.fd(), v2.reg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(v2.map.same_contents(v1.map));
  ASSERT_EQ(r->notes.size(), 1u);
  EXPECT_EQ(r->notes[0], "section 'kv' migrated from schema version 1 to 2");
}

TEST(Migration, AStringGrownPastItsLimitFailsTheRestoreNamingIt) {
  Versioned v1(1);
  v1.map.set("a", "1");
  auto cp = checkpoint_now(v1.reg);
  v1.reg.log().end_capture();

  Registry reg2;
  TrackedMap v2("kv", 2);
  ASSERT_TRUE(reg2.add(v2).ok());
  // The size is checked before any byte is read, so the view's bytes are never touched.
  ASSERT_TRUE(v2.migrations()
                  .add(1, 2,
                       [](std::string_view, Entry& e) {
                         e.own_string().append(
                             std::string_view(e.str().data(), CompactString::kMaxSize));
                       })
                  .ok());
  auto r = restore_checkpoint(cp.fd(), reg2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kCapacity);
  EXPECT_NE(r.error().message().find("longer than the 2 GiB - 1 a CompactString holds"),
            std::string::npos)
      << r.error().message();
}

TEST(Migration, V2RollbackToV1DropsExpiriesExplicitly) {
  Versioned v2(2);
  v2.map.set("volatile", "1", 1900000000000);
  v2.map.set("durable", "2");
  auto cp = checkpoint_now(v2.reg);
  // A write after L0 with an expiry: the replayed delta must be migrated too.
  v2.map.set("late", "3", 1900000000001);
  std::string frame = v2.reg.log().take_frame();
  v2.reg.log().end_capture();

  Versioned v1(1);
  auto r = restore_checkpoint(cp.fd(), v1.reg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  DeltaReplayer replay(*r);
  ASSERT_TRUE(replay.apply_frame(frame).ok());
  EXPECT_EQ(v1.dropped_expiries, 2);
  EXPECT_EQ(v1.map.find("volatile")->expires_at_ms, 0);
  EXPECT_EQ(v1.map.find("late")->expires_at_ms, 0);
  EXPECT_EQ(v1.map.find("late")->str(), "3");
  EXPECT_EQ(v1.map.size(), 3u);
}

TEST(Migration, V1ToV2AndBackIsLosslessForV1Data) {
  Versioned a(1);
  testing::RandomOps ops(7);
  for (int i = 0; i < 2000; ++i) ops.one(a.map);
  // v1 data carries no expiries; strip any the random driver set.
  a.map.for_each([&](std::string_view k, const Entry& e) {
    if (e.expires_at_ms) a.map.expire_at(k, 0);
  });
  auto cp1 = checkpoint_now(a.reg);
  a.reg.log().end_capture();
  Versioned b(2);
  ASSERT_TRUE(restore_checkpoint(cp1.fd(), b.reg).ok());
  auto cp2 = checkpoint_now(b.reg);
  b.reg.log().end_capture();
  Versioned c(1);
  ASSERT_TRUE(restore_checkpoint(cp2.fd(), c.reg).ok());
  EXPECT_TRUE(c.map.same_contents(a.map));
  EXPECT_EQ(c.dropped_expiries, 0);
}

TEST(Migration, MissingStepIsRefusedNamingBothVersions) {
  Registry reg3;
  TrackedMap v3("kv", 3);
  ASSERT_TRUE(reg3.add(v3).ok());
  v3.set("a", "1");
  auto cp = checkpoint_now(reg3);
  reg3.log().end_capture();

  Versioned v1(1);  // knows 1<->2 only
  auto r = restore_checkpoint(cp.fd(), v1.reg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kVersion);
  EXPECT_NE(r.error().message().find("schema version 3"), std::string::npos);
  EXPECT_NE(r.error().message().find("version 1"), std::string::npos);
  EXPECT_NE(r.error().message().find("no migration 3 -> 2"), std::string::npos);
}

TEST(Migration, OnlyAdjacentStepsCanBeRegistered) {
  Migrations m;
  EXPECT_FALSE(m.add(1, 3, [](std::string_view, Entry&) {}).ok());
  EXPECT_FALSE(m.add(2, 2, [](std::string_view, Entry&) {}).ok());
  EXPECT_TRUE(m.add(3, 2, [](std::string_view, Entry&) {}).ok());
}

}  // namespace
}  // namespace baton
