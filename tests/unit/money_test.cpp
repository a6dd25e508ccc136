// Exact money (common/decimal, accounts/pricing): the edge cases the money fuzz target
// found (tests/fuzz/fuzz_money.cpp), named.
#include <catch2/catch.hpp>
#include <cstdint>

#include "accounts/pricing.h"
#include "common/decimal.h"

using namespace tresor;

TEST_CASE("parse_nanos takes one exponent sign", "[money]") {
  CHECK(common::parse_nanos("1.5e+3") == 1'500'000'000'000);
  CHECK(common::parse_nanos("1500e-3") == 1'500'000'000);
  CHECK_FALSE(common::parse_nanos("1e+-5"));
  CHECK_FALSE(common::parse_nanos("1e+"));
  CHECK_FALSE(common::parse_nanos("1e-+5"));
}

TEST_CASE("chat_bound saturates the token bound of a huge max_tokens", "[money]") {
  config::RouteConfig route;
  const std::vector<const config::RouteConfig*> routes{&route};
  const auto bound = accounts::chat_bound(routes, 100, INT64_MAX);
  CHECK(bound.tokens == INT64_MAX);
}

TEST_CASE("estimate_tokens is ceil(bytes / 4) up to UINT64_MAX", "[money]") {
  CHECK(accounts::estimate_tokens(0) == 0);
  CHECK(accounts::estimate_tokens(5) == 2);
  CHECK(accounts::estimate_tokens(UINT64_MAX) == static_cast<int64_t>(UINT64_MAX / 4 + 1));
}
