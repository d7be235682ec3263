// Table<T>, the section of the server's own Cap'n Proto records: its API, exact checkpoint
// plus replay, the schema check at HELLO against versions the real compiler built, a
// newer version's fields surviving an older version's writes, migrations both ways, and
// every record from a peer checked before it is read without bounds checks.
#include <capnp/dynamic.h>
#include <capnp/schema-loader.h>
#include <capnp/schema.capnp.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>

#include "baton/checkpoint.h"
#include "baton/table.h"
#include "baton/tracked_map.h"
#include "checkpoint_util.h"
#include "container/schemas/session.capnp.h"
#include "schema.capnp.h"
#include "schema_codec.h"

namespace baton {
namespace {

using test::Plan;
using test::Session;
using testing::checkpoint_now;

constexpr uint64_t kSessionId = 0xe1d2c3b4a5968778;

void fill(Session::Builder s, std::string_view user, uint64_t hits) {
  s.setUser(std::string(user));
  s.setHits(hits);
  auto tags = s.initTags(2);
  tags.set(0, "a");
  tags.set(1, std::string(user) + "-tag");
  s.setPlan(hits % 2 == 0 ? Plan::FREE : Plan::PAID);
  s.getLimit().setPerMinute(static_cast<uint32_t>(hits * 10));
}

void put(Table<Session>& t, std::string_view key, std::string_view user, uint64_t hits,
         int64_t expires_at_ms = 0) {
  capnp::MallocMessageBuilder m;
  fill(m.initRoot<Session>(), user, hits);
  t.set(key, m.getRoot<Session>().asReader(), expires_at_ms);
}

TEST(Table, RecordsAreTheServersOwnStruct) {
  Table<Session> t("sessions", 1);
  EXPECT_FALSE(t.get("s1"));
  put(t, "s1", "ada", 3, 5'000);
  auto s = t.get("s1");
  ASSERT_TRUE(s);
  EXPECT_EQ(std::string(s->getUser().cStr()), "ada");
  EXPECT_EQ(s->getHits(), 3u);
  EXPECT_EQ(s->getPlan(), Plan::PAID);
  EXPECT_EQ(s->getLimit().getPerMinute(), 30u);
  ASSERT_EQ(s->getTags().size(), 2u);
  EXPECT_EQ(std::string(s->getTags()[1].cStr()), "ada-tag");

  t.update("s1", [](Session::Builder b) { b.setHits(b.getHits() + 1); });
  EXPECT_EQ(t.get("s1")->getHits(), 4u);
  EXPECT_EQ(std::string(t.get("s1")->getUser().cStr()), "ada") << "the other fields stay";
  EXPECT_EQ(t.expires_at("s1"), 5'000) << "update keeps the expiry";
  t.update("new", [](Session::Builder b) { b.setUser("bob"); });
  EXPECT_EQ(t.get("new")->getHits(), 0u) << "a missing record starts as the default";
  EXPECT_EQ(t.size(), 2u);

  size_t seen = 0;
  t.for_each([&](std::string_view key, Session::Reader r) {
    ++seen;
    EXPECT_TRUE(key == "s1" || key == "new");
    EXPECT_FALSE(r.getUser().size() == 0);
  });
  EXPECT_EQ(seen, 2u);
  EXPECT_TRUE(t.erase("new"));
  EXPECT_FALSE(t.erase("new"));
  size_t cursor = 0;
  EXPECT_EQ(t.erase_expired(6'000, 100, &cursor), 1u);
  EXPECT_TRUE(t.empty());

  const TypedSchema* schema = t.typed_schema();
  ASSERT_NE(schema, nullptr);
  EXPECT_EQ(schema->type_id, kSessionId);
  EXPECT_EQ(schema->type_name, "Session");
}

// One process's state: a typed table beside a plain map, as a server holds them.
struct Process {
  explicit Process(uint32_t version = 1) : sessions("sessions", version) {
    EXPECT_TRUE(reg.add(map).ok());
    EXPECT_TRUE(reg.add(sessions).ok());
  }
  Registry reg;
  TrackedMap map{"kv", 1};
  Table<Session> sessions;
};

void random_change(Table<Session>& t, std::mt19937_64& rng) {
  const std::string key = "s" + std::to_string(rng() % 400);
  switch (rng() % 5) {
    case 0:
      put(t, key, "u" + std::to_string(rng() % 1000), rng() % 100);
      break;
    case 1:
      (void)t.erase(key);
      break;
    case 2:
      (void)t.expire_at(key, static_cast<int64_t>(rng() % 1'000'000) + 1);
      break;
    default:
      t.update(key, [&](Session::Builder b) {
        b.setHits(b.getHits() + 1);
        b.getLimit().setBurst(static_cast<uint32_t>(rng() % 50));
      });
  }
}

// The capture rule holds for typed records as for any TrackedMap entry: changes before
// the snapshot reaches a record ride in it, changes after are logged, and restore plus
// replay is exactly the live table, wherever the changes fall between slices.
TEST(Table, CheckpointPlusReplayIsExactOverSeeds) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    Process live;
    for (int i = 0; i < 100; ++i) live.map.set("k" + std::to_string(i), std::string(40, 'v'));
    for (int i = 0; i < 300; ++i) random_change(live.sessions, rng);
    CheckpointOptions opt;
    opt.slice_bytes = 1024;  // many slices, with changes between every two
    auto w = CheckpointWriter::begin(live.reg, opt);
    ASSERT_TRUE(w.ok()) << w.error().to_string();
    for (int i = 0; i < 10'000; ++i) {
      for (int j = 0, n = static_cast<int>(rng() % 6); j < n; ++j)
        random_change(live.sessions, rng);
      auto done = w->step();
      ASSERT_TRUE(done.ok()) << done.error().to_string();
      if (*done) break;
    }
    for (int j = 0; j < 20; ++j) random_change(live.sessions, rng);
    auto cp = w->finish();
    ASSERT_TRUE(cp.ok()) << cp.error().to_string();
    const std::string frame = live.reg.log().take_frame();
    live.reg.log().end_capture();

    Process next;
    auto r = restore_checkpoint(cp->fd(), next.reg);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    DeltaReplayer replay(*r);
    ASSERT_TRUE(replay.apply_frame(frame).ok()) << "seed " << seed;
    EXPECT_TRUE(next.sessions.same_contents(live.sessions)) << "seed " << seed;
    EXPECT_TRUE(next.map.same_contents(live.map));
    // And the records read back as structs, field by field.
    live.sessions.for_each([&](std::string_view key, Session::Reader want) {
      auto got = next.sessions.get(key);
      ASSERT_TRUE(got) << key;
      EXPECT_EQ(got->getHits(), want.getHits());
      EXPECT_EQ(got->getLimit().getBurst(), want.getLimit().getBurst());
    });
  }
}

// ---- the schema check at HELLO, against versions compiled by the real compiler

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The nodes of `name`.capnp (capnp compile -o-, a CodeGeneratorRequest), encoded as a
// peer's TypedSchema for the struct `type_id`.
std::string peer_schema(const std::string& name, uint64_t type_id) {
  const std::string bytes = read_file(std::string(SCHEMA_NODES_DIR) + "/" + name + ".nodes");
  EXPECT_FALSE(bytes.empty()) << name;
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), words.size() * sizeof(capnp::word));
  capnp::FlatArrayMessageReader request(words);
  auto nodes = request.getRoot<capnp::schema::CodeGeneratorRequest>().getNodes();
  capnp::MallocMessageBuilder out;
  auto root = out.initRoot<wire::TypedSchema>();
  root.setTypeId(type_id);
  auto list = root.initNodes(nodes.size());
  for (unsigned i = 0; i < nodes.size(); ++i) list.setWithCaveats(i, nodes[i]);
  auto flat = capnp::messageToFlatArray(out);
  return std::string(reinterpret_cast<const char*>(flat.asBytes().begin()), flat.asBytes().size());
}

TEST(Table, SchemaCheckAcceptsCapnProtoEvolutionAndNamesWhatItRefuses) {
  Table<Session> t("sessions", 1);
  const TypedSchema& mine = *t.typed_schema();
  using serialization::check_schema_compatible;
  EXPECT_TRUE(check_schema_compatible("sessions", mine, mine.encoded).ok()) << "itself";

  auto newer = check_schema_compatible("sessions", mine, peer_schema("session_v2", kSessionId));
  EXPECT_TRUE(newer.ok()) << "a field at the next ordinal and a new enumerant: "
                          << newer.error().to_string();

  auto breaking =
      check_schema_compatible("sessions", mine, peer_schema("session_breaking", kSessionId));
  ASSERT_FALSE(breaking.ok());
  EXPECT_EQ(breaking.error().kind(), ErrorKind::kVersion);
  const std::string& why = breaking.error().message();
  EXPECT_NE(why.find("typed section 'sessions' (Session)"), std::string::npos) << why;
  EXPECT_NE(why.find("not compatible"), std::string::npos) << why;
  EXPECT_NE(why.find("field 'hits' (@1) of container/schemas/session.capnp:Session is UInt64 here "
                     "and Text in the peer"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("needs a new schema version with migrations"), std::string::npos) << why;

  auto other = check_schema_compatible("sessions", mine, peer_schema("other", 0xc2d3e4f5a6b7c8d9));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("other.capnp:Session in the peer"), std::string::npos)
      << other.error().message();
  EXPECT_NE(other.error().message().find("another struct"), std::string::npos);

  auto garbage = check_schema_compatible("sessions", mine, std::string(24, '\x7f'));
  ASSERT_FALSE(garbage.ok()) << "garbage is refused, not thrown";
  EXPECT_NE(garbage.error().message().find("cannot be read"), std::string::npos)
      << garbage.error().message();
  auto odd = check_schema_compatible("sessions", mine, "abc");
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.error().kind(), ErrorKind::kCorrupt);
}

// A v2 record (built through the dynamic API from session_v2's compiled nodes) reaches
// this v1 table; v1 updates it; the v2 field is still there, with its value.
TEST(Table, ANewerVersionsFieldsSurviveAnOlderVersionsUpdates) {
  const std::string encoded = peer_schema("session_v2", kSessionId);
  auto words = kj::heapArray<capnp::word>(encoded.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), encoded.data(), encoded.size());
  capnp::FlatArrayMessageReader nodes_message(words);
  capnp::SchemaLoader loader;
  for (auto n : nodes_message.getRoot<wire::TypedSchema>().getNodes()) loader.load(n);
  const capnp::StructSchema v2 = loader.get(kSessionId).asStruct();

  capnp::MallocMessageBuilder m;
  auto rec = m.initRoot<capnp::DynamicStruct>(v2);
  rec.set("user", "ada");
  rec.set("hits", 7);
  rec.set("lastSeenMs", 1'700'000'000'000);
  auto canonical = m.getRoot<capnp::AnyStruct>().asReader().canonicalize();
  const std::string bytes(reinterpret_cast<const char*>(canonical.asBytes().begin()),
                          canonical.asBytes().size());

  // The v2 process, seen through its wire form: a map whose entry is the record's bytes.
  Registry v2_reg;
  TrackedMap v2_sessions("sessions", 1);
  ASSERT_TRUE(v2_reg.add(v2_sessions).ok());
  v2_sessions.set("s1", bytes);
  auto cp = checkpoint_now(v2_reg);
  v2_reg.log().end_capture();

  Registry v1_reg;
  Table<Session> v1_sessions("sessions", 1);
  ASSERT_TRUE(v1_reg.add(v1_sessions).ok());
  auto restored_v1 = restore_checkpoint(cp.fd(), v1_reg);
  ASSERT_TRUE(restored_v1.ok()) << restored_v1.error().to_string();
  EXPECT_EQ(v1_sessions.get("s1")->getHits(), 7u) << "v1 reads what it knows";
  v1_sessions.update("s1", [](Session::Builder b) { b.setHits(b.getHits() + 1); });

  // Read v1's record back as v2.
  Registry out_reg;
  Table<Session> out_sessions("sessions", 1);
  ASSERT_TRUE(out_reg.add(out_sessions).ok());
  auto cp2 = checkpoint_now(v1_reg);
  v1_reg.log().end_capture();
  auto restored = restore_checkpoint(cp2.fd(), out_reg);
  ASSERT_TRUE(restored.ok()) << restored.error().to_string();
  std::string after;
  out_sessions.for_each([&](std::string_view, Session::Reader r) {
    auto c = capnp::canonicalize(r);
    after.assign(reinterpret_cast<const char*>(c.asBytes().begin()), c.asBytes().size());
  });
  auto after_words = kj::heapArray<capnp::word>(after.size() / sizeof(capnp::word));
  std::memcpy(after_words.begin(), after.data(), after.size());
  kj::ArrayPtr<const capnp::word> segs[1] = {after_words};
  capnp::SegmentArrayMessageReader reader(segs);
  auto as_v2 = reader.getRoot<capnp::DynamicStruct>(v2);
  EXPECT_EQ(as_v2.get("hits").as<uint64_t>(), 8u) << "v1's change";
  EXPECT_EQ(as_v2.get("lastSeenMs").as<int64_t>(), 1'700'000'000'000) << "v2's field kept";
}

// A breaking change: version 2 keeps users upper-case. Migrations written against the
// typed records convert on restore and on replay, both ways.
void register_case_migrations(Table<Session>& t) {
  auto mapped = [](bool upper) {
    return Table<Session>::migration<Session>([upper](Session::Reader from, Session::Builder to) {
      std::string user = from.getUser().cStr();
      for (char& c : user) c = static_cast<char>(upper ? std::toupper(c) : std::tolower(c));
      to.setHits(from.getHits());
      to.setTags(from.getTags());
      to.setPlan(from.getPlan());
      to.getLimit().setPerMinute(from.getLimit().getPerMinute());
      to.getLimit().setBurst(from.getLimit().getBurst());
      to.setUser(user);
    });
  };
  EXPECT_TRUE(t.migrations().add(1, 2, mapped(true)).ok());
  EXPECT_TRUE(t.migrations().add(2, 1, mapped(false)).ok());
}

void hand_over(Process& from, Process& to, const std::function<void()>& after_l0) {
  auto cp = checkpoint_now(from.reg);
  after_l0();
  const std::string frame = from.reg.log().take_frame();
  from.reg.log().end_capture();
  auto r = restore_checkpoint(cp.fd(), to.reg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  DeltaReplayer replay(*r);
  auto applied = replay.apply_frame(frame);
  ASSERT_TRUE(applied.ok()) << applied.error().to_string();
}

TEST(Table, ABreakingChangeMigratesBothWaysOnRestoreAndReplay) {
  Process v1(1), v2(2), back(1);
  for (Process* p : {&v1, &v2, &back}) register_case_migrations(p->sessions);
  put(v1.sessions, "s1", "ada", 1);
  ASSERT_NO_FATAL_FAILURE(hand_over(v1, v2, [&] { put(v1.sessions, "s2", "bob", 2); }));
  EXPECT_EQ(std::string(v2.sessions.get("s1")->getUser().cStr()), "ADA") << "restored";
  EXPECT_EQ(std::string(v2.sessions.get("s2")->getUser().cStr()), "BOB") << "replayed";
  EXPECT_EQ(v2.sessions.get("s2")->getHits(), 2u);

  ASSERT_NO_FATAL_FAILURE(hand_over(v2, back, [&] { put(v2.sessions, "s3", "CY", 3); }));
  EXPECT_EQ(std::string(back.sessions.get("s1")->getUser().cStr()), "ada");
  EXPECT_EQ(std::string(back.sessions.get("s3")->getUser().cStr()), "cy");
}

// Reads are unchecked, so nothing reaches the table unchecked: a peer's section of the
// same name that is not a Table, a record that is not a message, a delta that is not a
// change a Table makes.
TEST(Table, EveryRecordFromAPeerIsCheckedAndRefusalsNameIt) {
  auto restore_from = [](const std::function<void(TrackedMap&)>& fill_peer) {
    Registry peer;
    TrackedMap sessions("sessions", 1);
    EXPECT_TRUE(peer.add(sessions).ok());
    fill_peer(sessions);
    auto cp = checkpoint_now(peer);
    peer.log().end_capture();
    Process p;
    auto r = restore_checkpoint(cp.fd(), p.reg);
    return r.ok() ? std::string() : r.error().message();
  };
  std::string why = restore_from([](TrackedMap& m) { m.set("s1", "not a message"); });
  EXPECT_NE(why.find("typed section 'sessions', key 's1': the record is not a Session"),
            std::string::npos)
      << why;
  why = restore_from([](TrackedMap& m) { m.set("s1", std::string(16, '\xff')); });
  EXPECT_NE(why.find("the record is not a Session"), std::string::npos) << why;
  why = restore_from([](TrackedMap& m) {
    const std::string_view fv[] = {"f", "v"};
    (void)m.hset("s1", fv);
  });
  EXPECT_NE(why.find("got a hash record under key 's1'"), std::string::npos) << why;
  EXPECT_NE(why.find("is the peer's section of that name a Table?"), std::string::npos) << why;

  Process p;
  const std::string garbage(24, '\x01');
  const std::string_view set_args[] = {garbage, std::string_view("\0\0\0\0\0\0\0\0", 8)};
  auto bad_set = p.sessions.apply_delta({1, p.sessions.id(), TrackedMap::kOpSet, "s1", set_args});
  ASSERT_FALSE(bad_set.ok());
  EXPECT_NE(bad_set.error().message().find("at key 's1': the record is not a Session"),
            std::string::npos)
      << bad_set.error().message();
  EXPECT_FALSE(p.sessions.contains("s1")) << "a refused delta changes nothing";
  const std::string_view hset_args[] = {"f", "v"};
  auto bad_op = p.sessions.apply_delta({2, p.sessions.id(), TrackedMap::kOpHSet, "s1", hset_args});
  ASSERT_FALSE(bad_op.ok());
  EXPECT_NE(bad_op.error().message().find("op 9 is not a change a Table makes"), std::string::npos)
      << bad_op.error().message();
}

TEST(Table, DigestIsOrderFreeAndSeesEveryField) {
  const DigestKey key{5, 6};
  auto digest = [&](Table<Session>& t) {
    auto begun = t.digest_begin(key, 1);
    EXPECT_TRUE(begun.ok() && *begun);
    while (!t.digest_step(64)) {
    }
    StateDigest d = t.digest_result();
    t.digest_end();
    return d;
  };
  Table<Session> a("sessions", 1), b("sessions", 1);
  put(a, "x", "ada", 1);
  put(a, "y", "bob", 2);
  put(b, "y", "bob", 2);
  put(b, "x", "ada", 1);
  EXPECT_EQ(digest(a), digest(b));
  b.update("x", [](Session::Builder s) { s.getLimit().setBurst(1); });
  EXPECT_NE(digest(a), digest(b)) << "a field inside a group";
}

}  // namespace
}  // namespace baton
