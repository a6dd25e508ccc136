// Incremental parser for an upstream text/event-stream body, per the WHATWG HTML
// "event stream interpretation" rules: bytes arrive in arbitrary pieces, complete events
// come out. Written by hand because no Debian package offers an SSE parser; it is small
// and fuzzed (tests/fuzz/fuzz_sse_parser.cpp).
//
// Rules kept (https://html.spec.whatwg.org/multipage/server-sent-events.html):
// - lines end in CRLF, LF or CR; a CR ending one piece and an LF starting the next are
//   one line end;
// - one leading UTF-8 BOM (EF BB BF) is skipped;
// - a line starting with ':' is a comment; `field:value` loses ONE space after the
//   colon; a line without a colon is a field with an empty value;
// - `data` appends value + "\n" to the data buffer; a blank line dispatches: an empty
//   buffer gives no event, otherwise the final "\n" is removed;
// - `event`, `id`, `retry` and unknown fields are ignored (nothing we relay needs them);
// - an event not ended by a blank line when the stream ends is not dispatched.
// Ours: an event (its data plus the line being read) over max_event_bytes is a failure.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tresor::providers {

class SseParser {
 public:
  static constexpr size_t kDefaultMaxEventBytes = 8 * 1024 * 1024;

  // An event larger than this is a protocol error (a hostile or broken upstream must
  // not make us buffer without bound).
  explicit SseParser(size_t max_event_bytes = kDefaultMaxEventBytes) : max_event_bytes_(max_event_bytes) {}

  enum class Next { event, need_more, oversized };

  // Consumes `bytes` up to and including the end of the next complete event and returns
  // `event` (its data is then in data(), valid until the next call), or consumes all of
  // them and returns `need_more`. `oversized` once an event exceeded the limit; the parser
  // then stays unusable. Pulling (rather than a callback or a vector) lets the caller
  // stop anywhere and reuse one data buffer for every event.
  Next next(std::string_view& bytes);

  // The data of the event next() just returned. Mutable so that the caller may move it
  // out or reserve padding in place (a JSON parser's need) without a copy.
  std::string& data() { return data_; }

  // Feeds bytes; appends the data of every event completed by them to `events`. Returns
  // false once an event exceeded the size limit; the parser is then unusable.
  bool feed(std::string_view bytes, std::vector<std::string>& events);

  // True while a partial line or event is buffered (an upstream that ends here was cut).
  bool has_partial_event() const { return !line_.empty() || has_data_ || (!bom_checked_ && bom_matched_ > 0); }

 private:
  bool skip_bom(std::string_view& bytes);
  bool over_limit(size_t line_size) const { return line_size + data_.size() > max_event_bytes_; }
  // Returns true when the line dispatches an event.
  bool process_line(std::string_view line);

  size_t max_event_bytes_;
  std::string line_;  // a line split across feeds
  std::string data_;
  bool has_data_ = false;    // a data field was seen since the last dispatch
  bool dispatched_ = false;  // data_ holds the event returned last: clear before going on
  bool last_was_cr_ = false;
  bool failed_ = false;
  bool bom_checked_ = false;
  size_t bom_matched_ = 0;  // BOM bytes matched so far at the very start of the stream
};

}  // namespace tresor::providers
