// BATON_SYSCALL: the one way Baton calls the kernel. It retries EINTR and turns a -1
// into an Error that records errno, the call as written and the caller's context.
#pragma once

#include <cerrno>
#include <sstream>
#include <string>
#include <type_traits>

#include "baton/result.h"

namespace baton::detail {

template <typename... Ctx>
std::string join_context(const char* call_text, const Ctx&... ctx) {
  std::ostringstream out;
  out << call_text;
  if constexpr (sizeof...(ctx) > 0) {
    out << " [";
    ((out << ctx), ...);
    out << "]";
  }
  return out.str();
}

template <typename F, typename... Ctx>
auto syscall(F&& call, const char* call_text, const Ctx&... ctx)
    -> Result<std::invoke_result_t<F>> {
  using R = std::invoke_result_t<F>;
  static_assert(std::is_integral_v<R>, "BATON_SYSCALL wraps calls that return -1 on error");
  for (;;) {
    R r = call();
    if (r != static_cast<R>(-1)) return r;
    if (errno == EINTR) continue;
    int saved = errno;
    return Error(ErrorKind::kSystem, join_context(call_text, ctx...), saved);
  }
}

}  // namespace baton::detail

/// `BATON_SYSCALL(::ftruncate(fd, n), "segment ", name)` gives Result<int>; EINTR is retried.
#define BATON_SYSCALL(call, ...) \
  ::baton::detail::syscall([&] { return (call); }, #call __VA_OPT__(, ) __VA_ARGS__)
