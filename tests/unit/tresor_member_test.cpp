// The `tresor` object on responses: its exact bytes and where it goes.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <string>

#include "server/tresor_member.h"

using tresor::server::append_tresor_member;
using tresor::server::tresor_object_json;
using tresor::server::TresorInfo;

namespace {

const std::string kTresor =
    R"({"receipt_id":"r-1","requested_route":"auto/auto/k","routed_model":"eu/pm/k","failover":false})";

}  // namespace

TEST_CASE("tresor object: fields in the documented order") {
  TresorInfo info;
  info.receipt_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
  info.requested_route = "eu/privatemode/kimi-k2.6";
  info.routed_model = "global/chutes/kimi-k2.6";
  info.failover = true;
  CHECK(tresor_object_json(info) ==
        R"({"receipt_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","requested_route":"eu/privatemode/kimi-k2.6",)"
        R"("routed_model":"global/chutes/kimi-k2.6","failover":true})");
}

TEST_CASE("tresor object: receipt_id is omitted when there is no receipt") {
  TresorInfo info;
  info.requested_route = "auto/auto/k";
  info.routed_model = "eu/pm/k";
  CHECK(tresor_object_json(info) == R"({"requested_route":"auto/auto/k","routed_model":"eu/pm/k","failover":false})");
}

TEST_CASE("tresor object: route strings are JSON-escaped") {
  TresorInfo info;
  info.receipt_id = "a\"b";
  info.requested_route = "eu/pm/we\\ird";
  info.routed_model = std::string("eu/pm/\x01\n", 8);
  const std::string out = tresor_object_json(info);
  CHECK(out.find("\"receipt_id\":\"a\\\"b\"") != std::string::npos);
  CHECK(out.find("\"requested_route\":\"eu/pm/we\\\\ird\"") != std::string::npos);
  const auto parsed = boost::json::parse(out);
  CHECK(parsed.at("routed_model").as_string() == std::string("eu/pm/\x01\n", 8));
  CHECK(parsed.at("receipt_id").as_string() == "a\"b");
}

TEST_CASE("tresor member: appended as the last member as the exact bytes ,\"tresor\":{…}") {
  std::string json = R"({"id":"chatcmpl-1","object":"chat.completion","usage":{"total_tokens":3}})";
  const std::string original = json;
  REQUIRE(append_tresor_member(json, kTresor));
  CHECK(json == original.substr(0, original.size() - 1) + ",\"tresor\":" + kTresor + "}");
  // A client removes exactly these bytes to get the upstream body back.
  const std::string member = ",\"tresor\":" + kTresor;
  const auto at = json.find(member);
  REQUIRE(at != std::string::npos);
  CHECK(json.substr(0, at) + json.substr(at + member.size()) == original);
  CHECK(boost::json::parse(json).as_object().size() == 4);
}

TEST_CASE("tresor member: an empty object gets the member without a comma") {
  std::string json = "{}";
  REQUIRE(append_tresor_member(json, kTresor));
  CHECK(json == "{\"tresor\":" + kTresor + "}");

  std::string spaced = "{ \n }";
  REQUIRE(append_tresor_member(spaced, kTresor));
  CHECK(spaced == "{\"tresor\":" + kTresor + " \n }");
  CHECK(boost::json::parse(spaced).as_object().size() == 1);
}

TEST_CASE("tresor member: whitespace around and inside the object is kept") {
  std::string json = "\n {\"id\": \"x\" ,\n  \"n\": [1, 2] \n}\r\n";
  REQUIRE(append_tresor_member(json, kTresor));
  CHECK(json == "\n {\"id\": \"x\" ,\n  \"n\": [1, 2],\"tresor\":" + kTresor + " \n}\r\n");
  CHECK(boost::json::parse(json).as_object().contains("tresor"));
}

TEST_CASE("tresor member: braces inside the last string value do not confuse it") {
  std::string json = R"({"content":"}{ \"}\" ]"})";
  REQUIRE(append_tresor_member(json, kTresor));
  CHECK(json == R"({"content":"}{ \"}\" ]","tresor":)" + kTresor + "}");
}

TEST_CASE("tresor member: anything but an object is refused and left unchanged") {
  const char* cases[] = {"", "   ", "[]", "[{}]", "[{\"a\":1}]", "\"{}\"", "null", "1", "true", "\n[1]\n"};
  for (const char* c : cases) {
    std::string json = c;
    INFO("json: '" << c << "'");
    CHECK_FALSE(append_tresor_member(json, kTresor));
    CHECK(json == c);
  }
}
