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

// `error.code` of an OpenAI-style error body, or empty.
std::string upstream_error_code(const std::string& body);

// Retry-After in seconds (the delta-seconds form; HTTP dates are ignored).
std::optional<unsigned> parse_retry_after(std::string_view value);


}  // namespace tresor::server
