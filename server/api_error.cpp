#include "server/api_error.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <simdjson.h>

namespace tresor::server {

namespace {

// The length of the valid UTF-8 sequence at the start of `s` (RFC 3629 §4), 0 if none.
size_t utf8_sequence(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if (c == 0xED) n = 3, hi = 0x9F;  // no surrogates
  else if (c >= 0xE1 && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c == 0xF4) n = 4, hi = 0x8F;  // nothing past U+10FFFF
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else return 0;
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i)
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  return n;
}

}  // namespace

std::string utf8_or_replacement(std::string_view text) {
  if (simdjson::validate_utf8(text.data(), text.size())) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  while (!text.empty()) {
    const size_t n = utf8_sequence(text);
    if (n > 0) {
      out.append(text.substr(0, n));
      text.remove_prefix(n);
      continue;
    }
    out += "\xEF\xBF\xBD";  // U+FFFD for this byte
    text.remove_prefix(1);
  }
  return out;
}

std::string error_body(const ApiError& e) {
  boost::json::object inner;
  inner["message"] = utf8_or_replacement(e.message);
  inner["type"] = e.type;
  inner["code"] = e.code;
  if (e.param) inner["param"] = utf8_or_replacement(*e.param);
  else inner["param"] = nullptr;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return boost::json::serialize(outer);
}

Response error_response(const ApiError& e) {
  Response r;
  r.status = e.status;
  r.body = error_body(e);
  return r;
}

ApiError invalid_request(std::string code, std::string message, std::optional<std::string> param) {
  return {400, "invalid_request_error", std::move(code), std::move(message), std::move(param)};
}

ApiError invalid_parameter(std::string param, std::string message) {
  return invalid_request("invalid_parameter", std::move(message), std::move(param));
}

ApiError not_found_path() {
  return {404, "invalid_request_error", "not_found", "Unknown path", std::nullopt};
}

ApiError method_not_allowed() {
  return {405, "invalid_request_error", "method_not_allowed", "Method not allowed on this path",
          std::nullopt};
}

ApiError internal_error() {
  return {500, "server_error", "internal_error", "Internal error", std::nullopt};
}

}  // namespace tresor::server
