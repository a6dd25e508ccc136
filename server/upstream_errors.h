// How upstream failures become client errors (spec §3.2, §6.3). What the upstream said
// has already been read and scrubbed of the provider's key by providers/.
#pragma once

#include <string>

#include "server/api_error.h"

namespace tresor::server {

ApiError upstream_error(std::string message);  // 502 upstream_error
ApiError upstream_timeout();                   // 504 upstream_timeout
ApiError no_route_available();                 // 503 no_route_available

// An upstream 4xx relayed to the client: same status, code upstream_rejected, the
// upstream's (scrubbed) message.
ApiError upstream_rejected(unsigned status, std::string message);

// A mid-stream error event from the upstream, as the client gets it: the upstream's
// (scrubbed) message and code, type upstream_error.
ApiError upstream_stream_error(std::string code, std::string message);

}  // namespace tresor::server
