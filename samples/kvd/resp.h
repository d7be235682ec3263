// RESP2, the Redis protocol: a request parser (multibulk and inline) and reply writers.
// Header-only and free of I/O, so the unit tests drive it byte by byte.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace kvd {

// Redis's own limits (proto-max-bulk-len, the inline and multibulk bounds).
inline constexpr size_t kMaxInlineBytes = size_t{64} << 10;
inline constexpr int64_t kMaxArgs = 1024 * 1024;
inline constexpr int64_t kMaxBulkBytes = int64_t{512} << 20;

enum class Parse { kDone, kNeedMore, kError };

namespace detail {
// The integer after a one-byte type prefix, up to CRLF. kNeedMore until the CRLF arrives.
inline Parse parse_header(std::string_view in, size_t at, int64_t* value, size_t* next) {
  size_t cr = in.find('\r', at + 1);
  if (cr == std::string_view::npos || cr + 1 >= in.size()) {
    return in.size() - at > 32 ? Parse::kError : Parse::kNeedMore;
  }
  auto [end, ec] = std::from_chars(in.data() + at + 1, in.data() + cr, *value);
  if (ec != std::errc() || end != in.data() + cr || in[cr + 1] != '\n') return Parse::kError;
  *next = cr + 2;
  return Parse::kDone;
}
}  // namespace detail

/// Parses the request at the start of `in`: RESP multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
/// or an inline line (`GET k\r\n`, words split on blanks). kDone: `*args` views `in` and
/// `*used` bytes are consumed (an empty request leaves `*args` empty). kNeedMore: nothing is
/// consumed. kError: `*error` is the Redis-style reply; the connection must be closed after
/// it, since the stream can no longer be framed.
inline Parse parse_request(std::string_view in, std::vector<std::string_view>* args, size_t* used,
                           std::string* error) {
  args->clear();
  if (in.empty()) return Parse::kNeedMore;
  if (in[0] != '*') {
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) {
      if (in.size() <= kMaxInlineBytes) return Parse::kNeedMore;
      *error = "ERR Protocol error: too big inline request";
      return Parse::kError;
    }
    std::string_view line = in.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    for (unsigned char c : line) {
      if (c < 0x20 && c != '\t') {
        *error =
            "ERR Protocol error: control byte in an inline request; send binary data as RESP "
            "multibulk";
        return Parse::kError;
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
    return Parse::kDone;
  }
  int64_t count = 0;
  size_t at = 0;
  Parse p = detail::parse_header(in, 0, &count, &at);
  if (p == Parse::kNeedMore) return p;
  if (p == Parse::kError || count > kMaxArgs) {
    *error = "ERR Protocol error: invalid multibulk length";
    return Parse::kError;
  }
  for (int64_t i = 0; i < count; ++i) {
    if (at >= in.size()) return Parse::kNeedMore;
    if (in[at] != '$') {
      *error = std::string("ERR Protocol error: expected '$', got '") + in[at] + "'";
      return Parse::kError;
    }
    int64_t len = 0;
    p = detail::parse_header(in, at, &len, &at);
    if (p == Parse::kNeedMore) return p;
    if (p == Parse::kError || len < 0 || len > kMaxBulkBytes) {
      *error = "ERR Protocol error: invalid bulk length";
      return Parse::kError;
    }
    const size_t n = static_cast<size_t>(len);
    if (in.size() - at < n + 2) return Parse::kNeedMore;
    if (in[at + n] != '\r' || in[at + n + 1] != '\n') {
      *error = "ERR Protocol error: bulk data is not followed by CRLF";
      return Parse::kError;
    }
    args->push_back(in.substr(at, n));
    at += n + 2;
  }
  *used = at;
  return Parse::kDone;
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
