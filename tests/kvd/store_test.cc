// kvd's commands against a TrackedMap: Redis's replies and errors, expiry, the v1 build's
// refusals, and what a rollback to v1 does to TTLs.
#include <gtest/gtest.h>

#include "rollback.h"
#include "store.h"

namespace kvd {
namespace {

class FakeServer final : public ServerView {
 public:
  std::string info(std::string_view section) const override {
    return "# Asked\r\nsection:" + std::string(section) + "\r\n";
  }
  int64_t maxclients() const override { return 7; }
};

class StoreTest : public ::testing::Test {
 protected:
  explicit StoreTest(bool expiry = true) : store_(map_, expiry, server_) { store_.set_now(1000); }
  std::string run(std::vector<std::string> words) {
    std::vector<std::string_view> args(words.begin(), words.end());
    std::string out;
    last_ = store_.execute(args, out);
    return out;
  }
  baton::TrackedMap map_{"kvd", 2};
  FakeServer server_;
  Store store_;
  Outcome last_;
};

TEST_F(StoreTest, StringsAndCountersAnswerLikeRedis) {
  EXPECT_EQ(run({"SET", "k", "v"}), "+OK\r\n");
  EXPECT_EQ(run({"get", "k"}), "$1\r\nv\r\n");
  EXPECT_EQ(run({"GET", "missing"}), "$-1\r\n");
  EXPECT_EQ(run({"SET", "k", "w", "NX"}), "$-1\r\n");
  EXPECT_EQ(run({"SET", "new", "w", "XX"}), "$-1\r\n");
  EXPECT_EQ(run({"INCR", "n"}), ":1\r\n");
  EXPECT_EQ(run({"INCRBY", "n", "41"}), ":42\r\n");
  EXPECT_EQ(run({"DECR", "n"}), ":41\r\n");
  EXPECT_EQ(run({"INCR", "k"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(run({"INCRBY", "n", "x"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(run({"SET", "big", "9223372036854775807"}), "+OK\r\n");
  EXPECT_EQ(run({"INCR", "big"}), "-ERR increment or decrement would overflow\r\n");
  EXPECT_EQ(run({"MSET", "a", "1", "b", "2"}), "+OK\r\n");
  EXPECT_EQ(run({"MSET", "a", "1", "b"}), "-ERR wrong number of arguments for 'mset' command\r\n");
  EXPECT_EQ(run({"MGET", "a", "nope", "b"}), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
  EXPECT_EQ(run({"EXISTS", "a", "b", "nope", "a"}), ":3\r\n");
  EXPECT_EQ(run({"DEL", "a", "nope"}), ":1\r\n");
  EXPECT_EQ(run({"DBSIZE"}), ":4\r\n");  // k n big b
  EXPECT_EQ(run({"FLUSHALL"}), "+OK\r\n");
  EXPECT_EQ(run({"DBSIZE"}), ":0\r\n");
}

TEST_F(StoreTest, CollectionsAnswerLikeRedis) {
  EXPECT_EQ(run({"RPUSH", "l", "a", "b", "c", "d"}), ":4\r\n");
  EXPECT_EQ(run({"LRANGE", "l", "1", "-2"}), "*2\r\n$1\r\nb\r\n$1\r\nc\r\n");
  EXPECT_EQ(run({"LRANGE", "l", "5", "9"}), "*0\r\n");
  EXPECT_EQ(run({"LPOP", "l"}), "$1\r\na\r\n");
  EXPECT_EQ(run({"RPOP", "l", "2"}), "*2\r\n$1\r\nd\r\n$1\r\nc\r\n");
  EXPECT_EQ(run({"LLEN", "l"}), ":1\r\n");
  EXPECT_EQ(run({"LPOP", "nope", "2"}), "*-1\r\n");
  EXPECT_EQ(run({"SADD", "s", "x", "y", "x"}), ":2\r\n");
  EXPECT_EQ(run({"SCARD", "s"}), ":2\r\n");
  std::string popped = run({"SPOP", "s"});
  EXPECT_TRUE(popped == "$1\r\nx\r\n" || popped == "$1\r\ny\r\n") << popped;
  EXPECT_EQ(run({"HSET", "h", "f", "1", "g", "2"}), ":2\r\n");
  EXPECT_EQ(run({"HSET", "h", "f", "3"}), ":0\r\n");
  EXPECT_EQ(run({"HGET", "h", "f"}), "$1\r\n3\r\n");
  EXPECT_EQ(run({"HSET", "h", "f"}), "-ERR wrong number of arguments for 'hset' command\r\n");
  EXPECT_EQ(run({"ZADD", "z", "2", "b", "1.5", "a", "+inf", "c"}), ":3\r\n");
  EXPECT_EQ(run({"ZADD", "z", "nan", "d"}), "-ERR value is not a valid float\r\n");
  EXPECT_EQ(run({"ZRANGE", "z", "0", "-1"}), "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
  EXPECT_EQ(run({"ZRANGE", "z", "-1", "-1", "WITHSCORES"}), "*2\r\n$1\r\nc\r\n$3\r\ninf\r\n");
  EXPECT_EQ(run({"ZPOPMIN", "z", "2"}), "*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$1\r\n2\r\n");
  EXPECT_EQ(run({"ZCARD", "z"}), ":1\r\n");
}

TEST_F(StoreTest, LongArgumentListsAreSplitBelowTheDeltaLimit) {
  std::vector<std::string> push = {"LPUSH", "l"};
  for (int i = 0; i < 1000; ++i) push.push_back(std::to_string(i));
  EXPECT_EQ(run(push), ":1000\r\n");
  EXPECT_EQ(run({"LRANGE", "l", "0", "0"}), "*1\r\n$3\r\n999\r\n");
  std::vector<std::string> hset = {"HSET", "h"};
  for (int i = 0; i < 600; ++i) hset.push_back("f" + std::to_string(i % 300));
  EXPECT_EQ(run(hset), ":150\r\n");  // the fields are the even words: f0 f2 .. f298
}

TEST_F(StoreTest, ErrorsNameTheProblemWithRedisTexts) {
  run({"RPUSH", "l", "a"});
  const std::string wrongtype =
      "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
  for (auto cmd : std::vector<std::vector<std::string>>{{"GET", "l"},
                                                        {"INCR", "l"},
                                                        {"SADD", "l", "x"},
                                                        {"HGET", "l", "f"},
                                                        {"ZADD", "l", "1", "m"},
                                                        {"ZRANGE", "l", "0", "1"}}) {
    EXPECT_EQ(run(cmd), wrongtype) << cmd[0];
  }
  EXPECT_EQ(run({"GET"}), "-ERR wrong number of arguments for 'get' command\r\n");
  EXPECT_EQ(run({"NOPE", "a\r\nb", "c"}),
            "-ERR unknown command 'NOPE', with args beginning with: 'a  b' 'c' \r\n");
  EXPECT_EQ(run({"SET", "k", "v", "EX"}), "-ERR syntax error\r\n");
  EXPECT_EQ(run({"SET", "k", "v", "EX", "0"}), "-ERR invalid expire time in 'set' command\r\n");
  EXPECT_EQ(run({"CONFIG", "SET", "x", "y"}),
            "-ERR CONFIG 'SET' is not supported by kvd; CONFIG GET is\r\n");
  EXPECT_EQ(run({"CONFIG", "GET", "max*"}),
            "*4\r\n$10\r\nmaxclients\r\n$1\r\n7\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
  EXPECT_EQ(run({"INFO", "Baton"}), "$24\r\n# Asked\r\nsection:baton\r\n\r\n");
  EXPECT_EQ(run({"QUIT"}), "+OK\r\n");
  EXPECT_TRUE(last_.close);
}

TEST_F(StoreTest, KeysExpireLazilyAndBySweep) {
  EXPECT_EQ(run({"SET", "a", "1", "PX", "100"}), "+OK\r\n");
  EXPECT_EQ(run({"SET", "b", "1", "EX", "10"}), "+OK\r\n");
  EXPECT_EQ(run({"SET", "c", "1"}), "+OK\r\n");
  EXPECT_EQ(run({"TTL", "b"}), ":10\r\n");
  EXPECT_EQ(run({"PTTL", "a"}), ":100\r\n");
  EXPECT_EQ(run({"TTL", "c"}), ":-1\r\n");
  EXPECT_EQ(run({"TTL", "nope"}), ":-2\r\n");
  EXPECT_EQ(run({"SET", "b", "2", "KEEPTTL"}), "+OK\r\n");
  EXPECT_EQ(run({"TTL", "b"}), ":10\r\n");
  store_.set_now(1100);
  EXPECT_EQ(run({"GET", "a"}), "$-1\r\n");  // lazily: erased on access
  EXPECT_EQ(store_.expired(), 1u);
  EXPECT_EQ(run({"EXPIRE", "c", "1"}), ":1\r\n");
  EXPECT_EQ(run({"EXPIRE", "nope", "1"}), ":0\r\n");
  store_.set_now(20'000);
  EXPECT_EQ(map_.size(), 2u);  // b and c are past their TTL but not yet erased
  store_.sweep_expired(100);
  EXPECT_EQ(map_.size(), 0u);
  EXPECT_EQ(store_.expired(), 3u);
  run({"SET", "d", "1"});
  EXPECT_EQ(run({"EXPIRE", "d", "-1"}), ":1\r\n");  // a past deadline deletes
  EXPECT_EQ(run({"EXISTS", "d"}), ":0\r\n");
}

class StoreV1Test : public StoreTest {
 protected:
  StoreV1Test() : StoreTest(false) {}
};

TEST_F(StoreV1Test, TheV1BuildRefusesExpiryWithAClearError) {
  EXPECT_EQ(run({"EXPIRE", "k", "1"}),
            "-ERR 'expire' needs key expiry, which kvd-v1 does not have; upgrade to kvd (v2)\r\n");
  EXPECT_EQ(run({"SET", "k", "v", "EX", "5"}),
            "-ERR SET EX/PX needs key expiry, which kvd-v1 lacks\r\n");
  EXPECT_EQ(run({"SET", "k", "v", "NX"}), "+OK\r\n");
}

TEST(Rollback, LiveTtlsAreRemovedExpiredKeysDroppedAndLaterWritesWin) {
  Rollback r;
  r.now_ms = 1000;
  baton::Entry live, expired, plain, rewritten;
  live.expires_at_ms = 5000;
  expired.expires_at_ms = 500;
  r.migrate("live", live);
  r.migrate("expired", expired);
  r.migrate("plain", plain);
  EXPECT_EQ(live.expires_at_ms, 0);
  EXPECT_EQ(expired.expires_at_ms, 0);
  EXPECT_EQ(r.ttls_removed, 1u);
  EXPECT_EQ(r.expired, std::set<std::string>{"expired"});
  // A replayed write after the restore (SET expired v EX 100) brings the key back.
  rewritten.expires_at_ms = 101'000;
  r.migrate("expired", rewritten);
  EXPECT_TRUE(r.expired.empty());
  EXPECT_EQ(r.ttls_removed, 2u);
}

}  // namespace
}  // namespace kvd
