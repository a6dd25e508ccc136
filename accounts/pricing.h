// What an answer costs, exactly (integer nanos), what a request may cost at most (the
// reservation), and the token estimate used when an upstream reports no usage.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "accounts/ledger.h"
#include "config/config.h"

namespace tresor::accounts {

// Output tokens reserved for a chat request that sets neither max_completion_tokens nor
// max_tokens, on a route without max_output_tokens.
inline constexpr int64_t kDefaultMaxOutputTokens = 4096;
// Audio reserved for a transcription on a route without max_audio_seconds (an hour).
inline constexpr int64_t kDefaultMaxAudioSeconds = 3600;

// Price of a chat answer from the route's per-million-token prices (0 when unpriced),
// rounded half up to the nano.
Nanos chat_cost(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens);

// How a transcription route bills (spec §7.5): by audio duration (billing_unit
// audio_minute), per request (billing_unit request), or by tokens (per-mtok prices).
enum class TranscriptionBilling { duration, request, tokens, free };
TranscriptionBilling transcription_billing(const config::RouteConfig& route);

// unit_amount per minute × seconds / 60 (audio_minute), unit_amount (request), or the
// token prices; rounded half up to the nano.
Nanos transcription_cost(const config::RouteConfig& route, int64_t audio_seconds, int64_t input_tokens,
                         int64_t output_tokens);

// Tokens of text the upstream did not count for us: ceil(UTF-8 bytes / 4). OpenAI's own
// rule of thumb (one token ≈ 4 characters of English); the routes' models use different
// tokenizers (none packaged for C++ here), so a byte rule that anyone can recompute is as
// good as a wrong tokenizer and much cheaper. See accounts/README.md.
int64_t estimate_tokens(uint64_t text_bytes);

// The most expensive outcome of a request, which its hold reserves.
struct CostBound {
  Nanos money = 0;
  int64_t tokens = 0;
};

// A chat request of `body_bytes` asking for at most `max_output` tokens (nullopt: not
// set) on whichever of `routes` serves it (failover may pick any). The prompt is bounded
// by the body's byte count: byte-level BPE tokenizers (GPT, Llama 3, Qwen, Kimi) never
// make more tokens than bytes.
CostBound chat_bound(const std::vector<const config::RouteConfig*>& routes, uint64_t body_bytes,
                     std::optional<int64_t> max_output);

// A transcription on whichever of `routes` serves it: the route's max_audio_seconds (or
// the default) at its price; token-priced routes reserve max_output_tokens of output.
CostBound transcription_bound(const std::vector<const config::RouteConfig*>& routes);

}  // namespace tresor::accounts
