#include "server/rate_limiter.h"

#include <algorithm>

namespace tresor::server {
namespace {

struct WindowSpec {
  std::optional<uint64_t> limit;
  int64_t length;  // seconds
};

}  // namespace

RateDecision RateLimiter::admit(const config::ApiKeyConfig& key, std::chrono::system_clock::time_point now) {
  RateDecision d;
  if (!key.limits.per_minute && !key.limits.per_day) return d;
  d.limited = true;
  const int64_t t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  const WindowSpec specs[2] = {{key.limits.per_minute, 60}, {key.limits.per_day, 86400}};

  std::lock_guard lock(mutex_);
  auto& c = by_key_[key.sha256_hex];
  Window* windows[2] = {&c.minute, &c.day};
  for (int i = 0; i < 2; ++i) {
    const int64_t index = t / specs[i].length;
    if (windows[i]->index != index) *windows[i] = Window{index, 0};
  }
  // Refuse when any window is full; report the window that refused.
  for (int i = 0; i < 2; ++i) {
    if (specs[i].limit && windows[i]->count >= *specs[i].limit) {
      d.allowed = false;
      d.limit = *specs[i].limit;
      d.remaining = 0;
      d.retry_after = static_cast<unsigned>(std::max<int64_t>(1, (windows[i]->index + 1) * specs[i].length - t));
      return d;
    }
  }
  bool first = true;
  for (int i = 0; i < 2; ++i) {
    if (!specs[i].limit) continue;
    ++windows[i]->count;
    const uint64_t remaining = *specs[i].limit - windows[i]->count;
    if (first || remaining < d.remaining) {  // the tightest window
      d.limit = *specs[i].limit;
      d.remaining = remaining;
      first = false;
    }
  }
  return d;
}

}  // namespace tresor::server
