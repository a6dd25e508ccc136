// Per-key request limits (spec §9.2): a per-minute and a per-day window, fixed windows
// aligned to UTC minutes/days, counted in this process (one replica; the Redis store
// will share them across replicas).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.h"

namespace tresor::server {

struct RateDecision {
  bool allowed = true;
  bool limited = false;        // the key has limits (otherwise no headers are sent)
  uint64_t limit = 0;          // of the tightest window (X-RateLimit-Limit)
  uint64_t remaining = 0;      // X-RateLimit-Remaining, after this request
  unsigned retry_after = 0;    // seconds until the exhausted window resets (429)
};

class RateLimiter {
 public:
  // Counts the request against `key`'s windows when it is allowed; a refused request
  // consumes nothing.
  RateDecision admit(const config::ApiKeyConfig& key, std::chrono::system_clock::time_point now);

 private:
  struct Window {
    int64_t index = -1;  // which minute/day this count belongs to
    uint64_t count = 0;
  };
  struct Counters {
    Window minute;
    Window day;
  };
  std::mutex mutex_;
  std::unordered_map<std::string, Counters> by_key_;  // key hash → counters
};

}  // namespace tresor::server
