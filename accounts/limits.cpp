#include "accounts/limits.h"

#include <algorithm>

namespace tresor::accounts {
namespace {

constexpr int64_t kMinute = 60;
constexpr int64_t kDay = 86400;
// A counter outlives its window by this much: a settlement a little after the window's
// end still finds it (and a late one leaves it alone).
constexpr int64_t kCounterSlack = 60;

void add_window(std::vector<WindowDraw>& out, const config::ApiKeyConfig& key, const char* tag, uint64_t limit,
                int64_t length, int64_t now, int64_t amount) {
  WindowDraw w;
  w.counter = key.sha256_hex + ':' + tag + ':' + std::to_string(now / length);
  w.limit = static_cast<int64_t>(limit);
  w.amount = amount;
  w.ttl_seconds = length + kCounterSlack;
  out.push_back(std::move(w));
}

int64_t window_length(const WindowDraw& w) { return w.ttl_seconds - kCounterSlack; }

}  // namespace

std::vector<WindowDraw> request_windows(const config::ApiKeyConfig& key, int64_t now) {
  std::vector<WindowDraw> out;
  if (key.limits.per_minute) add_window(out, key, "m", *key.limits.per_minute, kMinute, now, 1);
  if (key.limits.per_day) add_window(out, key, "d", *key.limits.per_day, kDay, now, 1);
  return out;
}

std::vector<WindowDraw> token_windows(const config::ApiKeyConfig& key, int64_t now, int64_t amount) {
  std::vector<WindowDraw> out;
  if (key.limits.tokens_per_minute) add_window(out, key, "tm", *key.limits.tokens_per_minute, kMinute, now, amount);
  if (key.limits.tokens_per_day) add_window(out, key, "td", *key.limits.tokens_per_day, kDay, now, amount);
  return out;
}

unsigned seconds_to_reset(const WindowDraw& draw, int64_t now) {
  const int64_t length = window_length(draw);
  return static_cast<unsigned>(std::max<int64_t>(1, (now / length + 1) * length - now));
}

std::optional<WindowReport> tightest(const std::vector<WindowDraw>& windows, const Decision& d, int64_t now) {
  std::optional<WindowReport> best;
  for (size_t i = 0; i < windows.size(); ++i) {
    const auto& w = windows[i];
    const int64_t used = i < d.used.size() ? d.used[i] : 0;
    WindowReport r{w.limit, std::max<int64_t>(0, w.limit - used), seconds_to_reset(w, now)};
    if (d.verdict == Verdict::over_window && i == d.window) return r;  // the one that refused
    if (!best || r.remaining < best->remaining) best = r;
  }
  return best;
}

std::string reset_text(unsigned seconds) {
  const unsigned h = seconds / 3600, m = seconds % 3600 / 60, s = seconds % 60;
  std::string out;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  out += std::to_string(s) + "s";
  return out;
}

void add_request_headers(HeaderList& h, const WindowReport& w) {
  h.emplace_back("X-RateLimit-Limit", std::to_string(w.limit));
  h.emplace_back("X-RateLimit-Remaining", std::to_string(w.remaining));
  h.emplace_back("x-ratelimit-limit-requests", std::to_string(w.limit));
  h.emplace_back("x-ratelimit-remaining-requests", std::to_string(w.remaining));
  h.emplace_back("x-ratelimit-reset-requests", reset_text(w.reset_seconds));
}

void add_token_headers(HeaderList& h, const WindowReport& w) {
  h.emplace_back("x-ratelimit-limit-tokens", std::to_string(w.limit));
  h.emplace_back("x-ratelimit-remaining-tokens", std::to_string(w.remaining));
  h.emplace_back("x-ratelimit-reset-tokens", reset_text(w.reset_seconds));
}

}  // namespace tresor::accounts
