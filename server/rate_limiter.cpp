#include "server/rate_limiter.h"

#include <algorithm>

namespace tresor::server {
std::vector<RateWindow> rate_windows(const config::ApiKeyConfig& key) {
  std::vector<RateWindow> out;
  if (key.limits.per_minute) out.push_back(RateWindow{*key.limits.per_minute, 60, 0, "m"});
  if (key.limits.per_day) out.push_back(RateWindow{*key.limits.per_day, 86400, 1, "d"});
  return out;
}

RateDecision refused_by(const RateWindow& w, int64_t t) {
  RateDecision d;
  d.limited = true;
  d.allowed = false;
  d.limit = w.limit;
  d.remaining = 0;
  d.retry_after = static_cast<unsigned>(std::max<int64_t>(1, (t / w.length + 1) * w.length - t));
  return d;
}

void note_remaining(RateDecision& d, const RateWindow& w, uint64_t remaining) {
  // Limits are ≥ 1 (config), so limit 0 means nothing was reported yet.
  if (d.limit == 0 || remaining < d.remaining) {
    d.limit = w.limit;
    d.remaining = remaining;
  }
}

RateDecision RateLimiter::admit(const config::ApiKeyConfig& key, std::chrono::system_clock::time_point now) {
  RateDecision d;
  const auto windows = rate_windows(key);
  if (windows.empty()) return d;
  d.limited = true;
  const int64_t t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();

  std::lock_guard lock(mutex_);
  auto& c = by_key_[key.sha256_hex];
  for (const auto& w : windows) {
    Window& counter = c.windows[w.slot];
    const int64_t index = t / w.length;
    if (counter.index != index) counter = Window{index, 0};
    // Refuse when any window is full, reporting that window; nothing is consumed.
    if (counter.count >= w.limit) return refused_by(w, t);
  }
  for (const auto& w : windows) note_remaining(d, w, w.limit - ++c.windows[w.slot].count);
  return d;
}

}  // namespace tresor::server
