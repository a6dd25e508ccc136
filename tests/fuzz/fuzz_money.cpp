// Exact money: common/decimal (parse_nanos, format_nanos) and accounts/pricing (chat_cost,
// transcription_cost, chat_bound, estimate_tokens).
// Input: a decimal text up to the first '\n' (the input price per million tokens when
// parse_nanos accepts it; no input price otherwise), then up to five 8-byte little-endian
// integers (missing bytes are 0): the output price, the prompt and completion token
// counts, an increment, and a body size / audio length.
// Properties:
// - parse_nanos accepts only `digits[.digits][(e|E)[+|-]digits]` (a digit somewhere in the
//   mantissa), into [0, INT64_MAX], within rounding of strtold's reading of the same text;
//   format_nanos of what it accepted has no exponent and parses back to the same value;
// - chat_cost is round-half-up((prompt × in + completion × out) / 1e6), computed here in
//   unsigned __int128, saturated at INT64_MAX; never negative; monotone in each count;
// - transcription_cost by duration is round-half-up(unit × seconds / 60), per request unit;
// - chat_bound reserves at least chat_cost of the body size and the output bound, and at
//   least that many tokens (never a wrapped negative count);
// - estimate_tokens(n) is ceil(n / 4) for every n.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "accounts/pricing.h"
#include "common/decimal.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

using u128 = unsigned __int128;

uint64_t take_u64(std::string_view& in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(fuzz::take_byte(in)) << (8 * i);
  return v;
}

// Non-negative int64 from 8 bytes (the sign bit dropped).
int64_t take_nonneg(std::string_view& in) { return static_cast<int64_t>(take_u64(in) & INT64_MAX); }

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The documented grammar, written independently of parse_nanos.
bool grammar_ok(std::string_view s) {
  size_t i = 0, mantissa_digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++mantissa_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++mantissa_digits;
  }
  if (mantissa_digits == 0) return false;
  if (i == s.size()) return true;
  if (s[i] != 'e' && s[i] != 'E') return false;
  ++i;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t exponent_digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++exponent_digits;
  return exponent_digits > 0 && i == s.size();
}

// a / b rounded half up, saturated at INT64_MAX: the reference for every charge.
int64_t reference_round(u128 a, u128 b) {
  const u128 q = a / b + (a % b * 2 >= b ? 1 : 0);
  return q > static_cast<u128>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(q);
}

int64_t saturating_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

void check_decimal(std::string_view text, std::optional<int64_t> parsed) {
  if (!parsed) return;
  FUZZ_CHECK(grammar_ok(text));
  FUZZ_CHECK(*parsed >= 0);
  // An independent reading: glibc's strtold rounds correctly to a 64-bit mantissa, so it
  // and the scaling by 1e9 are within about one nano of the exact value up to INT64_MAX.
  const std::string s(text);
  const long double approx = std::strtold(s.c_str(), nullptr) * 1e9L;
  const long double diff = approx > *parsed ? approx - *parsed : *parsed - approx;
  FUZZ_CHECK(diff <= 4 + static_cast<long double>(*parsed) * 1e-17L);
  for (int digits = 0; digits <= 9; ++digits) {
    const std::string formatted = common::format_nanos(*parsed, digits);
    FUZZ_CHECK(formatted.find_first_of("eE") == std::string::npos);
    FUZZ_CHECK(common::parse_nanos(formatted) == parsed);
  }
}

void check_chat_cost(const config::RouteConfig& route, int64_t in, int64_t out, int64_t prompt,
                     int64_t completion, int64_t step) {
  const int64_t cost = accounts::chat_cost(route, prompt, completion);
  const u128 total = static_cast<u128>(prompt) * static_cast<u128>(in) + static_cast<u128>(completion) * out;
  FUZZ_CHECK(cost >= 0);
  FUZZ_CHECK(cost == reference_round(total, 1'000'000));
  FUZZ_CHECK(accounts::chat_cost(route, saturating_add(prompt, step), completion) >= cost);
  FUZZ_CHECK(accounts::chat_cost(route, prompt, saturating_add(completion, step)) >= cost);
}

void check_transcription(config::RouteConfig route, int64_t unit, int64_t seconds) {
  route.type = config::RouteType::transcription;
  route.pricing->unit_nanos = unit;
  route.pricing->billing_unit = "audio_minute";
  FUZZ_CHECK(accounts::transcription_cost(route, seconds, 0, 0) ==
             reference_round(static_cast<u128>(unit) * static_cast<u128>(seconds), 60));
  route.pricing->billing_unit = "request";
  FUZZ_CHECK(accounts::transcription_cost(route, seconds, 0, 0) == unit);
}

void check_bound(const config::RouteConfig& route, uint64_t body_bytes, int64_t max_output) {
  const std::vector<const config::RouteConfig*> routes{&route};
  for (const std::optional<int64_t> asked : {std::optional<int64_t>(max_output), std::optional<int64_t>()}) {
    const auto bound = accounts::chat_bound(routes, body_bytes, asked);
    const int64_t output = asked.value_or(accounts::kDefaultMaxOutputTokens);
    const auto prompt = static_cast<int64_t>(body_bytes > INT64_MAX / 4 ? INT64_MAX / 4 : body_bytes);
    FUZZ_CHECK(bound.money >= accounts::chat_cost(route, prompt, output));
    FUZZ_CHECK(bound.tokens >= output && bound.tokens >= prompt);
  }
}

void check_estimate(uint64_t bytes) {
  const int64_t tokens = accounts::estimate_tokens(bytes);
  FUZZ_CHECK(tokens >= 0);
  FUZZ_CHECK(static_cast<u128>(tokens) * 4 >= bytes && static_cast<u128>(tokens) * 4 < static_cast<u128>(bytes) + 4);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string_view text = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  const auto parsed = common::parse_nanos(text);
  check_decimal(text, parsed);

  const int64_t out_price = take_nonneg(in);
  const int64_t prompt = take_nonneg(in);
  const int64_t completion = take_nonneg(in);
  const int64_t step = take_nonneg(in);
  const uint64_t amount = take_u64(in);

  config::RouteConfig route;
  route.pricing.emplace();
  route.pricing->currency = "usd";
  route.pricing->input_nanos_per_mtok = parsed;  // nullopt: the route prices output only
  route.pricing->output_nanos_per_mtok = out_price;
  check_chat_cost(route, parsed.value_or(0), out_price, prompt, completion, step);
  check_transcription(route, parsed.value_or(out_price), static_cast<int64_t>(amount & INT64_MAX));
  check_bound(route, amount, completion);
  check_estimate(amount);
  return 0;
}
