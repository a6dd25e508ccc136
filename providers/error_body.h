// What an upstream says when it refuses: its OpenAI-style error body and Retry-After.
// Anything an upstream wrote may echo our credential, so every text taken from it has the
// provider's key scrubbed out before it leaves this module.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tresor::providers {

struct UpstreamErrorBody {
  std::string code;     // error.code (or a top-level code), empty when absent
  std::string message;  // error.message (or a top-level message), empty when absent
};

// Reads `body` (an error body, or one stream event) with `secret` scrubbed out of both.
UpstreamErrorBody parse_error_body(std::string_view body, const std::string& secret);

// `text` with every occurrence of `secret` replaced by "[redacted]", cut to 1000 bytes.
std::string scrub_secret(std::string text, const std::string& secret);

// Retry-After in seconds (the delta-seconds form; HTTP dates are ignored).
std::optional<unsigned> parse_retry_after(std::string_view value);

}  // namespace tresor::providers
