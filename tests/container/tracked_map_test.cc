// TrackedMap: operation semantics, type errors, the byte estimate, and the cursor rule.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

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

TEST(TrackedMap, ANewKeyAfterARestoreDoesNotMoveEverySlot) {
  // A restored array sized exactly to its records moved every slot at the first new key:
  // seconds at 12 M keys, in the first SET of a new key after an upgrade. It keeps the
  // room to grow that the incumbent's had; entries staying put shows nothing moved.
  for (uint64_t n : {1000u, 1024u}) {
    TrackedMap m("kv", 1);
    ASSERT_TRUE(m.restore_begin(n, nullptr).ok());
    for (uint64_t i = 0; i < n; ++i) {
      Entry e;
      e.value = CompactString("value");
      ASSERT_TRUE(m.restore_record("k" + std::to_string(i), std::move(e)).ok());
    }
    ASSERT_TRUE(m.restore_end().ok());
    const Entry* first = m.find("k0");
    ASSERT_NE(first, nullptr);
    m.set("a new key", "v");
    EXPECT_EQ(m.find("k0"), first) << n << " restored records: the slot array moved";
    EXPECT_EQ(m.size(), n + 1);
  }
}

TEST(TrackedMap, ARestoreOfFewerRecordsThanAnnouncedHoldsOnlyThose) {
  // restore_begin maps the slots for every announced record up front; walking the map
  // must stop at the slots actually filled, not at the mapped ones.
  TrackedMap m("kv", 1);
  ASSERT_TRUE(m.restore_begin(200'000, nullptr).ok());
  for (int i = 0; i < 10; ++i) {
    Entry e;
    e.value = CompactString("v" + std::to_string(i));
    ASSERT_TRUE(m.restore_record("k" + std::to_string(i), std::move(e)).ok());
  }
  ASSERT_TRUE(m.restore_end().ok());
  size_t seen = 0;
  m.for_each([&](std::string_view k, const Entry& e) {
    ++seen;
    EXPECT_EQ(e.str(), "v" + std::string(k.substr(1)));
  });
  EXPECT_EQ(seen, 10u);
  EXPECT_EQ(m.size(), 10u);
  EXPECT_EQ(m.recount_bytes(), m.estimate_bytes());
  m.set("after", "x");  // lands in the next mapped slot
  EXPECT_EQ(m.find("after")->str(), "x");
  EXPECT_EQ(m.size(), 11u);
}

TEST(TrackedMap, GrowingNeverMovesAnEntry) {
  // Slots live in blocks of 65536 that never move: 200k keys cross three block boundaries
  // and fourteen doublings of the index, and the first entries stay where they were.
  TrackedMap m("kv", 1);
  m.set("k0", "small");  // inline: its bytes are in the slot itself
  const Entry* first = m.find("k0");
  std::vector<const Entry*> at(4, nullptr);
  for (uint32_t i = 1; i < 200'000; ++i) {
    const std::string key = "k" + std::to_string(i);
    if (i % 65'536 == 0) {
      // The insert that maps a new block, with a value viewing another slot's bytes.
      m.set(key, m.find("k0")->str());
      at[i / 65'536] = m.find(key);
    } else {
      m.set(key, std::to_string(i));
    }
  }
  EXPECT_EQ(m.find("k0"), first);
  EXPECT_EQ(m.find("k0")->str(), "small");
  for (uint32_t b = 1; b < 4; ++b) {
    const std::string key = "k" + std::to_string(b * 65'536);
    EXPECT_EQ(m.find(key), at[b]) << key;
    EXPECT_EQ(m.find(key)->str(), "small") << key;
  }
  EXPECT_EQ(m.size(), 200'000u);
  EXPECT_EQ(m.recount_bytes(), m.estimate_bytes());
}

TEST(TrackedMap, LookupsErasesAndReusedSlotsStayExactWhileTheIndexDoubles) {
  // A doubling index moves 16 keys per insert or erase, with lookups probing the new
  // index and then the old meanwhile. Random sets and erases over a growing key space
  // (freed slots are reused during doublings) are checked against a reference map: the
  // key each operation touches at once, and everything every 4096 operations.
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    TrackedMap m("kv", 1);
    std::unordered_map<std::string, std::string> ref;
    auto same = [&] {
      size_t seen = 0;
      bool ok = true;
      m.for_each([&](std::string_view k, const Entry& e) {
        auto it = ref.find(std::string(k));
        ok = ok && it != ref.end() && it->second == e.str();
        ++seen;
      });
      return ok && seen == ref.size() && m.size() == ref.size();
    };
    for (uint32_t op = 0; op < 120'000; ++op) {
      const uint32_t space = 1000 + op / 2;  // grows: the index doubles again and again
      const std::string key = "key" + std::to_string(rng() % space);
      if (rng() % 4 == 0) {
        ASSERT_EQ(m.erase(key), ref.erase(key) == 1) << key;
      } else {
        const std::string value = std::to_string(op);
        m.set(key, value);
        ref[key] = value;
      }
      const Entry* e = m.find(key);
      auto it = ref.find(key);
      ASSERT_EQ(e != nullptr, it != ref.end()) << key;
      if (e != nullptr) {
        ASSERT_EQ(e->str(), it->second) << key;
      }
      if (op % 4096 == 0) {
        ASSERT_TRUE(same()) << "after operation " << op;
      }
    }
    ASSERT_TRUE(same());
    EXPECT_EQ(m.recount_bytes(), m.estimate_bytes());
  }
}

TEST(TrackedMap, ADoublingEndsUnderOverwritesAndUnderSweepsAlone) {
  // A doubling that only inserts moved keys stayed half done when a cache stopped adding
  // keys, holding the old index for good (kvd's bench: 11 bytes a key). Overwrites of
  // existing keys, and erase_expired() from a server loop whose requests only read, must
  // each finish it and give the old index back. 65,536 buckets are 512 KiB: mapped, so
  // the populate and release pieces run too.
  constexpr size_t kBuckets = size_t{1} << 16;
  constexpr size_t kKeys = kBuckets * 7 / 10;  // the last key this index takes
  for (bool sweep : {false, true}) {
    SCOPED_TRACE(sweep ? "erase_expired" : "overwrites");
    TrackedMap m("kv", 1);
    for (size_t i = 0; i < kKeys; ++i) m.set("k" + std::to_string(i), "v");
    ASSERT_EQ(m.index_bytes(), kBuckets * 8);
    m.set("one more", "v");  // starts doubling
    ASSERT_EQ(m.index_bytes(), 3 * kBuckets * 8) << "the old and the new index";
    size_t cursor = 0, calls = 0;
    for (; calls < 20'000 && m.index_bytes() != 2 * kBuckets * 8; ++calls) {
      if (sweep) {
        ASSERT_EQ(m.erase_expired(1, 1000, &cursor), 0u);  // nothing expires
      } else {
        m.set("k" + std::to_string(calls % kKeys), "w");
      }
    }
    EXPECT_EQ(m.index_bytes(), 2 * kBuckets * 8) << "still doubling after " << calls << " calls";
    EXPECT_EQ(m.size(), kKeys + 1);
    for (size_t i = 0; i < kKeys; ++i) ASSERT_NE(m.find("k" + std::to_string(i)), nullptr) << i;
    EXPECT_NE(m.find("one more"), nullptr);
  }
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
    SnapshotSink slice;
    bool done = m.snapshot_step(slice, 1);
    for (auto& [k, e] : slice.records()) written.emplace_back(k);
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

// ---------------------------------------------------------------- state digest at the cut

namespace baton {
namespace {

TEST(Digest, SipHashMatchesThePublishedVectors) {
  // SipHash-2-4 paper, appendix A: key 00..0f; messages 00..(n-1).
  const DigestKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::string m;
  EXPECT_EQ(siphash24(key, m), 0x726fdb47dd0e0e31ULL);
  for (int i = 0; i < 15; ++i) m.push_back(static_cast<char>(i));
  EXPECT_EQ(siphash24(key, m), 0xa129ca6149be45e5ULL);
  m.push_back(15);
  EXPECT_EQ(siphash24(key, m.substr(0, 8)), 0x93f5f5799a932462ULL);
}

void fill_every_type(TrackedMap& m, int n) {
  for (int i = 0; i < n; ++i) {
    const std::string k = std::to_string(i);
    m.set("s" + k, "value" + k, i % 3 == 0 ? 1'000'000 + i : 0);
    const std::string_view items[] = {"a", "b", k};
    ASSERT_TRUE(m.push("l" + k, End::kRight, items).ok());
    ASSERT_TRUE(m.sadd("set" + k, items).ok());
    const std::string_view fv[] = {"f", k, "g", "x"};
    ASSERT_TRUE(m.hset("h" + k, fv).ok());
    ASSERT_TRUE(m.zadd("z" + k, i * 0.5, "m" + k).ok());
  }
}

TEST(Digest, EqualContentsDigestAlikeInAnyOrderAndAnyChangeShows) {
  const DigestKey key{1, 2};
  TrackedMap a("kv", 1), b("kv", 1);
  fill_every_type(a, 200);
  // b: same entries, built in reverse order with sets and hashes filled backwards.
  for (int i = 199; i >= 0; --i) {
    const std::string k = std::to_string(i);
    const std::string_view items[] = {"a", "b", k};
    const std::string_view rev[] = {k, "b", "a"};
    ASSERT_TRUE(b.zadd("z" + k, i * 0.5, "m" + k).ok());
    const std::string_view fv[] = {"g", "x", "f", k};
    ASSERT_TRUE(b.hset("h" + k, fv).ok());
    ASSERT_TRUE(b.sadd("set" + k, rev).ok());
    ASSERT_TRUE(b.push("l" + k, End::kRight, items).ok());
    b.set("s" + k, "value" + k, i % 3 == 0 ? 1'000'000 + i : 0);
  }
  ASSERT_TRUE(a.same_contents(b));
  EXPECT_EQ(a.full_digest(key), b.full_digest(key));
  EXPECT_EQ(a.full_digest(key).entries, 1000u);
  EXPECT_NE(a.full_digest(key), a.full_digest({1, 3})) << "keyed";
  // One change of each kind shows: a value, an expiry, list order, a member, a score.
  auto changed = [&](auto&& mutate) {
    TrackedMap c("kv", 1);
    fill_every_type(c, 200);
    mutate(c);
    return c.full_digest(key) != a.full_digest(key);
  };
  EXPECT_TRUE(changed([](TrackedMap& c) { c.set("s7", "value8"); }));
  EXPECT_TRUE(changed([](TrackedMap& c) { (void)c.expire_at("s5", 9); }));
  EXPECT_TRUE(changed([](TrackedMap& c) {
    (void)c.pop("l4", End::kLeft);  // "a", "b", "4" -> "b", "4", "a"
    const std::string_view a1[] = {"a"};
    (void)c.push("l4", End::kRight, a1);
  }));
  EXPECT_TRUE(changed([](TrackedMap& c) {
    const std::string_view m[] = {"zz"};
    (void)c.sadd("set3", m);
  }));
  EXPECT_TRUE(changed([](TrackedMap& c) { (void)c.zadd("z2", 99, "m2"); }));
  // Duplicates do not cancel (a XOR would): two equal entries under two keys count twice.
  TrackedMap d1("kv", 1), d2("kv", 1);
  d1.set("x", "1");
  d2.set("x", "1");
  d2.set("y", "1");
  d2.set("z", "1");
  EXPECT_NE(d1.full_digest(key), d2.full_digest(key));
}

// The digest at the cut equals the full digest of the map as it was at digest_begin(),
// however the map changes while the digest runs in slices: every kind of mutation, new
// and erased keys, clear(), over many seeds.
TEST(Digest, TheDigestAtTheCutIsExactWhileTheMapKeepsChanging) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    TrackedMap m("kv", 1);
    fill_every_type(m, 300);
    for (int i = 0; i < 200; ++i) (void)m.erase("s" + std::to_string(rng() % 300));  // holes
    const DigestKey key{seed, ~seed};
    const StateDigest expected = m.full_digest(key);
    ASSERT_TRUE(m.digest_begin(key, 1).value());
    bool done = false;
    for (int turn = 0; turn < 100'000 && !done; ++turn) {
      for (int w = 0; w < 3; ++w) {
        const std::string k = std::to_string(rng() % 400);
        const std::string_view v[] = {"n", k};
        switch (rng() % 12) {
          case 0:
            m.set("s" + k, "new" + std::to_string(turn));
            break;
          case 1:
            (void)m.erase("s" + k);
            break;
          case 2:
            (void)m.push("l" + k, rng() % 2 ? End::kLeft : End::kRight, v);
            break;
          case 3:
            (void)m.pop("l" + k, End::kLeft);
            break;
          case 4:
            (void)m.sadd("set" + k, v);
            break;
          case 5:
            (void)m.srem("set" + k, v);
            break;
          case 6:
            (void)m.hset("h" + k, v);
            break;
          case 7:
            (void)m.zadd("z" + k, static_cast<double>(turn), "m" + k);
            break;
          case 8:
            (void)m.zpopmin("z" + k);
            break;
          case 9:
            (void)m.incr_by("c" + k, 1);
            break;
          case 10:
            (void)m.expire_at("s" + k, turn);
            break;
          case 11:
            if (rng() % 500 == 0) m.clear();
            break;
        }
      }
      done = m.digest_step(64 + rng() % 512);
    }
    ASSERT_TRUE(done) << "seed " << seed;
    EXPECT_EQ(m.digest_result(), expected) << "seed " << seed;
    m.digest_end();
  }
}

TEST(Digest, EntriesAreHashedAsThePeerVersionThroughTheMigrationsAndAMissingOneIsNamed) {
  TrackedMap v1("kv", 1), v2("kv", 2);
  v1.set("a", "1");
  v1.set("b", "22");
  v2.set("a", "1", 777);  // v2 keeps expiries; its v1 view has none
  v2.set("b", "22", 888);
  ASSERT_TRUE(
      v2.migrations().add(2, 1, [](std::string_view, Entry& e) { e.expires_at_ms = 0; }).ok());
  const DigestKey key{5, 6};
  ASSERT_TRUE(v2.digest_begin(key, 1).value());
  while (!v2.digest_step(1)) {
  }
  EXPECT_EQ(v2.digest_result(), v1.full_digest(key));
  EXPECT_EQ(v2.find("a")->expires_at_ms, 777) << "the migration ran on a copy";
  v2.digest_end();
  auto missing = v1.digest_begin(key, 3);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("3"), std::string::npos) << missing.error().message();
}

}  // namespace
}  // namespace baton
