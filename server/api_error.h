// The OpenAI error envelope (spec §6): every error a client sees goes through here.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "server/http_types.h"

namespace tresor::server {

struct ApiError {
  unsigned status = 500;
  std::string type;
  std::string code;
  std::string message;
  std::optional<std::string> param;  // null in the envelope when absent
};

// {"error":{"message":…,"type":…,"code":…,"param":…}}. Always valid UTF-8 JSON: a message
// or param may quote what the client sent (a model name, a header, a part's Content-Type),
// any byte of it, so invalid UTF-8 sequences become U+FFFD here (JSON parsers in Python,
// Go, jose refuse the body otherwise).
std::string error_body(const ApiError& e);
// `text` with each byte that starts no valid UTF-8 sequence (a stray continuation byte, a truncated
// or overlong sequence, a surrogate, a code point past U+10FFFF) replaced by U+FFFD.
std::string utf8_or_replacement(std::string_view text);
// The whole answer: the error's status with error_body.
Response error_response(const ApiError& e);

ApiError invalid_request(std::string code, std::string message, std::optional<std::string> param = {});
// 400 invalid_parameter naming the offending field.
ApiError invalid_parameter(std::string param, std::string message);
ApiError not_found_path();
ApiError method_not_allowed();
ApiError internal_error();

}  // namespace tresor::server
