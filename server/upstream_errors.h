// How upstream failures become client errors (spec §3.2, §6.3).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "server/api_error.h"

namespace tresor::server {

ApiError upstream_error(std::string message);  // 502 upstream_error
ApiError upstream_timeout();                   // 504 upstream_timeout
ApiError no_route_available();                 // 503 no_route_available

// An upstream 4xx relayed to the client: same status, code upstream_rejected, the
// upstream's message with the provider's key scrubbed out.
ApiError upstream_rejected(unsigned status, const std::string& body, const config::ProviderConfig& provider);

// A mid-stream error event from the upstream, as the client gets it: the upstream's
// message and code with the provider's key scrubbed out (type upstream_error).
ApiError upstream_stream_error(const std::string& event, const std::string& provider_secret);

// `text` with every occurrence of `secret` replaced by "[redacted]", cut to 1000 bytes:
// for anything an upstream wrote that we relay or log.
std::string scrub_secret(std::string text, const std::string& secret);

// `error.code` of an OpenAI-style error body, or empty.
std::string upstream_error_code(const std::string& body);

// Retry-After in seconds (the delta-seconds form; HTTP dates are ignored).
std::optional<unsigned> parse_retry_after(std::string_view value);


}  // namespace tresor::server
