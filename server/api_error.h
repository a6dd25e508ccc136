// The OpenAI error envelope (spec §6): every error a client sees goes through here.
#pragma once

#include <optional>
#include <string>

#include "server/http_types.h"

namespace tresor::server {

struct ApiError {
  unsigned status = 500;
  std::string type;
  std::string code;
  std::string message;
  std::optional<std::string> param;  // null in the envelope when absent
};

// {"error":{"message":…,"type":…,"code":…,"param":…}}
std::string error_body(const ApiError& e);
// The whole answer: the error's status with error_body.
Response error_response(const ApiError& e);

ApiError invalid_request(std::string code, std::string message, std::optional<std::string> param = {});
// 400 invalid_parameter naming the offending field.
ApiError invalid_parameter(std::string param, std::string message);
ApiError not_found_path();
ApiError method_not_allowed();
ApiError internal_error();

}  // namespace tresor::server
