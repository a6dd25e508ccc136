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

// ---- build_prefill_body (issue 18: continuing a cut stream by assistant prefill) ----

namespace {

std::string prefill_body(std::string body, std::string_view text, bool continue_final_message,
                         std::string_view stream_options = {}) {
  auto parsed = tresor::server::parse_chat_request(body);
  REQUIRE(std::holds_alternative<tresor::server::ChatRequest>(parsed));
  const std::string out = tresor::providers::build_prefill_body(
      std::get<tresor::server::ChatRequest>(parsed).members, "up", stream_options, text, continue_final_message);
  INFO(out);
  CHECK_NOTHROW(boost::json::parse(out));
  return out;
}

// The same for members given directly (the request parser refuses an empty messages array,
// but the adapter must still cope with one).
std::string prefill_members(std::vector<JsonMember> members, std::string_view text, bool continue_final_message,
                            std::string_view stream_options = {}) {
  const std::string out =
      tresor::providers::build_prefill_body(members, "up", stream_options, text, continue_final_message);
  INFO(out);
  CHECK_NOTHROW(boost::json::parse(out));
  return out;
}

}  // namespace

TEST_CASE("adapter: prefill appends the delivered text as an assistant message", "[adapter][prefill]") {
  CHECK(prefill_body(R"({"model":"k","messages":[{"role":"user","content":"hi"}],"stream":true})", "Hel", false) ==
        R"({"model":"up","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Hel"}],"stream":true})");
}

TEST_CASE("adapter: prefill copes with whitespace inside messages and with an empty array", "[adapter][prefill]") {
  CHECK(prefill_body("{\"model\":\"k\",\"messages\": [ {\"role\":\"user\",\"content\":\"]\"} \n ] }", "x", false) ==
        "{\"model\":\"up\",\"messages\":[ {\"role\":\"user\",\"content\":\"]\"} \n ,{\"role\":\"assistant\",\"content\":\"x\"}]}");
  CHECK(prefill_members({{"\"model\"", "model", "\"k\""}, {"\"messages\"", "messages", "[\n\t]"}}, "x", false) ==
        "{\"model\":\"up\",\"messages\":[\n\t{\"role\":\"assistant\",\"content\":\"x\"}]}");
  CHECK(prefill_members({{"\"model\"", "model", "\"k\""}, {"\"messages\"", "messages", "[]"}}, "x", false) ==
        R"({"model":"up","messages":[{"role":"assistant","content":"x"}]})");
}

TEST_CASE("adapter: prefill JSON-escapes the delivered text", "[adapter][prefill]") {
  static constexpr char kText[] = "a\"b\\c\nd\te\x01 caf\xc3\xa9 </s>";
  const std::string text(kText, sizeof kText - 1);
  const std::string out = prefill_body(R"({"model":"k","messages":[{"role":"user","content":"q"}]})", text, false);
  const auto parsed = boost::json::parse(out).as_object();
  const auto& messages = parsed.at("messages").as_array();
  REQUIRE(messages.size() == 2);
  CHECK(messages[1].as_object().at("role").as_string() == "assistant");
  CHECK(std::string(messages[1].as_object().at("content").as_string()) == text);
  CHECK(out.find(R"("content":"a\"b\\c\nd\te\u0001 caf)") != std::string::npos);
}

TEST_CASE("adapter: continue_final_message adds vLLM's two members and replaces the client's", "[adapter][prefill]") {
  CHECK(prefill_body(R"({"model":"k","messages":[{"role":"user","content":"q"}]})", "A", true) ==
        R"({"model":"up","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A"}],)"
        R"("continue_final_message":true,"add_generation_prompt":false})");
  const std::string out = prefill_body(
      R"({"continue_final_message":false,"model":"k","add_generation_prompt":true,"messages":[{"role":"user","content":"q"}]})",
      "A", true);
  CHECK(out ==
        R"({"model":"up","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A"}],)"
        R"("continue_final_message":true,"add_generation_prompt":false})");
  const auto parsed = boost::json::parse(out).as_object();
  CHECK(parsed.at("continue_final_message").as_bool());
  CHECK_FALSE(parsed.at("add_generation_prompt").as_bool());
  // assistant_message style leaves a client's members of those names alone.
  CHECK(prefill_body(R"({"model":"k","add_generation_prompt":true,"messages":[{"role":"user","content":"q"}]})",
                     "A", false) ==
        R"({"model":"up","add_generation_prompt":true,"messages":[{"role":"user","content":"q"},)"
        R"({"role":"assistant","content":"A"}]})");
}

TEST_CASE("adapter: prefill keeps the stream options the gateway adds", "[adapter][prefill]") {
  const std::string out = prefill_body(R"({"model":"k","messages":[{"role":"user","content":"q"}],"stream":true})", "A", false,
                                       R"({"include_usage":true})");
  CHECK(boost::json::parse(out).as_object().at("stream_options").as_object().at("include_usage").as_bool());
  CHECK(out.find(R"({"role":"assistant","content":"A"}])") != std::string::npos);
}
