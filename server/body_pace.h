// When the next read of a request body must have returned. Two rules, as nginx's
// client_body_timeout and Apache mod_reqtimeout's MinRate: no silence longer than
// body_timeout_seconds, and on average at least min_body_bytes_per_second, with
// body_timeout_seconds as the initial allowance (Apache: "body=60,MinRate=1024" extends
// the 60 s by one second per 1024 bytes received). The second rule cuts a client that
// trickles a byte just often enough to never be silent for long (issue 9's slow body).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "common/clock.h"

namespace tresor::server {

class BodyPace {
 public:
  using Clock = common::Clock;

  // min_bytes_per_second 0: only the silence rule.
  BodyPace(Clock::time_point body_started, std::chrono::seconds silence, uint64_t min_bytes_per_second)
      : started_(body_started), silence_(silence), min_rate_(min_bytes_per_second) {}

  // The deadline of the read that starts at `now`, after `received` body bytes.
  Clock::time_point next_read_deadline(uint64_t received, Clock::time_point now) const {
    const auto by_silence = now + silence_;
    if (min_rate_ == 0) return by_silence;
    // started + silence + received / rate. Capped at a year: the clock counts nanoseconds
    // in 64 bits, and a body that earned a year is bounded by the silence rule anyway.
    constexpr uint64_t kYearMicros = 365ull * 24 * 3600 * 1'000'000;
    const uint64_t micros = std::min<uint64_t>(received, uint64_t{1} << 40) * 1'000'000 / min_rate_;
    const auto earned = std::chrono::microseconds(static_cast<int64_t>(std::min(micros, kYearMicros)));
    return std::min(by_silence, started_ + silence_ + earned);
  }

 private:
  Clock::time_point started_;
  std::chrono::seconds silence_;
  uint64_t min_rate_;
};

}  // namespace tresor::server
