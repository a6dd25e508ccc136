// The stream-recovery seam (providers/stream_seam.h): DeliveredAnswer + StreamSeam.
// Input: byte 0 = flags, then a split plan (fuzz_input.h), then two sections separated by
// the first '\0': the pieces the client got (delivered) and the pieces of the attempt that
// continues the stream (replay). Within a section pieces are separated by '\x1e'; a
// piece's first byte picks its field (% 5: content, reasoning_content, refusal, tool call
// 0 arguments, tool call 1 arguments), the rest is its text, made valid UTF-8 (bytes
// >= 0x80 stand for é, è, € or an emoji, so code points of 2, 3 and 4 bytes, and two
// sharing a first byte, meet the seam). Every piece becomes one chunk shaped as the
// decoder hands them on (one line, id/object/created/model, choice 0 only); a tool call's
// first chunk carries its id, type and name.
// Flags: bit 0 prefill (else replay); bit 1 the client also got a finish chunk; bit 2 the
// replay ends with a usage-only chunk (choices: []); bit 3 the replay ends with a finish;
// bit 4 the replay first re-sends the delivered pieces' text, cut by the split plan (so
// the seam falls inside chunks), before its own pieces.
// Properties: no crash; a forwarded chunk is one line of JSON, an object with the FIRST
// attempt's id/created/model; prefill never diverges and forwards the continuation's text
// unchanged; in replay the client's tool-call ids stand (no forwarded delta gives a call
// the client has an id); a replay that did not diverge and reached its finish gives, for
// every field, delivered text + forwarded text == the replay's whole text.
#include <simdjson.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/json_text.h"
#include "providers/stream_seam.h"
#include "tests/fuzz/fuzz_input.h"

using tresor::providers::DeliveredAnswer;
using tresor::providers::StreamSeam;

namespace {

constexpr std::string_view kFields[] = {"content", "reasoning_content", "refusal", "tool_calls.0.arguments",
                                        "tool_calls.1.arguments"};

struct Piece {
  int field = 0;
  std::string text;  // valid UTF-8
};

std::string utf8_of(std::string_view raw) {
  static constexpr std::string_view kWide[] = {"\xc3\xa9", "\xc3\xa8", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  std::string out;
  for (const char c : raw) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80) out += c;
    else out += kWide[u % 4];
  }
  return out;
}

std::vector<Piece> pieces_of(std::string_view section) {
  std::vector<Piece> out;
  if (section.empty()) return out;
  for (;;) {
    const size_t end = section.find('\x1e');
    std::string_view raw = section.substr(0, end);
    Piece p;
    p.field = tresor::fuzz::take_byte(raw) % 5;
    p.text = utf8_of(raw);
    out.push_back(std::move(p));
    if (end == std::string_view::npos) break;
    section.remove_prefix(end + 1);
  }
  return out;
}

struct Identity {
  std::string head;  // "id":…,"object":…,"created":…,"model":…
  std::string id, model;
  int64_t created = 0;
  std::string call_prefix;
};

const Identity kFirst{R"("id":"chatcmpl-A","object":"chat.completion.chunk","created":100,"model":"m-a")",
                      "chatcmpl-A", "m-a", 100, "call_A"};
const Identity kSecond{R"("id":"chatcmpl-B","object":"chat.completion.chunk","created":200,"model":"m-b")",
                       "chatcmpl-B", "m-b", 200, "call_B"};

std::string chunk(const Identity& who, const std::string& delta, std::string_view finish = "null") {
  return "{" + who.head + R"(,"choices":[{"index":0,"delta":)" + delta + R"(,"logprobs":null,"finish_reason":)" +
         std::string(finish) + "}]}";
}

// One chunk for a piece; `opened` tracks which tool calls already had their first delta.
std::string chunk_for(const Identity& who, const Piece& p, bool opened[2]) {
  std::string delta = "{";
  if (p.field < 3) {
    tresor::common::append_json_string(delta, kFields[p.field]);
    delta += ':';
    tresor::common::append_json_string(delta, p.text);
  } else {
    const int index = p.field - 3;
    delta += R"("tool_calls":[{"index":)" + std::to_string(index);
    if (!opened[index]) {
      opened[index] = true;
      delta += R"(,"id":")" + who.call_prefix + std::to_string(index) + R"(","type":"function")";
      delta += R"(,"function":{"name":"fn)" + std::to_string(index) + R"(","arguments":)";
    } else {
      delta += R"(,"function":{"arguments":)";
    }
    tresor::common::append_json_string(delta, p.text);
    delta += "}}]";
  }
  delta += '}';
  return chunk(who, delta);
}

// Cuts `text` into pieces of the plan's sizes, each moved forward to a code point start.
std::vector<std::string> cut_utf8(const std::string& text, const std::vector<size_t>& sizes) {
  std::vector<std::string> out;
  size_t at = 0;
  size_t i = 0;
  while (at < text.size()) {
    size_t n = sizes.empty() ? text.size() : std::max<size_t>(1, sizes[i++ % sizes.size()]);
    size_t end = std::min(text.size(), at + n);
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    out.push_back(text.substr(at, end - at));
    at = end;
  }
  return out;
}

using Texts = std::map<std::string, std::string>;

// Field texts of choice 0 over a chunk, as the client would accumulate them.
void add_texts(simdjson::dom::parser& parser, const std::string& json, Texts& texts) {
  simdjson::dom::object chunk;
  FUZZ_CHECK(!parser.parse(json).get(chunk));
  simdjson::dom::array choices;
  if (chunk["choices"].get(choices)) return;
  for (simdjson::dom::element e : choices) {
    simdjson::dom::object delta;
    if (e["delta"].get(delta)) continue;
    for (int f = 0; f < 3; ++f) {
      std::string_view s;
      if (!delta[kFields[f]].get(s)) texts[std::string(kFields[f])].append(s);
    }
    simdjson::dom::array calls;
    if (delta["tool_calls"].get(calls)) continue;
    for (simdjson::dom::element call : calls) {
      int64_t index = 0;
      FUZZ_CHECK(!call["index"].get(index));
      std::string_view s;
      if (!call["function"]["arguments"].get(s))
        texts["tool_calls." + std::to_string(index) + ".arguments"].append(s);
      if (!call["function"]["name"].get(s)) texts["tool_calls." + std::to_string(index) + ".name"].append(s);
    }
  }
}

// The indexes of the tool calls that carry an id in a chunk's choice 0.
std::vector<int64_t> ids_in(simdjson::dom::parser& parser, const std::string& json) {
  std::vector<int64_t> out;
  simdjson::dom::object chunk;
  FUZZ_CHECK(!parser.parse(json).get(chunk));
  simdjson::dom::array choices;
  if (chunk["choices"].get(choices)) return out;
  for (simdjson::dom::element e : choices) {
    simdjson::dom::array calls;
    if (e["delta"]["tool_calls"].get(calls)) continue;
    for (simdjson::dom::element call : calls) {
      int64_t index = 0;
      simdjson::dom::element id;
      if (!call["index"].get(index) && !call["id"].get(id)) out.push_back(index);
    }
  }
  return out;
}

Texts texts_of(simdjson::dom::parser& parser, const std::vector<std::string>& chunks) {
  Texts t;
  for (const auto& c : chunks) add_texts(parser, c, t);
  return t;
}

std::string get(const Texts& t, const std::string& key) {
  const auto it = t.find(key);
  return it == t.end() ? std::string() : it->second;
}

// A forwarded chunk: one line, a JSON object with the first attempt's identity.
void check_forwarded(simdjson::dom::parser& parser, const std::string& json) {
  FUZZ_CHECK(json.find('\n') == std::string::npos && json.find('\r') == std::string::npos);
  simdjson::dom::object o;
  FUZZ_CHECK(!parser.parse(json).get(o));
  std::string_view id, model;
  int64_t created = 0;
  FUZZ_CHECK(!o["id"].get(id) && id == kFirst.id);
  FUZZ_CHECK(!o["model"].get(model) && model == kFirst.model);
  FUZZ_CHECK(!o["created"].get(created) && created == kFirst.created);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t flags = tresor::fuzz::take_byte(in);
  const auto plan = tresor::fuzz::take_split_plan(in);
  const size_t cut = in.find('\0');
  const auto had_pieces = pieces_of(in.substr(0, cut));
  const auto new_pieces = cut == std::string_view::npos ? std::vector<Piece>() : pieces_of(in.substr(cut + 1));
  const bool prefill = flags & 1;

  // What the client got.
  std::vector<std::string> had = {chunk(kFirst, R"({"role":"assistant","content":""})")};
  bool opened_a[2] = {false, false};
  for (const auto& p : had_pieces) had.push_back(chunk_for(kFirst, p, opened_a));
  if (flags & 2) had.push_back(chunk(kFirst, "{}", R"("stop")"));
  DeliveredAnswer delivered;
  for (const auto& c : had) delivered.note(c);

  // The continuing attempt.
  std::vector<std::string> replay = {chunk(kSecond, R"({"role":"assistant","content":""})")};
  bool opened_b[2] = {false, false};
  if (flags & 16)
    for (const auto& p : had_pieces)
      for (auto& part : cut_utf8(p.text, plan)) replay.push_back(chunk_for(kSecond, Piece{p.field, part}, opened_b));
  for (const auto& p : new_pieces) replay.push_back(chunk_for(kSecond, p, opened_b));
  const bool finishes = flags & 8;
  if (finishes) replay.push_back(chunk(kSecond, "{}", R"("stop")"));
  if (flags & 4)
    replay.push_back("{" + kSecond.head + R"(,"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}})");

  simdjson::dom::parser parser;
  StreamSeam seam(delivered, prefill ? StreamSeam::Mode::prefill : StreamSeam::Mode::replay);
  std::vector<std::string> forwarded;
  bool diverged = false;
  for (const auto& c : replay) {
    std::string json = c;
    const auto verdict = seam.accept(json);
    if (verdict == StreamSeam::Verdict::diverged) {
      diverged = true;
      break;
    }
    if (verdict == StreamSeam::Verdict::forward) {
      check_forwarded(parser, json);
      forwarded.push_back(std::move(json));
    }
  }
  check_forwarded(parser, seam.with_identity(replay.back()));

  // Replay: the client's tool-call ids stand, the replay's id for a call the client has
  // never reaches it. (Prefill is only chosen for plain content, so it is not asked.)
  if (!prefill)
    for (const auto& f : forwarded)
      for (const int64_t index : ids_in(parser, f)) FUZZ_CHECK(index < 0 || index > 1 || !opened_a[index]);

  const Texts got = texts_of(parser, forwarded);
  const Texts whole = texts_of(parser, replay);
  if (prefill) {
    // A continuation is the client's text's sequel as it comes: nothing compared, nothing cut.
    FUZZ_CHECK(!diverged);
    for (const auto field : kFields) FUZZ_CHECK(get(got, std::string(field)) == get(whole, std::string(field)));
    return 0;
  }
  if (diverged || !finishes) return 0;
  const Texts had_texts = texts_of(parser, had);
  for (const auto field : kFields) {
    const std::string key(field);
    FUZZ_CHECK(get(had_texts, key) + get(got, key) == get(whole, key));
  }
  for (const std::string key : {"tool_calls.0.name", "tool_calls.1.name"})
    FUZZ_CHECK(get(had_texts, key) + get(got, key) == get(whole, key));
  return 0;
}
