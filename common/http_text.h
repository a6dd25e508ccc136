// Small pieces of HTTP field-value syntax shared by the parsers of headers we read
// (Authorization, X-Tresor-Timeout-Seconds, Content-Type, Content-Encoding, multipart
// part headers).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tresor::common {

// `s` without the optional whitespace (OWS: spaces and tabs, RFC 9110 §5.6.3) around it.
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A header's plain decimal digits (no sign, point, exponent or hex: "+5", "1.5", "1e3"
// and "0x10" are not numbers here); nullopt when `s` is empty or anything but digits.
// Saturates above 10^10 instead of overflowing: every caller bounds the value far lower.
inline std::optional<uint64_t> decimal_digits(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t value = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value > 1'000'000'000ULL ? value : value * 10 + static_cast<unsigned>(c - '0');
  }
  return value;
}

}  // namespace tresor::common
