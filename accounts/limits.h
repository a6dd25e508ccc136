// A key's limits as ledger windows (spec §9.2): requests per minute and per day, tokens
// per minute and per day, each a fixed window aligned to UTC minutes or days; and how a
// decision is announced (X-RateLimit-* of the spec, and OpenAI's x-ratelimit-* names).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "accounts/ledger.h"
#include "config/config.h"

namespace tresor::accounts {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// The windows of one kind of limit of a key at unix time `now`, each drawing `amount`.
std::vector<WindowDraw> request_windows(const config::ApiKeyConfig& key, int64_t now);
std::vector<WindowDraw> token_windows(const config::ApiKeyConfig& key, int64_t now, int64_t amount);

// Seconds until the window of `draw` resets (at least 1).
unsigned seconds_to_reset(const WindowDraw& draw, int64_t now);

// The tightest window of a decision: its limit, what remains and when it resets.
struct WindowReport {
  int64_t limit = 0;
  int64_t remaining = 0;
  unsigned reset_seconds = 0;
};
std::optional<WindowReport> tightest(const std::vector<WindowDraw>& windows, const Decision& d, int64_t now);

// Headers for requests: X-RateLimit-Limit/-Remaining (spec) and x-ratelimit-limit-requests,
// -remaining-requests, -reset-requests (OpenAI); for tokens: x-ratelimit-*-tokens.
void add_request_headers(HeaderList& h, const WindowReport& w);
void add_token_headers(HeaderList& h, const WindowReport& w);

// OpenAI's duration text for a reset: "45s", "6m0s", "3h2m1s".
std::string reset_text(unsigned seconds);

}  // namespace tresor::accounts
