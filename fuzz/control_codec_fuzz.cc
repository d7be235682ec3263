// Fuzz target: the control-channel codec (serialization/control_codec). Decode mode feeds
// the input to decode_message as one packet; whatever decodes must encode and decode back
// to the same message and the same bytes. Encode mode builds a message from the input
// and requires encode then decode to give it back exactly.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "control_codec.h"
#include "fuzz_input.h"
#include "handoff/messages.h"

namespace baton::fuzz {
namespace {

using namespace baton::handoff;
using serialization::decode_message;
using serialization::encode_message;

// NaN never equals itself, so a message holding one is compared by its bytes only.
bool holds_nan(const Message& m) {
  if (const auto* f = std::get_if<Frozen>(&m)) {
    for (const auto& [series, value] : f->metrics)
      if (std::isnan(value)) return true;
  }
  return false;
}

void check_decoded(const Message& m) {
  const std::string bytes = encode_message(m);
  auto again = decode_message(bytes);
  BATON_FUZZ_CHECK(again.ok(), "%s re-encoded does not decode: %s",
                   std::string(message_name(m)).c_str(), again.error().to_string().c_str());
  BATON_FUZZ_CHECK(holds_nan(m) || again.value() == m, "%s changed in a round trip",
                   std::string(message_name(m)).c_str());
  BATON_FUZZ_CHECK(encode_message(again.value()) == bytes, "%s re-encodes to other bytes",
                   std::string(message_name(m)).c_str());
}

std::string text(FuzzInput& in) { return std::string(in.take_bytes(in.take<uint8_t>())); }

template <typename T, typename F>
std::vector<T> list(FuzzInput& in, F&& one) {
  std::vector<T> out(in.take<uint8_t>() % 4);
  for (T& v : out) v = one();
  return out;
}

std::vector<HandedFd> handed(FuzzInput& in) {
  return list<HandedFd>(in, [&] {
    HandedFd f;
    f.tag = text(in);
    f.state = text(in);
    f.id = in.take<uint64_t>();
    f.early = in.take<uint8_t>() & 1;
    return f;
  });
}

// Every message type, every field taken from the input.
Message build(FuzzInput& in) {
  switch (in.take<uint8_t>() % std::variant_size_v<Message>) {
    case 0: {
      Hello h;
      h.protocol_version = in.take<uint32_t>();
      h.pid = in.take<int32_t>();
      h.capabilities = list<std::string>(in, [&] { return text(in); });
      h.sections = list<SectionRange>(in, [&] {
        return SectionRange{text(in), in.take<uint32_t>(), in.take<uint32_t>()};
      });
      h.max_protocol_version = in.take<uint32_t>();
      return h;
    }
    case 1: {
      Welcome w;
      w.protocol_version = in.take<uint32_t>();
      w.generation = in.take<uint64_t>();
      w.capabilities = list<std::string>(in, [&] { return text(in); });
      return w;
    }
    case 2:
      return CheckpointReady{in.take<uint64_t>(), in.take<uint64_t>()};
    case 3:
      return Restored{in.take<uint64_t>(), in.take<int64_t>()};
    case 4: {
      Frozen f{in.take<uint64_t>(), in.take<uint32_t>(), in.take<int64_t>(), {}};
      f.metrics = list<std::pair<std::string, double>>(in, [&] {
        std::string series = text(in);
        return std::pair<std::string, double>(std::move(series), in.take<double>());
      });
      return f;
    }
    case 5:
      return FdBatch{handed(in)};
    case 6:
      return Prepared{in.take<uint64_t>(), in.take<uint32_t>(), {}};
    case 7: {
      Commit c;
      c.generation = in.take<uint64_t>();
      c.timings = Timings{in.take<int64_t>(),  in.take<int64_t>(), in.take<int64_t>(),
                          in.take<int64_t>(),  in.take<int64_t>(), in.take<uint64_t>(),
                          in.take<uint64_t>(), in.take<uint64_t>()};
      c.probation_ms = in.take<uint32_t>();
      return c;
    }
    case 8:
      return Abort{text(in)};
    case 9: {
      Serving s;
      s.pid = in.take<int32_t>();
      s.reverse_start_lsn = in.take<uint64_t>();
      s.sections = list<SectionVersion>(in, [&] {
        std::string name = text(in);
        return SectionVersion{std::move(name), in.take<uint32_t>()};
      });
      return s;
    }
    case 10:
      return Progress{in.take<uint64_t>(), in.take<uint32_t>(), {}};
    case 11:
      return EarlyFds{handed(in)};
    case 12:
      return Rollback{text(in)};
    default:
      return Promote{text(in)};
  }
}

}  // namespace
}  // namespace baton::fuzz

// Input: u8 mode (bit 0: 0 = decode, 1 = encode), then the packet or the message's fields.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace baton::fuzz;
  FuzzInput in(data, size);
  if ((in.take<uint8_t>() & 1) == 0) {
    auto m = decode_message(in.rest());
    if (verbose()) {
      std::fprintf(
          stderr, "%s\n",
          m.ok() ? std::string(message_name(m.value())).c_str() : m.error().to_string().c_str());
    }
    if (m.ok()) check_decoded(m.value());
    return 0;
  }
  const Message m = build(in);
  auto back = decode_message(encode_message(m));
  BATON_FUZZ_CHECK(back.ok(), "%s does not decode: %s", std::string(message_name(m)).c_str(),
                   back.error().to_string().c_str());
  BATON_FUZZ_CHECK(holds_nan(m) || back.value() == m, "%s changed in encode and decode",
                   std::string(message_name(m)).c_str());
  return 0;
}
