// Fuzz target: kvd's RESP request parser (samples/kvd/resp.h). The same bytes fed whole,
// split once at a point the fuzzer chooses, and in fixed-size pieces must give the same
// requests and the same protocol error: TCP may cut a stream anywhere.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_input.h"
#include "resp.h"

namespace baton::fuzz {
namespace {

// What one feeding of the stream produced: each request's arguments, then how it ended.
struct Outcome {
  std::vector<std::vector<std::string>> requests;
  std::string error;    // the reply of a kError; empty if none
  std::string pending;  // unconsumed bytes when the stream ran out
  bool operator==(const Outcome&) const = default;
};

// Feeds `stream` to one parser in pieces of `step` bytes after a first piece of `first`,
// parsing after each arrival as kvd's connection loop does.
Outcome feed(std::string_view stream, size_t first, size_t step) {
  Outcome out;
  kvd::RequestParser parser;
  std::string received;
  size_t start = 0;  // of the request being parsed; earlier bytes are consumed
  for (size_t fed = 0, piece = first; fed < stream.size() || piece == 0; piece = step) {
    received.append(stream.substr(fed, piece));
    fed += std::min(piece, stream.size() - fed);
    for (;;) {
      const std::string_view in = std::string_view(received).substr(start);
      std::vector<std::string_view> args;
      size_t used = 0;
      std::string error;
      kvd::Parse p = parser.parse(in, &args, &used, &error);
      if (p == kvd::Parse::kNeedMore) break;
      if (p == kvd::Parse::kError) {
        BATON_FUZZ_CHECK(!error.empty(), "kError without a reply");
        out.error = error;
        return out;
      }
      BATON_FUZZ_CHECK(used > 0 && used <= in.size(), "kDone consumed %zu of %zu bytes", used,
                       in.size());
      std::vector<std::string> request;
      for (std::string_view a : args) {
        BATON_FUZZ_CHECK(
            a.empty() || (a.data() >= in.data() && a.data() + a.size() <= in.data() + used),
            "an argument views bytes outside the request");
        request.emplace_back(a);
      }
      out.requests.push_back(std::move(request));
      start += used;
    }
  }
  out.pending = received.substr(start);
  return out;
}

}  // namespace
}  // namespace baton::fuzz

// Input: u16 split point, u8 piece size, then the byte stream.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace baton::fuzz;
  FuzzInput in(data, size);
  const size_t split = in.take<uint16_t>();
  const size_t step = in.take<uint8_t>() % 16 + 1;
  const std::string_view stream = in.rest();
  if (stream.empty()) return 0;
  const Outcome whole = feed(stream, stream.size(), stream.size());
  const Outcome halves = feed(stream, split % (stream.size() + 1), stream.size());
  BATON_FUZZ_CHECK(halves == whole,
                   "split at %zu differs from the whole parse (%zu vs %zu "
                   "requests, error '%s' vs '%s')",
                   split % (stream.size() + 1), halves.requests.size(), whole.requests.size(),
                   halves.error.c_str(), whole.error.c_str());
  const Outcome pieces = feed(stream, step, step);
  BATON_FUZZ_CHECK(pieces == whole,
                   "%zu-byte pieces differ from the whole parse (%zu vs %zu "
                   "requests, error '%s' vs '%s')",
                   step, pieces.requests.size(), whole.requests.size(), pieces.error.c_str(),
                   whole.error.c_str());
  return 0;
}
