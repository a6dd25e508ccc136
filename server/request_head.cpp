#include "server/request_head.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <string>

namespace tresor::server {

void limit_head_parser(HeadParser& parser, uint64_t max_header_bytes) {
  parser.header_limit(static_cast<uint32_t>(max_header_bytes));
  parser.body_limit(boost::none);
}

ApiError bad_http(std::string_view what, const boost::system::error_code& ec) {
  return invalid_request("bad_request", std::string(what) + ": " + ec.message());
}

namespace {

ApiError header_too_large(uint64_t max_header_bytes) {
  return ApiError{431, "invalid_request_error", "request_header_too_large",
                  "Request headers exceed " + std::to_string(max_header_bytes) + " bytes", std::nullopt};
}

// 400 bad_request for a head Beast parsed but the router refuses (framing, Host).
ApiError malformed(std::string_view why) {
  return invalid_request("bad_request", "Malformed HTTP request: " + std::string(why));
}

}  // namespace

ApiError head_error(const boost::system::error_code& ec, uint64_t max_header_bytes) {
  if (ec == boost::beast::http::error::header_limit) return header_too_large(max_header_bytes);
  return bad_http("Malformed HTTP request", ec);
}

std::optional<ApiError> oversized_head(const HeadParser::value_type& req, uint64_t max_header_bytes) {
  // "METHOD SP target SP HTTP/1.1 CRLF", then "name: value CRLF" per field, then CRLF.
  uint64_t bytes = req.method_string().size() + 1 + req.target().size() + 1 + 8 + 2 + 2;
  for (const auto& f : req) bytes += f.name_string().size() + 2 + f.value().size() + 2;
  if (bytes <= max_header_bytes) return std::nullopt;
  return header_too_large(max_header_bytes);
}

std::optional<ApiError> framing_error(const HeadParser::value_type& req) {
  size_t lengths = 0;
  size_t encodings = 0;
  for (const auto& f : req) {
    if (f.name() == boost::beast::http::field::content_length) {
      ++lengths;
      const auto v = f.value();
      if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return malformed("Content-Length is not one number");  // Beast takes "5, 5" as 5
    }
    if (f.name() == boost::beast::http::field::transfer_encoding) {
      ++encodings;
      if (!boost::beast::iequals(f.value(), "chunked"))
        return malformed("unsupported Transfer-Encoding (only chunked is accepted)");
    }
  }
  if (lengths > 1) return malformed("repeated Content-Length");
  if (encodings > 1) return malformed("repeated Transfer-Encoding");
  if (encodings > 0 && req.version() < 11) return malformed("Transfer-Encoding in an HTTP/1.0 request");
  return std::nullopt;
}

namespace {

// uri-host [":" port]: reg-name, IPv4 or an [IP-literal] (RFC 3986 §3.2.2); nothing that
// makes it a URL (scheme, path, userinfo) or a list.
bool host_and_port(std::string_view v) {
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-._~%!$&'()*+;=:[]").find(c) != std::string_view::npos;
  });
}

}  // namespace

std::optional<AbsoluteTarget> absolute_form(std::string_view target) {
  size_t scheme = 0;
  if (target.size() >= 7 && boost::beast::iequals(target.substr(0, 7), "http://")) scheme = 7;
  else if (target.size() >= 8 && boost::beast::iequals(target.substr(0, 8), "https://")) scheme = 8;
  else return std::nullopt;
  const std::string_view rest = target.substr(scheme);
  const size_t end = std::min(rest.find_first_of("/?#"), rest.size());
  AbsoluteTarget t;
  t.authority = rest.substr(0, end);
  const std::string_view path = rest.substr(end);
  t.origin = path.empty() || path.front() != '/' ? "/" + std::string(path) : std::string(path);
  return t;
}

void to_origin_form(HeadParser::value_type& req) {
  if (auto t = absolute_form(req.target())) req.target(t->origin);
}

std::optional<ApiError> host_error(const HeadParser::value_type& req) {
  const auto absolute = absolute_form(req.target());
  if (absolute && (absolute->authority.empty() || !host_and_port(absolute->authority)))
    return malformed("the request target's authority is not a host[:port]");
  size_t hosts = 0;
  for (const auto& f : req) {
    if (f.name() != boost::beast::http::field::host) continue;
    if (++hosts > 1) return malformed("more than one Host header");
    if (!host_and_port(f.value())) return malformed("Host is not a host[:port]");
  }
  if (hosts == 0 && req.version() >= 11 && !absolute) return malformed("an HTTP/1.1 request needs a Host header");
  return std::nullopt;
}

std::optional<ApiError> head_refusal(const HeadParser::value_type& req, uint64_t max_header_bytes) {
  if (auto refused = oversized_head(req, max_header_bytes)) return refused;
  if (auto refused = framing_error(req)) return refused;
  return host_error(req);
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
