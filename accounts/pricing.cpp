#include "accounts/pricing.h"

#include <algorithm>

namespace tresor::accounts {
namespace {

constexpr __int128 kPerMillion = 1'000'000;

// a / b rounded half up, for non-negative a and positive b, clamped to int64.
Nanos divide_rounded(__int128 a, __int128 b) {
  const __int128 q = (a + b / 2) / b;
  return q > INT64_MAX ? INT64_MAX : static_cast<Nanos>(q);
}

}  // namespace

Nanos chat_cost(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens) {
  if (!route.pricing) return 0;
  const auto& p = *route.pricing;
  const __int128 total = static_cast<__int128>(std::max<int64_t>(prompt_tokens, 0)) * p.input_nanos_per_mtok.value_or(0) +
                         static_cast<__int128>(std::max<int64_t>(completion_tokens, 0)) * p.output_nanos_per_mtok.value_or(0);
  return divide_rounded(total, kPerMillion);
}

TranscriptionBilling transcription_billing(const config::RouteConfig& route) {
  if (!route.pricing) return TranscriptionBilling::free;
  const auto& p = *route.pricing;
  if (p.billing_unit == "audio_minute") return TranscriptionBilling::duration;
  if (p.billing_unit == "request") return TranscriptionBilling::request;
  if (p.input_nanos_per_mtok || p.output_nanos_per_mtok) return TranscriptionBilling::tokens;
  return TranscriptionBilling::free;
}

Nanos transcription_cost(const config::RouteConfig& route, int64_t audio_seconds, int64_t input_tokens,
                         int64_t output_tokens) {
  switch (transcription_billing(route)) {
    case TranscriptionBilling::duration:
      return divide_rounded(static_cast<__int128>(route.pricing->unit_nanos.value_or(0)) *
                                std::max<int64_t>(audio_seconds, 0),
                            60);
    case TranscriptionBilling::request: return route.pricing->unit_nanos.value_or(0);
    case TranscriptionBilling::tokens: return chat_cost(route, input_tokens, output_tokens);
    case TranscriptionBilling::free: break;
  }
  return 0;
}

// Not (bytes + 3) / 4: that wraps to 0 for the last three uint64 values.
int64_t estimate_tokens(uint64_t text_bytes) {
  return static_cast<int64_t>(text_bytes / 4 + (text_bytes % 4 != 0 ? 1 : 0));
}

CostBound chat_bound(const std::vector<const config::RouteConfig*>& routes, uint64_t body_bytes,
                     std::optional<int64_t> max_output) {
  CostBound bound;
  const auto prompt = static_cast<int64_t>(std::min<uint64_t>(body_bytes, INT64_MAX / 4));
  for (const auto* route : routes) {
    const int64_t output = std::max<int64_t>(0, max_output.value_or(
        route->max_output_tokens ? static_cast<int64_t>(*route->max_output_tokens) : kDefaultMaxOutputTokens));
    bound.money = std::max(bound.money, chat_cost(*route, prompt, output));
    // Saturated: a client's max_tokens may be up to INT64_MAX, and prompt + output would
    // overflow (undefined; in practice a negative bound, i.e. no token reservation at all).
    bound.tokens = std::max(bound.tokens, output > INT64_MAX - prompt ? INT64_MAX : prompt + output);
  }
  return bound;
}

CostBound transcription_bound(const std::vector<const config::RouteConfig*>& routes) {
  CostBound bound;
  for (const auto* route : routes) {
    const int64_t seconds =
        route->max_audio_seconds ? static_cast<int64_t>(*route->max_audio_seconds) : kDefaultMaxAudioSeconds;
    const int64_t output =
        route->max_output_tokens ? static_cast<int64_t>(*route->max_output_tokens) : kDefaultMaxOutputTokens;
    // Token-priced transcription: audio input tokens are not knowable before the upstream
    // answers; the output bound stands for the whole answer there.
    bound.money = std::max(bound.money, transcription_cost(*route, seconds, 0, output));
    bound.tokens = std::max(bound.tokens, output);
  }
  return bound;
}

}  // namespace tresor::accounts
