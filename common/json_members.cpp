#include "common/json_members.h"

namespace tresor::common {
namespace {

// Runs only on a body the DOM parser has already validated, so it needs no error
// handling beyond bounds. Written by hand because simdjson 3.0.1's on-demand front end
// (the one that exposes raw spans) crashed in this build: Debian's library and the
// header-compiled on-demand code disagree (SIGSEGV inside parser::iterate).
class MemberScanner {
 public:
  explicit MemberScanner(std::string_view text) : s_(text) {}

  void scan(std::vector<JsonMember>& out, simdjson::dom::object object) {
    skip_ws();
    ++i_;  // '{'
    auto keys = object.begin();
    for (;;) {
      skip_ws();
      if (s_[i_] == '}') return;
      if (s_[i_] == ',') {
        ++i_;
        skip_ws();
      }
      common::JsonMember m;
      const size_t key_start = i_;
      skip_string();
      m.raw_key = s_.substr(key_start, i_ - key_start);
      m.key = std::string(keys.key());  // unescaped, from the DOM (same order)
      ++keys;
      skip_ws();
      ++i_;  // ':'
      skip_ws();
      const size_t value_start = i_;
      skip_value();
      m.raw_value = s_.substr(value_start, i_ - value_start);
      out.push_back(std::move(m));
    }
  }

 private:
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void skip_string() {
    ++i_;  // opening quote
    while (i_ < s_.size() && s_[i_] != '"') i_ += s_[i_] == '\\' ? 2 : 1;
    ++i_;  // closing quote
  }
  void skip_value() {
    if (s_[i_] == '"') return skip_string();
    if (s_[i_] == '{' || s_[i_] == '[') {
      size_t depth = 0;
      do {
        const char c = s_[i_];
        if (c == '"') {
          skip_string();
          continue;
        }
        if (c == '{' || c == '[') ++depth;
        if (c == '}' || c == ']') --depth;
        ++i_;
      } while (depth > 0 && i_ < s_.size());
      return;
    }
    while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '}' && s_[i_] != ' ' && s_[i_] != '\t' &&
           s_[i_] != '\n' && s_[i_] != '\r')
      ++i_;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

void scan_top_level_members(std::string_view text, simdjson::dom::object object,
                            std::vector<JsonMember>& out) {
  MemberScanner(text).scan(out, object);
}

}  // namespace tresor::common
