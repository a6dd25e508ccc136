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

// ---------------------------------------------------------------------------------
// Validation of hostile and malformed bodies (spec §1.1, errors per §6.3).

#include <optional>
#include <string_view>

namespace {

using server::ApiError;
using server::ChatRequest;

const std::string kMessages = R"([{"role":"user","content":"hi"}])";

// A valid body with `extra` members appended.
std::string body_with(const std::string& extra) {
  return R"({"model":"eu/pm/m","messages":)" + kMessages + (extra.empty() ? "" : "," + extra) + "}";
}

// `body` with a comma before its closing brace. Built by appending: g++ 12 at -O3 reports
// a false -Wrestrict inside libstdc++'s string insert (GCC bug 105329), here and for
// `"literal" + std::string&&`.
std::string with_trailing_comma(const std::string& body) {
  return body.substr(0, body.size() - 1).append(",}");
}

// A body whose messages array is `messages`.
std::string body_messages(const std::string& messages) {
  return R"({"model":"eu/pm/m","messages":)" + messages + "}";
}

// For checks of the outcome only: the result's raw member spans point into the
// destroyed copy of `body`, so only sizes and owned fields may be read.
std::variant<ChatRequest, ApiError> parse(std::string body) { return server::parse_chat_request(body); }

struct BadCase {
  std::string name;
  std::string body;
  std::string code;
  std::optional<std::string> param;
};

void check_rejected(const BadCase& c) {
  INFO("case: " << c.name);
  INFO("body: " << (c.body.size() > 200 ? c.body.substr(0, 200) + "…" : c.body));
  std::string body = c.body;
  const auto result = server::parse_chat_request(body);
  REQUIRE(std::holds_alternative<ApiError>(result));
  const auto& e = std::get<ApiError>(result);
  CHECK(e.status == 400);
  CHECK(e.type == "invalid_request_error");
  CHECK(e.code == c.code);
  CHECK(e.param == c.param);
  CHECK_FALSE(e.message.empty());
}

const ChatRequest& accepted(const std::variant<ChatRequest, ApiError>& result) {
  if (auto* e = std::get_if<ApiError>(&result)) FAIL("rejected: " << e->code << " " << e->message);
  return std::get<ChatRequest>(result);
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

const std::optional<std::string> kNoParam;

}  // namespace

TEST_CASE("chat body: every truncation of a valid body is invalid_json without param") {
  const std::string full =
      R"({"model":"eu/privatemode/gpt-oss-120b","messages":[{"role":"system","content":"Be brief."},)"
      R"({"role":"user","content":[{"type":"text","text":"a \"quoted\" {brace} [bracket] \\ é"}]}],)"
      R"("stream":true,"temperature":0.5,"max_tokens":100,"failover":["global/tinfoil/gpt-oss-120b"],)"
      R"("region":"eu","provider":"privatemode","tools":[{"type":"function","function":{"name":"f",)"
      R"("parameters":{"type":"object","properties":{"x":{"type":["string","null"]}}}}}],"n":null,"seed":-1e-3})";
  REQUIRE(std::holds_alternative<ChatRequest>(parse(full)));
  for (size_t n = 0; n < full.size(); ++n) {
    INFO("truncated to " << n << " bytes");
    const auto result = parse(full.substr(0, n));
    REQUIRE(std::holds_alternative<ApiError>(result));
    const auto& e = std::get<ApiError>(result);
    REQUIRE(e.status == 400);
    REQUIRE(e.code == "invalid_json");
    REQUIRE_FALSE(e.param.has_value());
  }
}

TEST_CASE("chat body: not JSON, or not an object, is invalid_json") {
  const std::vector<BadCase> cases = {
      {"empty body", "", "invalid_json", kNoParam},
      {"whitespace only", " \t\r\n ", "invalid_json", kNoParam},
      {"array", "[]", "invalid_json", kNoParam},
      {"array of the object", std::string("[").append(body_with("")).append("]"), "invalid_json", kNoParam},
      {"null", "null", "invalid_json", kNoParam},
      {"string", R"("{\"model\":\"m\"}")", "invalid_json", kNoParam},
      {"number", "42", "invalid_json", kNoParam},
      {"true", "true", "invalid_json", kNoParam},
      {"lone brace", "{", "invalid_json", kNoParam},
      {"closing brace", "}", "invalid_json", kNoParam},
      {"trailing comma", with_trailing_comma(body_with("")), "invalid_json", kNoParam},
      {"single quotes", R"({'model':'m','messages':[]})", "invalid_json", kNoParam},
      {"missing comma", R"({"model":"m" "messages":[]})", "invalid_json", kNoParam},
      {"unquoted key", R"({model:"m","messages":[]})", "invalid_json", kNoParam},
      {"trailing garbage", body_with("") + " x", "invalid_json", kNoParam},
      {"two objects", body_with("") + body_with(""), "invalid_json", kNoParam},
      {"comment", "/* c */" + body_with(""), "invalid_json", kNoParam},
      {"NaN", body_with(R"("seed":NaN)"), "invalid_json", kNoParam},
      {"leading zero", body_with(R"("seed":01)"), "invalid_json", kNoParam},
      {"raw newline in string", body_with("\"user\":\"a\nb\""), "invalid_json", kNoParam},
      {"bad escape", body_with(R"("user":"\q")"), "invalid_json", kNoParam},
      {"NUL byte", body_with("") + std::string(1, '\0'), "invalid_json", kNoParam},
  };
  for (const auto& c : cases) check_rejected(c);
}

TEST_CASE("chat body: deep nesting is invalid_json, not a crash") {
  check_rejected({"100000 [", std::string(100000, '['), "invalid_json", kNoParam});
  check_rejected({"100000 [ closed", std::string(100000, '[') + std::string(100000, ']'), "invalid_json", kNoParam});
  check_rejected({"100000 {\"a\":", repeat(R"({"a":)", 100000), "invalid_json", kNoParam});
  check_rejected({"200 levels in a pass-through field",
                  body_with(R"("x":)" + std::string(200, '[') + std::string(200, ']')), "invalid_json", kNoParam});
  check_rejected({"200 levels in messages",
                  body_messages(R"([{"role":"user","content":)" + std::string(200, '[') + std::string(200, ']') + "}]"),
                  "invalid_json", kNoParam});
}

TEST_CASE("chat body: nesting a real tool schema needs is accepted") {
  const auto r = parse(body_with(R"("tools":)" + std::string(60, '[') + std::string(60, ']')));
  CHECK(accepted(r).members.size() == 3);
}

TEST_CASE("chat body: invalid UTF-8 is invalid_json") {
  const char* bad_bytes[] = {"\xff", "\xfe", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xe2\x82", "\x80",
                             "\xf4\x90\x80\x80", "a\xc3"};
  for (const char* b : bad_bytes) {
    check_rejected({"in a content string", body_messages(std::string(R"([{"role":"user","content":")") + b + "\"}]"),
                    "invalid_json", kNoParam});
    check_rejected({"in the model", std::string(R"({"model":"eu/pm/)") + b + R"(","messages":)" + kMessages + "}",
                    "invalid_json", kNoParam});
    check_rejected({"in a key", body_with(std::string("\"x") + b + "\":1"), "invalid_json", kNoParam});
  }
  // Valid multi-byte UTF-8 passes.
  CHECK(accepted(parse(body_messages(R"([{"role":"user","content":"é € 𝄞 日本"}])"))).members.size() == 2);
}

TEST_CASE("chat body: duplicate top-level members are invalid_json") {
  const std::vector<BadCase> cases = {
      {"model twice", R"({"model":"a/b/c","messages":)" + kMessages + R"(,"model":"x/y/z"})", "invalid_json", kNoParam},
      {"messages twice", body_with(R"("messages":[])"), "invalid_json", kNoParam},
      {"pass-through twice", body_with(R"("seed":1,"seed":2)"), "invalid_json", kNoParam},
      {"failover twice", body_with(R"("failover":[],"failover":["a/b/c"])"), "invalid_json", kNoParam},
      {"model twice, once escaped", body_with(R"("mod\u0065l":"x/y/z")"), "invalid_json", kNoParam},
      {"region twice, once escaped", body_with(R"("region":"eu","\u0072egion":"us")"), "invalid_json", kNoParam},
  };
  for (const auto& c : cases) check_rejected(c);
  // Nested objects may repeat keys of the top level.
  CHECK(accepted(parse(body_with(R"("metadata":{"model":"a","messages":1})"))).members.size() == 3);
}

TEST_CASE("chat body: missing model or messages is missing_required_parameter") {
  const std::vector<BadCase> cases = {
      {"empty object", "{}", "missing_required_parameter", "model"},
      {"no model", R"({"messages":)" + kMessages + "}", "missing_required_parameter", "model"},
      {"no messages", R"({"model":"eu/pm/m"})", "missing_required_parameter", "messages"},
      {"messages misspelt", R"({"model":"eu/pm/m","message":)" + kMessages + "}", "missing_required_parameter",
       "messages"},
      {"model misspelt", R"({"Model":"eu/pm/m","messages":)" + kMessages + "}", "missing_required_parameter", "model"},
  };
  for (const auto& c : cases) check_rejected(c);
}

TEST_CASE("chat body: wrong types and values of core fields are invalid_parameter with their param") {
  const std::vector<BadCase> cases = {
      {"model number", R"({"model":5,"messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"model null", R"({"model":null,"messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"model array", R"({"model":["a/b/c"],"messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"model object", R"({"model":{},"messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"model bool", R"({"model":true,"messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"model empty", R"({"model":"","messages":)" + kMessages + "}", "invalid_parameter", "model"},
      {"messages string", body_messages(R"("hi")"), "invalid_parameter", "messages"},
      {"messages object", body_messages(R"({"role":"user","content":"hi"})"), "invalid_parameter", "messages"},
      {"messages null", body_messages("null"), "invalid_parameter", "messages"},
      {"messages number", body_messages("1"), "invalid_parameter", "messages"},
      {"messages empty", body_messages("[]"), "invalid_parameter", "messages"},
      {"message string", body_messages(R"(["hi"])"), "invalid_parameter", "messages[0]"},
      {"message null", body_messages("[null]"), "invalid_parameter", "messages[0]"},
      {"message array", body_messages(R"([["user","hi"]])"), "invalid_parameter", "messages[0]"},
      {"second message number", body_messages(R"([{"role":"user","content":"a"},7])"), "invalid_parameter",
       "messages[1]"},
      {"role number", body_messages(R"([{"role":1,"content":"hi"}])"), "invalid_parameter", "messages[0].role"},
      {"role null", body_messages(R"([{"role":null,"content":"hi"}])"), "invalid_parameter", "messages[0].role"},
      {"role array", body_messages(R"([{"role":["user"],"content":"hi"}])"), "invalid_parameter", "messages[0].role"},
      {"third role object",
       body_messages(R"([{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":{},"content":"x"}])"),
       "invalid_parameter", "messages[2].role"},
      {"content number", body_messages(R"([{"role":"user","content":5}])"), "invalid_parameter", "messages[0].content"},
      {"content bool", body_messages(R"([{"role":"user","content":false}])"), "invalid_parameter",
       "messages[0].content"},
      {"content object", body_messages(R"([{"role":"user","content":{"text":"hi"}}])"), "invalid_parameter",
       "messages[0].content"},
      {"stream string", body_with(R"("stream":"true")"), "invalid_parameter", "stream"},
      {"stream number", body_with(R"("stream":1)"), "invalid_parameter", "stream"},
      {"stream array", body_with(R"("stream":[true])"), "invalid_parameter", "stream"},
      {"temperature below 0", body_with(R"("temperature":-0.1)"), "invalid_parameter", "temperature"},
      {"temperature above 2", body_with(R"("temperature":2.0001)"), "invalid_parameter", "temperature"},
      {"temperature 3", body_with(R"("temperature":3)"), "invalid_parameter", "temperature"},
      {"temperature -1", body_with(R"("temperature":-1)"), "invalid_parameter", "temperature"},
      {"temperature huge integer", body_with(R"("temperature":18446744073709551615)"), "invalid_parameter",
       "temperature"},
      {"temperature string", body_with(R"("temperature":"1")"), "invalid_parameter", "temperature"},
      {"temperature bool", body_with(R"("temperature":true)"), "invalid_parameter", "temperature"},
      {"temperature null", body_with(R"("temperature":null)"), "invalid_parameter", "temperature"},
      {"temperature array", body_with(R"("temperature":[1])"), "invalid_parameter", "temperature"},
      {"max_tokens 0", body_with(R"("max_tokens":0)"), "invalid_parameter", "max_tokens"},
      {"max_tokens -1", body_with(R"("max_tokens":-1)"), "invalid_parameter", "max_tokens"},
      {"max_tokens 1.5", body_with(R"("max_tokens":1.5)"), "invalid_parameter", "max_tokens"},
      {"max_tokens 1.0", body_with(R"("max_tokens":1.0)"), "invalid_parameter", "max_tokens"},
      {"max_tokens 1e3", body_with(R"("max_tokens":1e3)"), "invalid_parameter", "max_tokens"},
      {"max_tokens string", body_with(R"("max_tokens":"10")"), "invalid_parameter", "max_tokens"},
      {"max_tokens null", body_with(R"("max_tokens":null)"), "invalid_parameter", "max_tokens"},
      {"max_tokens 2^63", body_with(R"("max_tokens":9223372036854775808)"), "invalid_parameter", "max_tokens"},
      {"max_tokens 2^64-1", body_with(R"("max_tokens":18446744073709551615)"), "invalid_parameter", "max_tokens"},
      {"region number", body_with(R"("region":1)"), "invalid_parameter", "region"},
      {"region null", body_with(R"("region":null)"), "invalid_parameter", "region"},
      {"region array", body_with(R"("region":["eu"])"), "invalid_parameter", "region"},
      {"provider number", body_with(R"("provider":1)"), "invalid_parameter", "provider"},
      {"provider object", body_with(R"("provider":{"name":"x"})"), "invalid_parameter", "provider"},
  };
  for (const auto& c : cases) check_rejected(c);
}

TEST_CASE("chat body: numbers beyond double or 64-bit integer range are invalid_json wherever they are") {
  const char* values[] = {"1e999", "-1e999", "99999999999999999999999", "18446744073709551616",
                          "-9223372036854775809"};
  for (const char* v : values) {
    const std::string value = v;
    check_rejected({"temperature " + value, body_with(R"("temperature":)" + value), "invalid_json", kNoParam});
    check_rejected({"max_tokens " + value, body_with(R"("max_tokens":)" + value), "invalid_json", kNoParam});
    check_rejected({"pass-through seed " + value, body_with(R"("seed":)" + value), "invalid_json", kNoParam});
    check_rejected({"inside a tool schema " + value,
                    body_with(R"("tools":[{"type":"function","function":{"name":"f","parameters":{"maximum":)" + value +
                              "}}}]"),
                    "invalid_json", kNoParam});
  }
}

TEST_CASE("chat body: representable numbers in pass-through fields are forwarded as spelt") {
  for (const char* value : {"0.0000000000000000000000000000000000000001", "-0", "1E+2", "12345678901234567890",
                            "-9223372036854775808", "1.7976931348623157e308", "2.50"}) {
    INFO("seed: " << value);
    std::string body = body_with(std::string(R"("seed":)") + value);
    const auto r = server::parse_chat_request(body);
    const auto& req = accepted(r);
    REQUIRE(req.members.size() == 3);
    CHECK(req.members[2].raw_value == value);
  }
}

TEST_CASE("chat body: a message without a role is a missing required parameter") {
  check_rejected({"no role", body_messages(R"([{"content":"hi"}])"), "missing_required_parameter",
                  "messages[0].role"});
  check_rejected({"second message without role", body_messages(R"([{"role":"user","content":"a"},{"content":"b"}])"),
                  "missing_required_parameter", "messages[1].role"});
}

TEST_CASE("chat body: bad failover is invalid_failover with param failover") {
  const std::vector<BadCase> cases = {
      {"6 entries", body_with(R"("failover":["a/b/c","a/b/d","a/b/e","a/b/f","a/b/g","a/b/h"])"), "invalid_failover",
       "failover"},
      {"number entry", body_with(R"("failover":[5])"), "invalid_failover", "failover"},
      {"null entry", body_with(R"("failover":[null])"), "invalid_failover", "failover"},
      {"nested array entry", body_with(R"("failover":[["a/b/c"]])"), "invalid_failover", "failover"},
      {"object entry", body_with(R"("failover":[{"id":"a/b/c"}])"), "invalid_failover", "failover"},
      {"good then bad entry", body_with(R"("failover":["a/b/c",1])"), "invalid_failover", "failover"},
      {"bare key entry", body_with(R"("failover":["gpt-oss-120b"])"), "invalid_failover", "failover"},
      {"two segments", body_with(R"("failover":["eu/gpt-oss-120b"])"), "invalid_failover", "failover"},
      {"four segments", body_with(R"("failover":["eu/pm/a/b"])"), "invalid_failover", "failover"},
      {"empty segment", body_with(R"("failover":["eu//m"])"), "invalid_failover", "failover"},
      {"empty string", body_with(R"("failover":[""])"), "invalid_failover", "failover"},
      {"space in a segment", body_with(R"("failover":["eu/p m/x"])"), "invalid_failover", "failover"},
      {"single bare string", body_with(R"("failover":"gpt-oss-120b")"), "invalid_failover", "failover"},
      {"object", body_with(R"("failover":{})"), "invalid_failover", "failover"},
      {"number", body_with(R"("failover":5)"), "invalid_failover", "failover"},
      {"bool", body_with(R"("failover":true)"), "invalid_failover", "failover"},
  };
  for (const auto& c : cases) check_rejected(c);
}

TEST_CASE("chat body: failover accepted forms") {
  {
    const auto r = parse(body_with(R"("failover":"EU/PrivateMode/Kimi-K2")"));
    const auto& req = accepted(r);
    REQUIRE(req.failover.size() == 1);
    CHECK(req.failover[0].str() == "eu/privatemode/Kimi-K2");
  }
  {
    const auto r = parse(body_with(R"("failover":[])"));
    CHECK(accepted(r).failover.empty());
  }
  {
    const auto r = parse(body_with(R"("failover":["a/b/c","auto/auto/k","eu/auto/k","A/B/C","x/y/z"])"));
    const auto& req = accepted(r);
    REQUIRE(req.failover.size() == 5);
    CHECK(req.failover[0].str() == "a/b/c");
    CHECK(req.failover[1].str() == "auto/auto/k");
    CHECK(req.failover[2].str() == "eu/auto/k");
    CHECK(req.failover[3].str() == "a/b/C");
    CHECK(req.failover[4].str() == "x/y/z");
  }
}

TEST_CASE("chat body: boundary values of core fields are accepted") {
  for (const char* extra : {R"("temperature":0)", R"("temperature":2)", R"("temperature":2.0)", R"("temperature":0.0)",
                            R"("temperature":1.3)", R"("temperature":-0.0)", R"("temperature":2e0)",
                            R"("max_tokens":1)", R"("max_tokens":4096)", R"("max_tokens":9223372036854775807)",
                            R"("stream":false)", R"("stream":true)", R"("region":"")", R"("provider":"tinfoil")"}) {
    INFO("member: " << extra);
    const auto r = parse(body_with(extra));
    CHECK(accepted(r).members.size() == 3);
  }
}

TEST_CASE("chat body: messages in every documented shape are accepted") {
  const std::string messages =
      R"([{"role":"system","content":"s"},{"role":"developer","content":"d"},)"
      R"({"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:x"}}]},)"
      R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},)"
      R"({"role":"tool","tool_call_id":"c1","content":"42"},{"role":"assistant"},{"role":"custom-role","content":""}])";
  std::string body = body_messages(messages);
  const auto r = server::parse_chat_request(body);
  const auto& req = accepted(r);
  REQUIRE(req.members.size() == 2);
  CHECK(req.members[1].raw_value == messages);
}

TEST_CASE("chat body: the parsed fields reach the request") {
  const auto r = parse(body_with(
      R"("stream":true,"stream_options":{"include_usage":true},"region":"EU","provider":"TinFoil","failover":["a/b/c"])"));
  const auto& req = accepted(r);
  CHECK(req.model == "eu/pm/m");
  CHECK(req.stream);
  CHECK(req.include_usage);
  CHECK(req.region == std::optional<std::string>("EU"));
  CHECK(req.provider == std::optional<std::string>("TinFoil"));
  REQUIRE(req.failover.size() == 1);

  const auto plain = parse(body_with(""));
  const auto& p = accepted(plain);
  CHECK_FALSE(p.stream);
  CHECK_FALSE(p.include_usage);
  CHECK_FALSE(p.region);
  CHECK_FALSE(p.provider);
  CHECK(p.failover.empty());

  const auto escaped = parse(R"({"model":"eu\/pm\/m\u00e9","messages":)" + kMessages + "}");
  CHECK(accepted(escaped).model == "eu/pm/mé");
}

TEST_CASE("chat body: an invalid_json error has a null param in the envelope") {
  const auto r = parse("{");
  REQUIRE(std::holds_alternative<ApiError>(r));
  const std::string envelope = server::error_body(std::get<ApiError>(r));
  CHECK(envelope.find(R"("code":"invalid_json")") != std::string::npos);
  CHECK(envelope.find(R"("param":null)") != std::string::npos);
  CHECK(envelope.find(R"("type":"invalid_request_error")") != std::string::npos);
}

// ---------------------------------------------------------------------------------
// Raw member spans: exactly the client's bytes, whatever the layout.

namespace {

struct Member {
  std::string raw_key, key, raw_value;
  bool operator==(const Member&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Member& m) {
  return os << "{" << m.raw_key << " | " << m.key << " | " << m.raw_value << "}";
}

std::vector<Member> members_of(std::string body) {
  const auto r = server::parse_chat_request(body);
  const auto& req = accepted(r);
  std::vector<Member> out;
  for (const auto& m : req.members) out.push_back({std::string(m.raw_key), m.key, std::string(m.raw_value)});
  return out;
}

}  // namespace

TEST_CASE("chat body: raw spans with odd whitespace everywhere") {
  const std::string body =
      " \r\n\t{ \n\t\"model\"\r\n:\t \"eu/pm/m\"\n ,\r\n\"messages\" : [ { \"role\" : \"user\" , \"content\" : \"hi\" } ]"
      "\t,\"n\"\n:\n-12.5e+3\r\n,\"t\" :true ,\"z\": null\n}\n\t ";
  const std::vector<Member> expected = {
      {"\"model\"", "model", "\"eu/pm/m\""},
      {"\"messages\"", "messages", "[ { \"role\" : \"user\" , \"content\" : \"hi\" } ]"},
      {"\"n\"", "n", "-12.5e+3"},
      {"\"t\"", "t", "true"},
      {"\"z\"", "z", "null"},
  };
  CHECK(members_of(body) == expected);
}

TEST_CASE("chat body: raw spans with escaped keys") {
  const std::string body = R"({"x\"y":1,"model":"eu/pm/m","a\\":"b\\","\u006dessages":)" + kMessages +
                           R"(,"\\\"":{"k":"v"},"é\/":[]})";
  const std::vector<Member> expected = {
      {R"("x\"y")", "x\"y", "1"},
      {R"("model")", "model", R"("eu/pm/m")"},
      {R"("a\\")", "a\\", R"("b\\")"},
      {R"("\u006dessages")", "messages", kMessages},
      {R"("\\\"")", "\\\"", R"({"k":"v"})"},
      {R"("é\/")", "é/", "[]"},
  };
  CHECK(members_of(body) == expected);
}

TEST_CASE("chat body: raw spans of strings holding braces, brackets and escaped quotes") {
  const std::string body = R"({"model":"eu/pm/m","messages":[{"role":"user","content":"}]\"{[\\"}],)"
                           R"("s":"}","t":"]","u":"\"}\"","v":"\\","w":{"a":"}}}","b":["]]]","\"]"]},"x":"{"})";
  const std::vector<Member> expected = {
      {R"("model")", "model", R"("eu/pm/m")"},
      {R"("messages")", "messages", R"([{"role":"user","content":"}]\"{[\\"}])"},
      {R"("s")", "s", R"("}")"},
      {R"("t")", "t", R"("]")"},
      {R"("u")", "u", R"("\"}\"")"},
      {R"("v")", "v", R"("\\")"},
      {R"("w")", "w", R"({"a":"}}}","b":["]]]","\"]"]})"},
      {R"("x")", "x", R"("{")"},
  };
  CHECK(members_of(body) == expected);
}

TEST_CASE("chat body: raw spans of nested arrays and objects") {
  const std::string nested = R"([[[]],[[1,[2,[3]]],{"a":[{"b":[[]]}]}],[],{},[{}],[[[[[["deep"]]]]]]])";
  const std::string body =
      R"({"model":"eu/pm/m","nested":)" + nested + R"(,"messages":)" + kMessages + R"(,"e":{},"f":[],"g":[{}]})";
  const std::vector<Member> expected = {
      {R"("model")", "model", R"("eu/pm/m")"},
      {R"("nested")", "nested", nested},
      {R"("messages")", "messages", kMessages},
      {R"("e")", "e", "{}"},
      {R"("f")", "f", "[]"},
      {R"("g")", "g", "[{}]"},
  };
  CHECK(members_of(body) == expected);
}

TEST_CASE("chat body: raw spans are views into the caller's body") {
  std::string body = body_with(R"("x":[1, 2])");
  const auto r = server::parse_chat_request(body);
  const auto& req = accepted(r);
  REQUIRE(req.members.size() == 3);
  for (const auto& m : req.members) {
    CHECK(m.raw_key.data() >= body.data());
    CHECK(m.raw_value.data() + m.raw_value.size() <= body.data() + body.size());
  }
  CHECK(req.members[2].raw_value == "[1, 2]");
  CHECK(body == body_with(R"("x":[1, 2])"));  // contents unchanged
}

TEST_CASE("chat body: a UTF-8 byte order mark is refused or skipped, never mis-scanned") {
  std::string body = "\xEF\xBB\xBF" + body_with(R"("x":1)");
  const auto r = server::parse_chat_request(body);
  if (const auto* e = std::get_if<ApiError>(&r)) {
    CHECK(e->code == "invalid_json");
  } else {
    const auto& req = std::get<ChatRequest>(r);
    REQUIRE(req.members.size() == 3);
    CHECK(req.members[0].raw_key == "\"model\"");
    CHECK(req.members[0].raw_value == "\"eu/pm/m\"");
    CHECK(req.members[2].raw_value == "1");
  }
}

TEST_CASE("chat body: a large valid body keeps exact spans") {
  const std::string big(300000, 'x');
  std::string body = body_messages(R"([{"role":"user","content":")" + big + R"("}])");
  const auto r = server::parse_chat_request(body);
  const auto& req = accepted(r);
  REQUIRE(req.members.size() == 2);
  CHECK(req.members[1].raw_value == R"([{"role":"user","content":")" + big + R"("}])");
}
