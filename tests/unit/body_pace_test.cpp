// The deadline of each request-body read (server/body_pace.h): the silence rule alone, and
// with a minimum average rate, a client trickling bytes is cut even though it is never
// silent for long, while one at the minimum rate never is.
#include <catch2/catch.hpp>

#include "server/body_pace.h"

using tresor::server::BodyPace;
using namespace std::chrono_literals;

TEST_CASE("body pace: without a minimum rate only silence counts") {
  const auto t0 = BodyPace::Clock::now();
  const BodyPace pace(t0, 60s, 0);
  CHECK(pace.next_read_deadline(0, t0) == t0 + 60s);
  CHECK(pace.next_read_deadline(1, t0 + 3600s) == t0 + 3660s);  // a byte a minute goes on forever
}

TEST_CASE("body pace: the allowance is body_timeout plus one second per min_rate bytes") {
  const auto t0 = BodyPace::Clock::now();
  const BodyPace pace(t0, 10s, 1000);
  // At the start the silence rule and the allowance agree.
  CHECK(pace.next_read_deadline(0, t0) == t0 + 10s);
  // 5000 bytes earned 5 s: at t0+12 s the next read may last until t0+15 s, not t0+22 s.
  CHECK(pace.next_read_deadline(5000, t0 + 12s) == t0 + 15s);
  // A fast start: the silence rule is the nearer one.
  CHECK(pace.next_read_deadline(1'000'000, t0 + 1s) == t0 + 11s);
  // A trickler (1 byte per 9 s, never 10 s silent) is out of allowance after ~10 s.
  const auto trickled = pace.next_read_deadline(2, t0 + 18s);
  CHECK(trickled == t0 + 10s + 2ms);
  CHECK(trickled < t0 + 18s);  // already past: the read times out at once
}

TEST_CASE("body pace: a client at exactly the minimum rate is never cut") {
  const auto t0 = BodyPace::Clock::now();
  const BodyPace pace(t0, 5s, 100);
  for (int second = 0; second < 600; ++second) {
    const auto now = t0 + std::chrono::seconds(second);
    const auto deadline = pace.next_read_deadline(100u * static_cast<uint64_t>(second), now);
    REQUIRE(deadline >= now + 1s);  // the next 100 bytes arrive within a second
  }
}

TEST_CASE("body pace: huge counts and rates do not overflow") {
  const auto t0 = BodyPace::Clock::now();
  const BodyPace slow(t0, 60s, 1);
  CHECK(slow.next_read_deadline(UINT64_MAX, t0) == t0 + 60s);
  const BodyPace fast(t0, 60s, uint64_t{1} << 30);
  CHECK(fast.next_read_deadline(1, t0) == t0 + 60s);
}
