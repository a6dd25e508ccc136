// The one clock for durations and deadlines (steady: wall-clock jumps must not fire or
// stretch a timeout), and Deadline, a point on it by which something must be done.
#pragma once

#include <algorithm>
#include <chrono>

namespace tresor::common {

using Clock = std::chrono::steady_clock;

// A value type around a Clock::time_point, so that "when it must end" is not confused
// with "how long it may take". Default-constructed, it never passes.
class Deadline {
 public:
  constexpr Deadline() = default;
  constexpr explicit Deadline(Clock::time_point at) : at_(at) {}

  static constexpr Deadline never() { return Deadline(); }
  // `d` from `now`; a duration too long for the clock (e.g. hours::max()) means never,
  // instead of wrapping around into the past.
  static Deadline after(Clock::duration d, Clock::time_point now = Clock::now()) {
    if (d > Clock::time_point::max() - now) return never();
    return Deadline(now + d);
  }

  constexpr Clock::time_point at() const { return at_; }
  bool passed(Clock::time_point now = Clock::now()) const { return now >= at_; }
  // Time left, never negative.
  Clock::duration remaining(Clock::time_point now = Clock::now()) const {
    return at_ > now ? at_ - now : Clock::duration::zero();
  }

  friend constexpr auto operator<=>(const Deadline&, const Deadline&) = default;

 private:
  Clock::time_point at_ = Clock::time_point::max();
};

constexpr Deadline earlier_of(Deadline a, Deadline b) { return std::min(a, b); }

}  // namespace tresor::common
