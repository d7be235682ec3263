// Error formatting.
#include "baton/result.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace baton {

void detail::result_misuse(const char* what) {
  std::fprintf(stderr, "baton: %s\n", what);
  std::abort();
}

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kSystem:
      return "system";
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kCorrupt:
      return "corrupt";
    case ErrorKind::kVersion:
      return "version";
    case ErrorKind::kCapacity:
      return "capacity";
    case ErrorKind::kState:
      return "state";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kAborted:
      return "aborted";
    case ErrorKind::kWrongType:
      return "wrong type";
  }
  return "unknown";
}

Error Error::with_context(std::string_view context) && {
  std::string m;
  m.reserve(context.size() + 2 + message_.size());
  m.append(context).append(": ").append(message_);
  message_ = std::move(m);
  return std::move(*this);
}

std::string Error::to_string() const {
  std::string out(baton::to_string(kind_));
  out += ": ";
  out += message_;
  if (errno_ != 0) {
    out += ": ";
    out += std::strerror(errno_);
    out += " (errno " + std::to_string(errno_) + ")";
  }
  return out;
}

}  // namespace baton
