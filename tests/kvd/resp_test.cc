// kvd's RESP parser: framing byte by byte, pipelining, inline requests, and the protocol
// errors that close a connection.
#include <gtest/gtest.h>

#include "resp.h"

namespace kvd {
namespace {

struct Parsed {
  Parse status;
  std::vector<std::string> args;
  size_t used = 0;
  std::string error;
};

Parsed parse(std::string_view in) {
  std::vector<std::string_view> args;
  Parsed p;
  p.status = parse_request(in, &args, &p.used, &p.error);
  for (auto a : args) p.args.emplace_back(a);
  return p;
}

TEST(Resp, MultibulkNeedsEveryByteAndConsumesExactlyOneRequest) {
  const std::string req = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
  for (size_t n = 0; n < req.size(); ++n) {
    EXPECT_EQ(parse(req.substr(0, n)).status, Parse::kNeedMore) << "prefix of " << n << " bytes";
  }
  Parsed p = parse(req + "*1\r\n$4\r\nPING\r\n");
  ASSERT_EQ(p.status, Parse::kDone);
  EXPECT_EQ(p.used, req.size());
  EXPECT_EQ(p.args, (std::vector<std::string>{"SET", "k", "v\r\nxy"}));  // binary-safe
}

TEST(Resp, InlineRequestsSplitOnBlanksAndTolerateBareNewlines) {
  Parsed p = parse("  set  key\tvalue \r\nGET key\n");
  ASSERT_EQ(p.status, Parse::kDone);
  EXPECT_EQ(p.args, (std::vector<std::string>{"set", "key", "value"}));
  EXPECT_EQ(p.used, 19u);
  Parsed blank = parse("\r\n");
  EXPECT_EQ(blank.status, Parse::kDone);
  EXPECT_TRUE(blank.args.empty());
  EXPECT_EQ(parse("PING").status, Parse::kNeedMore);
}

TEST(Resp, ZeroAndNegativeCountsAreEmptyRequests) {
  for (const char* in : {"*0\r\n", "*-1\r\n"}) {
    Parsed p = parse(in);
    EXPECT_EQ(p.status, Parse::kDone) << in;
    EXPECT_TRUE(p.args.empty());
    EXPECT_EQ(p.used, std::string_view(in).size());
  }
}

TEST(Resp, MalformedFramingIsAnErrorNamingTheProblem) {
  struct Case {
    std::string in, error;
  };
  for (const Case& c : std::vector<Case>{
           {"*x\r\n", "invalid multibulk length"},
           {"*9999999999\r\n", "invalid multibulk length"},
           {"*1\r\n+PING\r\n", "expected '$', got '+'"},
           {"*1\r\n$-1\r\n", "invalid bulk length"},
           {"*1\r\n$999999999999\r\n", "invalid bulk length"},
           {"*1\r\n$4\r\nPINGxx", "not followed by CRLF"},
           {"*1\r\n$1" + std::string(40, '1'), "invalid bulk length"},
           {std::string(kMaxInlineBytes + 1, 'a'), "too big inline request"},
           {std::string("GET \x01\x02\r\n"), "control byte"},
       }) {
    Parsed p = parse(c.in);
    ASSERT_EQ(p.status, Parse::kError) << c.in.substr(0, 40);
    EXPECT_NE(p.error.find("ERR Protocol error: "), std::string::npos) << p.error;
    EXPECT_NE(p.error.find(c.error), std::string::npos) << p.error;
  }
}

TEST(Resp, RepliesAreRedisWireFormat) {
  std::string out;
  reply_ok(out);
  reply_int(out, -42);
  reply_bulk(out, "a\r\nb");
  reply_nil(out);
  reply_array(out, 2);
  reply_double(out, 0.1);
  reply_double(out, 1.5e300);
  reply_error(out, "ERR x");
  EXPECT_EQ(
      out, "+OK\r\n:-42\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n$3\r\n0.1\r\n$8\r\n1.5e+300\r\n-ERR x\r\n");
}

}  // namespace
}  // namespace kvd
