// A warning that can repeat in a burst (accept failing on EMFILE, the connection cap) is
// logged at most once per interval, with the count of those left out since the last line:
// a flood of identical lines would cost more than the condition it reports.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

#include "common/clock.h"

namespace tresor::server {

// Not thread-safe: one per thread (or per strand of work).
class LogThrottle {
 public:
  using Clock = common::Clock;
  explicit LogThrottle(Clock::duration interval = std::chrono::seconds(1)) : interval_(interval) {}

  // Empty when this occurrence is to be left out; otherwise how many were left out since
  // the last line logged.
  std::optional<size_t> allow(Clock::time_point now = Clock::now()) {
    if (logged_once_ && now - last_ < interval_) {
      ++suppressed_;
      return std::nullopt;
    }
    logged_once_ = true;
    last_ = now;
    const size_t left_out = suppressed_;
    suppressed_ = 0;
    return left_out;
  }

 private:
  Clock::duration interval_;
  Clock::time_point last_{};
  bool logged_once_ = false;
  size_t suppressed_ = 0;
};

}  // namespace tresor::server
