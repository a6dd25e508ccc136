#include "providers/sse_parser.h"

namespace tresor::providers {

bool SseParser::feed(std::string_view bytes, std::vector<std::string>& events) {
  for (char c : bytes) {
    // Lines end in "\r\n", "\n" or "\r"; a "\n" right after "\r" belongs to the same end.
    if (c == '\n' && last_was_cr_) {
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = (c == '\r');
    if (c == '\r' || c == '\n') {
      process_line(line_, events);
      line_.clear();
      continue;
    }
    line_ += c;
    if (line_.size() + data_.size() > max_event_bytes_) return false;
  }
  return true;
}

void SseParser::process_line(std::string_view line, std::vector<std::string>& events) {
  if (line.empty()) {  // blank line: dispatch
    if (has_data_) events.push_back(std::move(data_));
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  const auto colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  }
  // event:, id:, retry: carry nothing the OpenAI chat stream needs.
}

}  // namespace tresor::providers
