// The body sent upstream: the client's bytes, with only `model` replaced and the
// Tresor-only fields removed.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <string>
#include <variant>
#include <vector>

#include "providers/openai_adapter.h"
#include "server/chat_request.h"

using tresor::providers::build_chat_body;
using tresor::providers::is_tresor_only_field;
using tresor::providers::JsonMember;

namespace {

// Upstream body for a client body, through the real request parser.
std::string upstream_body(std::string body, std::string_view upstream_model) {
  auto parsed = tresor::server::parse_chat_request(body);
  REQUIRE(std::holds_alternative<tresor::server::ChatRequest>(parsed));
  return build_chat_body(std::get<tresor::server::ChatRequest>(parsed).members, upstream_model);
}

}  // namespace

TEST_CASE("adapter: only failover, region and provider are Tresor-only") {
  CHECK(is_tresor_only_field("failover"));
  CHECK(is_tresor_only_field("region"));
  CHECK(is_tresor_only_field("provider"));
  CHECK_FALSE(is_tresor_only_field("model"));
  CHECK_FALSE(is_tresor_only_field("Region"));
  CHECK_FALSE(is_tresor_only_field("failovers"));
  CHECK_FALSE(is_tresor_only_field("stream_options"));
  CHECK_FALSE(is_tresor_only_field(""));
}

TEST_CASE("adapter: model is replaced in place and every other member is kept byte for byte") {
  const std::string body =
      "{ \"temperature\" : 0.70 ,\n \"model\":\"eu/privatemode/gpt-oss-120b\",\"messages\":[ {\"role\":\"user\","
      "\"content\":\"{\\\"not\\\": [json]}\"} ],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
      "\"parameters\":{\"type\":\"object\",\"properties\":{}}}}], \"seed\":1e2,\"x_unknown\":null}";
  CHECK(upstream_body(body, "openai/gpt-oss-120b") ==
        "{\"temperature\":0.70,\"model\":\"openai/gpt-oss-120b\",\"messages\":[ {\"role\":\"user\","
        "\"content\":\"{\\\"not\\\": [json]}\"} ],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{}}}}],\"seed\":1e2,\"x_unknown\":null}");
}

TEST_CASE("adapter: failover, region and provider are never forwarded") {
  const std::string body =
      R"({"failover":["global/tinfoil/k"],"model":"k","region":"eu","messages":[{"role":"user","content":"hi"}],"provider":"tinfoil","stream":true})";
  CHECK(upstream_body(body, "up/k") ==
        R"({"model":"up/k","messages":[{"role":"user","content":"hi"}],"stream":true})");
}

TEST_CASE("adapter: Tresor-only fields spelled with escapes are dropped too") {
  const std::string body =
      R"({"model":"k","messages":[{"role":"user","content":"hi"}],"f\u0061ilover":["a/b/c"],"regio\u006e":"eu"})";
  CHECK(upstream_body(body, "up") == R"({"model":"up","messages":[{"role":"user","content":"hi"}]})");
}

TEST_CASE("adapter: the upstream model is JSON-escaped") {
  std::vector<JsonMember> members = {{"\"model\"", "model", "\"k\""}};
  CHECK(build_chat_body(members, "a\"b\\c") == R"({"model":"a\"b\\c"})");
  CHECK(build_chat_body(members, "tab\there\nnl") == R"({"model":"tab\there\nnl"})");
  const std::string body = build_chat_body(members, std::string("ctl\x01", 4));
  const auto parsed = boost::json::parse(body);
  CHECK(parsed.at("model").as_string() == std::string("ctl\x01", 4));
  CHECK(build_chat_body(members, "modèle/é") == "{\"model\":\"modèle/é\"}");
}

TEST_CASE("adapter: model is added last when the members have none") {
  std::vector<JsonMember> members = {
      {"\"messages\"", "messages", "[]"},
      {"\"region\"", "region", "\"eu\""},
  };
  CHECK(build_chat_body(members, "up/m") == R"({"messages":[],"model":"up/m"})");
  CHECK(build_chat_body({}, "up/m") == R"({"model":"up/m"})");
  CHECK(build_chat_body({{"\"provider\"", "provider", "\"x\""}}, "q\"") == R"({"model":"q\""})");
}

TEST_CASE("adapter: an escaped model key keeps its spelling and gets the upstream model") {
  const std::string body = R"({"mod\u0065l":"k","messages":[{"role":"user","content":"hi"}]})";
  const std::string out = upstream_body(body, "up/k");
  CHECK(out == R"({"mod\u0065l":"up/k","messages":[{"role":"user","content":"hi"}]})");
  const auto parsed = boost::json::parse(out);
  CHECK(parsed.as_object().size() == 2);
  CHECK(parsed.at("model").as_string() == "up/k");
}

TEST_CASE("adapter: the output is valid JSON for a body with nested and odd members") {
  const std::string body =
      "\r\n\t{\"model\" :\t\"k\" ,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"}]\\\"\"}]}],"
      "\"x\\\"y\":[[],[[]],{\"}\":\"]\"}] , \"n\" : -0.0e-0 , \"t\":true,\"f\":false}\n";
  const std::string out = upstream_body(body, "up");
  const auto parsed = boost::json::parse(out);
  CHECK(parsed.as_object().size() == 6);
  CHECK(out ==
        "{\"model\":\"up\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"}]\\\"\"}]}],"
        "\"x\\\"y\":[[],[[]],{\"}\":\"]\"}],\"n\":-0.0e-0,\"t\":true,\"f\":false}");
}
