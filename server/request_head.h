// The pure part of reading a request head (phase 1 of the session): how Beast's parser
// is limited, what a failed read answers, and the socket-free RequestHead made from a
// parsed head. Apart from the session so that tests/fuzz/fuzz_request_head.cpp runs the
// very same code on hostile bytes.
#pragma once

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>

#include "server/api_error.h"
#include "server/http_types.h"

namespace tresor::server {

using HeadParser = boost::beast::http::request_parser<boost::beast::http::empty_body>;

// server.max_header_bytes bounds the head; the body limit is left off here because the
// body is checked against server.max_body_bytes only after authentication.
void limit_head_parser(HeadParser& parser, uint64_t max_header_bytes);

// The answer to a head that could not be read: 431 request_header_too_large when over the
// limit, else 400 bad_request (malformed HTTP, ambiguous framing such as Content-Length
// with chunked). The connection is closed after it.
ApiError head_error(const boost::system::error_code& ec, uint64_t max_header_bytes);

// 431 request_header_too_large when the whole head is over max_header_bytes. Beast 1.81
// applies header_limit to the request line and to the field block separately (it never
// deducts the line), so a head it accepts can be up to twice the limit; this counts the
// head as sent (line, names, values, separators) and refuses the rest.
std::optional<ApiError> oversized_head(const HeadParser::value_type& req, uint64_t max_header_bytes);

// Request smuggling: framing that another HTTP hop could read differently is refused
// (400 bad_request, then close) rather than interpreted (RFC 9112 §6.1, §6.3). Beast
// already refuses Content-Length with chunked, differing Content-Lengths and malformed
// ones. It accepts, and this refuses: a repeated Content-Length, even with the same value
// (as nginx does), or a list of equal ones; any Transfer-Encoding other than one "chunked"
// (Beast reads "xchunked", "chunked, identity" or "identity" as "no body" and would then
// parse the body as the next request); Transfer-Encoding in HTTP/1.0.
// nullopt when the framing is unambiguous.
std::optional<ApiError> framing_error(const HeadParser::value_type& req);

// RFC 9112 §3.2.2: the parts of an absolute-form request target ("http://host/path?q",
// scheme case-insensitive, http or https): its authority, and the origin form it stands
// for ("/path?q"; "/" when the path is empty). nullopt for any other target.
struct AbsoluteTarget {
  std::string_view authority;
  std::string origin;
};
std::optional<AbsoluteTarget> absolute_form(std::string_view target);

// An absolute-form target is served like its origin form: the target is rewritten to it,
// so routing and every endpoint see "/v1/...". Its authority took Host's place in
// host_error (RFC 9112 §3.2.2).
void to_origin_form(HeadParser::value_type& req);

// RFC 9112 §3.2: 400 bad_request for an HTTP/1.1 request without Host, for any request
// with more than one Host, and for a Host that is not a uri-host[:port]. With an
// absolute-form target the target's authority is the host (§3.2.2): it must be a
// host[:port] (no userinfo, not empty) and Host may then be absent; a Host that is sent is
// still checked (one, well-formed: a hop in front may read it). The router never
// reads Host (the upstream's comes from the config), but a hop in front of it may route
// by it: two Hosts, or a URL as Host, are read differently by different parsers.
// nullopt when Host is acceptable.
std::optional<ApiError> host_error(const HeadParser::value_type& req);

// The first reason to refuse a head Beast has parsed, in this order: oversized_head (431),
// framing_error, host_error (400). nullopt: the session goes on with it.
std::optional<ApiError> head_refusal(const HeadParser::value_type& req, uint64_t max_header_bytes);

// 400 bad_request naming what failed (`what`: "Malformed HTTP request", ...).
ApiError bad_http(std::string_view what, const boost::system::error_code& ec);

// The head as the endpoint handlers see it: names as sent, in arrival order.
RequestHead make_head(const HeadParser::value_type& req);

}  // namespace tresor::server
