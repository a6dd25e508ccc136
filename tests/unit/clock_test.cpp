// Deadline (common/clock.h): passes exactly at its time point, never reports negative time
// left, the earlier of two wins, and an oversized duration means "never" rather than a
// time point that wrapped into the past.
#include <catch2/catch.hpp>

#include "common/clock.h"

using tresor::common::Clock;
using tresor::common::Deadline;
using namespace std::chrono_literals;

TEST_CASE("deadline: passed and remaining around its time point", "[clock]") {
  const auto t0 = Clock::now();
  const auto d = Deadline::after(10s, t0);
  CHECK(d.at() == t0 + 10s);
  CHECK_FALSE(d.passed(t0));
  CHECK_FALSE(d.passed(t0 + 10s - 1ns));
  CHECK(d.passed(t0 + 10s));
  CHECK(d.remaining(t0 + 4s) == 6s);
  CHECK(d.remaining(t0 + 10s) == Clock::duration::zero());
  CHECK(d.remaining(t0 + 60s) == Clock::duration::zero());  // never negative
}

TEST_CASE("deadline: the earlier of two, and ordering", "[clock]") {
  const auto t0 = Clock::now();
  const auto soon = Deadline::after(1s, t0);
  const auto later = Deadline::after(5s, t0);
  CHECK(soon < later);
  CHECK(earlier_of(soon, later) == soon);
  CHECK(earlier_of(later, soon) == soon);
  CHECK(earlier_of(Deadline::never(), later) == later);
  CHECK(Deadline(t0 + 1s) == soon);
}

TEST_CASE("deadline: never, and durations too long for the clock", "[clock]") {
  const auto t0 = Clock::now();
  CHECK(Deadline() == Deadline::never());
  CHECK_FALSE(Deadline::never().passed(t0 + 24h * 365 * 100));
  CHECK(Deadline::after((Clock::time_point::max() - t0) + 1ns, t0) == Deadline::never());
  CHECK(Deadline::after(Clock::duration::max(), t0) == Deadline::never());
  CHECK(Deadline::after(Clock::duration::max(), t0) > Deadline::after(1h, t0));
}
