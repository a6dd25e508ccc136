#include "server/api_error.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace tresor::server {

std::string error_body(const ApiError& e) {
  boost::json::object inner;
  inner["message"] = e.message;
  inner["type"] = e.type;
  inner["code"] = e.code;
  if (e.param) inner["param"] = *e.param;
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
