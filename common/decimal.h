// Exact decimal amounts as integers scaled by 10^9 (money in the config and in /v1/usage):
// "0.2" is 200000000, never the nearest binary double. Hand-written because no Debian
// package does fixed-point decimal text both ways; it is 60 lines.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tresor::common {

inline constexpr int64_t kNanosPerUnit = 1'000'000'000;

// Plain decimal or exponent form ("12", "0.25", "1e9", "1.5E-3"), no sign, at most nine
// digits after the point once the exponent is applied, at most 9.2e9 in all; nullopt
// otherwise (the caller says why).
std::optional<int64_t> parse_nanos(std::string_view text);

// A plain decimal (never an exponent): at least `min_fraction_digits` digits after the
// point, trailing zeros beyond them dropped: 100 → "100.00", 123 → "0.000000123".
std::string format_nanos(int64_t nanos, int min_fraction_digits = 2);

}  // namespace tresor::common
