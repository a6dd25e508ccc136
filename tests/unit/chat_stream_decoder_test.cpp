// The upstream chat stream as the client gets it: providers/chat_stream_decoder.h.
#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "providers/chat_stream_decoder.h"

using tresor::providers::ChatChunk;
using tresor::providers::ChatStreamDecoder;
using tresor::providers::TokenUsage;
using Status = ChatStreamDecoder::Status;
using Kind = ChatChunk::Kind;

namespace {

ChatStreamDecoder::Options options(bool wants_usage = false) {
  ChatStreamDecoder::Options o;
  o.upstream_model = "up-model";
  o.fallback_id = "chatcmpl-fallback";
  o.created = 1700000000;
  o.client_wants_usage = wants_usage;
  return o;
}

struct Decoded {
  Status status = Status::more;
  std::vector<ChatChunk> chunks;
  bool operator==(const Decoded&) const = default;
};

Decoded decode(std::string_view stream, const ChatStreamDecoder::Options& o = options()) {
  ChatStreamDecoder decoder(o);
  Decoded d;
  d.status = decoder.feed(stream, d.chunks);
  return d;
}

Decoded decode_bytewise(std::string_view stream, const ChatStreamDecoder::Options& o = options()) {
  ChatStreamDecoder decoder(o);
  Decoded d;
  for (char c : stream) d.status = decoder.feed(std::string_view(&c, 1), d.chunks);
  return d;
}

std::string event(std::string_view json) { return "data: " + std::string(json) + "\n\n"; }

boost::json::object parse(const std::string& json) { return boost::json::parse(json).as_object(); }

const std::string kContent =
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi \u00e9"},"finish_reason":null}]})";
const std::string kFinish =
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})";
const std::string kUsage =
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";

}  // namespace

TEST_CASE("chat stream: chunks needing no change pass byte for byte", "[chat_stream]") {
  // Odd spacing and escapes survive: the upstream's bytes are not re-serialised.
  const std::string spaced =
      R"({ "id" : "chatcmpl-1", "object":"chat.completion.chunk","created":1 ,"model":"m","choices":[ {"index":0,"delta":{"content":"a\/b"},"finish_reason":null} ] })";
  const Decoded d = decode(event(kContent) + event(spaced) + event(kFinish) + "data: [DONE]\n\n");
  CHECK(d.status == Status::done);
  REQUIRE(d.chunks.size() == 3);
  CHECK(d.chunks[0] == ChatChunk{Kind::content, kContent, std::nullopt});
  CHECK(d.chunks[1].json == spaced);
  CHECK(d.chunks[2] == ChatChunk{Kind::finish, kFinish, std::nullopt});
}

TEST_CASE("chat stream: [DONE] ends the stream and later feeds add nothing", "[chat_stream]") {
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  CHECK(decoder.feed(event(kContent), out) == Status::more);
  CHECK(decoder.feed("data: [DONE]\n\n" + event(kContent), out) == Status::done);
  CHECK(out.size() == 1);
  CHECK(decoder.feed(event(kContent), out) == Status::done);
  CHECK(out.size() == 1);
}

TEST_CASE("chat stream: an error object stops the stream; error null does not", "[chat_stream]") {
  SECTION("error object after a chunk in the same feed") {
    const std::string error = R"({"error":{"message":"overloaded","type":"server_error"}})";
    ChatStreamDecoder decoder(options());
    std::vector<ChatChunk> out;
    CHECK(decoder.feed(event(kContent) + event(error) + event(kFinish), out) == Status::error_event);
    REQUIRE(out.size() == 1);  // the chunk before it, not the one after
    CHECK(out[0].json == kContent);
    CHECK(decoder.error_event() == error);
    CHECK(decoder.any_event());
    CHECK(decoder.feed(event(kFinish), out) == Status::error_event);
    CHECK(out.size() == 1);
  }
  SECTION("error first: no event decoded") {
    ChatStreamDecoder decoder(options());
    std::vector<ChatChunk> out;
    CHECK(decoder.feed(event(R"({"error":"boom"})"), out) == Status::error_event);
    CHECK_FALSE(decoder.any_event());
  }
  SECTION("error null is an ordinary chunk") {
    const std::string chunk =
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","error":null,"choices":[{"index":0,"delta":{"content":"x"}}]})";
    const Decoded d = decode(event(chunk));
    CHECK(d.status == Status::more);
    REQUIRE(d.chunks.size() == 1);
    CHECK(d.chunks[0].json == chunk);
  }
}

TEST_CASE("chat stream: events that are not JSON objects are dropped and counted", "[chat_stream]") {
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  CHECK(decoder.feed("data: hello\n\ndata: [1,2]\n\ndata: {\"a\":\n\ndata\n\ndata: \"x\"\n\n", out) == Status::more);
  CHECK(out.empty());
  CHECK(decoder.dropped_events() == 5);
  CHECK_FALSE(decoder.any_event());
  CHECK(decoder.feed(event(kContent), out) == Status::more);
  CHECK(out.size() == 1);
  CHECK(decoder.any_event());
}

TEST_CASE("chat stream: with n=2 only choice 0 reaches the client; complete needs every finish", "[chat_stream]") {
  auto chunk = [](std::string_view choices) {
    return event(R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":)" +
                 std::string(choices) + "}");
  };
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  decoder.feed(chunk(R"([{"index":0,"delta":{"content":"a"},"finish_reason":null}])"), out);
  decoder.feed(chunk(R"([{"index":1,"delta":{"content":"b"},"finish_reason":null}])"), out);
  CHECK(out.size() == 1);  // index 1 alone: not forwarded
  decoder.feed(chunk(R"([{"index":1,"delta":{"content":"c"}},{"index":0,"delta":{"content":"d"}}])"), out);
  REQUIRE(out.size() == 2);
  {
    const auto o = parse(out[1].json);
    const auto& choices = o.at("choices").as_array();
    REQUIRE(choices.size() == 1);
    CHECK(choices[0].at("index") == 0);
    CHECK(choices[0].at("delta").at("content") == "d");
    CHECK(o.at("id") == "c");
  }
  decoder.feed(chunk(R"([{"index":0,"delta":{},"finish_reason":"stop"}])"), out);
  REQUIRE(out.size() == 3);
  CHECK(out[2].kind == Kind::finish);
  CHECK_FALSE(decoder.complete());  // choice 1 is still generating
  decoder.feed(chunk(R"([{"index":1,"delta":{},"finish_reason":"length"}])"), out);
  CHECK(out.size() == 3);
  CHECK(decoder.complete());
}

TEST_CASE("chat stream: an upstream inventing ever new choice indexes is never complete", "[chat_stream]") {
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  std::string choices;
  for (int i = 2000; i >= 0; --i) {  // descending: each one would go to the front
    if (!choices.empty()) choices += ',';
    choices += R"({"index":)" + std::to_string(i) + R"(,"delta":{},"finish_reason":"stop"})";
  }
  decoder.feed(event(R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[)" + choices + "]}"),
               out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].kind == Kind::finish);
  CHECK(parse(out[0].json).at("choices").as_array().size() == 1);
  CHECK_FALSE(decoder.complete());  // every index it sent finished, but we stopped counting
}

TEST_CASE("chat stream: a choice without index counts as its array position", "[chat_stream]") {
  const Decoded d = decode(event(
      R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]})"));
  REQUIRE(d.chunks.size() == 1);
  const auto choices = parse(d.chunks[0].json).at("choices").as_array();
  REQUIRE(choices.size() == 1);
  CHECK(choices[0].at("index") == 0);
  CHECK(choices[0].at("delta").at("content") == "a");
}

TEST_CASE("chat stream: complete() needs a finish, and usage when the client asked for it", "[chat_stream]") {
  SECTION("nothing seen is not complete") {
    ChatStreamDecoder decoder(options());
    CHECK_FALSE(decoder.complete());
  }
  SECTION("usage not asked for") {
    ChatStreamDecoder decoder(options(false));
    std::vector<ChatChunk> out;
    decoder.feed(event(kContent), out);
    CHECK_FALSE(decoder.complete());
    decoder.feed(event(kFinish), out);
    CHECK(decoder.complete());
  }
  SECTION("usage asked for") {
    ChatStreamDecoder decoder(options(true));
    std::vector<ChatChunk> out;
    decoder.feed(event(kContent) + event(kFinish), out);
    CHECK_FALSE(decoder.complete());
    decoder.feed(event(kUsage), out);
    CHECK(decoder.complete());
  }
}

TEST_CASE("chat stream: a usage chunk reaches the client only when it asked for usage", "[chat_stream]") {
  SECTION("asked: forwarded unchanged, kind usage") {
    const Decoded d = decode(event(kFinish) + event(kUsage), options(true));
    REQUIRE(d.chunks.size() == 2);
    CHECK(d.chunks[1] == ChatChunk{Kind::usage, kUsage, TokenUsage{7, 3}});
  }
  SECTION("not asked: recorded, not forwarded") {
    ChatStreamDecoder decoder(options(false));
    std::vector<ChatChunk> out;
    decoder.feed(event(kFinish) + event(kUsage), out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].kind == Kind::finish);
    CHECK(decoder.usage() == TokenUsage{7, 3});
  }
  SECTION("usage on a chunk of choice 1 only: forwarded with empty choices when asked") {
    const std::string chunk =
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":2}})";
    const Decoded d = decode(event(chunk), options(true));
    REQUIRE(d.chunks.size() == 1);
    CHECK(d.chunks[0].kind == Kind::usage);
    CHECK(parse(d.chunks[0].json).at("choices").as_array().empty());
    CHECK(decode(event(chunk), options(false)).chunks.empty());
  }
  SECTION("usage on a content chunk: forwarded as content, usage noted") {
    const std::string chunk =
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":5}})";
    const Decoded d = decode(event(chunk), options(false));
    REQUIRE(d.chunks.size() == 1);
    CHECK(d.chunks[0] == ChatChunk{Kind::finish, chunk, TokenUsage{4, 5}});
  }
  SECTION("the last usage wins") {
    ChatStreamDecoder decoder(options(true));
    std::vector<ChatChunk> out;
    decoder.feed(event(kUsage), out);
    decoder.feed(event(R"({"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":9}})"), out);
    CHECK(decoder.usage() == TokenUsage{8, 9});
  }
  SECTION("usage null is no usage") {
    const std::string chunk =
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":null})";
    ChatStreamDecoder decoder(options(true));
    std::vector<ChatChunk> out;
    decoder.feed(event(chunk), out);
    CHECK(out.empty());
    CHECK_FALSE(decoder.usage());
  }
}

TEST_CASE("chat stream: a chunk with empty choices and no usage is not forwarded", "[chat_stream]") {
  // Azure's first chunk: prompt_filter_results and no choices.
  const Decoded d = decode(
      event(R"({"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]})") +
          event(R"({"id":"c","object":"x","created":1,"model":"m"})"),
      options(true));
  CHECK(d.chunks.empty());
}

TEST_CASE("chat stream: missing id/object/created/model are filled in", "[chat_stream]") {
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  decoder.feed(event(R"({"choices":[{"index":0,"delta":{"role":"assistant"}}]})"), out);
  decoder.feed(event(R"({"id":"up-1","created":42,"model":"real","choices":[{"index":0,"delta":{"content":"x"}}]})"), out);
  decoder.feed(event(R"({"id":"up-2","created":43,"model":"other","choices":[]})"), out);  // not the first: ignored
  decoder.feed(event(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"), out);
  REQUIRE(out.size() == 3);
  const auto first = parse(out[0].json);
  CHECK(first.at("id") == "chatcmpl-fallback");
  CHECK(first.at("object") == "chat.completion.chunk");
  CHECK(first.at("created") == 1700000000);
  CHECK(first.at("model") == "up-model");
  CHECK(first.at("choices").as_array()[0].at("delta").at("role") == "assistant");
  const auto second = parse(out[1].json);
  CHECK(second.at("id") == "up-1");
  CHECK(second.at("object") == "chat.completion.chunk");
  const auto third = parse(out[2].json);  // the upstream's first values, once it sent them
  CHECK(third.at("id") == "up-1");
  CHECK(third.at("created") == 42);
  CHECK(third.at("model") == "real");
  CHECK(out[2].kind == Kind::finish);
  CHECK(parse(decoder.synthetic_chunk()) ==
        parse(R"({"id":"up-1","object":"chat.completion.chunk","created":42,"model":"real","choices":[{"index":0,"delta":{},"finish_reason":null}]})"));
}

TEST_CASE("chat stream: the synthetic chunk uses the fallbacks when the upstream sent none", "[chat_stream]") {
  auto o = options();
  o.upstream_model = "we\"ird";
  ChatStreamDecoder decoder(o);
  CHECK(decoder.synthetic_chunk() ==
        R"({"id":"chatcmpl-fallback","object":"chat.completion.chunk","created":1700000000,"model":"we\"ird","choices":[{"index":0,"delta":{},"finish_reason":null}]})");
}

TEST_CASE("chat stream: multi-line data comes out as one line", "[chat_stream]") {
  const std::string stream =
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\r\ndata: \"created\":1,\"model\":\"m\",\n"
      "data: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\nb\"}}]\rdata: }\n\n";
  const Decoded d = decode(stream);
  REQUIRE(d.chunks.size() == 1);
  CHECK(d.chunks[0].json ==
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a\nb"}}]})");
  SECTION("also when the chunk is rewritten") {
    const Decoded r = decode("data: {\"choices\":\ndata: [{\"delta\":{}}]}\n\n");
    REQUIRE(r.chunks.size() == 1);
    CHECK(r.chunks[0].json.find_first_of("\r\n") == std::string::npos);
    CHECK(parse(r.chunks[0].json).at("model") == "up-model");
  }
}

TEST_CASE("chat stream: every way of splitting the bytes gives the same chunks", "[chat_stream]") {
  const std::string stream =
      "\xEF\xBB\xBF" ": keep-alive\r\n\r\n" + event(R"({"choices":[{"delta":{"role":"assistant"}}]})") +
      "event: x\rid: 1\rretry: 5\rdata: " + kContent + "\r\r" + "data: not json\n\n" +
      event(R"({"id":"c","choices":[{"index":1,"delta":{}},{"index":0,"delta":{"content":"z"}}]})") +
      "data: {\"choices\":\r\ndata: []," + "\r\ndata: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n" +
      event(kFinish) + "data: [DONE]\n\n" + event(kContent);
  for (bool wants_usage : {false, true}) {
    INFO("client_wants_usage " << wants_usage);
    const Decoded whole = decode(stream, options(wants_usage));
    CHECK(whole.status == Status::done);
    CHECK(whole.chunks.size() == (wants_usage ? 5u : 4u));
    CHECK(decode_bytewise(stream, options(wants_usage)) == whole);
    for (size_t cut = 0; cut <= stream.size(); ++cut) {
      ChatStreamDecoder decoder(options(wants_usage));
      Decoded split;
      decoder.feed(std::string_view(stream).substr(0, cut), split.chunks);
      split.status = decoder.feed(std::string_view(stream).substr(cut), split.chunks);
      INFO("cut at " << cut);
      REQUIRE(split == whole);
    }
  }
}

TEST_CASE("chat stream: an oversized event stops the stream", "[chat_stream]") {
  auto o = options();
  o.max_event_bytes = kContent.size() + 10;
  ChatStreamDecoder decoder(o);
  std::vector<ChatChunk> out;
  const std::string big = event(R"({"choices":[{"index":0,"delta":{"content":")" + std::string(200, 'x') + "\"}}]}");
  CHECK(decoder.feed(event(kContent) + big, out) == Status::oversized);
  CHECK(out.size() == 1);  // the chunk before it
  CHECK(decoder.feed(event(kContent), out) == Status::oversized);
  CHECK(out.size() == 1);
}

TEST_CASE("chat stream: an upstream cut inside an event leaves it undecoded", "[chat_stream]") {
  ChatStreamDecoder decoder(options());
  std::vector<ChatChunk> out;
  CHECK(decoder.feed(event(kContent) + "data: " + kFinish + "\n", out) == Status::more);
  CHECK(out.size() == 1);
  CHECK(decoder.has_partial_event());
  CHECK_FALSE(decoder.complete());
}
