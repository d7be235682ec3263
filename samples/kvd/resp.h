// RESP2, the Redis protocol: a request parser (multibulk and inline) and reply writers.
// Header-only and free of I/O, so the unit tests drive it byte by byte.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvd {

// Redis's own limits (proto-max-bulk-len, the inline and multibulk bounds).
inline constexpr size_t kMaxInlineBytes = size_t{64} << 10;
inline constexpr int64_t kMaxArgs = 1024 * 1024;
inline constexpr int64_t kMaxBulkBytes = int64_t{512} << 20;

enum class Parse { kDone, kNeedMore, kError };

namespace detail {
// The integer after a one-byte type prefix, up to CRLF. kNeedMore until the CRLF arrives.
// Looks at no more than the header's own bytes, however much input follows.
inline Parse parse_header(std::string_view in, size_t at, int64_t* value, size_t* next) {
  constexpr size_t kMaxHeader = 32;
  const std::string_view window = in.substr(at, kMaxHeader + 2);
  const size_t cr = window.find('\r', 1);
  if (cr == std::string_view::npos || cr + 1 >= window.size()) {
    return window.size() > kMaxHeader ? Parse::kError : Parse::kNeedMore;
  }
  auto [end, ec] = std::from_chars(window.data() + 1, window.data() + cr, *value);
  if (ec != std::errc() || end != window.data() + cr || window[cr + 1] != '\n') {
    return Parse::kError;
  }
  *next = at + cr + 2;
  return Parse::kDone;
}
}  // namespace detail

/// Parses requests one at a time, keeping its progress through a request that has not
/// fully arrived, as Redis does: each call looks only at bytes it has not parsed yet,
/// so a client that announces a million arguments and then trickles one byte at a time
/// costs O(1) per byte, not a re-parse of everything pending.
///
/// parse() reads the request at the start of `in`: RESP multibulk
/// (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or an inline line (`GET k\r\n`, words split on
/// blanks). Until it returns kDone or kError, every call must pass the same bytes again,
/// plus any that arrived since. kDone: `*args` views `in`, `*used` bytes are consumed (an
/// empty request leaves `*args` empty), and the parser is ready for the next request.
/// kNeedMore: nothing is consumed. kError: `*error` is the Redis-style reply; the
/// connection must be closed after it, since the stream can no longer be framed.
class RequestParser {
 public:
  Parse parse(std::string_view in, std::vector<std::string_view>* args, size_t* used,
              std::string* error) {
    args->clear();
    if (in.empty()) return Parse::kNeedMore;
    if (in[0] != '*') return parse_inline(in, args, used, error);
    if (count_ < 0) {
      int64_t count = 0;
      Parse p = detail::parse_header(in, 0, &count, &at_);
      if (p == Parse::kNeedMore) return p;
      if (p == Parse::kError || count > kMaxArgs) {
        *error = "ERR Protocol error: invalid multibulk length";
        return fail();
      }
      count_ = count;
    }
    while (static_cast<int64_t>(spans_.size()) < count_) {
      if (bulk_len_ < 0) {
        if (at_ >= in.size()) return Parse::kNeedMore;
        if (in[at_] != '$') {
          *error = std::string("ERR Protocol error: expected '$', got '") + in[at_] + "'";
          return fail();
        }
        int64_t len = 0;
        size_t next = 0;
        Parse p = detail::parse_header(in, at_, &len, &next);
        if (p == Parse::kNeedMore) return p;
        if (p == Parse::kError || len < 0 || len > kMaxBulkBytes) {
          *error = "ERR Protocol error: invalid bulk length";
          return fail();
        }
        bulk_len_ = len;
        at_ = next;
      }
      const size_t n = static_cast<size_t>(bulk_len_);
      if (in.size() - at_ < n + 2) return Parse::kNeedMore;
      if (in[at_ + n] != '\r' || in[at_ + n + 1] != '\n') {
        *error = "ERR Protocol error: bulk data is not followed by CRLF";
        return fail();
      }
      spans_.emplace_back(at_, n);
      at_ += n + 2;
      bulk_len_ = -1;
    }
    args->reserve(spans_.size());
    for (auto [at, n] : spans_) args->push_back(in.substr(at, n));
    *used = at_;
    reset();
    return Parse::kDone;
  }

  /// Forgets a partly parsed request (the bytes it was parsing are gone).
  void reset() {
    count_ = -1;
    bulk_len_ = -1;
    at_ = 0;
    scanned_ = 0;
    spans_.clear();
    if (spans_.capacity() > 4096) spans_.shrink_to_fit();
  }

  /// Arguments of the pending request parsed so far, and where parsing resumes.
  size_t pending_args() const { return spans_.size(); }
  size_t resume_at() const { return count_ < 0 ? scanned_ : at_; }

 private:
  Parse parse_inline(std::string_view in, std::vector<std::string_view>* args, size_t* used,
                     std::string* error) {
    const size_t nl = in.find('\n', scanned_);
    if (nl == std::string_view::npos) {
      scanned_ = in.size();
      if (in.size() <= kMaxInlineBytes) return Parse::kNeedMore;
      *error = "ERR Protocol error: too big inline request";
      return fail();
    }
    if (nl > kMaxInlineBytes) {  // refused whole too, as it is when it trickles in
      *error = "ERR Protocol error: too big inline request";
      return fail();
    }
    std::string_view line = in.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    for (unsigned char c : line) {
      if (c < 0x20 && c != '\t') {
        *error =
            "ERR Protocol error: control byte in an inline request; send binary data as RESP "
            "multibulk";
        return fail();
      }
    }
    for (size_t i = 0; i < line.size();) {
      size_t start = line.find_first_not_of(" \t", i);
      if (start == std::string_view::npos) break;
      size_t stop = line.find_first_of(" \t", start);
      if (stop == std::string_view::npos) stop = line.size();
      args->push_back(line.substr(start, stop - start));
      i = stop;
    }
    *used = nl + 1;
    reset();
    return Parse::kDone;
  }
  Parse fail() {
    reset();
    return Parse::kError;
  }

  int64_t count_ = -1;     // arguments announced by the multibulk header; -1: not read yet
  int64_t bulk_len_ = -1;  // the length of the bulk whose header is read; -1: none
  size_t at_ = 0;          // where the next unparsed byte of the request is
  size_t scanned_ = 0;     // inline: how far the newline was looked for
  std::vector<std::pair<size_t, size_t>> spans_;  // the arguments parsed so far
};

/// One request with a fresh parser: for callers that hold no progress between calls.
inline Parse parse_request(std::string_view in, std::vector<std::string_view>* args, size_t* used,
                           std::string* error) {
  RequestParser parser;
  return parser.parse(in, args, used, error);
}

// ---- replies, appended to a connection's output buffer

inline void append_int(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}
inline void reply_simple(std::string& out, std::string_view s) {
  out += '+';
  out += s;
  out += "\r\n";
}
inline void reply_ok(std::string& out) { out += "+OK\r\n"; }
/// `msg` starts with its code: "ERR ...", "WRONGTYPE ...".
inline void reply_error(std::string& out, std::string_view msg) {
  out += '-';
  out += msg;
  out += "\r\n";
}
inline void reply_int(std::string& out, int64_t v) {
  out += ':';
  append_int(out, v);
  out += "\r\n";
}
inline void reply_bulk(std::string& out, std::string_view s) {
  out += '$';
  append_int(out, static_cast<int64_t>(s.size()));
  out += "\r\n";
  out += s;
  out += "\r\n";
}
inline void reply_nil(std::string& out) { out += "$-1\r\n"; }
inline void reply_array(std::string& out, size_t n) {
  out += '*';
  append_int(out, static_cast<int64_t>(n));
  out += "\r\n";
}
inline void reply_nil_array(std::string& out) { out += "*-1\r\n"; }
/// A score as Redis prints it: the shortest text that reads back as the same double.
inline void reply_double(std::string& out, double d) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  reply_bulk(out, std::string_view(buf, static_cast<size_t>(end - buf)));
}

}  // namespace kvd
