#include <catch2/catch.hpp>

#include "providers/openai_adapter.h"
#include "server/chat_request.h"

using namespace tresor;

TEST_CASE("a valid chat body keeps every member's bytes") {
  std::string body = R"({"model":"gpt-oss-120b", "messages":[{"role":"user","content":"hi"}],"x_custom":{"a":[1, 2.50,"\u00e9"]},"failover":["eu/a/b"],"region":"eu"})";
  auto parsed = server::parse_chat_request(body);
  REQUIRE(std::holds_alternative<server::ChatRequest>(parsed));
  auto& req = std::get<server::ChatRequest>(parsed);
  CHECK(req.model == "gpt-oss-120b");
  REQUIRE(req.members.size() == 5);
  CHECK(req.members[2].raw_key == "\"x_custom\"");
  CHECK(req.members[2].raw_value == R"({"a":[1, 2.50,"\u00e9"]})");
  CHECK(providers::build_chat_body(req.members, "up/model") ==
        R"({"model":"up/model","messages":[{"role":"user","content":"hi"}],"x_custom":{"a":[1, 2.50,"\u00e9"]}})");
}
