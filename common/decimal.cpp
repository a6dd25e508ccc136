#include "common/decimal.h"

#include <charconv>
#include <cstdlib>

namespace tresor::common {

std::optional<int64_t> parse_nanos(std::string_view text) {
  // Digits of the mantissa with the point removed, and where the point was.
  std::string digits;
  int point = -1;
  size_t i = 0;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c >= '0' && c <= '9') {
      digits += c;
    } else if (c == '.' && point < 0) {
      point = static_cast<int>(digits.size());
    } else {
      break;
    }
  }
  if (digits.empty()) return std::nullopt;
  int exponent = 0;
  if (i < text.size()) {
    if (text[i] != 'e' && text[i] != 'E') return std::nullopt;
    ++i;
    // One optional sign, read here: from_chars takes its own '-' after a '+' ("1e+-5").
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
    if (i == text.size() || text[i] < '0' || text[i] > '9') return std::nullopt;
    const auto [end, ec] = std::from_chars(text.data() + i, text.data() + text.size(), exponent);
    if (negative) exponent = -exponent;
    if (ec != std::errc() || end != text.data() + text.size() || exponent < -40 || exponent > 40)
      return std::nullopt;
  }
  // value = digits × 10^(exponent − fraction digits); in nanos, × 10^9.
  const int fraction = point < 0 ? 0 : static_cast<int>(digits.size()) - point;
  int shift = exponent - fraction + 9;
  // Trailing zeros dropped from the mantissa cost no precision.
  while (shift < 0 && digits.size() > 1 && digits.back() == '0') {
    digits.pop_back();
    ++shift;
  }
  if (shift < 0) {
    if (digits.find_first_not_of('0') != std::string::npos) return std::nullopt;  // finer than 1e-9
    return 0;
  }
  __int128 value = 0;
  constexpr __int128 kMax = INT64_MAX;
  for (const char c : digits) {
    value = value * 10 + (c - '0');
    if (value > kMax) return std::nullopt;
  }
  for (int s = 0; s < shift; ++s) {
    value *= 10;
    if (value > kMax) return std::nullopt;
  }
  return static_cast<int64_t>(value);
}

std::string format_nanos(int64_t nanos, int min_fraction_digits) {
  const bool negative = nanos < 0;
  // Magnitude in unsigned arithmetic: −INT64_MIN does not fit an int64.
  const uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(nanos) : static_cast<uint64_t>(nanos);
  std::string fraction = std::to_string(magnitude % kNanosPerUnit);
  fraction.insert(0, 9 - fraction.size(), '0');
  while (static_cast<int>(fraction.size()) > min_fraction_digits && fraction.back() == '0') fraction.pop_back();
  std::string out = negative ? "-" : "";
  out += std::to_string(magnitude / kNanosPerUnit);
  if (!fraction.empty()) {
    out += '.';
    out += fraction;
  }
  return out;
}

}  // namespace tresor::common
