#include "providers/multipart_body.h"

#include "common/secure_random.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace tresor::providers {

std::string random_multipart_boundary() {
  unsigned char bytes[16];
  common::secure_random_bytes(bytes, sizeof bytes);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string b = "tresor-";
  for (unsigned char c : bytes) {
    b.push_back(kHex[c >> 4]);
    b.push_back(kHex[c & 0xf]);
  }
  return b;
}

std::string quote_disposition_value(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += "%22";
    else if (c == '\\') out += "\\\\";  // a quoted-pair (RFC 9110 §5.6.4): Windows paths keep their backslashes
    else if (c == '\r') out += "%0D";
    else if (c == '\n') out += "%0A";
    else out.push_back(c);
  }
  out.push_back('"');
  return out;
}

MultipartUploadBody::MultipartUploadBody(const std::vector<FormField>& fields, const FilePart& file,
                                         BodySource& file_bytes)
    : file_bytes_(file_bytes) {
  file_bytes_.rewind();  // each attempt's body starts at the file's first byte
  for (;;) {
    boundary_ = random_multipart_boundary();
    const bool clash = std::any_of(fields.begin(), fields.end(), [&](const FormField& f) {
      return f.value.find(boundary_) != std::string::npos;
    });
    if (!clash) break;
  }
  build(fields, file);
}

void MultipartUploadBody::build(const std::vector<FormField>& fields, const FilePart& file) {
  const std::string delimiter = "--" + boundary_ + "\r\n";
  for (const auto& f : fields) {
    head_ += delimiter;
    head_ += "Content-Disposition: form-data; name=" + quote_disposition_value(f.name) + "\r\n\r\n";
    head_ += f.value;
    head_ += "\r\n";
  }
  head_ += delimiter;
  head_ += "Content-Disposition: form-data; name=" + quote_disposition_value(file.field_name) +
           "; filename=" + quote_disposition_value(file.filename) + "\r\n";
  head_ += "Content-Type: " + file.content_type + "\r\n\r\n";
  tail_ = "\r\n--" + boundary_ + "--\r\n";
}

std::string MultipartUploadBody::content_type() const { return "multipart/form-data; boundary=" + boundary_; }

uint64_t MultipartUploadBody::size() const { return head_.size() + file_bytes_.size() + tail_.size(); }

void MultipartUploadBody::rewind() {
  file_bytes_.rewind();
  position_ = 0;
}

size_t MultipartUploadBody::copy_framing(char* buf, size_t n) {
  const uint64_t file_end = head_.size() + file_bytes_.size();
  const std::string* region = nullptr;
  uint64_t offset = 0;
  if (position_ < head_.size()) {
    region = &head_;
    offset = position_;
  } else if (position_ >= file_end && position_ - file_end < tail_.size()) {
    region = &tail_;
    offset = position_ - file_end;
  }
  if (!region) return 0;
  const size_t k = std::min<uint64_t>(n, region->size() - offset);
  std::memcpy(buf, region->data() + offset, k);
  position_ += k;
  return k;
}

// The body is three consecutive regions: head_, the file's bytes, tail_.
boost::asio::awaitable<size_t> MultipartUploadBody::read(char* buf, size_t n) {
  size_t copied = 0;
  while (copied < n) {
    const uint64_t file_end = head_.size() + file_bytes_.size();
    if (position_ >= head_.size() && position_ < file_end) {
      const size_t want = std::min<uint64_t>(n - copied, file_end - position_);
      const size_t got = co_await file_bytes_.read(buf + copied, want);
      if (got == 0) break;  // the file ended early; size() no longer holds, the caller sees it
      copied += got;
      position_ += got;
      continue;
    }
    const size_t k = copy_framing(buf + copied, n - copied);
    if (k == 0) break;
    copied += k;
  }
  co_return copied;
}

}  // namespace tresor::providers
