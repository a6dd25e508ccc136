// The upstream text/event-stream parser: events come out whole whatever the TCP framing.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "providers/sse_parser.h"

using tresor::providers::SseParser;
using Events = std::vector<std::string>;

namespace {

Events parse_whole(std::string_view stream) {
  SseParser parser;
  Events events;
  REQUIRE(parser.feed(stream, events));
  return events;
}

Events parse_bytewise(std::string_view stream) {
  SseParser parser;
  Events events;
  for (char c : stream) REQUIRE(parser.feed(std::string_view(&c, 1), events));
  return events;
}

Events parse_in_pieces(std::string_view stream, std::mt19937& rng) {
  SseParser parser;
  Events events;
  std::uniform_int_distribution<size_t> piece(0, 9);
  size_t i = 0;
  while (i < stream.size()) {
    const size_t n = std::min(piece(rng), stream.size() - i);  // empty pieces too
    REQUIRE(parser.feed(stream.substr(i, n), events));
    i += n;
  }
  return events;
}

// A realistic OpenAI stream with every framing variant mixed in.
const std::string kStream =
    ": keep-alive\n\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    "event: message\r\nid: 7\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n"
    "data: line one\rdata: line two\r\r"
    "retry: 1000\n\n"
    "data:no-space\n"
    ": a comment inside an event\n"
    "data:  two spaces\n\n"
    "data: {\"text\":\"a\\r\\nb: c\"}\r\n\r\n"
    "data\n\n"
    "data: [DONE]\n\n";

const Events kExpected = {
    R"({"choices":[{"delta":{"content":"Hel"}}]})",
    R"({"choices":[{"delta":{"content":"lo"}}]})",
    "line one\nline two",
    "no-space\n two spaces",
    R"({"text":"a\r\nb: c"})",
    "",
    "[DONE]",
};

}  // namespace

TEST_CASE("sse: a stream fed at once yields its events in order", "[sse][chat_stream]") {
  CHECK(parse_whole(kStream) == kExpected);
}

TEST_CASE("sse: a stream fed byte by byte yields the same events", "[sse][chat_stream]") {
  CHECK(parse_bytewise(kStream) == kExpected);
}

TEST_CASE("sse: a stream fed in random pieces yields the same events", "[sse][chat_stream]") {
  std::mt19937 rng(20240531);
  for (int round = 0; round < 200; ++round) {
    INFO("round " << round);
    REQUIRE(parse_in_pieces(kStream, rng) == kExpected);
  }
}

TEST_CASE("sse: every split into two pieces yields the same events", "[sse][chat_stream]") {
  for (size_t cut = 0; cut <= kStream.size(); ++cut) {
    SseParser parser;
    Events events;
    REQUIRE(parser.feed(std::string_view(kStream).substr(0, cut), events));
    REQUIRE(parser.feed(std::string_view(kStream).substr(cut), events));
    INFO("cut at " << cut);
    REQUIRE(events == kExpected);
  }
}

TEST_CASE("sse: CRLF, LF and CR line ends are equivalent", "[sse][chat_stream]") {
  CHECK(parse_whole("data: a\n\n") == Events{"a"});
  CHECK(parse_whole("data: a\r\n\r\n") == Events{"a"});
  CHECK(parse_whole("data: a\r\r") == Events{"a"});
  CHECK(parse_whole("data: a\r\ndata: b\rdata: c\n\r\n") == Events{"a\nb\nc"});
  // "\r" then "\n" in the next read is one line end, not an extra blank line.
  SseParser parser;
  Events events;
  REQUIRE(parser.feed("data: a\r", events));
  REQUIRE(parser.feed("\ndata: b\r", events));
  CHECK(events.empty());
  REQUIRE(parser.feed("\n\r", events));
  CHECK(events == Events{"a\nb"});
}

TEST_CASE("sse: \\r\\r and \\n\\n both end an event; \\r\\n alone does not", "[sse][chat_stream]") {
  CHECK(parse_whole("data: a\r\n").empty());
  CHECK(parse_whole("data: a\r\n\r\ndata: b\n\ndata: c\r\r") == Events{"a", "b", "c"});
}

TEST_CASE("sse: multi-line data is joined with newlines", "[sse][chat_stream]") {
  CHECK(parse_whole("data: {\"a\":\ndata: 1}\n\n") == Events{"{\"a\":\n1}"});
  CHECK(parse_whole("data: x\ndata:\ndata: y\n\n") == Events{"x\n\ny"});
}

TEST_CASE("sse: only one leading space of a value is removed", "[sse][chat_stream]") {
  CHECK(parse_whole("data:x\n\n") == Events{"x"});
  CHECK(parse_whole("data: x\n\n") == Events{"x"});
  CHECK(parse_whole("data:  x \n\n") == Events{" x "});
  CHECK(parse_whole("data: a: b\n\n") == Events{"a: b"});
}

TEST_CASE("sse: comments and events without data produce nothing", "[sse][chat_stream]") {
  CHECK(parse_whole(": ping\n\n").empty());
  CHECK(parse_whole(":\n\n:\n\n").empty());
  CHECK(parse_whole("event: ping\n\n").empty());
  CHECK(parse_whole("id: 5\nretry: 10\n\n").empty());
  CHECK(parse_whole("\n\n\n\r\n").empty());
  CHECK(parse_whole("event: ping\n\ndata: x\n\n") == Events{"x"});
}

TEST_CASE("sse: a field named like data but longer is not data", "[sse][chat_stream]") {
  CHECK(parse_whole("datas: x\n\n").empty());
  CHECK(parse_whole("Data: x\n\n").empty());
  CHECK(parse_whole(" data: x\n\n").empty());
}

TEST_CASE("sse: an event is dispatched only at its blank line", "[sse][chat_stream]") {
  SseParser parser;
  Events events;
  REQUIRE(parser.feed("data: {\"a\":1}\n", events));
  CHECK(events.empty());
  CHECK(parser.has_partial_event());
  REQUIRE(parser.feed("\n", events));
  CHECK(events == Events{"{\"a\":1}"});
  CHECK_FALSE(parser.has_partial_event());
}

TEST_CASE("sse: a stream cut inside a line or an event is reported as partial", "[sse][chat_stream]") {
  {
    SseParser parser;
    Events events;
    CHECK_FALSE(parser.has_partial_event());
    REQUIRE(parser.feed("da", events));
    CHECK(parser.has_partial_event());
  }
  {
    SseParser parser;
    Events events;
    REQUIRE(parser.feed("data: x\n\ndata: y", events));
    CHECK(events == Events{"x"});
    CHECK(parser.has_partial_event());
  }
  {
    SseParser parser;
    Events events;
    REQUIRE(parser.feed("data: x\n\n: bye\n", events));
    CHECK(events == Events{"x"});
    CHECK_FALSE(parser.has_partial_event());
  }
}

TEST_CASE("sse: an event over the size limit is an error", "[sse][chat_stream]") {
  SECTION("one long data line") {
    SseParser parser(64);
    Events events;
    CHECK_FALSE(parser.feed("data: " + std::string(100, 'x') + "\n\n", events));
    CHECK(events.empty());
  }
  SECTION("many short data lines adding up") {
    SseParser parser(64);
    Events events;
    bool ok = true;
    for (int i = 0; i < 20 && ok; ++i) ok = parser.feed("data: 0123456789\n", events);
    CHECK_FALSE(ok);
    CHECK(events.empty());
  }
  SECTION("fed byte by byte") {
    SseParser parser(64);
    Events events;
    const std::string stream = "data: " + std::string(100, 'x') + "\n\n";
    bool ok = true;
    for (size_t i = 0; i < stream.size() && ok; ++i) ok = parser.feed(stream.substr(i, 1), events);
    CHECK_FALSE(ok);
    CHECK(events.empty());
  }
}

TEST_CASE("sse: the size limit applies per event, not to the whole stream", "[sse][chat_stream]") {
  SseParser parser(64);
  Events events;
  const std::string event = "data: " + std::string(40, 'y') + "\n\n";
  for (int i = 0; i < 100; ++i) REQUIRE(parser.feed(event, events));
  REQUIRE(events.size() == 100);
  CHECK(events.back() == std::string(40, 'y'));
}

// WHATWG "event stream interpretation": the cases the rules above name one by one.

TEST_CASE("sse: one leading UTF-8 BOM is skipped, also when split", "[sse][chat_stream]") {
  const std::string stream = "\xEF\xBB\xBF" "data: a\n\n";
  CHECK(parse_whole(stream) == Events{"a"});
  CHECK(parse_bytewise(stream) == Events{"a"});
  // Only one, and only at the very start: anything else is part of a line.
  CHECK(parse_whole("\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\n").empty());
  CHECK(parse_whole("data: a\n\n\xEF\xBB\xBF" "data: b\n\n") == Events{"a"});
  CHECK(parse_whole("\xEF\xBB" "data: a\n\n").empty());  // a partial BOM is not one
  CHECK(parse_whole("\xEF\xBB\xBF\n" "data: a\n\n") == Events{"a"});
}

TEST_CASE("sse: a stream of only part of a BOM is partial", "[sse][chat_stream]") {
  SseParser parser;
  Events events;
  REQUIRE(parser.feed("\xEF\xBB", events));
  CHECK(parser.has_partial_event());
  REQUIRE(parser.feed("\xBF", events));
  CHECK_FALSE(parser.has_partial_event());
}

TEST_CASE("sse: a line without a colon is a field with an empty value", "[sse][chat_stream]") {
  CHECK(parse_whole("data\n\n") == Events{""});
  CHECK(parse_whole("data\ndata\n\n") == Events{"\n"});
  CHECK(parse_whole("data\ndata: x\n\n") == Events{"\nx"});
  CHECK(parse_whole("event\nid\nretry\n\n").empty());
}

TEST_CASE("sse: event, id and retry fields change nothing, whatever their value", "[sse][chat_stream]") {
  using namespace std::string_literals;
  CHECK(parse_whole("id: a\0b\nretry: soon\nevent:\ndata: x\nevent: other\nid\n\n"s) == Events{"x"});
  CHECK(parse_whole("retry: 10\n\nid: 3\n\ndata: y\n\n") == Events{"y"});
}

TEST_CASE("sse: next() stops after each event and leaves the rest of the bytes", "[sse][chat_stream]") {
  SseParser parser;
  std::string_view bytes = "data: a\n\ndata: b\r\n\r\ndata: c";
  REQUIRE(parser.next(bytes) == SseParser::Next::event);
  CHECK(parser.data() == "a");
  CHECK(bytes == "data: b\r\n\r\ndata: c");
  REQUIRE(parser.next(bytes) == SseParser::Next::event);
  CHECK(parser.data() == "b");
  CHECK(bytes == "\ndata: c");  // the LF of the CRLF is consumed on the next call
  REQUIRE(parser.next(bytes) == SseParser::Next::need_more);
  CHECK(bytes.empty());
  std::string_view rest = "\n\n";
  REQUIRE(parser.next(rest) == SseParser::Next::event);
  CHECK(parser.data() == "c");
}

TEST_CASE("sse: after an oversized event the parser stays failed", "[sse][chat_stream]") {
  SseParser parser(8);
  std::string_view bytes = "data: 0123456789\n\n";
  CHECK(parser.next(bytes) == SseParser::Next::oversized);
  std::string_view more = "data: a\n\n";
  CHECK(parser.next(more) == SseParser::Next::oversized);
}
