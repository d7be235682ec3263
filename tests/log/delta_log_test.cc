// DeltaLog: LSNs, frames, bounds and frame validation.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "baton/delta_log.h"

namespace baton {
namespace {

std::vector<std::string> decode_keys(const std::string& frame) {
  std::vector<std::string> keys;
  auto f = decode_frame(frame);
  EXPECT_TRUE(f.ok()) << f.error().to_string();
  if (!f.ok()) return keys;
  auto r = for_each_delta(f.value(), [&](const DeltaView& d) -> Result<void> {
    keys.push_back(std::to_string(d.lsn) + ":" + std::string(d.key) + ":" +
                   std::to_string(d.args.size()));
    return ok();
  });
  EXPECT_TRUE(r.ok());
  return keys;
}

TEST(DeltaLog, IdleLogIsNotCapturingAndTakesNoFrame) {
  DeltaLog log;
  EXPECT_FALSE(log.capturing());
  EXPECT_TRUE(log.take_frame().empty());
}

TEST(DeltaLog, AssignsConsecutiveLsnsAfterL0AndFramesThem) {
  DeltaLog log;
  uint64_t l0 = log.begin_capture();
  log.append(0, 1, "a", {"x"});
  log.append(1, 2, "b", {});
  log.append(0, 3, "c", {"y", "zz"});
  EXPECT_EQ(log.last_lsn(), l0 + 3);
  std::string frame = log.take_frame();
  EXPECT_EQ(decode_keys(frame), (std::vector<std::string>{std::to_string(l0 + 1) + ":a:1",
                                                          std::to_string(l0 + 2) + ":b:0",
                                                          std::to_string(l0 + 3) + ":c:2"}));
  log.append(0, 1, "d", {});
  EXPECT_EQ(decode_keys(log.take_frame()),
            (std::vector<std::string>{std::to_string(l0 + 4) + ":d:0"}));
  log.end_capture();
  // A second capture continues the LSN sequence.
  EXPECT_EQ(log.begin_capture(), l0 + 4);
}

TEST(DeltaLog, ProbesTakeLsnsButAreNotPendingWrites) {
  DeltaLog log;
  const uint64_t l0 = log.begin_capture();
  log.append_probe("GET a", "$-1");
  log.append_probe("GET b", "$-1");
  EXPECT_EQ(log.pending_count(), 2u);
  EXPECT_EQ(log.pending_writes(), 0u) << "no reply waits for a probe";
  log.append(0, 1, "a", {"x"});
  EXPECT_EQ(log.pending_writes(), 1u);
  // One frame, in LSN order: a probe deferred keeps its place before later writes.
  EXPECT_EQ(decode_keys(log.take_frame()),
            (std::vector<std::string>{std::to_string(l0 + 1) + ":GET a:1",
                                      std::to_string(l0 + 2) + ":GET b:1",
                                      std::to_string(l0 + 3) + ":a:1"}));
  EXPECT_EQ(log.pending_writes(), 0u);
  log.append(0, 1, "b", {});
  log.end_capture();
  EXPECT_EQ(log.pending_writes(), 0u);
}

// A worker thread's frame joins the main log (docs/design.md, "Worker threads"): its
// records take the main log's next LSNs, in order, between the main log's own.
TEST(DeltaLog, AnotherLogsFrameTakesThisLogsNextLsns) {
  DeltaLog main, worker;
  main.begin_capture();
  worker.begin_capture();
  main.append(0, 1, "a", {});
  worker.append(64, 1, "w1", {"x"});
  worker.append_probe("GET w1", "x");
  worker.append(65, 2, "w2", {});
  ASSERT_TRUE(main.append_frame(worker.take_frame()).ok());
  main.append(0, 1, "b", {});
  EXPECT_EQ(main.last_lsn(), 5u);
  EXPECT_EQ(main.pending_count(), 5u);
  EXPECT_EQ(main.pending_writes(), 4u) << "the probe is not a write";
  const std::string frame = main.take_frame();  // the view below reads it
  auto f = decode_frame(frame);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_EQ(f->first_lsn, 1u);
  std::vector<std::pair<uint64_t, std::string>> seen;
  auto walked = for_each_delta(*f, [&](const DeltaView& d) -> Result<void> {
    seen.emplace_back(d.lsn, std::string(d.key));
    return ok();
  });
  ASSERT_TRUE(walked.ok()) << walked.error().to_string();
  EXPECT_EQ(seen, (std::vector<std::pair<uint64_t, std::string>>{
                      {1, "a"}, {2, "w1"}, {3, "GET w1"}, {4, "w2"}, {5, "b"}}));
  std::string bad = std::string(kFrameHeaderSize, '\0');
  auto refused = main.append_frame(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kCorrupt);
  EXPECT_EQ(main.last_lsn(), 5u) << "a refused frame takes no LSN";
}

TEST(DeltaLog, OverflowFreesMemoryAndIsReported) {
  DeltaLog log(1024);
  log.begin_capture();
  std::string big(300, 'v');
  for (int i = 0; i < 10; ++i) log.append(0, 1, "k", {big});
  EXPECT_TRUE(log.overflowed());
  EXPECT_EQ(log.pending_bytes(), 0u);
  EXPECT_TRUE(log.take_frame().empty());
  log.end_capture();
  EXPECT_FALSE(log.overflowed());
}

TEST(DeltaFrame, EveryFlippedByteIsDetected) {
  DeltaLog log;
  log.begin_capture();
  log.append(3, 7, "key", {"value", "more"});
  const std::string frame = log.take_frame();
  for (size_t i = 0; i < frame.size(); ++i) {
    std::string bad = frame;
    bad[i] ^= 0x40;
    auto f = decode_frame(bad);
    EXPECT_FALSE(f.ok()) << "flip at byte " << i << " went unnoticed";
  }
}

TEST(DeltaFrame, TruncationAndGarbageGiveClearErrors) {
  DeltaLog log;
  log.begin_capture();
  log.append(0, 1, "key", {"value"});
  const std::string frame = log.take_frame();
  for (size_t n = 0; n < frame.size(); ++n) {
    auto f = decode_frame(frame.substr(0, n));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.error().kind(), ErrorKind::kCorrupt);
  }
  auto g = frame_size("GARBAGE-GARBAGE-GARBAGE-GARBAGE!", 1 << 20);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("magic 0x42524147, expected 0x544c4442"), std::string::npos)
      << g.error().message();
  auto need = frame_size(frame.substr(0, 5), 1 << 20);
  ASSERT_TRUE(need.ok());
  EXPECT_EQ(need.value(), 0u);
  EXPECT_EQ(frame_size(frame, 1 << 20).value(), frame.size());
  auto huge = frame_size(frame, 40);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().kind(), ErrorKind::kCapacity);
}

TEST(DeltaFrame, RecordLengthsPastTheEndAreRejected) {
  // A frame whose checksum is right but whose record claims more bytes than exist.
  DeltaLog log;
  log.begin_capture();
  log.append(0, 1, "k", {"v"});
  std::string frame = log.take_frame();
  auto f = decode_frame(frame);
  ASSERT_TRUE(f.ok());
  FrameView lying = f.value();
  lying.count = 2;  // one record more than the payload holds
  auto r = for_each_delta(lying, [](const DeltaView&) { return ok(); });
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace baton
