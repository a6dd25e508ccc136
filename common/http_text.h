// Small pieces of HTTP field-value syntax shared by the parsers of headers we read
// (Authorization, X-Tresor-Timeout-Seconds, Content-Type, Content-Encoding, multipart
// part headers).
#pragma once

#include <string_view>

namespace tresor::common {

// `s` without the optional whitespace (OWS: spaces and tabs, RFC 9110 §5.6.3) around it.
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace tresor::common
