// Writing JSON text straight into a string, for the few documents built on every request
// (access log lines, receipt claims): a boost::json::object for them cost a dozen
// allocations and a hash table per request. Escaping follows Boost.JSON's serializer
// (short escapes for \b \f \n \r \t, \u00XX for other control characters, other bytes
// as they are), so the output is byte-identical to what boost::json::serialize wrote.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tresor::common {

inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t run = 0;  // start of the bytes copied as they are, appended in one go
  for (size_t i = 0; i < s.size(); ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u != '"' && u != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (u) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += kHex[u >> 4];
        out += kHex[u & 0xf];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// `"name":` — names are literals of ours, never needing escapes.
inline void append_json_name(std::string& out, std::string_view name) {
  out += '"';
  out += name;
  out += "\":";
}

inline void append_json_int(std::string& out, int64_t v) { out += std::to_string(v); }
inline void append_json_bool(std::string& out, bool v) { out += v ? "true" : "false"; }

}  // namespace tresor::common
