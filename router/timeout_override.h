// X-Tresor-Timeout-Seconds (spec §4 and the OpenAI-SDK guide): the one request budget.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>
#include <vector>

namespace tresor::router {

inline constexpr std::string_view kTimeoutHeader = "X-Tresor-Timeout-Seconds";

// `values` holds every occurrence of the header (empty when absent). Returns the budget
// in seconds, or nullopt for an invalid value: empty, non-numeric, fractional, signed,
// non-positive, or sent more than once. Values above `max_seconds` are clamped.
std::optional<std::chrono::seconds> parse_timeout_override(
    const std::vector<std::string_view>& values, unsigned default_seconds, unsigned max_seconds);

}  // namespace tresor::router
