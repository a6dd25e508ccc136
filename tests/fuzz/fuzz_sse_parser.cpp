// The upstream text/event-stream parser (providers/sse_parser.h).
// Input: byte 0 picks a small max_event_bytes (to reach the limit path), then a split
// plan (see fuzz_input.h), then the stream bytes.
// Properties: no event exceeds the limit; how the bytes are cut into pieces changes
// nothing (same events, same verdict, same partial state) compared with one feed.
#include <string>
#include <vector>

#include "providers/sse_parser.h"
#include "tests/fuzz/fuzz_input.h"

using tresor::providers::SseParser;

namespace {

struct Outcome {
  bool ok = true;
  std::vector<std::string> events;
  bool partial = false;
};

Outcome run(size_t max_event_bytes, const std::vector<std::string_view>& pieces) {
  SseParser parser(max_event_bytes);
  Outcome out;
  for (const auto piece : pieces) {
    if (!parser.feed(piece, out.events)) {
      out.ok = false;  // the parser is unusable from here on: the caller drops the stream
      return out;
    }
  }
  out.partial = parser.has_partial_event();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t limit_byte = tresor::fuzz::take_byte(in);
  // 0: the production default (8 MiB); otherwise 1..255 bytes.
  const size_t max_event_bytes = limit_byte == 0 ? 8 * 1024 * 1024 : limit_byte;
  const auto plan = tresor::fuzz::take_split_plan(in);

  const Outcome whole = run(max_event_bytes, {in});
  const Outcome split = run(max_event_bytes, tresor::fuzz::split_cyclic(in, plan));

  for (const auto& e : whole.events) FUZZ_CHECK(e.size() <= max_event_bytes);
  FUZZ_CHECK(whole.ok == split.ok);
  FUZZ_CHECK(whole.events == split.events);
  FUZZ_CHECK(whole.partial == split.partial);
  return 0;
}
