// Status, Result<T> and the QD_TRY / QD_ASSIGN_OR_RETURN macros.
#include "util/status.h"

#include <catch2/catch.hpp>
#include <memory>
#include <set>
#include <string>

namespace qdedup {
namespace {

int g_steps = 0;

Status step(bool ok) {
  ++g_steps;
  return ok ? Status::ok() : corruption("step failed");
}

Status two_steps(bool first_ok, bool second_ok) {
  QD_TRY(step(first_ok));
  QD_TRY(step(second_ok));
  return Status::ok();
}

Result<int> number(bool ok, int v) {
  if (!ok) return io_error("no number");
  return v;
}

Result<int> sum(bool a_ok, bool b_ok) {
  QD_ASSIGN_OR_RETURN(int a, number(a_ok, 40));
  int b = 0;
  QD_ASSIGN_OR_RETURN(b, number(b_ok, 2));
  return a + b;
}

Result<std::unique_ptr<int>> boxed(bool ok) {
  if (!ok) return unsupported("no box");
  return std::make_unique<int>(7);
}

Result<int> unbox(bool ok) {
  QD_ASSIGN_OR_RETURN(std::unique_ptr<int> p, boxed(ok));
  return *p;
}

// Two uses in one function must not clash (the macro's temporary is per line).
Status chained() {
  QD_ASSIGN_OR_RETURN(int x, number(true, 1));
  QD_ASSIGN_OR_RETURN(int y, number(true, 2));
  return x + y == 3 ? Status::ok() : corruption("bad sum");
}

}  // namespace

TEST_CASE("Status is ok by default and carries code and message otherwise", "[util][status]") {
  Status ok;
  CHECK(ok.is_ok());
  CHECK(static_cast<bool>(ok));
  CHECK(ok.code() == StatusCode::kOk);
  CHECK(Status::ok().is_ok());

  Status bad = corruption("L2 table at 0x30000: entry 17 is not cluster aligned");
  CHECK_FALSE(bad.is_ok());
  CHECK_FALSE(static_cast<bool>(bad));
  CHECK(bad.code() == StatusCode::kCorruption);
  CHECK(bad.message() == "L2 table at 0x30000: entry 17 is not cluster aligned");
}

TEST_CASE("Status helpers map to their codes", "[util][status]") {
  CHECK(invalid_argument("x").code() == StatusCode::kInvalidArgument);
  CHECK(corruption("x").code() == StatusCode::kCorruption);
  CHECK(io_error("x").code() == StatusCode::kIoError);
  CHECK(unsupported("x").code() == StatusCode::kUnsupported);
  CHECK(no_space("x").code() == StatusCode::kNoSpace);
  CHECK(busy("x").code() == StatusCode::kBusy);
}

TEST_CASE("with_prefix prepends 'prefix: ' to errors and leaves ok alone", "[util][status]") {
  Status s = corruption("bad magic").with_prefix("disk.qcow2");
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK(s.message() == "disk.qcow2: bad magic");
  Status ok = Status::ok().with_prefix("disk.qcow2");
  CHECK(ok.is_ok());
  CHECK(ok.message().empty());
}

TEST_CASE("status_code_name gives every code a distinct name", "[util][status]") {
  std::set<std::string> names;
  for (StatusCode c : {StatusCode::kOk, StatusCode::kInvalidArgument, StatusCode::kCorruption,
                       StatusCode::kIoError, StatusCode::kUnsupported, StatusCode::kNoSpace,
                       StatusCode::kBusy, StatusCode::kNotFound, StatusCode::kCrashed}) {
    std::string n = status_code_name(c);
    CHECK_FALSE(n.empty());
    CHECK(n != "unknown");
    names.insert(n);
  }
  CHECK(names.size() == 9);
  CHECK(std::string(status_code_name(StatusCode::kCorruption)) !=
        status_code_name(StatusCode::kIoError));
}

TEST_CASE("Result holds either a value or an error status", "[util][status]") {
  Result<int> v = 5;
  REQUIRE(v.is_ok());
  CHECK(*v == 5);
  CHECK(v.value() == 5);
  CHECK(v.status().is_ok());

  Result<int> e = no_space("disk full");
  CHECK_FALSE(e.is_ok());
  CHECK_FALSE(static_cast<bool>(e));
  CHECK(e.status().code() == StatusCode::kNoSpace);
  CHECK(e.status().message() == "disk full");

  Result<std::string> s = std::string("abc");
  CHECK(s->size() == 3);
  std::string moved = std::move(s).value();
  CHECK(moved == "abc");
}

TEST_CASE("QD_TRY returns the first error and skips the rest", "[util][status]") {
  g_steps = 0;
  CHECK(two_steps(true, true).is_ok());
  CHECK(g_steps == 2);

  g_steps = 0;
  Status s = two_steps(false, true);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK(s.message() == "step failed");
  CHECK(g_steps == 1);

  g_steps = 0;
  CHECK_FALSE(two_steps(true, false).is_ok());
  CHECK(g_steps == 2);
}

TEST_CASE("QD_ASSIGN_OR_RETURN assigns values and propagates errors", "[util][status]") {
  auto ok = sum(true, true);
  REQUIRE(ok.is_ok());
  CHECK(*ok == 42);

  auto first = sum(false, true);
  CHECK(first.status().code() == StatusCode::kIoError);
  CHECK(first.status().message() == "no number");
  CHECK_FALSE(sum(true, false).is_ok());

  CHECK(chained().is_ok());
}

TEST_CASE("QD_ASSIGN_OR_RETURN moves move-only values", "[util][status]") {
  auto r = unbox(true);
  REQUIRE(r.is_ok());
  CHECK(*r == 7);
  CHECK(unbox(false).status().code() == StatusCode::kUnsupported);
}

}  // namespace qdedup
