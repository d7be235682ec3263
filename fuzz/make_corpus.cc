// Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid inputs
// made by the real writers (CheckpointWriter, DeltaLog, encode_message), in each target's
// modes. Usage: fuzz_make_corpus <fuzz/corpus dir>. Deterministic: the same build writes
// the same files, except a checkpoint header's creation time and writer pid.
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "baton/checkpoint.h"
#include "baton/tracked_map.h"
#include "checkpoint/format.h"
#include "control_codec.h"
#include "handoff/messages.h"
#include "kvd_section.h"

namespace {

namespace fs = std::filesystem;
using namespace baton;
using baton::fuzz::fill_every_type;

fs::path root;

void write(const std::string& target, const std::string& name, std::string_view bytes) {
  fs::create_directories(root / target);
  std::ofstream out(root / target / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", target.c_str(), name.c_str());
    std::exit(1);
  }
}

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

[[noreturn]] void die(const Error& e) {
  std::fprintf(stderr, "make_corpus: %s\n", e.to_string().c_str());
  std::exit(1);
}

// A few entries of every type, with and without expiry, as kvd holds them.
void fill(TrackedMap& m) {
  m.set("greeting", "hello", 0);
  m.set("ttl", "soon", 1'600'000'000'000);    // already past: v1 drops it
  m.set("later", "kept", 4'000'000'000'000);  // future: v1 keeps it without the TTL
  (void)m.incr_by("counter", 42);
  const std::string_view three[] = {"a", "b", "c"};
  (void)m.push("list", End::kRight, three);
  (void)m.sadd("set", three);
  const std::string_view fv[] = {"f1", "v1", "f2", "v2"};
  (void)m.hset("hash", fv);
  (void)m.zadd("zset", 1.5, "one");
  (void)m.zadd("zset", -2, "two");
}

std::string checkpoint_bytes(Registry& reg, size_t slice_bytes) {
  CheckpointOptions opt;
  opt.pages = PagePolicy::kSmall;
  opt.prefault = false;
  opt.slice_bytes = slice_bytes;
  auto w = CheckpointWriter::begin(reg, opt);
  if (!w.ok()) die(w.error());
  for (;;) {
    auto done = w->step();
    if (!done.ok()) die(done.error());
    if (done.value()) break;
  }
  auto cp = w->finish();
  if (!cp.ok()) die(cp.error());
  struct stat st;
  if (::fstat(cp->fd(), &st) != 0) std::exit(1);
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  if (::pread(cp->fd(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    std::exit(1);
  }
  reg.log().end_capture();
  return bytes;
}

// The structured-mode input of checkpoint_fuzz.cc for the sections of a real segment:
// each chunk's record count and its Cap'n Proto segment (framing cut off).
std::string structured(const std::string& seg, uint8_t flags) {
  namespace f = baton::format;
  f::Header h;
  std::memcpy(&h, seg.data(), sizeof h);
  std::string out;
  put<uint8_t>(out, 2);
  put<uint8_t>(out, flags);
  put<uint8_t>(out, static_cast<uint8_t>(h.section_count));
  for (size_t i = 0; i < h.section_count; ++i) {
    f::SectionDesc d;
    std::memcpy(&d, seg.data() + sizeof h + i * sizeof d, sizeof d);
    put<uint8_t>(out, 0);  // "kvd"
    put<uint8_t>(out, static_cast<uint8_t>(d.schema_version));
    put<uint8_t>(out, static_cast<uint8_t>(d.chunks));
    for (uint64_t pos = d.offset; pos < d.offset + d.bytes;) {
      f::ChunkHeader ch;
      std::memcpy(&ch, seg.data() + pos, sizeof ch);
      put<uint8_t>(out, static_cast<uint8_t>(ch.records));
      const size_t body = size_t{ch.message_words} * 8 - 8;
      put<uint16_t>(out, static_cast<uint16_t>(body));
      out.append(seg, pos + sizeof ch + 8, body);
      pos += sizeof ch + size_t{ch.message_words} * 8;
    }
  }
  return out;
}

void checkpoint_corpus() {
  for (uint32_t version : {2u, 1u}) {
    Registry reg;
    TrackedMap m("kvd", version);
    if (!reg.add(m).ok()) std::exit(1);
    fill(m);
    const std::string seg = checkpoint_bytes(reg, 48);  // a few records per chunk
    const std::string v = "v" + std::to_string(version);
    // flags bit 0: restore into kvd-v1; bit 1: borrow strings.
    write("checkpoint", "raw-" + v + "-into-v2", std::string("\x00\x02", 2) + seg);
    write("checkpoint", "fixed-" + v + "-into-v1", std::string("\x01\x03", 2) + seg);
    write("checkpoint", "structured-" + v + "-into-v2", structured(seg, 0x02));
    write("checkpoint", "structured-" + v + "-into-v1-copied", structured(seg, 0x01));
  }
  Registry reg;
  TrackedMap m("kvd", 2);
  if (!reg.add(m).ok()) std::exit(1);
  write("checkpoint", "raw-empty-section", std::string("\x00\x00", 2) + checkpoint_bytes(reg, 64));
  write("checkpoint", "structured-no-sections", std::string("\x02\x00\x00", 3));
}

void delta_corpus() {
  Registry reg;
  TrackedMap m("kvd", 2);
  if (!reg.add(m).ok()) std::exit(1);
  fill_every_type(m);
  reg.log().begin_capture();  // L0 = 0: replay starts at LSN 1
  std::vector<std::string> frames;
  // Every op code, in three frames, each valid against the state the harness sets up.
  m.set("s", "new", 0);
  m.set("x", "fresh", 1'900'000'000'000);
  (void)m.incr_by("n", 1);
  const std::string_view vals[] = {"c", "d"};
  (void)m.push("l", End::kLeft, vals);
  (void)m.pop("l", End::kRight);
  frames.push_back(reg.log().take_frame());
  (void)m.sadd("set", vals);
  (void)m.srem("set", std::span(vals, 1));
  (void)m.spop("set", 7);
  const std::string_view fv[] = {"f", "v", "g", "w"};
  (void)m.hset("h", fv);
  (void)m.hdel("h", std::span(fv, 1));
  frames.push_back(reg.log().take_frame());
  (void)m.zadd("z", -3.25, "q");
  (void)m.zpopmin("z");
  m.expire_at("s", 2'000'000'000'000);
  m.erase("x");
  m.clear();
  frames.push_back(reg.log().take_frame());
  {  // The frames must replay exactly onto the harness's starting state.
    Registry check_reg;
    TrackedMap check("kvd", 2);
    if (!check_reg.add(check).ok()) std::exit(1);
    fill_every_type(check);
    (void)check.set_peer_version(2);
    DeltaReplayer replayer({&check}, 0);
    for (const std::string& f : frames) {
      if (auto r = replayer.apply_frame(f); !r.ok()) die(r.error());
    }
    if (!check.same_contents(m)) {
      std::fprintf(stderr, "make_corpus: replayed frames do not reproduce the state\n");
      std::exit(1);
    }
  }
  // u8 mode, u8 flags (bit 0 kvd-v1, bit 1 peer version 1), u8 start LSN.
  for (uint8_t flags : {0x00, 0x02, 0x03}) {
    std::string raw = {'\x00', static_cast<char>(flags), '\x00'};
    std::string structured = {'\x01', static_cast<char>(flags), '\x00'};
    for (const std::string& f : frames) {
      raw += f;
      uint32_t count;
      std::memcpy(&count, f.data() + 12, 4);
      put<uint8_t>(structured, 0);
      put<uint16_t>(structured, static_cast<uint16_t>(count));
      put<uint16_t>(structured, static_cast<uint16_t>(f.size() - kFrameHeaderSize));
      structured.append(f, kFrameHeaderSize);
    }
    write("delta_frame", "raw-stream-flags" + std::to_string(flags), raw);
    write("delta_frame", "structured-flags" + std::to_string(flags), structured);
  }
  write("delta_frame", "raw-one-frame", std::string("\x00\x00\x00", 3) + frames[0]);
}

void control_corpus() {
  using namespace baton::handoff;
  Timings t{1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<Message> all = {
      Hello{kMinProtocolVersion, 42, {"zero-copy"}, {{"kv", 1, 2}, {"meta", 3, 3}}, 5},
      Welcome{kProtocolVersion, 9, {"x"}},
      CheckpointReady{100, 1 << 20},
      Restored{5, 6},
      Frozen{121, 1, 78, {{"baton_upgrades_total{outcome=\"committed\"}", 3}, {"x_sum", 0.25}}},
      FdBatch{{{"listener", "", 7, true}, {"conn", std::string("half\0read", 9), 8, false}}},
      EarlyFds{{{"conn", "", 1ull << 40, false}}},
      Prepared{120, 3, {}},
      Commit{9, t, 30'000},
      Abort{"successor crashed"},
      Serving{77, 1234, {{"kv", 2}, {"meta", 1}}},
      Progress{12345, 17, {}},
      Rollback{"health check failed: disk"},
      Promote{"probation window ended"}};
  for (const Message& m : all) {
    std::string name(message_name(m));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    write("control_codec", "decode-" + name,
          std::string(1, '\0') + serialization::encode_message(m));
  }
  // Encode mode: u8 1, u8 message type, then its fields (control_codec_fuzz.cc, build()).
  write("control_codec", "encode-hello",
        std::string("\x01\x00\x05\x00\x00\x00\x2a\x00\x00\x00"
                    "\x01\x02kv\x01\x02kv\x01\x00\x00\x00"
                    "\x02\x00\x00\x00\x05\x00\x00\x00",
                    30));
  write("control_codec", "encode-fd-batch",
        std::string("\x01\x05\x01\x04conn\x04half\x07\x00\x00\x00\x00\x00\x00\x00\x00", 21));
}

void resp_corpus() {
  // u16 split point, u8 piece size, then the stream.
  auto seed = [](const std::string& name, uint16_t split, uint8_t step, std::string_view s) {
    std::string in;
    put<uint16_t>(in, split);
    put<uint8_t>(in, step);
    in += s;
    write("resp", name, in);
  };
  seed("pipeline", 9, 2,
       "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\nGET  k\r\n*0\r\n"
       "*2\r\n$4\r\nECHO\r\n$0\r\n\r\nPING\n");
  seed("inline", 4, 0, "  set  key\tvalue \r\nGET key\n\r\n");
  seed("empty-requests", 3, 1, "*0\r\n*-1\r\n\r\n");
  seed("bulk-binary", 12, 3, "*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\x00z\r\n");
  seed("bad-bulk-length", 5, 0, "*1\r\n$-1\r\n");
  seed("bad-multibulk", 1, 0, "*x\r\n");
  seed("missing-dollar", 6, 0, "*1\r\n+PING\r\n");
  seed("no-crlf", 8, 1, "*1\r\n$4\r\nPINGxx");
  seed("control-byte", 2, 0, std::string("GET \x01\x02\r\n"));
  seed("partial", 6, 4, "*2\r\n$3\r\nGET\r\n$1\r\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <fuzz/corpus dir>\n", argv[0]);
    return 2;
  }
  root = argv[1];
  checkpoint_corpus();
  delta_corpus();
  control_corpus();
  resp_corpus();
  std::printf("wrote the seed corpora under %s\n", root.c_str());
  return 0;
}
