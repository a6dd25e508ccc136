#include "router/timeout_override.h"

#include "common/http_text.h"

namespace tresor::router {

std::optional<std::chrono::seconds> parse_timeout_override(
    const std::vector<std::string_view>& values, unsigned default_seconds, unsigned max_seconds) {
  if (values.empty()) return std::chrono::seconds(default_seconds);
  if (values.size() > 1) return std::nullopt;  // duplicate: ambiguous, reject
  const std::string_view v = common::trim_ows(values.front());
  if (v.empty()) return std::nullopt;
  // Plain decimal digits only: rejects "+5", "-1", "1.5", "0x10", "1e3".
  unsigned long long value = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    // Saturate instead of overflowing: anything this large is clamped anyway.
    value = value > 1'000'000'000ULL ? value : value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0) return std::nullopt;
  if (value > max_seconds) value = max_seconds;
  return std::chrono::seconds(value);
}

}  // namespace tresor::router
