#include "server/chat_request.h"

#include "common/json_members.h"
#include "common/http_text.h"
#include "common/json_text.h"

#include <boost/beast/core/string.hpp>

#include <simdjson.h>

#include <cmath>
#include <set>

namespace tresor::server {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

ApiError invalid_json(std::string message) {
  return invalid_request("invalid_json", std::move(message));
}

simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    if (p.allocate(64 * 1024, kMaxJsonDepth) != simdjson::SUCCESS) throw std::bad_alloc();
    return p;
  }();
  return parser;
}

std::optional<ApiError> validate_messages(element messages) {
  if (!messages.is_array())
    return invalid_parameter("messages", "messages must be a non-empty array of message objects");
  size_t i = 0;
  for (element msg : messages.get_array()) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) return invalid_parameter(where, where + " must be an object");
    element role;
    if (msg["role"].get(role) != simdjson::SUCCESS)
      return invalid_request("missing_required_parameter", where + ".role is required", where + ".role");
    if (!role.is_string()) return invalid_parameter(where + ".role", where + ".role must be a string");
    element content;
    if (msg["content"].get(content) == simdjson::SUCCESS && !content.is_string() &&
        !content.is_array() && !content.is_null())
      return invalid_parameter(where + ".content", where + ".content must be a string, an array or null");
    ++i;
  }
  if (i == 0) return invalid_parameter("messages", "messages must not be empty");
  return std::nullopt;
}

std::optional<ApiError> parse_failover(element value, ChatRequest& out) {
  auto bad = [](const std::string& message) {
    return invalid_request("invalid_failover", message, std::string("failover"));
  };
  auto add = [&](element entry) -> std::optional<ApiError> {
    std::string_view id;
    if (entry.get(id) != simdjson::SUCCESS) return bad("failover entries must be strings");
    auto parsed = router::parse_compound_id(id);
    if (!parsed)
      return bad("failover entry '" + std::string(id) + "' is not a route id region/provider/model_key");
    out.failover.push_back(std::move(*parsed));
    return std::nullopt;
  };
  if (value.is_string()) return add(value);  // S1 documents the type as "string"
  if (!value.is_array()) return bad("failover must be an array of route ids");
  if (value.get_array().size() > kMaxFailoverEntries)
    return bad("failover accepts at most " + std::to_string(kMaxFailoverEntries) + " routes");
  for (element entry : value.get_array())
    if (auto err = add(entry)) return err;
  return std::nullopt;
}

// The client's stream_options with include_usage true: its other members (e.g.
// include_obfuscation) kept, minified.
std::string stream_options_with_usage(simdjson::dom::object options) {
  std::string out = R"({"include_usage":true)";
  for (auto [key, value] : options) {
    if (key == "include_usage") continue;
    out += ',';
    common::append_json_string(out, key);
    out += ':';
    out += simdjson::minify(value);
  }
  out += '}';
  return out;
}

}  // namespace

std::optional<ApiError> check_chat_content_type(std::string_view content_type) {
  const std::string_view media = common::trim_ows(content_type.substr(0, content_type.find(';')));
  if (content_type.empty() || boost::beast::iequals(media, "application/json")) return std::nullopt;
  return invalid_json("Content-Type must be application/json");
}

std::variant<ChatRequest, ApiError> parse_chat_request(std::string& body) {
  body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  auto& parser = thread_parser();
  element root;
  const auto error = parser.parse(body.data(), body.size(), false).get(root);
  if (error == simdjson::DEPTH_ERROR)
    return invalid_json("request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  if (error == simdjson::UTF8_ERROR) return invalid_json("request body is not valid UTF-8");
  // RFC 8259 §9 lets a parser limit number range: ours is IEEE double and 64-bit
  // integers, anywhere in the body (pass-through fields included).
  if (error == simdjson::NUMBER_ERROR)
    return invalid_json("request body holds a number outside the double / 64-bit integer range");
  if (error) return invalid_json(std::string("request body is not valid JSON: ") + simdjson::error_message(error));
  if (!root.is_object()) return invalid_json("request body must be a JSON object");

  ChatRequest req;
  std::set<std::string_view> seen;
  bool has_model = false, has_messages = false;
  std::optional<int64_t> max_tokens, max_completion_tokens;
  for (auto [key, value] : root.get_object()) {
    // Duplicate members are ambiguous (which one would an upstream honour?): reject.
    if (!seen.insert(key).second)
      return invalid_json("duplicate member '" + std::string(key) + "' in request body");
    if (key == "model") {
      std::string_view model;
      if (value.get(model) || model.empty())
        return invalid_parameter("model", "model must be a non-empty string");
      req.model = std::string(model);
      has_model = true;
    } else if (key == "messages") {
      if (auto err = validate_messages(value)) return *err;
      has_messages = true;
    } else if (key == "stream") {
      if (value.get(req.stream)) return invalid_parameter("stream", "stream must be a boolean");
    } else if (key == "temperature") {
      double t;
      if (!value.is_number() || value.get(t) || !std::isfinite(t) || t < 0 || t > 2)
        return invalid_parameter("temperature", "temperature must be a number between 0 and 2");
    } else if (key == "max_tokens") {
      int64_t n;
      if (!value.is_int64() || value.get(n) || n <= 0) {
        // 5e2 or 1.0 are numbers but not integers; uint64 beyond int64 is absurd here.
        return invalid_parameter("max_tokens", "max_tokens must be a positive integer");
      }
      max_tokens = n;
    } else if (key == "max_completion_tokens" || key == "n") {
      // Read for the reservation only; forwarded as sent (the upstream judges them).
      int64_t n;
      if (value.is_int64() && !value.get(n) && n > 0) (key == "n" ? req.choices : max_completion_tokens.emplace()) = n;
    } else if (key == "failover") {
      if (auto err = parse_failover(value, req)) return *err;
    } else if (key == "region" || key == "provider") {
      std::string_view hint;
      if (value.get(hint)) return invalid_parameter(std::string(key), std::string(key) + " must be a string");
      (key == "region" ? req.region : req.provider) = std::string(hint);
    } else if (key == "stream_options") {
      bool include = false;
      if (value.is_object() && value["include_usage"].get(include) == simdjson::SUCCESS)
        req.include_usage = include;
      if (value.is_object()) req.upstream_stream_options = stream_options_with_usage(value.get_object());
    }
  }
  // max_completion_tokens supersedes the deprecated max_tokens (OpenAI).
  req.max_output_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
  if (req.upstream_stream_options.empty()) req.upstream_stream_options = R"({"include_usage":true})";
  if (!has_model) return invalid_request("missing_required_parameter", "model is required", std::string("model"));
  if (!has_messages)
    return invalid_request("missing_required_parameter", "messages is required", std::string("messages"));
  common::scan_top_level_members(body, root.get_object(), req.members);
  return req;
}

}  // namespace tresor::server
