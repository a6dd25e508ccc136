// Continuing a client's chat stream from another attempt (issue 18, spec18 "Mid-stream
// recovery"): DeliveredAnswer keeps what the client has, StreamSeam lets through only what
// the new attempt adds. Chunks are shaped as the gateway's decoder hands them on: one line
// of JSON, id/object/created/model present, choice 0 only.
//
// Every replay case also checks the property a client sees: the text it had, followed by
// the text forwarded after the seam, is exactly the new attempt's whole text.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "providers/stream_seam.h"

using tresor::providers::DeliveredAnswer;
using tresor::providers::StreamSeam;
using Mode = StreamSeam::Mode;
using Verdict = StreamSeam::Verdict;

namespace Catch {
template <>
struct StringMaker<Verdict> {
  static std::string convert(Verdict v) {
    switch (v) {
      case Verdict::drop: return "drop";
      case Verdict::forward: return "forward";
      case Verdict::diverged: return "diverged";
    }
    return "?";
  }
};
}  // namespace Catch

namespace {

// The first attempt's identity (what the client has) and the new attempt's.
constexpr std::string_view kFirst = R"("id":"chatcmpl-A","object":"chat.completion.chunk","created":100,"model":"m-a")";
constexpr std::string_view kSecond =
    R"("id":"chatcmpl-B","object":"chat.completion.chunk","created":200,"model":"m-b","system_fingerprint":"fp_b")";

// A chunk as an upstream streams it (choice 0 with logprobs, as OpenAI sends them).
std::string chunk(std::string_view identity, std::string_view delta, std::string_view finish = "null") {
  std::string out = "{";
  out += identity;
  out += R"(,"choices":[{"index":0,"delta":)";
  out += delta;
  out += R"(,"logprobs":null,"finish_reason":)";
  out += finish;
  out += "}]}";
  return out;
}
std::string first(std::string_view delta, std::string_view finish = "null") { return chunk(kFirst, delta, finish); }
std::string second(std::string_view delta, std::string_view finish = "null") { return chunk(kSecond, delta, finish); }
std::string usage_only(std::string_view identity) {
  return "{" + std::string(identity) +
         R"(,"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})";
}

// What the client sees for the first chunk of the new attempt that is rewritten to its
// remainder: the first attempt's identity, the new chunk's other members.
std::string rewritten(std::string_view delta, std::string_view finish = "null") {
  return "{" + std::string(kFirst) + R"(,"system_fingerprint":"fp_b","choices":[{"index":0,"delta":)" +
         std::string(delta) + R"(,"finish_reason":)" + std::string(finish) + "}]}";
}
// A chunk after the seam, passed through with the first attempt's identity.
std::string passed(std::string_view delta, std::string_view finish = "null") {
  return "{" + std::string(kFirst) + R"(,"system_fingerprint":"fp_b","choices":[{"index":0,"delta":)" +
         std::string(delta) + R"(,"logprobs":null,"finish_reason":)" + std::string(finish) + "}]}";
}

DeliveredAnswer delivered_from(const std::vector<std::string>& chunks) {
  DeliveredAnswer d;
  for (const auto& c : chunks) d.note(c);
  return d;
}

struct SeamRun {
  std::vector<Verdict> verdicts;
  std::vector<std::string> forwarded;
  bool diverged = false;
};

// Feeds the new attempt's chunks until the end or a divergence (where the caller stops).
SeamRun run(const DeliveredAnswer& delivered, Mode mode, const std::vector<std::string>& replay) {
  StreamSeam seam(delivered, mode);
  SeamRun out;
  for (const auto& c : replay) {
    std::string json = c;
    const Verdict v = seam.accept(json);
    out.verdicts.push_back(v);
    if (v == Verdict::diverged) {
      out.diverged = true;
      break;
    }
    if (v == Verdict::forward) {
      INFO(json);
      CHECK_NOTHROW(boost::json::parse(json));
      CHECK(json.find('\n') == std::string::npos);  // one SSE data line
      out.forwarded.push_back(json);
    }
  }
  return out;
}

// The text of one field of choice 0 over `chunks`: "content", "reasoning_content",
// "tool_calls.<i>.arguments" / ".name".
std::string text_of(const std::vector<std::string>& chunks, std::string_view field) {
  std::string out;
  for (const auto& c : chunks) {
    const auto v = boost::json::parse(c);
    const auto& choices = v.as_object().at("choices").as_array();
    for (const auto& choice : choices) {
      const auto* delta = choice.as_object().if_contains("delta");
      if (!delta || !delta->is_object()) continue;
      const auto& d = delta->as_object();
      if (field.rfind("tool_calls.", 0) == 0) {
        const auto dot = field.find('.', 11);
        const int64_t index = std::stoll(std::string(field.substr(11, dot - 11)));
        const std::string member(field.substr(dot + 1));
        const auto* calls = d.if_contains("tool_calls");
        if (!calls || !calls->is_array()) continue;
        for (const auto& call : calls->as_array()) {
          if (call.as_object().at("index").as_int64() != index) continue;
          const auto* fn = call.as_object().if_contains("function");
          if (!fn) continue;
          if (const auto* s = fn->as_object().if_contains(member); s && s->is_string()) out += s->as_string();
        }
        continue;
      }
      if (const auto* s = d.if_contains(field); s && s->is_string()) out += s->as_string();
    }
  }
  return out;
}

std::vector<std::string> joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The seam's property: what the client had + what was forwarded == the replay's text.
void check_seamless(const std::vector<std::string>& delivered, const SeamRun& r,
                    const std::vector<std::string>& replay, std::string_view field) {
  INFO("field " << field);
  CHECK(text_of(delivered, field) + text_of(r.forwarded, field) == text_of(replay, field));
}

// Every forwarded chunk carries the first attempt's identity.
void check_identity(const SeamRun& r) {
  for (const auto& f : r.forwarded) {
    INFO(f);
    const auto o = boost::json::parse(f).as_object();
    CHECK(o.at("id").as_string() == "chatcmpl-A");
    CHECK(o.at("created").as_int64() == 100);
    CHECK(o.at("model").as_string() == "m-a");
    CHECK(o.at("object").as_string() == "chat.completion.chunk");
  }
}

const std::string kRole = R"({"role":"assistant","content":""})";

}  // namespace

// ---- DeliveredAnswer -------------------------------------------------------------

TEST_CASE("seam: DeliveredAnswer keeps the client's text per field, its finish and its tool calls",
          "[stream_seam]") {
  DeliveredAnswer d;
  CHECK(d.plain_content());
  CHECK(d.text_bytes() == 0);
  d.note(first(kRole));
  d.note(first(R"({"content":"caf\u00e9 \"x\"\n"})"));
  CHECK(d.content() == "caf\xc3\xa9 \"x\"\n");
  CHECK(d.text_bytes() == 10);  // bytes of the unescaped UTF-8 text
  CHECK(d.plain_content());
  CHECK_FALSE(d.finished());
  d.note(first(R"({"reasoning_content":"hm"})"));
  CHECK_FALSE(d.plain_content());
  CHECK(d.text_bytes() == 12);
  d.note(first("{}", R"("stop")"));
  CHECK(d.finished());

  DeliveredAnswer tools;
  tools.note(first(R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"f","arguments":""}}]})"));
  CHECK_FALSE(tools.plain_content());  // a tool call cannot be prefilled as content
  CHECK(tools.text_bytes() == 1);
  CHECK(tools.content().empty());

  DeliveredAnswer junk;
  junk.note("not json");
  junk.note(R"({"choices":"x"})");
  CHECK(junk.text_bytes() == 0);
}

// ---- replay: the seam in the middle of a chunk -------------------------------------

TEST_CASE("seam: replay split differently — the straddling chunk is cut to the remainder, later chunks pass",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(kRole), first(R"({"content":"Hel"})"), first(R"({"content":"lo wo"})")};
  const DeliveredAnswer d = delivered_from(had);
  const std::vector<std::string> replay = {
      second(kRole),
      second(R"({"content":"He"})"),
      second(R"({"content":"llo"})"),
      second(R"({"content":" world"})"),  // " wo" the client has, "rld" it lacks
      second(R"({"content":"!"})"),
      second("{}", R"("stop")"),
      usage_only(kSecond),
  };
  const SeamRun r = run(d, Mode::replay, replay);
  CHECK_FALSE(r.diverged);
  CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::drop, Verdict::drop, Verdict::forward,
                                           Verdict::forward, Verdict::forward, Verdict::forward});
  REQUIRE(r.forwarded.size() == 4);
  CHECK(r.forwarded[0] == rewritten(R"({"content":"rld"})"));
  CHECK(r.forwarded[1] == passed(R"({"content":"!"})"));
  CHECK(r.forwarded[2] == passed("{}", R"("stop")"));
  CHECK(r.forwarded[3] ==
        "{" + std::string(kFirst) +
            R"(,"system_fingerprint":"fp_b","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})");
  check_seamless(had, r, replay, "content");
  CHECK(text_of(joined(had, r.forwarded), "content") == "Hello world!");
  check_identity(r);
}

TEST_CASE("seam: replay whose chunk ends exactly at the seam, then a chunk beyond it", "[stream_seam]") {
  const std::vector<std::string> had = {first(R"({"content":"Hello"})")};
  const DeliveredAnswer d = delivered_from(had);
  const std::vector<std::string> replay = {second(R"({"role":"assistant","content":"Hello"})"),
                                           second(R"({"content":" there"})"), second("{}", R"("length")")};
  StreamSeam seam(d, Mode::replay);
  std::string c0 = replay[0];
  CHECK(seam.accept(c0) == Verdict::drop);
  CHECK_FALSE(seam.caught_up());
  std::string c1 = replay[1];
  CHECK(seam.accept(c1) == Verdict::forward);
  CHECK(seam.caught_up());
  CHECK(c1 == rewritten(R"({"content":" there"})"));
  std::string c2 = replay[2];
  CHECK(seam.accept(c2) == Verdict::forward);
  CHECK(c2 == passed("{}", R"("length")"));
}

TEST_CASE("seam: one replay chunk holding the whole delivered text and more", "[stream_seam]") {
  const std::vector<std::string> had = {first(R"({"content":"a"})"), first(R"({"content":"b"})"),
                                        first(R"({"content":"c"})")};
  const DeliveredAnswer d = delivered_from(had);
  const std::vector<std::string> replay = {second(R"({"role":"assistant","content":"abcdef"})", R"("stop")")};
  const SeamRun r = run(d, Mode::replay, replay);
  REQUIRE(r.forwarded.size() == 1);
  CHECK(r.forwarded[0] == rewritten(R"({"content":"def"})", R"("stop")"));
  check_seamless(had, r, replay, "content");
}

// ---- replay: UTF-8 and JSON escapes across the seam --------------------------------

TEST_CASE("seam: escapes and multibyte UTF-8 are compared as text, not as JSON spelling", "[stream_seam]") {
  SECTION("\\n, \\\" and \\u00e9 straddling the seam") {
    const std::vector<std::string> had = {first(R"({"content":"Line1\nSay \"caf"})")};
    const std::vector<std::string> replay = {second(R"({"content":"Line1\nSay \"caf\u00e9\" ok\n"})")};
    const SeamRun r = run(delivered_from(had), Mode::replay, replay);
    REQUIRE(r.forwarded.size() == 1);
    // The remainder is re-escaped: \" and \n as escapes, é as its UTF-8 bytes.
    CHECK(r.forwarded[0] == rewritten("{\"content\":\"\xc3\xa9\\\" ok\\n\"}"));
    check_seamless(had, r, replay, "content");
  }
  SECTION("the client got \\u00e9 escaped, the replay sends the raw bytes") {
    const std::vector<std::string> had = {first(R"({"content":"caf\u00e9"})")};
    const std::vector<std::string> replay = {second("{\"content\":\"caf\xc3\xa9!\"}")};
    const SeamRun r = run(delivered_from(had), Mode::replay, replay);
    REQUIRE(r.forwarded.size() == 1);
    CHECK(r.forwarded[0] == rewritten(R"({"content":"!"})"));
    check_seamless(had, r, replay, "content");
  }
  SECTION("a surrogate pair (4-byte UTF-8) delivered whole, the replay splits before it") {
    const std::vector<std::string> had = {first(R"({"content":"a\ud83d\ude00"})")};
    const std::vector<std::string> replay = {second(R"({"content":"a"})"), second("{\"content\":\"\xf0\x9f\x98\x80 b\"}")};
    const SeamRun r = run(delivered_from(had), Mode::replay, replay);
    REQUIRE(r.forwarded.size() == 1);
    CHECK(r.forwarded[0] == rewritten(R"({"content":" b"})"));
    check_seamless(had, r, replay, "content");
  }
  SECTION("a control character \\u0001 is re-escaped") {
    const std::vector<std::string> had = {first(R"({"content":"x"})")};
    const std::vector<std::string> replay = {second(R"({"content":"x\u0001\ty"})")};
    const SeamRun r = run(delivered_from(had), Mode::replay, replay);
    REQUIRE(r.forwarded.size() == 1);
    CHECK(r.forwarded[0] == rewritten(R"({"content":"\u0001\ty"})"));
    check_seamless(had, r, replay, "content");
  }
  SECTION("é against è (same first byte) is a divergence") {
    const SeamRun r = run(delivered_from({first(R"({"content":"caf\u00e9"})")}), Mode::replay,
                          {second(R"({"content":"caf\u00e8 noir"})")});
    CHECK(r.diverged);
    CHECK(r.forwarded.empty());
  }
}

// ---- replay: divergence ------------------------------------------------------------

TEST_CASE("seam: a replay whose text differs from the client's is diverged, in any field", "[stream_seam]") {
  SECTION("content, inside the delivered text") {
    const SeamRun r = run(delivered_from({first(R"({"content":"Hello"})")}), Mode::replay,
                          {second(kRole), second(R"({"content":"Hel"})"), second(R"({"content":"p me"})")});
    CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::drop, Verdict::diverged});
    CHECK(r.forwarded.empty());
  }
  SECTION("content, in the chunk that straddles the seam") {
    const SeamRun r = run(delivered_from({first(R"({"content":"Hello"})")}), Mode::replay,
                          {second(R"({"content":"Help!"})")});
    CHECK(r.diverged);
  }
  SECTION("reasoning_content") {
    const SeamRun r = run(delivered_from({first(R"({"reasoning_content":"Think A"})")}), Mode::replay,
                          {second(R"({"reasoning_content":"Think B, then"})")});
    CHECK(r.diverged);
  }
  SECTION("tool-call arguments") {
    const std::string call =
        R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}]})";
    const SeamRun r = run(delivered_from({first(call), first(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Par"}}]})")}),
                          Mode::replay,
                          {second(call), second(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Lon"}}]})")});
    CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::diverged});
  }
  SECTION("tool-call name") {
    const SeamRun r = run(
        delivered_from({first(R"({"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}]})")}),
        Mode::replay,
        {second(R"({"tool_calls":[{"index":0,"id":"call_B","type":"function","function":{"name":"get_time","arguments":""}}]})")});
    CHECK(r.diverged);
  }
  SECTION("a replay that finishes before reproducing the delivered text") {
    const SeamRun r = run(delivered_from({first(R"({"content":"Hello world"})")}), Mode::replay,
                          {second(kRole), second(R"({"content":"Hello"})"), second("{}", R"("stop")")});
    CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::drop, Verdict::diverged});
  }
  SECTION("a replay whose last content and finish share a chunk, short of the delivered text") {
    const SeamRun r = run(delivered_from({first(R"({"content":"Hello world"})")}), Mode::replay,
                          {second(R"({"content":"Hello"})", R"("stop")")});
    CHECK(r.diverged);
  }
  SECTION("new content while the client's reasoning is not yet reproduced") {
    const SeamRun r = run(delivered_from({first(R"({"reasoning_content":"Let me think"})")}), Mode::replay,
                          {second(R"({"reasoning_content":"Let me"})"), second(R"({"content":"Answer"})")});
    CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::diverged});
    CHECK(r.forwarded.empty());
  }
  SECTION("new reasoning while the client's content is not yet reproduced") {
    const SeamRun r = run(delivered_from({first(R"({"reasoning_content":"R"})"), first(R"({"content":"Answer"})")}),
                          Mode::replay, {second(R"({"reasoning_content":"R"})"), second(R"({"content":"Ans"})"),
                                         second(R"({"reasoning_content":" more"})")});
    CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::drop, Verdict::diverged});
  }
}

TEST_CASE("seam: reasoning then content, both reproduced: only the new content goes out", "[stream_seam]") {
  const std::vector<std::string> had = {first(kRole), first(R"({"reasoning_content":"Let me "})"),
                                        first(R"({"reasoning_content":"think"})"), first(R"({"content":"Ans"})")};
  const std::vector<std::string> replay = {second(kRole), second(R"({"reasoning_content":"Let me think"})"),
                                           second(R"({"content":"Answer"})"), second(R"({"content":" 42"})"),
                                           second("{}", R"("stop")")};
  const SeamRun r = run(delivered_from(had), Mode::replay, replay);
  CHECK_FALSE(r.diverged);
  REQUIRE(r.forwarded.size() == 3);
  CHECK(r.forwarded[0] == rewritten(R"({"content":"wer"})"));
  CHECK(r.forwarded[1] == passed(R"({"content":" 42"})"));
  check_seamless(had, r, replay, "content");
  check_seamless(had, r, replay, "reasoning_content");
  check_identity(r);
}

// ---- replay: tool calls ------------------------------------------------------------

TEST_CASE("seam: tool calls — the client's call id is kept, a new call index passes with its own id",
          "[stream_seam]") {
  const std::vector<std::string> had = {
      first(R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
      first(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]})"),
  };
  const DeliveredAnswer d = delivered_from(had);
  CHECK_FALSE(d.plain_content());
  const std::vector<std::string> replay = {
      second(R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_B","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
      second(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Par"}}]})"),
      second(R"({"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]})"),
      second(R"({"tool_calls":[{"index":1,"id":"call_B1","type":"function","function":{"name":"get_time","arguments":""}}]})"),
      second(R"({"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]})"),
      second("{}", R"("tool_calls")"),
  };
  const SeamRun r = run(d, Mode::replay, replay);
  CHECK_FALSE(r.diverged);
  CHECK(r.verdicts.front() == Verdict::drop);  // the replay's call_B is not the client's call
  REQUIRE(r.forwarded.size() == 5);
  // The remainder names the call by index only: the client's id (call_A) stands.
  CHECK(r.forwarded[0] == rewritten(R"({"tool_calls":[{"index":0,"function":{"arguments":"\"Par"}}]})"));
  CHECK(r.forwarded[1] == passed(R"({"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]})"));
  CHECK(r.forwarded[2] ==
        passed(R"({"tool_calls":[{"index":1,"id":"call_B1","type":"function","function":{"name":"get_time","arguments":""}}]})"));
  for (const auto& f : r.forwarded) CHECK(f.find("call_B\"") == std::string::npos);
  check_seamless(had, r, replay, "tool_calls.0.arguments");
  check_seamless(had, r, replay, "tool_calls.0.name");
  check_seamless(had, r, replay, "tool_calls.1.name");
  check_seamless(had, r, replay, "tool_calls.1.arguments");
  CHECK(text_of(joined(had, r.forwarded), "tool_calls.0.arguments") == R"({"city":"Paris"})");
  check_identity(r);
}

TEST_CASE("seam: a new tool call that starts the remainder keeps its id and type; the client's keeps none",
          "[stream_seam]") {
  const std::vector<std::string> had = {
      first(R"({"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"f","arguments":"{}"}}]})")};
  const std::vector<std::string> replay = {
      second(R"({"tool_calls":[{"index":0,"id":"call_B","type":"function","function":{"name":"f","arguments":"{}"}},)"
             R"({"index":1,"id":"call_B1","type":"function","function":{"name":"g","arguments":"[1]"}}]})"),
  };
  const SeamRun r = run(delivered_from(had), Mode::replay, replay);
  REQUIRE(r.forwarded.size() == 1);
  CHECK(r.forwarded[0] ==
        rewritten(R"({"tool_calls":[{"index":1,"id":"call_B1","type":"function","function":{"name":"g","arguments":"[1]"}}]})"));
  check_seamless(had, r, replay, "tool_calls.1.arguments");
}

// A provider that sends a new call's id in a delta of its own (empty name and
// arguments), before the name: the id must still reach the client.
// Regression (found by this test in 508440f, fixed since): the id-only delta has no fresh text, so
// accept() drops it before looking at new tool calls; the next delta (with the name)
// is forwarded without any id, and the client's tool call 1 never gets one.
TEST_CASE("seam: a new tool call whose id comes in a delta without text still gets its id", "[stream_seam]") {
  const std::vector<std::string> had = {
      first(R"({"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"f","arguments":"{}"}}]})")};
  const std::vector<std::string> replay = {
      second(R"({"tool_calls":[{"index":0,"id":"call_B","type":"function","function":{"name":"f","arguments":"{}"}}]})"),
      second(R"({"tool_calls":[{"index":1,"id":"call_B1","type":"function","function":{"name":"","arguments":""}}]})"),
      second(R"({"tool_calls":[{"index":1,"function":{"name":"g","arguments":"[1]"}}]})"),
  };
  const SeamRun r = run(delivered_from(had), Mode::replay, replay);
  for (const auto& f : r.forwarded) UNSCOPED_INFO("forwarded: " << f);
  bool id_sent = false;
  for (const auto& f : r.forwarded) id_sent = id_sent || f.find(R"("id":"call_B1")") != std::string::npos;
  CHECK(id_sent);
}

// ---- replay: the client already has its finish ------------------------------------

TEST_CASE("seam: finish already delivered — the replay's finish is dropped, its usage chunk forwarded",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(kRole), first(R"({"content":"Hi"})"), first("{}", R"("stop")")};
  const DeliveredAnswer d = delivered_from(had);
  REQUIRE(d.finished());
  const std::vector<std::string> replay = {second(kRole), second(R"({"content":"Hi"})"), second("{}", R"("stop")"),
                                           usage_only(kSecond)};
  const SeamRun r = run(d, Mode::replay, replay);
  CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::drop, Verdict::drop, Verdict::forward});
  REQUIRE(r.forwarded.size() == 1);
  CHECK(r.forwarded[0] ==
        "{" + std::string(kFirst) +
            R"(,"system_fingerprint":"fp_b","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})");
  check_seamless(had, r, replay, "content");
}

TEST_CASE("seam: finish already delivered — a finish chunk that also carries the last text is dropped whole",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(R"({"content":"Hi"})", R"("stop")")};
  const SeamRun r = run(delivered_from(had), Mode::replay, {second(R"({"content":"Hi"})", R"("stop")")});
  CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop});
}

// The client has the whole answer, finish included; a replay that goes on past it is a
// different answer (the client would get text after its finish_reason, then a second
// finish). Regression (found by this test in 508440f, fixed since): accept() checks only that the
// delivered text is covered, not that the client's answer had ended, and forwards
// " there" (then the replay's finish chunk as well, once caught up).
TEST_CASE("seam: finish already delivered — more text from the replay is a divergence",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(R"({"content":"Hi"})"), first("{}", R"("stop")")};
  const SeamRun r = run(delivered_from(had), Mode::replay,
                        {second(R"({"content":"Hi"})"), second(R"({"content":" there"})"), second("{}", R"("stop")")});
  for (const auto& f : r.forwarded) UNSCOPED_INFO("forwarded: " << f);
  CHECK(r.diverged);
  CHECK(r.forwarded.empty());
}

// Same family, prefill: the client's finish chunk was taken (the relay holds it back for
// the receipt), the stream was cut before [DONE], and the recovering route has
// supports_prefill (recovery_mode picks prefill for plain content, finished or not). The
// continuation of a finished answer must not reach the client after its finish_reason.
// Regression (found by this test in 508440f, fixed since): prefill forwards " and more" and then, being
// caught up, the continuation's own finish chunk: the client gets its (held) finish, text,
// and a second finish_reason.
TEST_CASE("seam: finish already delivered — a prefill continuation's text is not forwarded",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(R"({"content":"Done."})"), first("{}", R"("stop")")};
  const DeliveredAnswer d = delivered_from(had);
  REQUIRE(d.plain_content());
  REQUIRE(d.finished());
  const SeamRun r = run(d, Mode::prefill,
                        {second(kRole), second(R"({"content":" and more"})"), second("{}", R"("stop")"),
                         usage_only(kSecond)});
  for (const auto& f : r.forwarded) UNSCOPED_INFO("forwarded: " << f);
  CHECK(text_of(r.forwarded, "content").empty());
}

TEST_CASE("seam: a usage-only chunk before the seam is forwarded, and content after it still must match",
          "[stream_seam]") {
  const DeliveredAnswer d = delivered_from({first(R"({"content":"abc"})")});
  StreamSeam seam(d, Mode::replay);
  std::string u = usage_only(kSecond);
  CHECK(seam.accept(u) == Verdict::forward);
  CHECK_FALSE(seam.caught_up());
  std::string bad = second(R"({"content":"abd"})");
  CHECK(seam.accept(bad) == Verdict::diverged);
}

TEST_CASE("seam: chunks that are not JSON, or have no choice 0, are dropped", "[stream_seam]") {
  const DeliveredAnswer d = delivered_from({first(R"({"content":"abc"})")});
  StreamSeam seam(d, Mode::replay);
  std::string junk = "{not json";
  CHECK(seam.accept(junk) == Verdict::drop);
  std::string other = "{" + std::string(kSecond) + R"(,"choices":[{"index":1,"delta":{"content":"zzz"}}]})";
  CHECK(seam.accept(other) == Verdict::drop);
  std::string ok = second(R"({"content":"abcd"})");
  CHECK(seam.accept(ok) == Verdict::forward);
  CHECK(ok == rewritten(R"({"content":"d"})"));
}

TEST_CASE("seam: nothing delivered but the role: the replay's role chunk is dropped, its text forwarded",
          "[stream_seam]") {
  const std::vector<std::string> had = {first(kRole)};
  const std::vector<std::string> replay = {second(kRole), second(R"({"content":"Hi"})"), second("{}", R"("stop")")};
  const SeamRun r = run(delivered_from(had), Mode::replay, replay);
  CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::forward, Verdict::forward});
  REQUIRE(r.forwarded.size() == 2);
  CHECK(r.forwarded[0] == rewritten(R"({"content":"Hi"})"));
  CHECK(r.forwarded[1] == passed("{}", R"("stop")"));
  check_seamless(had, r, replay, "content");
}

// ---- prefill -----------------------------------------------------------------------

TEST_CASE("seam: prefill forwards the continuation as it comes and drops the empty role chunk", "[stream_seam]") {
  const std::vector<std::string> had = {first(kRole), first(R"({"content":"Once upon"})")};
  const DeliveredAnswer d = delivered_from(had);
  REQUIRE(d.plain_content());
  CHECK(d.content() == "Once upon");
  const std::vector<std::string> continuation = {second(kRole), second(R"({"content":" a time"})"),
                                                 second(R"({"content":", the end"})"), second("{}", R"("stop")"),
                                                 usage_only(kSecond)};
  const SeamRun r = run(d, Mode::prefill, continuation);
  CHECK_FALSE(r.diverged);
  CHECK(r.verdicts == std::vector<Verdict>{Verdict::drop, Verdict::forward, Verdict::forward, Verdict::forward,
                                           Verdict::forward});
  REQUIRE(r.forwarded.size() == 4);
  CHECK(r.forwarded[0] == rewritten(R"({"content":" a time"})"));
  CHECK(r.forwarded[1] == passed(R"({"content":", the end"})"));
  CHECK(r.forwarded[2] == passed("{}", R"("stop")"));
  CHECK(text_of(joined(had, r.forwarded), "content") == "Once upon a time, the end");
  check_identity(r);
}

TEST_CASE("seam: prefill does not compare: a continuation that repeats the prefix is forwarded as is",
          "[stream_seam]") {
  // The upstream ignored the prefill and answered from the start: prefill trusts it (the
  // route declared supports_prefill), unlike replay.
  const DeliveredAnswer d = delivered_from({first(R"({"content":"Hello"})")});
  const SeamRun r = run(d, Mode::prefill, {second(R"({"content":"Hello"})")});
  REQUIRE(r.forwarded.size() == 1);
  CHECK(r.forwarded[0] == rewritten(R"({"content":"Hello"})"));
}

// ---- with_identity -----------------------------------------------------------------

TEST_CASE("seam: with_identity puts the first attempt's id, created and model on a chunk", "[stream_seam]") {
  const DeliveredAnswer d = delivered_from({first(R"({"content":"x"})")});
  const StreamSeam seam(d, Mode::replay);
  const std::string synthetic =
      R"({"id":"chatcmpl-B","object":"chat.completion.chunk","created":200,"model":"m-b","choices":[{"index":0,"delta":{},"finish_reason":null}]})";
  CHECK(seam.with_identity(synthetic) ==
        "{" + std::string(kFirst) + R"(,"choices":[{"index":0,"delta":{},"finish_reason":null}]})");
  // Members the chunk lacks are added from the first attempt, others kept in order.
  CHECK(seam.with_identity(R"({"choices":[],"usage":{"total_tokens":1},"x":[1,{"y":null}]})") ==
        "{" + std::string(kFirst) + R"(,"choices":[],"usage":{"total_tokens":1},"x":[1,{"y":null}]})");
  CHECK(seam.with_identity("not json") == "not json");
  // Nothing delivered (no identity known): unchanged.
  const DeliveredAnswer none;
  const StreamSeam bare(none, Mode::replay);
  CHECK(bare.with_identity(synthetic) == synthetic);
}

TEST_CASE("seam: the first attempt's identity is taken from the first chunk the client got", "[stream_seam]") {
  DeliveredAnswer d;
  d.note(R"({"id":"chatcmpl-\u00e9","object":"chat.completion.chunk","created":7,"model":"m/\"q\"","choices":[]})");
  d.note(first(R"({"content":"x"})"));  // a later id does not replace it
  const StreamSeam seam(d, Mode::replay);
  std::string c = second(R"({"content":"xy"})");
  REQUIRE(const_cast<StreamSeam&>(seam).accept(c) == Verdict::forward);
  const auto o = boost::json::parse(c).as_object();
  CHECK(o.at("id").as_string() == "chatcmpl-\xc3\xa9");
  CHECK(o.at("created").as_int64() == 7);
  CHECK(o.at("model").as_string() == "m/\"q\"");
}
