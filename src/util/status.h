// Status and Result<T>: the error model of the qdedup core.
//
// The core never throws across its API. Every fallible function returns a
// [[nodiscard]] Status or Result<T>. Corruption (the image's bytes are wrong)
// is a different code from IoError (the OS failed us): `check` relies on it.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace qdedup {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller (user) asked for something impossible
  kCorruption,       // the image's bytes violate the format
  kIoError,          // the OS reported an error
  kUnsupported,      // valid, but this build does not handle it
  kNoSpace,          // ENOSPC / EDQUOT
  kBusy,             // another process holds a conflicting lock
  kNotFound,         // a file does not exist
  kCrashed,          // fault injection: the simulated machine stopped
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "prefix: message".
  Status with_prefix(const std::string& prefix) const {
    if (is_ok()) return *this;
    return Status(code_, prefix + ": " + message_);
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status corruption(std::string m) {
  return Status(StatusCode::kCorruption, std::move(m));
}
inline Status io_error(std::string m) {
  return Status(StatusCode::kIoError, std::move(m));
}
inline Status unsupported(std::string m) {
  return Status(StatusCode::kUnsupported, std::move(m));
}
inline Status no_space(std::string m) {
  return Status(StatusCode::kNoSpace, std::move(m));
}
inline Status busy(std::string m) {
  return Status(StatusCode::kBusy, std::move(m));
}

// A value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).is_ok());
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }

  const Status& status() const {
    static const Status kOkStatus;
    return is_ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  // This result, its error (if any) prefixed as Status::with_prefix does.
  Result with_prefix(const std::string& prefix) && {
    if (is_ok()) return std::move(*this);
    return std::get<Status>(v_).with_prefix(prefix);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace qdedup

#define QD_CONCAT_INNER(a, b) a##b
#define QD_CONCAT(a, b) QD_CONCAT_INNER(a, b)

// Returns early from the enclosing function if `expr` (a Status) is not ok.
#define QD_TRY(expr)                                  \
  do {                                                \
    ::qdedup::Status qd_status_ = (expr);             \
    if (!qd_status_.is_ok()) return qd_status_;       \
  } while (0)

// Evaluates `expr` (a Result<T>); on error returns its Status, else moves the
// value into `lhs` (which may be a declaration such as `auto x`).
#define QD_ASSIGN_OR_RETURN(lhs, expr) \
  QD_ASSIGN_OR_RETURN_IMPL(QD_CONCAT(qd_result_, __LINE__), lhs, expr)
#define QD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.is_ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
