// Incremental multipart/form-data parser (RFC 7578 on top of RFC 2046 framing) for the
// /v1/audio/transcriptions upload. Bytes arrive in arbitrary pieces from the socket;
// parts come out as begin / data... / end events. File parts stream through: the parser
// only ever holds back a partial delimiter (shorter than "\r\n--" + boundary), so a
// 25 MiB upload never sits in parser memory. Plain synchronous code, no I/O.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace tresor::server {

// Extracts the boundary from a request Content-Type. Returns nullopt unless the media
// type is multipart/form-data (case-insensitive) with a boundary parameter (quoted or
// token) of 1..70 RFC 2046 bchars, not ending in a space.
std::optional<std::string> boundary_from_content_type(std::string_view content_type);

struct PartHeaders {
  std::string name;                     // Content-Disposition name parameter (required)
  std::optional<std::string> filename;  // the filename parameter as sent, unquoted
  // filename* (RFC 8187, UTF-8''percent-encoded) decoded, when it is valid. RFC 7578 §4.2
  // forbids senders to use it, but some do, alone or beside filename.
  std::optional<std::string> filename_star;
  std::string content_type;             // the part's Content-Type, empty when absent
};

enum class MultipartError {
  MalformedBoundary,          // the delimiter is followed by something other than "--" or CRLF
  MalformedHeaders,           // header syntax error, bad Content-Disposition value
  MissingContentDisposition,  // a part without Content-Disposition
  MissingName,                // Content-Disposition without a (non-empty) name
  TooManyParts,
  HeaderTooLong,              // a part's header block exceeds max_header_bytes
  FieldTooLong,               // a non-file part's value exceeds max_field_bytes
  DataAfterClose,             // non-whitespace after the closing delimiter
  Truncated,                  // finish() before the closing delimiter
};

struct MultipartFailure {
  MultipartError code;
  std::string message;
};

class MultipartHandler {
 public:
  virtual ~MultipartHandler() = default;
  virtual void on_part_begin(const PartHeaders& headers) = 0;
  // Whether the part is a file (streamed, unbounded) rather than a form field (held,
  // bounded by max_field_bytes). By default a part with a filename or filename*; a handler
  // that knows its form (the transcription's `file` part) says so by name, since a file
  // name is optional (RFC 7578 §4.2).
  virtual bool is_file_part(const PartHeaders& headers) const {
    return headers.filename.has_value() || headers.filename_star.has_value();
  }
  // Called zero or more times per part, in order; pieces are views into the fed bytes
  // or the parser's small lookbehind, valid only during the call.
  virtual void on_part_data(std::string_view bytes) = 0;
  virtual void on_part_end() = 0;
};

struct MultipartLimits {
  size_t max_header_bytes = 8 * 1024;  // per part, the whole header block
  size_t max_parts = 64;
  size_t max_field_bytes = 64 * 1024;  // per non-file part (is_file_part false)
};

class MultipartParser {
 public:
  MultipartParser(std::string_view boundary, MultipartHandler& handler, MultipartLimits limits = {});
  // The Boyer-Moore-Horspool searcher points into delimiter_, so the object must stay put.
  MultipartParser(const MultipartParser&) = delete;
  MultipartParser& operator=(const MultipartParser&) = delete;

  // Feeds the next piece of the body (any split, empty pieces allowed). Returns false
  // once an error occurred; the parser then ignores further input.
  bool feed(std::string_view bytes);
  // The body ended: true iff the closing delimiter was seen and nothing failed.
  // Otherwise an error is recorded (Truncated if nothing else failed first).
  bool finish();

  const std::optional<MultipartFailure>& error() const { return error_; }
  size_t parts() const { return parts_; }

  // Test hook: bytes currently held back (the lookbehind plus a partial header block)
  // and the largest lookbehind ever held, to prove file data is never accumulated.
  size_t buffered_bytes() const { return tail_.size() + headers_.size(); }
  size_t peak_lookbehind_bytes() const { return peak_tail_; }
  size_t delimiter_size() const { return delimiter_.size(); }

 private:
  enum class State { Preamble, AfterDelimiter, Headers, Body, Epilogue };
  // Sub-states of the line after a delimiter: "--" closes, [LWSP] CRLF opens a part.
  enum class After { Start, Dash, Padding, Cr };

  size_t scan(std::string_view in, bool& found);
  size_t held_back_start(std::string_view region, size_t from) const;
  void emit(std::string_view bytes);
  size_t consume_after_delimiter(std::string_view in);
  size_t consume_headers(std::string_view in);
  void begin_part(std::string_view block);
  void fail(MultipartError code, std::string message);

  std::string delimiter_;  // "\r\n--" + boundary
  std::boyer_moore_horspool_searcher<std::string::const_iterator> searcher_;
  MultipartHandler& handler_;
  MultipartLimits limits_;

  State state_ = State::Preamble;
  After after_ = After::Start;
  std::string tail_;     // a suffix of the scanned bytes that is a proper prefix of delimiter_
  std::string headers_;  // the header block so far, starting with the boundary line's CRLF
  size_t peak_tail_ = 0;
  size_t parts_ = 0;
  bool in_file_part_ = false;
  size_t field_bytes_ = 0;
  std::optional<MultipartFailure> error_;
};

}  // namespace tresor::server
