// Result<T>: the one error type that crosses Baton's API. Errors carry a kind, the errno
// and enough context for an operator to act on them; no exception crosses the API.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#define BATON_LIKELY(x) __builtin_expect(!!(x), 1)
#define BATON_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace baton {

namespace detail {
/// Aborts with `what`: reading the value of a failed Result (or the error of a good
/// one) is a programming error, never a recoverable one.
[[noreturn]] void result_misuse(const char* what);
}  // namespace detail

/// What went wrong, coarsely; the message says exactly what.
enum class ErrorKind {
  kSystem,           // a syscall failed; errno() says which error
  kInvalidArgument,  // the caller passed something unusable
  kCorrupt,          // a checkpoint, frame or message failed validation
  kVersion,          // incompatible format or schema version
  kCapacity,         // a configured limit was exceeded
  kState,            // the operation is not valid in the current phase
  kTimeout,          // a deadline passed
  kAborted,          // the operation was abandoned on purpose
  kWrongType,        // a key holds a value of another type
};

/// Returns a short lowercase name for `kind`, e.g. "corrupt".
std::string_view to_string(ErrorKind kind);

/// An error with kind, errno (0 if none) and a message that names what is wrong.
class Error {
 public:
  Error(ErrorKind kind, std::string message, int sys_errno = 0)
      : kind_(kind), errno_(sys_errno), message_(std::move(message)) {}

  ErrorKind kind() const { return kind_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }

  /// Prefixes the message with "context: ", for callers adding where it happened.
  Error with_context(std::string_view context) &&;

  /// "corrupt: <message>" or, with errno, "system: <message>: <strerror> (errno N)".
  std::string to_string() const;

 private:
  ErrorKind kind_;
  int errno_;
  std::string message_;
};

/// Either a T or an Error. Must be checked: discarding it is a compile warning.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    check_value();
    return std::get<0>(v_);
  }
  const T& value() const& {
    check_value();
    return std::get<0>(v_);
  }
  T&& value() && {
    check_value();
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const& {
    if (ok()) detail::result_misuse("Result::error() called on a success");
    return std::get<1>(v_);
  }
  Error&& error() && {
    if (ok()) detail::result_misuse("Result::error() called on a success");
    return std::get<1>(std::move(v_));
  }

 private:
  void check_value() const {
    if (BATON_UNLIKELY(!ok())) {
      detail::result_misuse(("Result::value() called on an error: " + error().to_string()).c_str());
    }
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : e_(std::move(error)) {}  // NOLINT

  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const& {
    if (ok()) detail::result_misuse("Result<void>::error() called on a success");
    return *e_;
  }
  Error&& error() && {
    if (ok()) detail::result_misuse("Result<void>::error() called on a success");
    return std::move(*e_);
  }

 private:
  std::optional<Error> e_;
};

/// Shorthand for a successful Result<void>.
inline Result<void> ok() { return {}; }

}  // namespace baton

#define BATON_CONCAT_INNER(a, b) a##b
#define BATON_CONCAT(a, b) BATON_CONCAT_INNER(a, b)

/// Evaluates a Result expression and returns its error from the enclosing function.
#define BATON_TRY(expr)                            \
  do {                                             \
    auto baton_try_result_ = (expr);               \
    if (!baton_try_result_.ok()) {                 \
      return std::move(baton_try_result_).error(); \
    }                                              \
  } while (0)

#define BATON_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).error();     \
  lhs = std::move(tmp).value()

/// `BATON_ASSIGN_OR_RETURN(auto x, f());` declares x from f()'s value or returns its error.
#define BATON_ASSIGN_OR_RETURN(lhs, expr) \
  BATON_ASSIGN_OR_RETURN_IMPL(BATON_CONCAT(baton_result_, __LINE__), lhs, expr)
