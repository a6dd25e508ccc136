#include <catch2/catch.hpp>

#include "server/rate_limiter.h"

using tresor::server::RateLimiter;
using Clock = std::chrono::system_clock;

namespace {
tresor::config::ApiKeyConfig key_with(std::optional<uint64_t> per_minute, std::optional<uint64_t> per_day) {
  tresor::config::ApiKeyConfig k;
  k.sha256_hex = std::string(64, 'a');
  k.customer = "acme";
  k.limits.per_minute = per_minute;
  k.limits.per_day = per_day;
  return k;
}
// 10 s into a UTC minute (and day): leaves 50 s of the minute window.
const Clock::time_point kT0 = Clock::time_point(std::chrono::seconds(1'800'000'000 / 86400 * 86400 + 10));
}  // namespace

TEST_CASE("rate limit: a key without limits is never limited and sends no headers", "[ratelimit]") {
  RateLimiter limiter;
  const auto key = key_with(std::nullopt, std::nullopt);
  for (int i = 0; i < 1000; ++i) {
    const auto d = limiter.admit(key, kT0);
    REQUIRE(d.allowed);
    REQUIRE_FALSE(d.limited);
  }
}

TEST_CASE("rate limit: the request over the per-minute limit gets 429 data, the next minute resets", "[ratelimit]") {
  RateLimiter limiter;
  const auto key = key_with(3, 100);
  for (uint64_t i = 1; i <= 3; ++i) {
    const auto d = limiter.admit(key, kT0);
    CHECK(d.allowed);
    CHECK(d.limit == 3);  // the tightest window
    CHECK(d.remaining == 3 - i);
  }
  const auto refused = limiter.admit(key, kT0 + std::chrono::seconds(5));
  CHECK_FALSE(refused.allowed);
  CHECK(refused.remaining == 0);
  CHECK(refused.retry_after == 45);  // to the end of the minute
  // A refused request consumes nothing; the next minute starts afresh.
  const auto next = limiter.admit(key, kT0 + std::chrono::seconds(50));
  CHECK(next.allowed);
  CHECK(next.remaining == 2);
}

TEST_CASE("rate limit: the per-day window binds across minutes and reports itself", "[ratelimit]") {
  RateLimiter limiter;
  const auto key = key_with(10, 4);
  for (int i = 0; i < 4; ++i) {
    const auto d = limiter.admit(key, kT0 + std::chrono::minutes(i));
    CHECK(d.allowed);
    CHECK(d.limit == 4);
  }
  const auto refused = limiter.admit(key, kT0 + std::chrono::minutes(10));
  CHECK_FALSE(refused.allowed);
  CHECK(refused.limit == 4);
  CHECK(refused.retry_after == 86400 - 10 - 600);
}

TEST_CASE("rate limit: keys are counted apart", "[ratelimit]") {
  RateLimiter limiter;
  auto a = key_with(1, std::nullopt);
  auto b = key_with(1, std::nullopt);
  b.sha256_hex = std::string(64, 'b');
  CHECK(limiter.admit(a, kT0).allowed);
  CHECK_FALSE(limiter.admit(a, kT0).allowed);
  CHECK(limiter.admit(b, kT0).allowed);
}
