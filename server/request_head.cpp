#include "server/request_head.h"

#include <boost/beast/http/error.hpp>

#include <string>

namespace tresor::server {

void limit_head_parser(HeadParser& parser, uint64_t max_header_bytes) {
  parser.header_limit(static_cast<uint32_t>(max_header_bytes));
  parser.body_limit(boost::none);
}

ApiError bad_http(std::string_view what, const boost::system::error_code& ec) {
  return invalid_request("bad_request", std::string(what) + ": " + ec.message());
}

ApiError head_error(const boost::system::error_code& ec, uint64_t max_header_bytes) {
  if (ec == boost::beast::http::error::header_limit)
    return ApiError{431, "invalid_request_error", "request_header_too_large",
                    "Request headers exceed " + std::to_string(max_header_bytes) + " bytes", std::nullopt};
  return bad_http("Malformed HTTP request", ec);
}

RequestHead make_head(const HeadParser::value_type& req) {
  RequestHead head;
  head.method = std::string(req.method_string());
  head.target = std::string(req.target());
  head.headers.reserve(16);
  for (const auto& f : req) head.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return head;
}

}  // namespace tresor::server
