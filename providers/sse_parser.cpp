#include "providers/sse_parser.h"

#include <cstring>

namespace tresor::providers {
namespace {

constexpr char kBom[] = "\xEF\xBB\xBF";
constexpr size_t kBomSize = 3;

// Offset of the first CR or LF in `bytes`, or npos. Two memchr scans: event data rarely
// holds a CR, so the second scan is bounded by the first's hit and usually short.
size_t find_line_end(std::string_view bytes) {
  const char* begin = bytes.data();
  size_t end = bytes.size();
  if (const void* lf = std::memchr(begin, '\n', end)) end = static_cast<const char*>(lf) - begin;
  if (const void* cr = std::memchr(begin, '\r', end)) return static_cast<const char*>(cr) - begin;
  return end == bytes.size() ? std::string_view::npos : end;
}

}  // namespace

// Skips one leading BOM, which may itself arrive split over pieces. Returns false when
// `bytes` ran out while the bytes seen so far could still be a BOM.
bool SseParser::skip_bom(std::string_view& bytes) {
  while (!bom_checked_) {
    if (bytes.empty()) return false;
    if (bytes.front() == kBom[bom_matched_]) {
      bytes.remove_prefix(1);
      bom_checked_ = ++bom_matched_ == kBomSize;
      continue;
    }
    // Not a BOM: the bytes held back so far are the start of the first line.
    line_.append(kBom, bom_matched_);
    bom_checked_ = true;
  }
  return true;
}

SseParser::Next SseParser::next(std::string_view& bytes) {
  if (failed_) return Next::oversized;
  if (dispatched_) {
    data_.clear();  // keeps its capacity: one buffer serves every event
    has_data_ = false;
    dispatched_ = false;
  }
  if (!skip_bom(bytes)) return Next::need_more;
  while (!bytes.empty()) {
    if (last_was_cr_ && bytes.front() == '\n') {  // the LF of a CRLF
      bytes.remove_prefix(1);
      last_was_cr_ = false;
      continue;
    }
    const size_t end = find_line_end(bytes);
    if (end == std::string_view::npos) {  // a partial line: keep it for the next piece
      line_.append(bytes);
      bytes = {};
      last_was_cr_ = false;
      break;
    }
    last_was_cr_ = bytes[end] == '\r';
    std::string_view line = bytes.substr(0, end);
    bytes.remove_prefix(end + 1);
    if (!line_.empty()) {
      line_.append(line);
      line = line_;
    }
    // Checked at every line end and at the end of every piece: the largest sizes the
    // event reaches, so any split of the bytes gives the same verdict.
    if (over_limit(line.size())) {
      failed_ = true;
      return Next::oversized;
    }
    const bool dispatch = process_line(line);
    line_.clear();
    if (dispatch) {
      dispatched_ = true;
      return Next::event;
    }
  }
  if (over_limit(line_.size())) {
    failed_ = true;
    return Next::oversized;
  }
  return Next::need_more;
}

bool SseParser::feed(std::string_view bytes, std::vector<std::string>& events) {
  for (;;) {
    switch (next(bytes)) {
      case Next::event:
        events.push_back(std::move(data_));
        break;
      case Next::need_more:
        return true;
      case Next::oversized:
        return false;
    }
  }
}

bool SseParser::process_line(std::string_view line) {
  if (line.empty()) return has_data_;  // blank line: dispatch (an empty buffer gives no event)
  if (line.front() == ':') return false;  // comment / keep-alive
  const auto colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    // The spec appends value + "\n" and removes the last "\n" at dispatch; joining with
    // "\n" between values is the same and leaves data_ ready to hand out.
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  }
  // event, id, retry and unknown fields: nothing the OpenAI chat stream needs.
  return false;
}

}  // namespace tresor::providers
