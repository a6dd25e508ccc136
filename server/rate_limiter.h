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
#include <vector>

#include "config/config.h"

namespace tresor::server {

struct RateDecision {
  bool allowed = true;
  bool limited = false;        // the key has limits (otherwise no headers are sent)
  uint64_t limit = 0;          // of the tightest window (X-RateLimit-Limit)
  uint64_t remaining = 0;      // X-RateLimit-Remaining, after this request
  unsigned retry_after = 0;    // seconds until the exhausted window resets (429)
};

// One of a key's limited windows: fixed, aligned to UTC minutes or days.
struct RateWindow {
  uint64_t limit = 0;
  int64_t length = 0;  // seconds
  int slot = 0;        // 0 = per minute, 1 = per day
  const char* tag = "";  // names the window in shared counters
};

// The key's limited windows (none: the key is unlimited).
std::vector<RateWindow> rate_windows(const config::ApiKeyConfig& key);
// The answer when window `w` is full at unix time `t`.
RateDecision refused_by(const RateWindow& w, int64_t t);
// Reports `remaining` of window `w` if it is the tightest so far.
void note_remaining(RateDecision& d, const RateWindow& w, uint64_t remaining);

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
    Window windows[2];  // indexed by RateWindow::slot
  };
  std::mutex mutex_;
  std::unordered_map<std::string, Counters> by_key_;  // key hash → counters
};

}  // namespace tresor::server
