// How upstream failures reach the client (spec §3.2, §6.3): the envelope fields, the
// provider key scrubbed out of anything relayed, Retry-After parsing.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <limits>
#include <string>

#include "config/config.h"
#include "server/api_error.h"
#include "providers/error_body.h"
#include "server/upstream_errors.h"

using namespace tresor::server;
using tresor::providers::parse_error_body;
using tresor::providers::parse_retry_after;
using tresor::providers::scrub_secret;

namespace {

const std::string kSecret = "sk-upstream-CANARY-1234";

// What the gateway relays of an upstream 4xx body: providers/ reads and scrubs it, the
// server builds the envelope.
ApiError rejected(unsigned status, const std::string& body) {
  return upstream_rejected(status, parse_error_body(body, kSecret).message);
}

ApiError stream_error(const std::string& event) {
  auto parsed = parse_error_body(event, kSecret);
  return upstream_stream_error(parsed.code, parsed.message);
}

std::string upstream_error_code(const std::string& body) { return parse_error_body(body, kSecret).code; }

// The parsed {"error":{…}} envelope of an ApiError.
boost::json::object envelope(const ApiError& e) { return boost::json::parse(error_body(e)).as_object().at("error").as_object(); }

}  // namespace

TEST_CASE("upstream errors: a relayed 4xx keeps its status and message, without the provider key") {
  const auto e = rejected(422, R"({"error":{"message":"bad key )" + kSecret + R"( for model","code":"invalid_model"}})");
  CHECK(e.status == 422);
  CHECK(e.type == "invalid_request_error");
  CHECK(e.code == "upstream_rejected");
  CHECK(e.message == "bad key [redacted] for model");
  const auto body = error_body(e);
  CHECK(body.find(kSecret) == std::string::npos);
  CHECK(envelope(e).at("param").is_null());
}

TEST_CASE("upstream errors: a 4xx whose body is not an OpenAI error still gets a message naming the status") {
  for (const std::string body : {"", "<html>nope</html>", "{\"error\":42}", "[1,2]"}) {
    const auto e = rejected(404, body);
    CHECK(e.status == 404);
    CHECK(e.message == "The upstream rejected the request (HTTP 404)");
  }
}

TEST_CASE("upstream errors: a top-level message (no error object) is relayed too") {
  const auto e = rejected(400, R"({"message":"too long"})");
  CHECK(e.message == "too long");
}

TEST_CASE("upstream errors: a mid-stream error event keeps the upstream's message and code, scrubbed") {
  const auto e = stream_error(R"({"error":{"message":"overloaded, key )" + kSecret + R"(","code":"server_overloaded"}})");
  CHECK(e.status == 502);
  CHECK(e.type == "upstream_error");
  CHECK(e.code == "server_overloaded");
  CHECK(e.message == "overloaded, key [redacted]");

  const auto garbage = stream_error("not json at all");
  CHECK(garbage.code == "upstream_error");
  CHECK(garbage.message == "The upstream reported an error mid-stream");
}

TEST_CASE("upstream errors: scrub_secret removes every occurrence and caps the relayed text at 1000 bytes") {
  CHECK(scrub_secret("a " + kSecret + " b " + kSecret, kSecret) == "a [redacted] b [redacted]");
  const auto long_text = scrub_secret(std::string(5000, 'x') + kSecret, kSecret);
  CHECK(long_text.size() == 1000);
  CHECK(long_text.find("CANARY") == std::string::npos);
  // A key cut in half by the cap must not leave its first part behind either: it is
  // replaced before the cut.
  const auto at_edge = scrub_secret(std::string(995, 'x') + kSecret, kSecret);
  CHECK(at_edge.find("sk-up") == std::string::npos);
  // An empty or very short key (unset) scrubs nothing rather than every letter.
  CHECK(scrub_secret("abc", "") == "abc");
  CHECK(scrub_secret("abcabc", "a") == "abcabc");
}

TEST_CASE("upstream errors: the fixed answers have the documented status, type and code") {
  const auto check = [](const ApiError& e, unsigned status, const char* type, const char* code) {
    CHECK(e.status == status);
    const auto o = envelope(e);
    CHECK(o.at("type").as_string() == type);
    CHECK(o.at("code").as_string() == code);
    CHECK(!o.at("message").as_string().empty());
  };
  check(upstream_error("connection refused"), 502, "upstream_error", "upstream_error");
  check(upstream_timeout(), 504, "timeout_error", "upstream_timeout");
  check(no_route_available(), 503, "service_unavailable", "no_route_available");
  check(not_found_path(), 404, "invalid_request_error", "not_found");
  check(method_not_allowed(), 405, "invalid_request_error", "method_not_allowed");
  check(internal_error(), 500, "server_error", "internal_error");
  CHECK(error_response(upstream_timeout()).status == 504);
  CHECK(error_response(upstream_timeout()).body == error_body(upstream_timeout()));
}

TEST_CASE("upstream errors: the error code of an upstream body") {
  CHECK(upstream_error_code(R"({"error":{"code":"context_length_exceeded"}})") == "context_length_exceeded");
  CHECK(upstream_error_code(R"({"error":{"code":null}})").empty());
  CHECK(upstream_error_code("{").empty());
}

TEST_CASE("upstream errors: Retry-After takes delta-seconds only") {
  CHECK(parse_retry_after("7") == 7u);
  CHECK(parse_retry_after("  30 ") == 30u);
  CHECK(parse_retry_after("0") == 0u);
  CHECK_FALSE(parse_retry_after(""));
  CHECK_FALSE(parse_retry_after("   "));
  CHECK_FALSE(parse_retry_after("-1"));
  CHECK_FALSE(parse_retry_after("1.5"));
  CHECK_FALSE(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
  CHECK(parse_retry_after("\t12\t") == 12u);
  // Past what fits is still "stay away for long" (router/ bounds the hold), not "no header".
  CHECK(parse_retry_after("99999999999999999999") == std::numeric_limits<unsigned>::max());
}
