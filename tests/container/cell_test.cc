// Cell, the ready-made section of named fields: its API and errors, exact checkpoint and
// replay beside a TrackedMap, per-field migrations, the digest; and SnapshotSink::add_copy
// for sections that build their records.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "baton/cell.h"
#include "baton/checkpoint.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"

namespace baton {
namespace {

using testing::checkpoint_now;

TEST(Cell, FieldsAndCountersWithClearErrors) {
  Cell c("stats", 1);
  EXPECT_FALSE(c.get("motd"));
  c.set("motd", "hello");
  EXPECT_EQ(c.get("motd"), "hello");
  EXPECT_EQ(*c.counter("requests"), 0) << "an unset counter reads 0";
  EXPECT_EQ(*c.add("requests", 5), 5);
  EXPECT_EQ(*c.add("requests", -2), 3);
  EXPECT_EQ(c.get("requests"), "3");
  auto wrong = c.add("motd", 1);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind(), ErrorKind::kWrongType);
  EXPECT_NE(wrong.error().message().find("field 'motd' of cell 'stats' is not a decimal integer"),
            std::string::npos)
      << wrong.error().message();
  c.set("big", std::to_string(INT64_MAX));
  auto over = c.add("big", 1);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().kind(), ErrorKind::kCapacity);
  EXPECT_EQ(c.get("big"), std::to_string(INT64_MAX)) << "unchanged on overflow";
  EXPECT_TRUE(c.erase("motd"));
  EXPECT_FALSE(c.erase("motd"));
  EXPECT_EQ(c.fields().size(), 2u);
}

// One process's state: a map and a cell, as a server holds them.
struct Process {
  // `cell_first`: the cell's one slice comes before the map's, else after them.
  explicit Process(uint32_t version = 1, bool cell_first = false) : cell("stats", version) {
    if (cell_first) {
      EXPECT_TRUE(reg.add(cell).ok());
    }
    EXPECT_TRUE(reg.add(map).ok());
    if (!cell_first) {
      EXPECT_TRUE(reg.add(cell).ok());
    }
  }
  Registry reg;
  TrackedMap map{"kv", 1};
  Cell cell;
};

// A random change to the cell: counters, sets and erases over a few fields.
void random_change(Cell& c, std::mt19937_64& rng) {
  const std::string field = "f" + std::to_string(rng() % 6);
  switch (rng() % 4) {
    case 0:
      c.set(field, std::string(rng() % 8, static_cast<char>('a' + rng() % 26)));
      break;
    case 1:
      (void)c.erase(field);
      break;
    default:
      (void)c.add("n" + std::to_string(rng() % 3), static_cast<int64_t>(rng() % 100) - 50);
  }
}

// The cursor rule for a one-record section: changes before the snapshot writes the cell
// are carried by it, changes after are logged; replay over the restored checkpoint must
// give exactly the live state, whenever in the snapshot the changes come.
TEST(Cell, CheckpointPlusReplayIsExactWhereverTheChangesFall) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    const bool cell_first = seed % 2 == 1;
    Process live(1, cell_first);
    for (int i = 0; i < 200; ++i) live.map.set("k" + std::to_string(i), std::string(40, 'v'));
    for (int i = 0; i < 30; ++i) random_change(live.cell, rng);
    CheckpointOptions opt;
    opt.slice_bytes = 512;  // the map takes several slices before the cell's one
    auto w = CheckpointWriter::begin(live.reg, opt);
    ASSERT_TRUE(w.ok()) << w.error().to_string();
    for (int i = 0; i < 10'000; ++i) {
      for (int j = 0, n = static_cast<int>(rng() % 4); j < n; ++j) random_change(live.cell, rng);
      auto done = w->step();
      ASSERT_TRUE(done.ok()) << done.error().to_string();
      if (*done) break;
    }
    for (int j = 0; j < 10; ++j) random_change(live.cell, rng);  // after the snapshot
    auto cp = w->finish();
    ASSERT_TRUE(cp.ok()) << cp.error().to_string();
    const std::string frame = live.reg.log().take_frame();
    live.reg.log().end_capture();

    Process next(1, cell_first);
    auto r = restore_checkpoint(cp->fd(), next.reg);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    DeltaReplayer replay(*r);
    ASSERT_FALSE(frame.empty()) << "changes after the cell's slice are logged";
    ASSERT_TRUE(replay.apply_frame(frame).ok()) << "seed " << seed;
    EXPECT_EQ(next.cell.fields(), live.cell.fields()) << "seed " << seed;
    EXPECT_TRUE(next.map.same_contents(live.map));
  }
}

// v2 renames field "hits" to "requests"; v1 has the old name. Migrations see the whole
// cell on restore and one field at a time on replay.
void register_rename(Cell& c) {
  auto rename = [](std::string from, std::string to) {
    return [from, to](std::string_view, Entry& e) {
      Hash& h = *e.hash();
      if (auto it = h.find(from); it != h.end()) {
        h[to] = std::move(it->second);
        h.erase(from);
      }
    };
  };
  EXPECT_TRUE(c.migrations().add(1, 2, rename("hits", "requests")).ok());
  EXPECT_TRUE(c.migrations().add(2, 1, rename("requests", "hits")).ok());
}

// Checkpoints `from`, runs `after_l0` (writes only the delta stream carries), then
// restores `to` from the checkpoint and replays that stream into it.
void hand_over(Process& from, Process& to, const std::function<void()>& after_l0) {
  auto cp = checkpoint_now(from.reg);
  after_l0();
  const std::string frame = from.reg.log().take_frame();
  from.reg.log().end_capture();
  ASSERT_FALSE(frame.empty());
  auto r = restore_checkpoint(cp.fd(), to.reg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  DeltaReplayer replay(*r);
  auto applied = replay.apply_frame(frame);
  ASSERT_TRUE(applied.ok()) << applied.error().to_string();
}

TEST(Cell, MigratesV1ToV2AndBackOnRestoreAndReplay) {
  Process v1(1), v2(2), back(1);
  for (Process* p : {&v1, &v2, &back}) register_rename(p->cell);
  ASSERT_TRUE(v1.cell.add("hits", 5).ok());
  v1.cell.set("motd", "hi");
  ASSERT_NO_FATAL_FAILURE(hand_over(v1, v2, [&] {
    ASSERT_TRUE(v1.cell.add("hits", 1).ok());  // after L0: a replayed field-level delta
    ASSERT_TRUE(v1.cell.erase("motd"));
  }));
  EXPECT_EQ(v2.cell.fields(), (Hash{{"requests", "6"}}));

  // And back: v2's writes reach a v1 process under v1's names.
  ASSERT_NO_FATAL_FAILURE(
      hand_over(v2, back, [&] { ASSERT_TRUE(v2.cell.add("requests", 10).ok()); }));
  EXPECT_EQ(back.cell.fields(), (Hash{{"hits", "16"}}));
}

// A cell with no field (a server's counters before its first request) checkpoints as no
// record, and changes made after the snapshot are replayed onto the empty cell.
TEST(Cell, AnEmptyCellHandsOverAndItsLaterChangesReplay) {
  Process from, to;
  to.cell.set("stale", "x");  // the restore replaces whatever the successor had
  ASSERT_NO_FATAL_FAILURE(
      hand_over(from, to, [&] { ASSERT_TRUE(from.cell.add("requests", 3).ok()); }));
  EXPECT_EQ(to.cell.fields(), (Hash{{"requests", "3"}}));

  Process empty, next;
  auto cp = checkpoint_now(empty.reg);
  empty.reg.log().end_capture();
  auto r = restore_checkpoint(cp.fd(), next.reg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(next.cell.fields().empty());
}

TEST(Cell, APeerSectionThatIsNotACellIsRejectedByName) {
  Registry other;
  TrackedMap stats("stats", 1);  // the same name, another kind of section
  ASSERT_TRUE(other.add(stats).ok());
  stats.set("a", "1");
  stats.set("b", "2");
  auto cp = checkpoint_now(other);
  other.log().end_capture();
  Registry reg;
  Cell cell("stats", 1);
  ASSERT_TRUE(reg.add(cell).ok());
  auto r = restore_checkpoint(cp.fd(), reg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("cell 'stats'"), std::string::npos) << r.error().to_string();
  EXPECT_NE(r.error().message().find("is the peer's section of that name a cell?"),
            std::string::npos)
      << r.error().to_string();
}

TEST(Cell, DigestIsOrderFreeKeyedAndComparableAcrossVersions) {
  const DigestKey key{1, 2}, other_key{3, 4};
  auto digest = [](Cell& c, const DigestKey& k, uint32_t as) {
    auto begun = c.digest_begin(k, as);
    EXPECT_TRUE(begun.ok() && *begun);
    EXPECT_TRUE(c.digest_step(1));
    StateDigest d = c.digest_result();
    c.digest_end();
    return d;
  };
  Cell a("stats", 1), b("stats", 1);
  a.set("x", "1");
  a.set("y", "2");
  b.set("y", "2");
  b.set("x", "1");
  EXPECT_EQ(digest(a, key, 1), digest(b, key, 1)) << "insertion order does not matter";
  EXPECT_NE(digest(a, key, 1), digest(a, other_key, 1)) << "keyed";
  b.set("x", "3");
  EXPECT_NE(digest(a, key, 1), digest(b, key, 1));

  Cell v1("stats", 1), v2("stats", 2);
  register_rename(v1);
  register_rename(v2);
  ASSERT_TRUE(v1.add("hits", 7).ok());
  ASSERT_TRUE(v2.add("requests", 7).ok());
  EXPECT_EQ(digest(v2, key, 1), digest(v1, key, 1)) << "v2 hashed as v1 through its migration";
}

// A section that converts its own type into entries while it snapshots: each record is
// built inside snapshot_step and handed over with add_copy(), so nothing dangles when the
// writer encodes the slice after snapshot_step returns (ASan checks this in its preset).
class Squares : public Section {
 public:
  Squares() : Section("squares", 1) {}
  std::vector<int64_t> values;
  std::vector<std::pair<std::string, std::string>> restored;
  uint64_t estimate_bytes() const override { return values.size() * 32; }
  void snapshot_begin() override { next_ = 0; }
  bool snapshot_step(SnapshotSink& sink, size_t budget) override {
    while (next_ < values.size() && sink.bytes() < budget) {
      Entry e;
      e.value = std::to_string(values[next_] * values[next_]);  // built here, a local
      sink.add_copy("sq" + std::to_string(next_), std::move(e));
      ++next_;
    }
    return next_ == values.size();
  }
  void snapshot_end() override {}
  Result<void> restore_begin(uint64_t, std::shared_ptr<const void> backing) override {
    backing_ = std::move(backing);
    return ok();
  }
  Result<void> restore_record(std::string&& key, Entry&& e) override {
    restored.emplace_back(std::move(key), std::string(e.str()));
    return ok();
  }
  Result<void> restore_end() override { return ok(); }
  Result<void> apply_delta(const DeltaView&) override { return ok(); }

 private:
  size_t next_ = 0;
  std::shared_ptr<const void> backing_;
};

TEST(SnapshotSink, AddCopyOwnsARecordBuiltForTheSlice) {
  Registry reg;
  Squares s;
  ASSERT_TRUE(reg.add(s).ok());
  for (int64_t i = 0; i < 500; ++i) s.values.push_back(i);
  auto cp = checkpoint_now(reg, 256);  // many slices: each starts with an empty sink
  reg.log().end_capture();
  Registry reg2;
  Squares t;
  ASSERT_TRUE(reg2.add(t).ok());
  auto r = restore_checkpoint(cp.fd(), reg2);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(t.restored.size(), 500u);
  for (size_t i = 0; i < t.restored.size(); ++i) {
    EXPECT_EQ(t.restored[i].first, "sq" + std::to_string(i));
    EXPECT_EQ(t.restored[i].second, std::to_string(int64_t(i) * int64_t(i)));
  }
}

}  // namespace
}  // namespace baton
