// POST /v1/chat/completions validation as the endpoint runs it: parse_chat_request
// (server/chat_request.h: JSON, UTF-8, depth, model, stream, stream_options, failover,
// region/provider hints), route resolution against a small fixed config, then the body
// forwarded upstream (providers::build_chat_body) for every candidate.
// Input: the request body.
// Properties: a refusal is a 4xx error envelope that is valid JSON; an accepted request
// forwards valid JSON whose "model" is the route's upstream model; no refusal or
// resolution message carries the provider's key (unless the client sent that text).
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <cctype>
#include <string>

#include "providers/openai_adapter.h"
#include "server/chat_request.h"
#include "tests/fuzz/fixed_config.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

constexpr std::string_view kProviderKey = "sk-canary-provider";  // fixed_config()'s pm key

boost::json::value parse_json(std::string_view text) {
  boost::json::parse_options opts;
  opts.max_depth = 4 * server::kMaxJsonDepth;  // Boost.JSON's default (32) is below ours
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec, {}, opts);
  FUZZ_CHECK(!ec);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  const std::string original = body;
  auto parsed = server::parse_chat_request(body);
  FUZZ_CHECK(body == original);  // padding capacity only: the bytes are the receipt's hash
  if (const auto* err = std::get_if<server::ApiError>(&parsed)) {
    FUZZ_CHECK(err->status >= 400 && err->status < 500);
    FUZZ_CHECK(!err->code.empty() && !err->type.empty());
    const auto response = server::error_response(*err);
    FUZZ_CHECK(response.status == err->status);
    const auto envelope = parse_json(response.body);
    FUZZ_CHECK(envelope.is_object() && envelope.as_object().contains("error"));
    if (original.find(kProviderKey) == std::string::npos)
      FUZZ_CHECK(response.body.find(kProviderKey) == std::string::npos);
    return 0;
  }
  const auto& req = std::get<server::ChatRequest>(parsed);
  FUZZ_CHECK(!req.model.empty());
  FUZZ_CHECK(req.failover.size() <= server::kMaxFailoverEntries);
  router::RouteHints hints;
  if (req.region) hints.region = *req.region;
  if (req.provider) hints.provider = *req.provider;
  const auto resolved = router::resolve_routes(tresor::fuzz::fixed_config(), req.model, hints,
                                               config::RouteType::chat, req.failover);
  // Messages echo the client's model string (region and provider lower-cased); the key
  // must come from nowhere else.
  std::string lowered = original;
  for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lowered.find(kProviderKey) == std::string::npos)
    FUZZ_CHECK(resolved.message.find(kProviderKey) == std::string::npos);
  if (!resolved.resolution) return 0;
  for (const auto* route : resolved.resolution->candidates) {
    const std::string upstream = providers::build_chat_body(req.members, route->upstream_model);
    const auto forwarded = parse_json(upstream);
    FUZZ_CHECK(forwarded.is_object());
    const auto* model = forwarded.as_object().if_contains("model");
    FUZZ_CHECK(model && model->is_string() && model->as_string() == route->upstream_model);
  }
  return 0;
}
