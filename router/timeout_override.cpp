#include "router/timeout_override.h"

#include <algorithm>

#include "common/http_text.h"

namespace tresor::router {

std::optional<std::chrono::seconds> parse_timeout_override(
    const std::vector<std::string_view>& values, unsigned default_seconds, unsigned max_seconds) {
  if (values.empty()) return std::chrono::seconds(default_seconds);
  if (values.size() > 1) return std::nullopt;  // duplicate: ambiguous, reject
  // Plain decimal digits only: rejects "+5", "-1", "1.5", "0x10", "1e3".
  const auto value = common::decimal_digits(common::trim_ows(values.front()));
  if (!value || *value == 0) return std::nullopt;
  return std::chrono::seconds(std::min<uint64_t>(*value, max_seconds));
}

}  // namespace tresor::router
