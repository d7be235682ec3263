// Checkpoint round trips: every value type, several sections, segment hygiene.
#include <sys/stat.h>

#include <fstream>

#include <gtest/gtest.h>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"
#include "shm_util.h"

namespace baton {
namespace {

using testing::checkpoint_now;

void fill_every_type(TrackedMap& m) {
  m.set("str", "hello");
  m.set("empty", "");
  m.set("binary", std::string("\0\x01\xff zero", 8), 1700000000123);
  std::string big(1 << 20, 'B');
  m.set("big", big);
  (void)m.incr_by("counter", -42);
  std::string_view l[] = {"x", "", "y"};
  (void)m.push("list", End::kRight, l);
  std::string_view s[] = {"a", "b", "c"};
  (void)m.sadd("set", s);
  std::string_view h[] = {"f1", "v1", "f2", ""};
  (void)m.hset("hash", h);
  (void)m.zadd("zset", -1.5, "neg");
  (void)m.zadd("zset", 1e300, "huge");
  (void)m.zadd("zset", 0, "zero");
  m.expire_at("list", 1800000000000);
}

TEST(Checkpoint, RoundTripsEveryValueType) {
  Registry reg;
  TrackedMap m("kv", 2);
  ASSERT_TRUE(reg.add(m).ok());
  fill_every_type(m);
  auto cp = checkpoint_now(reg);
  reg.log().end_capture();
  EXPECT_EQ(cp.stats().records, m.size());

  Registry reg2;
  TrackedMap m2("kv", 2);
  ASSERT_TRUE(reg2.add(m2).ok());
  auto r = restore_checkpoint(cp.fd(), reg2);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->records, m.size());
  EXPECT_TRUE(m2.same_contents(m));
  EXPECT_EQ(m2.digest(), m.digest());
  EXPECT_EQ(m2.find("binary")->expires_at_ms, 1700000000123);
  EXPECT_EQ(*m2.find("list")->list(), (List{"x", "", "y"}));
  EXPECT_EQ(m2.estimate_bytes(), m2.recount_bytes());
}

TEST(Checkpoint, RoundTripsManySlicesAndSections) {
  Registry reg;
  TrackedMap a("alpha", 1), b("beta", 1), empty("empty", 1);
  ASSERT_TRUE(reg.add(a).ok());
  ASSERT_TRUE(reg.add(empty).ok());
  ASSERT_TRUE(reg.add(b).ok());
  for (int i = 0; i < 20000; ++i) a.set("a" + std::to_string(i), std::string(100, 'a' + i % 26));
  for (int i = 0; i < 3000; ++i) (void)b.incr_by("b" + std::to_string(i % 1000), i);
  auto cp = checkpoint_now(reg, 4096);  // ~40 records per slice
  reg.log().end_capture();
  EXPECT_GT(cp.stats().chunks, 400u);
  EXPECT_LE(cp.stats().max_slice_us, cp.stats().busy_us);

  Registry reg2;
  TrackedMap a2("alpha", 1), b2("beta", 1), e2("empty", 1);
  ASSERT_TRUE(reg2.add(b2).ok());  // registration order differs from the incumbent's
  ASSERT_TRUE(reg2.add(a2).ok());
  ASSERT_TRUE(reg2.add(e2).ok());
  auto r = restore_checkpoint(cp.fd(), reg2);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(a2.same_contents(a));
  EXPECT_TRUE(b2.same_contents(b));
  EXPECT_TRUE(e2.empty());
  ASSERT_EQ(r->by_peer_id.size(), 3u);
  EXPECT_EQ(r->by_peer_id[0], &a2);
  EXPECT_EQ(r->by_peer_id[2], &b2);
}

TEST(Checkpoint, SegmentIsPrivateNamelessAndReportsItsPages) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  m.set("k", "v");
  std::string mine = "baton-" + std::to_string(::getpid()) + "-";
  auto w = CheckpointWriter::begin(reg, {});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(testing::count_shm_names(mine), 0) << "a name outlived creation";
  while (!w->step().value()) {
  }
  auto cp = w->finish();
  ASSERT_TRUE(cp.ok());
  struct stat st;
  ASSERT_EQ(::fstat(cp->fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (cp->stats().page_kind == PageKind::kHugetlb) {
    EXPECT_LT(static_cast<uint64_t>(st.st_size) - cp->stats().segment_bytes, uint64_t{1} << 30)
        << "hugetlb segments are cut to whole huge pages";
  } else {
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), cp->stats().segment_bytes);
  }
  EXPECT_FALSE(to_string(cp->stats().page_kind).empty());
  EXPECT_EQ(testing::count_shm_names(mine), 0);
  reg.log().end_capture();
}

TEST(Checkpoint, HugePolicyEitherGetsHugePagesOrSaysWhyNot) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  CheckpointOptions opt;
  opt.pages = PagePolicy::kHuge;
  auto w = CheckpointWriter::begin(reg, opt);
  if (w.ok()) {
    EXPECT_NE(w->stats().page_kind, PageKind::kSmall);
  } else {
    EXPECT_EQ(w.error().kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(w.error().message().find("nr_hugepages"), std::string::npos);
  }
  opt.pages = PagePolicy::kSmall;
  reg.log().end_capture();
  auto small = CheckpointWriter::begin(reg, opt);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->stats().page_kind, PageKind::kSmall);
}

TEST(Checkpoint, AbandonedWriterStopsCapturingAndFreesTheSegment) {
  Registry reg;
  TrackedMap m("kv", 1);
  ASSERT_TRUE(reg.add(m).ok());
  for (int i = 0; i < 1000; ++i) m.set("k" + std::to_string(i), "v");
  {
    CheckpointOptions opt;
    opt.slice_bytes = 100;
    auto w = CheckpointWriter::begin(reg, opt);
    ASSERT_TRUE(w.ok());
    ASSERT_FALSE(w->step().value());
    EXPECT_TRUE(reg.log().capturing());
    auto early = w->finish();
    ASSERT_FALSE(early.ok());
    EXPECT_EQ(early.error().kind(), ErrorKind::kState);
  }
  EXPECT_FALSE(reg.log().capturing());
  m.set("k1", "idle again");
  EXPECT_EQ(reg.log().pending_count(), 0u);
  // A second checkpoint can start, and a concurrent one cannot.
  auto w2 = CheckpointWriter::begin(reg, {});
  ASSERT_TRUE(w2.ok());
  auto w3 = CheckpointWriter::begin(reg, {});
  ASSERT_FALSE(w3.ok());
  EXPECT_EQ(w3.error().kind(), ErrorKind::kState);
}

TEST(Checkpoint, UnknownSectionInCheckpointIsRefusedAndMissingOneStartsEmpty) {
  Registry reg;
  TrackedMap a("a", 1), b("b", 1);
  ASSERT_TRUE(reg.add(a).ok());
  ASSERT_TRUE(reg.add(b).ok());
  a.set("x", "1");
  auto cp = checkpoint_now(reg);
  reg.log().end_capture();

  Registry only_a;
  TrackedMap a2("a", 1);
  ASSERT_TRUE(only_a.add(a2).ok());
  auto r = restore_checkpoint(cp.fd(), only_a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kVersion);
  EXPECT_NE(r.error().message().find("'b'"), std::string::npos);

  Registry more;
  TrackedMap a3("a", 1), b3("b", 1), c3("c", 1);
  ASSERT_TRUE(more.add(a3).ok());
  ASSERT_TRUE(more.add(b3).ok());
  ASSERT_TRUE(more.add(c3).ok());
  auto r2 = restore_checkpoint(cp.fd(), more);
  ASSERT_TRUE(r2.ok()) << r2.error().to_string();
  ASSERT_EQ(r2->notes.size(), 1u);
  EXPECT_NE(r2->notes[0].find("'c' is not in the checkpoint"), std::string::npos);
}

// Lines of /proc/self/maps that map a Baton checkpoint segment.
int mapped_checkpoint_segments() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) {
    if (line.find("/dev/shm/baton-") != std::string::npos ||
        line.find("/memfd:baton-") != std::string::npos) {
      ++n;
    }
  }
  return n;
}

TEST(Checkpoint, RestoredStringsBorrowTheMappingUntilRewritten) {
  testing::KvNode successor;
  TrackedMap& m2 = successor.map;
  const int before = mapped_checkpoint_segments();
  {
    testing::KvNode incumbent;
    for (int i = 0; i < 100; ++i) {
      incumbent.map.set("k" + std::to_string(i), "value" + std::to_string(i));
    }
    std::string_view l[] = {"a"};
    (void)incumbent.map.push("list", End::kLeft, l);
    auto cp = testing::checkpoint_now(incumbent.reg);
    incumbent.reg.log().end_capture();
    auto r = restore_checkpoint(cp.fd(), successor.reg);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_TRUE(r->borrowed);
    EXPECT_TRUE(m2.same_contents(incumbent.map));
  }  // the incumbent's map, checkpoint and fd are gone; the successor's mapping is not
  EXPECT_EQ(m2.borrowed(), 100u);
  EXPECT_EQ(mapped_checkpoint_segments(), before + 1);
  EXPECT_EQ(m2.find("k7")->str(), "value7");
  EXPECT_TRUE(m2.find("k7")->is_borrowed());
  m2.set("k7", "new");
  EXPECT_FALSE(m2.incr_by("k8", 1).ok());  // "value8" is no integer; stays borrowed
  m2.set("k9", "41");
  EXPECT_EQ(m2.incr_by("k9", 1).value(), 42);
  EXPECT_EQ(m2.borrowed(), 98u);
  for (int i = 0; i < 100; ++i) {
    if (i % 2) {
      m2.erase("k" + std::to_string(i));
    } else {
      m2.set("k" + std::to_string(i), "owned");
    }
  }
  EXPECT_EQ(m2.borrowed(), 0u);
  EXPECT_EQ(mapped_checkpoint_segments(), before) << "the mapping outlived its last borrower";
  EXPECT_EQ(m2.estimate_bytes(), m2.recount_bytes());
}

// Restores `incumbent`'s current state into `successor` and returns the result.
Result<RestoreResult> copy_over(testing::KvNode& incumbent, testing::KvNode& successor,
                                const RestoreOptions& options = {}) {
  auto cp = testing::checkpoint_now(incumbent.reg);
  incumbent.reg.log().end_capture();
  return restore_checkpoint(cp.fd(), successor.reg, options);
}

TEST(Checkpoint, RestoreCanOwnEveryByteInstead) {
  testing::KvNode incumbent, successor;
  incumbent.map.set("a", "1");
  RestoreOptions opt;
  opt.borrow_strings = false;
  const int before = mapped_checkpoint_segments();
  auto r = copy_over(incumbent, successor, opt);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->borrowed);
  EXPECT_EQ(successor.map.borrowed(), 0u);
  EXPECT_FALSE(successor.map.find("a")->is_borrowed());
  EXPECT_EQ(mapped_checkpoint_segments(), before);
}

// Regression: incrementing (or re-setting from itself) the last value that still
// borrows from the mapping must not read the mapping after releasing it. copy_over
// drops the incumbent's checkpoint, so only the successor holds the memory.
TEST(Checkpoint, LastBorrowedValueCanBeIncrementedAndSelfAssigned) {
  testing::KvNode incumbent, successor;
  TrackedMap& m2 = successor.map;
  incumbent.map.set("hits", "41");
  incumbent.map.set("name", "a-value-longer-than-any-small-string-buffer");
  ASSERT_TRUE(copy_over(incumbent, successor).ok());
  m2.set("name", m2.find("name")->str());  // reads the borrowed bytes while replacing them
  EXPECT_EQ(m2.find("name")->str(), "a-value-longer-than-any-small-string-buffer");
  ASSERT_EQ(m2.borrowed(), 1u);
  EXPECT_EQ(m2.incr_by("hits", 1).value(), 42);  // the last borrower
  EXPECT_EQ(m2.borrowed(), 0u);
  EXPECT_EQ(m2.find("hits")->str(), "42");
}

TEST(Checkpoint, SectionWithoutBorrowedStringsReleasesTheMapping) {
  testing::KvNode incumbent, successor;
  std::string_view v[] = {"x", "y"};
  (void)incumbent.map.sadd("only-a-set", v);
  const int before = mapped_checkpoint_segments();
  ASSERT_TRUE(copy_over(incumbent, successor).ok());
  EXPECT_EQ(successor.map.borrowed(), 0u);
  EXPECT_EQ(mapped_checkpoint_segments(), before);
  EXPECT_TRUE(successor.map.same_contents(incumbent.map));
}

}  // namespace
}  // namespace baton
