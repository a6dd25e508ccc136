// What a client sends that the router must not trust (issue 17, item 7): error bodies stay
// valid UTF-8 whatever bytes they quote; an absolute-form target is its origin form, its
// authority taking Host's place (RFC 9112 §3.2.2).
#include <catch2/catch.hpp>

#include <simdjson.h>

#include "server/api_error.h"
#include "server/request_head.h"

using namespace tresor::server;
namespace http = boost::beast::http;

namespace {

bool valid_utf8(const std::string& s) { return simdjson::validate_utf8(s.data(), s.size()); }

HeadParser::value_type head(std::string_view target, unsigned version = 11) {
  HeadParser::value_type req;
  req.method(http::verb::post);
  req.target(target);
  req.version(version);
  return req;
}

}  // namespace

TEST_CASE("utf8_or_replacement: valid text untouched, each bad byte becomes U+FFFD", "[client]") {
  CHECK(utf8_or_replacement("model r\xC3\xA9union \xF0\x9F\x99\x82") == "model r\xC3\xA9union \xF0\x9F\x99\x82");
  CHECK(utf8_or_replacement("a\xFF" "b") == "a\xEF\xBF\xBD" "b");
  CHECK(utf8_or_replacement("cut \xC3") == "cut \xEF\xBF\xBD");                        // truncated
  CHECK(utf8_or_replacement("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");               // overlong "/"
  CHECK(utf8_or_replacement("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  CHECK(utf8_or_replacement("\xF4\x90\x80\x80").find("\xF4") == std::string::npos);    // past U+10FFFF
}

TEST_CASE("error_body is valid UTF-8 JSON whatever the message and param quote", "[client]") {
  const ApiError e = invalid_parameter("field\xFE", "The model 'eu/\xFF\xC3' does not exist");
  const std::string body = error_body(e);
  CHECK(valid_utf8(body));
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(body).get(doc) == simdjson::SUCCESS);
  CHECK(std::string(doc["error"]["message"].get_string().value()) == "The model 'eu/\xEF\xBF\xBD\xEF\xBF\xBD' does not exist");
  CHECK(std::string(doc["error"]["param"].get_string().value()) == "field\xEF\xBF\xBD");
}

TEST_CASE("absolute_form: authority and origin form", "[client]") {
  const auto a = absolute_form("http://example.com:8080/v1/chat/completions?x=1");
  REQUIRE(a);
  CHECK(a->authority == "example.com:8080");
  CHECK(a->origin == "/v1/chat/completions?x=1");
  CHECK(absolute_form("HTTPS://h")->origin == "/");
  CHECK(absolute_form("http://h?q")->origin == "/?q");
  CHECK_FALSE(absolute_form("/v1/models"));
  CHECK_FALSE(absolute_form("ftp://h/x"));
  CHECK_FALSE(absolute_form("*"));
}

TEST_CASE("host_error: the absolute-form authority replaces Host", "[client]") {
  auto req = head("http://gateway.example/v1/chat/completions");
  CHECK_FALSE(host_error(req));  // HTTP/1.1 without Host: the target names the host
  req.set(http::field::host, "other.example");
  CHECK_FALSE(host_error(req));  // ignored (but still one, well-formed)
  CHECK(host_error(head("http://user@h/v1/models")));  // userinfo
  CHECK(host_error(head("http:///v1/models")));        // no host
  CHECK(host_error(head("/v1/models")));               // origin form, HTTP/1.1, no Host
  auto two = head("http://h/v1/models");
  two.insert(http::field::host, "a");
  two.insert(http::field::host, "b");
  CHECK(host_error(two));

  auto rewritten = head("http://h/v1/models?region=eu");
  to_origin_form(rewritten);
  CHECK(rewritten.target() == "/v1/models?region=eu");
}
