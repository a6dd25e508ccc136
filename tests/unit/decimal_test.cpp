// common/decimal: money text to integer nanos and back, exactly. A config price of "0.2"
// must be 200000000 nanos (not the nearest double), and what /v1/usage prints must read
// back as the same number.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>

#include "common/decimal.h"

using tresor::common::format_nanos;
using tresor::common::kNanosPerUnit;
using tresor::common::parse_nanos;

TEST_CASE("decimal: parse_nanos accepts plain and exponent forms exactly", "[accounts][decimal]") {
  CHECK(parse_nanos("0") == std::optional<int64_t>(0));
  CHECK(parse_nanos("12") == std::optional<int64_t>(12 * kNanosPerUnit));
  CHECK(parse_nanos("0.2") == std::optional<int64_t>(200'000'000));
  CHECK(parse_nanos("1e9") == std::optional<int64_t>(1'000'000'000 * kNanosPerUnit));
  CHECK(parse_nanos("1.5E-3") == std::optional<int64_t>(1'500'000));
  CHECK(parse_nanos("0.000000001") == std::optional<int64_t>(1));
  // Zeros beyond the ninth decimal carry no precision.
  CHECK(parse_nanos("1.10000000000") == std::optional<int64_t>(1'100'000'000));
  CHECK(parse_nanos("0.014") == std::optional<int64_t>(14'000'000));
  CHECK(parse_nanos("100.0") == std::optional<int64_t>(100 * kNanosPerUnit));
  CHECK(parse_nanos("1e+2") == std::optional<int64_t>(100 * kNanosPerUnit));
  // The largest amount there is: INT64_MAX nanos.
  CHECK(parse_nanos("9223372036.854775807") == std::optional<int64_t>(std::numeric_limits<int64_t>::max()));
}

TEST_CASE("decimal: parse_nanos refuses signs, junk, excess precision and overflow", "[accounts][decimal]") {
  for (const char* text : {"", "-1", "+1", "1.2.3", "0.0000000001", "1e", "abc", "9300000000", "1e40", " 1", "1 ",
                           "1e-10", "9223372036.854775808", "1e+-5", "1e-", "1x", "e5", "."}) {
    INFO("text: '" << text << "'");
    CHECK_FALSE(parse_nanos(text).has_value());
  }
}

TEST_CASE("decimal: format_nanos prints plain decimals with at least two decimals", "[accounts][decimal]") {
  CHECK(format_nanos(0) == "0.00");
  CHECK(format_nanos(100 * kNanosPerUnit) == "100.00");
  CHECK(format_nanos(123) == "0.000000123");
  CHECK(format_nanos(-500'000'000) == "-0.50");
  CHECK(format_nanos(6000) == "0.000006");
  CHECK(format_nanos(1'234'500'000) == "1.2345");
  CHECK(format_nanos(7 * kNanosPerUnit, 0) == "7");
  CHECK(format_nanos(std::numeric_limits<int64_t>::max()) == "9223372036.854775807");
  CHECK(format_nanos(std::numeric_limits<int64_t>::min()) == "-9223372036.854775808");
}

TEST_CASE("decimal: parse_nanos(format_nanos(x)) == x", "[accounts][decimal]") {
  std::mt19937_64 rng(20261205);
  std::uniform_int_distribution<int64_t> full(0, std::numeric_limits<int64_t>::max());
  std::uniform_int_distribution<int64_t> small(0, 1'000'000 * kNanosPerUnit);
  std::uniform_int_distribution<int> zeros(0, 9);
  for (int i = 0; i < 20000; ++i) {
    int64_t x = i % 2 ? full(rng) : small(rng);
    // Round some to whole cents, units, ...: format_nanos drops their trailing zeros.
    if (i % 3 == 0) {
      int64_t scale = 1;
      for (int z = zeros(rng); z > 0; --z) scale *= 10;
      x -= x % scale;
    }
    const std::string text = format_nanos(x);
    INFO("x = " << x << ", text = " << text);
    REQUIRE(parse_nanos(text) == std::optional<int64_t>(x));
  }
}
