// The multipart/form-data body a transcription attempt sends upstream: our own boundary,
// the form fields, then the file part streamed from a BodySource (the server's upload
// spool). Built fresh per attempt (each attempt may use another route's upstream_model),
// so failover replays the identical file bytes without a second copy in memory.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/body_source.h"

namespace tresor::providers {

using common::BodySource;

struct FormField {
  std::string name;
  std::string value;
};

struct FilePart {
  std::string field_name = "file";
  std::string filename;
  std::string content_type;
};

// A random 32-hex-digit boundary (128 bits): a collision with file content is not a
// practical concern, and field values are checked against it.
std::string random_multipart_boundary();

// Quotes a Content-Disposition parameter value as RFC 7578 §4.2 allows and browsers (the
// WHATWG form encoding) do: `"`, CR and LF become %22, %0D and %0A. A backslash is sent
// as the quoted-pair `\\` (RFC 9110 §5.6.4, RFC 2045 quoted-string): a receiver that
// unescapes quoted strings (python-multipart, Go, busboy) reads one backslash; raw, it
// would read `\x` as an escaped `x` and lose it.
std::string quote_disposition_value(std::string_view value);

class MultipartUploadBody final : public BodySource {
 public:
  // `file_bytes` is the file part's content (a sealed upload spool); it must outlive
  // this object, which rewinds it with itself. A field value that contains the boundary
  // makes the constructor pick another boundary.
  MultipartUploadBody(const std::vector<FormField>& fields, const FilePart& file, BodySource& file_bytes);

  // "multipart/form-data; boundary=…", for the request's Content-Type.
  std::string content_type() const;
  const std::string& boundary() const { return boundary_; }

  uint64_t size() const override;
  void rewind() override;
  boost::asio::awaitable<size_t> read(char* buf, size_t n) override;

 private:
  void build(const std::vector<FormField>& fields, const FilePart& file);
  // Copies from head_ or tail_ at position_ (whichever it is in); 0 inside the file.
  size_t copy_framing(char* buf, size_t n);

  BodySource& file_bytes_;
  std::string boundary_;
  std::string head_;  // every field part, then the file part's headers
  std::string tail_;  // CRLF and the closing delimiter
  uint64_t position_ = 0;
};

}  // namespace tresor::providers
