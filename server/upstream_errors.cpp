#include "server/upstream_errors.h"

namespace tresor::server {

ApiError upstream_stream_error(std::string code, std::string message) {
  if (message.empty()) message = "The upstream reported an error mid-stream";
  if (code.empty()) code = "upstream_error";
  return ApiError{502, "upstream_error", std::move(code), std::move(message), std::nullopt};
}

ApiError upstream_error(std::string message) {
  return ApiError{502, "upstream_error", "upstream_error", std::move(message), std::nullopt};
}

ApiError upstream_timeout() {
  return ApiError{504, "timeout_error", "upstream_timeout",
                  "The upstream did not answer within the request's time budget", std::nullopt};
}

ApiError no_route_available() {
  return ApiError{503, "service_unavailable", "no_route_available",
                  "No route is available for this model right now", std::nullopt};
}

ApiError upstream_rejected(unsigned status, std::string message) {
  if (message.empty()) message = "The upstream rejected the request (HTTP " + std::to_string(status) + ")";
  return ApiError{status, "invalid_request_error", "upstream_rejected", std::move(message), std::nullopt};
}

}  // namespace tresor::server
