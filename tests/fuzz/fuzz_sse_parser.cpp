// The upstream text/event-stream parser (providers/sse_parser.h).
// Input: byte 0 picks a small max_event_bytes (to reach the limit path), then a split
// plan (see fuzz_input.h), then the stream bytes.
// Properties: no event exceeds the limit; how the bytes are cut into pieces changes
// nothing (same events, same verdict, same partial state) compared with one feed, and the
// pull API next() agrees with feed(); under the production limit the events are those of
// a literal reading of the WHATWG "event stream interpretation" rules (reference() below:
// BOM, CRLF/LF/CR, comments, one space after the colon, data buffer + "\n", blank line
// dispatch, an unfinished event at the end dropped).
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
  bool operator==(const Outcome&) const = default;
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

Outcome run_pull(size_t max_event_bytes, const std::vector<std::string_view>& pieces) {
  SseParser parser(max_event_bytes);
  Outcome out;
  for (auto piece : pieces) {
    for (;;) {
      const auto next = parser.next(piece);
      if (next == SseParser::Next::oversized) {
        out.ok = false;
        return out;
      }
      if (next == SseParser::Next::need_more) break;
      out.events.push_back(parser.data());
    }
    FUZZ_CHECK(piece.empty());
  }
  out.partial = parser.has_partial_event();
  return out;
}

// The WHATWG algorithm read literally, on the whole stream at once, without a limit.
std::vector<std::string> reference(std::string_view s) {
  if (s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  std::vector<std::string> events;
  std::string data;
  size_t i = 0;
  for (;;) {
    const size_t end = s.find_first_of("\r\n", i);
    if (end == std::string_view::npos) break;  // an unterminated last line is never processed
    const std::string_view line = s.substr(i, end - i);
    i = end + 1;
    if (s[end] == '\r' && i < s.size() && s[i] == '\n') ++i;
    if (line.empty()) {
      if (!data.empty()) {
        data.pop_back();
        events.push_back(data);
      }
      data.clear();
      continue;
    }
    if (line.front() == ':') continue;
    const size_t colon = line.find(':');
    std::string_view field = line, value;
    if (colon != std::string_view::npos) {
      field = line.substr(0, colon);
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      data.append(value);
      data += '\n';
    }
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t limit_byte = tresor::fuzz::take_byte(in);
  // 0: the production default (8 MiB); otherwise 1..255 bytes.
  const size_t max_event_bytes = limit_byte == 0 ? SseParser::kDefaultMaxEventBytes : limit_byte;
  const auto plan = tresor::fuzz::take_split_plan(in);
  const auto pieces = tresor::fuzz::split_cyclic(in, plan);

  const Outcome whole = run(max_event_bytes, {in});
  const Outcome split = run(max_event_bytes, pieces);

  for (const auto& e : whole.events) FUZZ_CHECK(e.size() <= max_event_bytes);
  FUZZ_CHECK(whole.ok == split.ok);
  FUZZ_CHECK(whole.events == split.events);
  FUZZ_CHECK(whole.partial == split.partial);
  FUZZ_CHECK(run_pull(max_event_bytes, pieces) == split);
  if (limit_byte == 0 && in.size() < max_event_bytes) {
    FUZZ_CHECK(whole.ok);
    FUZZ_CHECK(whole.events == reference(in));
  }
  return 0;
}
