// Incremental parser for an upstream text/event-stream body (WHATWG "server-sent
// events" framing): bytes arrive in arbitrary pieces, complete events come out.
// Written by hand because no Debian package offers an SSE parser; it is ~80 lines and
// fuzzed (tests/fuzz/).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tresor::providers {

class SseParser {
 public:
  // An event larger than this is a protocol error (a hostile or broken upstream must
  // not make us buffer without bound).
  explicit SseParser(size_t max_event_bytes = 8 * 1024 * 1024) : max_event_bytes_(max_event_bytes) {}

  // Feeds bytes; appends the `data` of every event completed by them to `events`
  // (multi-line data joined with '\n', as the spec says). Events without a data field
  // (comments, keep-alives) produce nothing. Returns false once an event exceeded the
  // size limit; the parser is then unusable.
  bool feed(std::string_view bytes, std::vector<std::string>& events);

  // True while a partial line or event is buffered (an upstream that ends here was cut).
  bool has_partial_event() const { return !line_.empty() || has_data_; }

 private:
  void process_line(std::string_view line, std::vector<std::string>& events);

  size_t max_event_bytes_;
  std::string line_;
  std::string data_;
  bool has_data_ = false;
  bool last_was_cr_ = false;
};

}  // namespace tresor::providers
