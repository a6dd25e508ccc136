#include "providers/error_body.h"

#include <charconv>
#include <limits>

#include "providers/json_parser.h"

namespace tresor::providers {
namespace {

// Upstream error messages are relayed to the client up to this length.
constexpr size_t kMaxRelayedMessage = 1000;

std::string error_field(simdjson::dom::element root, const char* field) {
  std::string_view value;
  if (!root["error"][field].get(value)) return std::string(value);
  if (!root[field].get(value)) return std::string(value);
  return {};
}

}  // namespace

std::string scrub_secret(std::string text, const std::string& secret) {
  if (secret.size() >= 4)
    for (size_t pos; (pos = text.find(secret)) != std::string::npos;) text.replace(pos, secret.size(), "[redacted]");
  if (text.size() > kMaxRelayedMessage) text.resize(kMaxRelayedMessage);
  return text;
}

UpstreamErrorBody parse_error_body(std::string_view body, const std::string& secret) {
  UpstreamErrorBody out;
  simdjson::dom::element root;
  if (upstream_json_parser().parse(body.data(), body.size(), true).get(root)) return out;
  out.code = scrub_secret(error_field(root, "code"), secret);
  out.message = scrub_secret(error_field(root, "message"), secret);
  return out;
}

std::optional<unsigned> parse_retry_after(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  unsigned seconds = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (value.empty() || ptr != value.data() + value.size()) return std::nullopt;
  // A value past what fits is still "stay away for a long time" (the router bounds the hold).
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<unsigned>::max();
  if (ec != std::errc()) return std::nullopt;
  return seconds;
}

}  // namespace tresor::providers
