// X-Tresor-Timeout-Seconds (spec §4): which header values give which request budget.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "router/timeout_override.h"

using tresor::router::parse_timeout_override;
using std::chrono::seconds;

namespace {

constexpr unsigned kDefault = 180;
constexpr unsigned kMax = 600;

std::optional<seconds> one(std::string_view value) {
  return parse_timeout_override({value}, kDefault, kMax);
}

}  // namespace

TEST_CASE("timeout override: an absent header gives the configured default budget") {
  CHECK(parse_timeout_override({}, kDefault, kMax) == seconds(180));
  CHECK(parse_timeout_override({}, 30, kMax) == seconds(30));
}

TEST_CASE("timeout override: positive integers set the budget, above the default too") {
  CHECK(one("1") == seconds(1));
  CHECK(one("30") == seconds(30));
  CHECK(one("180") == seconds(180));
  CHECK(one("300") == seconds(300));
  CHECK(one("600") == seconds(600));
}

TEST_CASE("timeout override: values above the maximum are clamped, not rejected") {
  CHECK(one("601") == seconds(600));
  CHECK(one("86400") == seconds(600));
  CHECK(one("4294967296") == seconds(600));  // past 32 bits
  CHECK(one("99999999999999999999999999999999") == seconds(600));  // past 64 bits
  CHECK(parse_timeout_override({"50"}, 10, 40) == seconds(40));
}

TEST_CASE("timeout override: surrounding spaces and tabs are allowed") {
  CHECK(one(" 30") == seconds(30));
  CHECK(one("30 ") == seconds(30));
  CHECK(one("\t45\t") == seconds(45));
  CHECK(one("  \t 700 \t ") == seconds(600));
}

TEST_CASE("timeout override: invalid values are rejected") {
  const char* bad[] = {
      "",     " ",    "\t",   "abc",  "30s",  "s30",   "1.5",  "1.0",  "+5",  "-1",  "-0",
      "0",    "00",   "0x10", "1e3",  "3 0",  "5,5",   "٣",    "inf",  "NaN", "30\n", "\r30",
  };
  for (const char* value : bad) {
    INFO("header value: '" << value << "'");
    CHECK_FALSE(one(value).has_value());
  }
}

TEST_CASE("timeout override: the header sent twice is rejected, even with equal values") {
  CHECK_FALSE(parse_timeout_override({"30", "30"}, kDefault, kMax).has_value());
  CHECK_FALSE(parse_timeout_override({"30", "60"}, kDefault, kMax).has_value());
  CHECK_FALSE(parse_timeout_override({"", "30"}, kDefault, kMax).has_value());
}
