#include "server/upstream_errors.h"

#include "server/json_parser.h"

#include <charconv>

namespace tresor::server {
namespace {

// Upstream error messages are relayed to the client up to this length.
constexpr size_t kMaxRelayedMessage = 1000;

std::string error_field(const std::string& body, const char* field) {
  simdjson::dom::element root;
  std::string_view value;
  if (upstream_json_parser().parse(body).get(root)) return {};
  if (!root["error"][field].get(value)) return std::string(value);
  if (!root[field].get(value)) return std::string(value);
  return {};
}

}  // namespace

// Removes any occurrence of the provider's key from text we relay (an upstream might
// echo the credential in an error message).
std::string scrub_secret(std::string text, const std::string& secret) {
  if (secret.size() >= 4)
    for (size_t pos; (pos = text.find(secret)) != std::string::npos;) text.replace(pos, secret.size(), "[redacted]");
  if (text.size() > kMaxRelayedMessage) text.resize(kMaxRelayedMessage);
  return text;
}

ApiError upstream_stream_error(const std::string& event, const std::string& provider_secret) {
  std::string message = scrub_secret(error_field(event, "message"), provider_secret);
  if (message.empty()) message = "The upstream reported an error mid-stream";
  std::string code = scrub_secret(error_field(event, "code"), provider_secret);
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

ApiError upstream_rejected(unsigned status, const std::string& body, const config::ProviderConfig& provider) {
  std::string message = scrub_secret(error_field(body, "message"), provider.api_key);
  if (message.empty()) message = "The upstream rejected the request (HTTP " + std::to_string(status) + ")";
  return ApiError{status, "invalid_request_error", "upstream_rejected", std::move(message), std::nullopt};
}

std::string upstream_error_code(const std::string& body) { return error_field(body, "code"); }

std::optional<unsigned> parse_retry_after(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  unsigned seconds = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec != std::errc() || ptr != value.data() + value.size() || value.empty()) return std::nullopt;
  return seconds;
}

}  // namespace tresor::server
