// Validation of a POST /v1/chat/completions body (spec §1.1) with simdjson.
//
// The body is validated completely (DOM: structure, UTF-8, depth) and its top-level
// members are kept as raw byte spans so the adapter can forward them unchanged.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "providers/openai_adapter.h"
#include "router/route_resolution.h"
#include "server/api_error.h"

namespace tresor::server {

// Nesting deeper than this is rejected (400 invalid_json): real requests, tool schemas
// included, stay far below it, and it bounds the parser's work on hostile input.
inline constexpr size_t kMaxJsonDepth = 128;
// At most this many failover entries (spec §1.1).
inline constexpr size_t kMaxFailoverEntries = 5;

struct ChatRequest {
  std::string model;
  bool stream = false;
  bool include_usage = false;
  // What the upstream gets as stream_options on a stream: the client's members with
  // include_usage forced on ({"include_usage":true} when the client sent none).
  std::string upstream_stream_options;
  // The answer's output bound: max_completion_tokens, else max_tokens (nullopt: neither).
  std::optional<int64_t> max_output_tokens;
  int64_t choices = 1;  // n
  std::optional<std::string> region;
  std::optional<std::string> provider;
  std::vector<router::RouteId> failover;
  // Views into the body passed to parse_chat_request: keep that string alive and
  // unmodified while these are used.
  std::vector<providers::JsonMember> members;
};

// The request's Content-Type (spec §1.1, §6.3): `application/json` with any parameters
// in any letter case, or none at all (curl -d without -H, older clients), is accepted;
// anything else is 400 invalid_json naming the expected type, before the body is read.
std::optional<ApiError> check_chat_content_type(std::string_view content_type);

// `body` gets padding capacity appended (simdjson reads past the end); its contents
// are not changed.
std::variant<ChatRequest, ApiError> parse_chat_request(std::string& body);

}  // namespace tresor::server
