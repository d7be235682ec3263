// Fuzz target: the delta frame decoder (frame_size, decode_frame, for_each_delta) and
// DeltaReplayer::apply_frame into kvd's section. A raw mode frames the input as a stream,
// as the successor's delta channel does; a structured mode wraps payloads the fuzzer
// writes in valid headers and checksums, so mutations reach the record decoder and the
// section's replay. docs/fuzzing.md describes the modes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "baton/checkpoint.h"
#include "baton/crc32c.h"
#include "baton/delta_log.h"
#include "baton/tracked_map.h"
#include "fuzz_input.h"
#include "kvd_section.h"

namespace baton::fuzz {
namespace {

constexpr size_t kMaxFrameBytes = kFrameHeaderSize + kMaxFramePayload;

struct Record {
  uint16_t section;
  uint8_t op;
  std::string key;
  std::vector<std::string> args;
  bool operator==(const Record&) const = default;
};

// Decodes a frame's records, checking that every view stays inside the payload.
Result<std::vector<Record>> records_of(const FrameView& f) {
  std::vector<Record> out;
  const char* lo = f.payload.data();
  const char* hi = lo + f.payload.size();
  auto inside = [&](std::string_view v) {
    return v.empty() || (v.data() >= lo && v.data() + v.size() <= hi);
  };
  uint64_t want_lsn = f.first_lsn;
  auto r = for_each_delta(f, [&](const DeltaView& d) -> Result<void> {
    BATON_FUZZ_CHECK(d.lsn == want_lsn++, "records are consecutive");
    BATON_FUZZ_CHECK(inside(d.key), "key views outside the payload");
    BATON_FUZZ_CHECK(d.args.size() <= kMaxDeltaArgs, "argc %zu", d.args.size());
    Record rec{d.section, d.op, std::string(d.key), {}};
    for (std::string_view a : d.args) {
      BATON_FUZZ_CHECK(inside(a), "argument views outside the payload");
      rec.args.emplace_back(a);
    }
    out.push_back(std::move(rec));
    return ok();
  });
  if (!r.ok()) return std::move(r).error();
  BATON_FUZZ_CHECK(out.size() == f.count, "%zu records decoded, frame says %u", out.size(),
                   f.count);
  return out;
}

// Properties of one candidate frame, then its replay.
void check_frame(std::string_view frame, DeltaReplayer& replayer) {
  auto f = decode_frame(frame);
  if (f.ok()) {
    auto size = frame_size(frame, kMaxFrameBytes);
    BATON_FUZZ_CHECK(size.ok() && size.value() == frame.size(),
                     "frame_size disagrees with decode_frame");
    auto records = records_of(f.value());
    if (records.ok()) {
      // The log's encoder writes the same records back (varints may differ: the
      // decoder accepts non-minimal ones), and they decode to the same values.
      DeltaLog log;
      log.begin_capture();
      for (const Record& rec : records.value()) {
        std::vector<std::string_view> args(rec.args.begin(), rec.args.end());
        log.append(rec.section, rec.op, rec.key, std::span<const std::string_view>(args));
      }
      const std::string again = log.take_frame();
      auto g = decode_frame(again);
      BATON_FUZZ_CHECK(g.ok(), "re-encoded frame: %s", g.error().to_string().c_str());
      auto back = records_of(g.value());
      BATON_FUZZ_CHECK(back.ok() && back.value() == records.value(), "re-encoded records differ");
    }
  }
  const uint64_t before = replayer.next_lsn();
  auto applied = replayer.apply_frame(frame);
  if (verbose()) {
    std::fprintf(stderr, "frame of %zu bytes: %s\n", frame.size(),
                 applied.ok() ? "applied" : applied.error().to_string().c_str());
  }
  if (applied.ok()) {
    BATON_FUZZ_CHECK(f.ok() && replayer.next_lsn() == before + f->count,
                     "a frame applied without decoding, or LSNs skipped");
  }
}

// kvd's section with an entry of every type; peer version 1 or 2 decides whether
// replay migrates.
struct KvdReplica : KvdNode {
  KvdReplica(bool v1, uint32_t peer) : KvdNode(v1) {
    fill_every_type(map);
    (void)map.set_peer_version(peer);
  }
};

std::string make_frame(uint64_t first_lsn, uint32_t count, std::string_view payload) {
  std::string frame(kFrameHeaderSize, '\0');
  char* h = frame.data();
  const uint32_t magic = kFrameMagic, len = static_cast<uint32_t>(payload.size());
  const uint16_t version = 1;
  std::memcpy(h + 0, &magic, 4);
  std::memcpy(h + 4, &version, 2);
  std::memcpy(h + 8, &len, 4);
  std::memcpy(h + 12, &count, 4);
  std::memcpy(h + 16, &first_lsn, 8);
  uint32_t crc = crc32c(crc32c(0, h, 24), payload.data(), payload.size());
  std::memcpy(h + 24, &crc, 4);
  frame += payload;
  return frame;
}

}  // namespace
}  // namespace baton::fuzz

// Input: u8 mode, u8 flags (bit 0: a kvd-v1 section; bit 1: peer version 1, else 2),
// u8 start LSN. Raw mode: the rest is a byte stream of frames. Structured mode: a run of
// [u8 lsn skew][u16 record count][u16 payload bytes][payload], each made a valid frame
// whose first LSN is the replayer's next one plus the (signed) skew.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace baton;
  using namespace baton::fuzz;
  FuzzInput in(data, size);
  const bool structured = in.take<uint8_t>() & 1;
  const uint8_t flags = in.take<uint8_t>();
  const uint64_t start_lsn = in.take<uint8_t>();
  KvdReplica node(flags & 0x01, flags & 0x02 ? 1 : 2);
  DeltaReplayer replayer({&node.map}, start_lsn);
  if (!structured) {
    std::string_view stream = in.rest();
    while (!stream.empty()) {
      auto n = frame_size(stream, kMaxFrameBytes);
      if (!n.ok() || n.value() == 0) {
        check_frame(stream, replayer);  // what is left, as one frame
        break;
      }
      BATON_FUZZ_CHECK(n.value() >= kFrameHeaderSize, "frame_size %zu", n.value());
      check_frame(stream.substr(0, n.value()), replayer);
      if (n.value() >= stream.size()) break;
      stream.remove_prefix(n.value());
    }
  } else {
    while (!in.empty()) {
      const auto skew = static_cast<int8_t>(in.take<uint8_t>());
      const uint32_t count = in.take<uint16_t>();
      const std::string_view payload = in.take_bytes(in.take<uint16_t>());
      check_frame(make_frame(replayer.next_lsn() + skew, count, payload), replayer);
    }
  }
  BATON_FUZZ_CHECK(node.map.estimate_bytes() == node.map.recount_bytes(),
                   "estimate %llu, recount %llu after replay",
                   static_cast<unsigned long long>(node.map.estimate_bytes()),
                   static_cast<unsigned long long>(node.map.recount_bytes()));
  return 0;
}
