// The upstream chat-stream decoder (providers/chat_stream_decoder.h).
// Input: byte 0 = flags (bit 0: client_wants_usage; bits 1..7: 0 = the production
// max_event_bytes, otherwise a limit of 2 * value bytes, to reach the oversized path),
// then a split plan (see fuzz_input.h), then the stream bytes.
// Properties: how the bytes are cut into pieces changes nothing (same chunks, status and
// state) compared with one feed; every chunk's json is one line (no CR/LF) holding a JSON
// object with id, object, created and model, whose choices, if any, are all objects with
// "index": 0 (and an empty array exactly on usage chunks); the kinds agree with the
// content; nothing comes out after done/error_event/oversized; synthetic_chunk() is a
// JSON object too.
#include <simdjson.h>

#include <string>
#include <vector>

#include "providers/chat_stream_decoder.h"
#include "tests/fuzz/fuzz_input.h"

using tresor::providers::ChatChunk;
using tresor::providers::ChatStreamDecoder;

namespace {

struct Outcome {
  ChatStreamDecoder::Status status = ChatStreamDecoder::Status::more;
  std::vector<ChatChunk> chunks;
  bool complete = false;
  bool any_event = false;
  size_t dropped = 0;
  std::string error_event;
  std::optional<tresor::providers::TokenUsage> usage;
  std::string synthetic;
  bool operator==(const Outcome&) const = default;
};

Outcome run(const ChatStreamDecoder::Options& options, const std::vector<std::string_view>& pieces) {
  ChatStreamDecoder decoder(options);
  Outcome out;
  for (const auto piece : pieces) {
    const size_t before = out.chunks.size();
    const bool ended = out.status != ChatStreamDecoder::Status::more;
    const auto status = decoder.feed(piece, out.chunks);
    if (ended) {  // a finished decoder keeps its verdict and adds nothing
      FUZZ_CHECK(status == out.status);
      FUZZ_CHECK(out.chunks.size() == before);
    }
    out.status = status;
  }
  out.complete = decoder.complete();
  out.any_event = decoder.any_event();
  out.dropped = decoder.dropped_events();
  out.error_event = decoder.error_event();
  out.usage = decoder.usage();
  out.synthetic = decoder.synthetic_chunk();
  return out;
}

simdjson::dom::object parse_object(simdjson::dom::parser& parser, const std::string& json) {
  simdjson::dom::object object;
  FUZZ_CHECK(!parser.parse(json).get(object));
  return object;
}

void check_chunk(simdjson::dom::parser& parser, const ChatChunk& chunk) {
  FUZZ_CHECK(chunk.json.find_first_of("\r\n") == std::string::npos);
  const simdjson::dom::object object = parse_object(parser, chunk.json);
  for (const char* key : {"id", "object", "created", "model"}) FUZZ_CHECK(!object[key].error());
  simdjson::dom::array choices;
  const bool has_choices = !object["choices"].get(choices);
  if (has_choices) {
    for (simdjson::dom::element choice : choices) {
      int64_t index = -1;
      FUZZ_CHECK(choice.is_object());
      FUZZ_CHECK(!choice["index"].get(index) && index == 0);
    }
  }
  simdjson::dom::object usage;
  FUZZ_CHECK(chunk.usage.has_value() == !object["usage"].get(usage));
  if (chunk.kind == ChatChunk::Kind::usage) {
    FUZZ_CHECK(has_choices && choices.size() == 0);
    FUZZ_CHECK(chunk.usage.has_value());
  } else {
    FUZZ_CHECK(has_choices && choices.size() > 0);
    simdjson::dom::element reason;
    const bool finished = !choices.at(0)["finish_reason"].get(reason) && !reason.is_null();
    FUZZ_CHECK(finished == (chunk.kind == ChatChunk::Kind::finish));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t flags = tresor::fuzz::take_byte(in);
  ChatStreamDecoder::Options options;
  options.upstream_model = "fuzz-model";
  options.fallback_id = "chatcmpl-fuzz";
  options.created = 1700000000;
  options.client_wants_usage = (flags & 1) != 0;
  if (flags >> 1) options.max_event_bytes = 2u * (flags >> 1);
  const auto plan = tresor::fuzz::take_split_plan(in);

  const Outcome whole = run(options, {in});
  const Outcome split = run(options, tresor::fuzz::split_cyclic(in, plan));
  FUZZ_CHECK(whole == split);

  simdjson::dom::parser parser;
  for (const auto& chunk : whole.chunks) {
    check_chunk(parser, chunk);
    if (!options.client_wants_usage) FUZZ_CHECK(chunk.kind != ChatChunk::Kind::usage);
  }
  parse_object(parser, whole.synthetic);
  FUZZ_CHECK(whole.any_event || whole.chunks.empty());
  FUZZ_CHECK((whole.status == ChatStreamDecoder::Status::error_event) == !whole.error_event.empty());
  return 0;
}
