#include "server/multipart_parser.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/http_text.h"

namespace tresor::server {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

// RFC 7230 tchar: what a header name or parameter name may contain.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

// RFC 2046 bchars (without the space, handled by the caller).
bool is_bchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

struct Param {
  std::string name;  // lower-cased: parameter names are case-insensitive
  std::string value;
};

// Parses `*( OWS ";" OWS name "=" (token | quoted-string) )` as found after a media type
// or disposition type. In quoted strings a backslash escapes only `"` and `\` (so
// filename="a\"b.wav" is a"b.wav); any other backslash is kept, because browsers send
// Windows paths unescaped (filename="C:\dir\a.wav", the HTML form encoding escapes
// nothing but `"`, CR and LF, as %22, %0D, %0A). Unquoted values run to the next ';'
// (lenient: some clients send spaces in unquoted filenames). Returns nullopt on a syntax
// error.
std::optional<std::vector<Param>> parse_params(std::string_view s) {
  std::vector<Param> params;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  };
  while (true) {
    skip_ws();
    if (i == s.size()) return params;
    if (s[i] != ';') return std::nullopt;
    ++i;
    skip_ws();
    if (i == s.size()) return params;  // a trailing ';' is harmless
    const size_t name_start = i;
    while (i < s.size() && is_tchar(s[i])) ++i;
    if (i == name_start) return std::nullopt;
    Param p;
    for (char c : s.substr(name_start, i - name_start)) p.name.push_back(lower(c));
    skip_ws();
    if (i == s.size() || s[i] != '=') return std::nullopt;
    ++i;
    skip_ws();
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        const char c = s[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < s.size() && (s[i] == '"' || s[i] == '\\')) {
          p.value.push_back(s[i++]);
        } else {
          p.value.push_back(c);
        }
      }
      if (!closed) return std::nullopt;
    } else {
      const size_t end = std::min(s.find(';', i), s.size());
      const std::string_view raw = common::trim_ows(s.substr(i, end - i));
      if (raw.empty() || raw.find('"') != std::string_view::npos) return std::nullopt;
      p.value = raw;
      i = end;
    }
    params.push_back(std::move(p));
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// RFC 8187 ext-value in UTF-8: UTF-8'[language]'percent-encoded. nullopt for any other
// charset or a broken escape (the parameter is then ignored, as if absent).
std::optional<std::string> decode_ext_value(std::string_view v) {
  const size_t q1 = v.find('\'');
  if (q1 == std::string_view::npos || !iequals(v.substr(0, q1), "utf-8")) return std::nullopt;
  const size_t q2 = v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return std::nullopt;
  std::string out;
  for (size_t i = q2 + 1; i < v.size(); ++i) {
    if (v[i] != '%') {
      out.push_back(v[i]);
      continue;
    }
    if (i + 2 >= v.size() || hex_value(v[i + 1]) < 0 || hex_value(v[i + 2]) < 0) return std::nullopt;
    out.push_back(static_cast<char>(hex_value(v[i + 1]) * 16 + hex_value(v[i + 2])));
    i += 2;
  }
  return out;
}

}  // namespace

std::optional<std::string> boundary_from_content_type(std::string_view content_type) {
  const size_t semi = std::min(content_type.find(';'), content_type.size());
  if (!iequals(common::trim_ows(content_type.substr(0, semi)), "multipart/form-data")) return std::nullopt;
  const auto params = parse_params(content_type.substr(semi));
  if (!params) return std::nullopt;
  std::optional<std::string> boundary;
  for (const Param& p : *params) {
    if (p.name != "boundary") continue;
    if (boundary) return std::nullopt;  // two boundaries: ambiguous, refuse to guess
    boundary = p.value;
  }
  if (!boundary || boundary->empty() || boundary->size() > 70 || boundary->back() == ' ') return std::nullopt;
  if (!std::all_of(boundary->begin(), boundary->end(), is_bchar)) return std::nullopt;
  return boundary;
}

MultipartParser::MultipartParser(std::string_view boundary, MultipartHandler& handler, MultipartLimits limits)
    : delimiter_("\r\n--" + std::string(boundary)),
      searcher_(delimiter_.cbegin(), delimiter_.cend()),
      handler_(handler),
      limits_(limits),
      // RFC 2046 lets the first delimiter open the body without a preceding CRLF;
      // pretending the body starts with one lets a single delimiter search cover both.
      tail_("\r\n") {}

void MultipartParser::fail(MultipartError code, std::string message) {
  if (!error_) error_ = MultipartFailure{code, std::move(message)};
}

void MultipartParser::emit(std::string_view bytes) {
  if (bytes.empty() || state_ != State::Body) return;  // preamble bytes are discarded
  if (!in_file_part_) {
    // Counted before delivery so a handler buffering field values never sees more than the limit.
    field_bytes_ += bytes.size();
    if (field_bytes_ > limits_.max_field_bytes) {
      fail(MultipartError::FieldTooLong, "form field exceeds " + std::to_string(limits_.max_field_bytes) + " bytes");
      return;
    }
  }
  handler_.on_part_data(bytes);
}

// The first position >= from where region's suffix is a proper prefix of the delimiter
// (a delimiter that may be completed by the next piece), or region.size() if none.
size_t MultipartParser::held_back_start(std::string_view region, size_t from) const {
  for (size_t q = region.find('\r', from); q != std::string_view::npos; q = region.find('\r', q + 1)) {
    if (std::string_view(delimiter_).starts_with(region.substr(q))) return q;
  }
  return region.size();
}

// Scans for the delimiter (Preamble or Body), emitting bytes that cannot belong to it.
// Returns the bytes of `in` consumed; found=true means they end with a full delimiter.
size_t MultipartParser::scan(std::string_view in, bool& found) {
  found = false;
  const std::string_view delim = delimiter_;
  if (!tail_.empty()) {
    // A delimiter may straddle the held-back tail and `in`. Try every candidate start in
    // the tail (each a prefix of the delimiter) against the start of `in`, without
    // concatenating, so the lookbehind never grows past one partial delimiter.
    for (size_t q = held_back_start(tail_, 0); q < tail_.size(); q = held_back_start(tail_, q + 1)) {
      const std::string_view rest = delim.substr(tail_.size() - q);
      if (in.size() >= rest.size()) {
        if (!in.starts_with(rest)) continue;
        emit(std::string_view(tail_).substr(0, q));
        tail_.clear();
        found = true;
        return rest.size();
      }
      if (rest.starts_with(in)) {
        // Still a possible delimiter but undecided: keep it and wait for more bytes.
        emit(std::string_view(tail_).substr(0, q));
        tail_.erase(0, q);
        tail_.append(in);
        peak_tail_ = std::max(peak_tail_, tail_.size());
        return in.size();
      }
    }
    emit(tail_);
    tail_.clear();
    if (error_) return in.size();
  }
  const auto [match, match_end] = searcher_(in.begin(), in.end());
  if (match != in.end()) {
    const size_t pos = static_cast<size_t>(match - in.begin());
    emit(in.substr(0, pos));
    found = true;
    return pos + delim.size();
  }
  // Only the last delimiter_.size() - 1 bytes can start a delimiter that the next piece completes.
  const size_t from = in.size() >= delim.size() ? in.size() - (delim.size() - 1) : 0;
  const size_t keep = held_back_start(in, from);
  emit(in.substr(0, keep));
  tail_.assign(in.substr(keep));
  peak_tail_ = std::max(peak_tail_, tail_.size());
  return in.size();
}

size_t MultipartParser::consume_after_delimiter(std::string_view in) {
  size_t i = 0;
  while (i < in.size()) {
    const char c = in[i++];
    switch (after_) {
      case After::Start:
        if (c == '-') {
          after_ = After::Dash;
        } else if (c == ' ' || c == '\t') {
          after_ = After::Padding;  // RFC 2046 transport padding before the CRLF
        } else if (c == '\r') {
          after_ = After::Cr;
        } else {
          fail(MultipartError::MalformedBoundary, "delimiter not followed by CRLF or \"--\"");
          return in.size();
        }
        break;
      case After::Dash:
        if (c != '-') {
          fail(MultipartError::MalformedBoundary, "delimiter not followed by CRLF or \"--\"");
          return in.size();
        }
        state_ = State::Epilogue;
        return i;
      case After::Padding:
        if (c == '\r') {
          after_ = After::Cr;
        } else if (c != ' ' && c != '\t') {
          fail(MultipartError::MalformedBoundary, "delimiter not followed by CRLF or \"--\"");
          return in.size();
        }
        break;
      case After::Cr:
        if (c != '\n') {
          fail(MultipartError::MalformedBoundary, "bare CR after delimiter");
          return in.size();
        }
        if (parts_ == limits_.max_parts) {
          fail(MultipartError::TooManyParts, "more than " + std::to_string(limits_.max_parts) + " parts");
          return in.size();
        }
        state_ = State::Headers;
        // Seeded with the boundary line's CRLF so that "\r\n\r\n" also finds an empty header block.
        headers_ = "\r\n";
        return i;
    }
  }
  return i;
}

size_t MultipartParser::consume_headers(std::string_view in) {
  constexpr std::string_view kEnd = "\r\n\r\n";
  const size_t old = headers_.size();
  // headers_ = seed CRLF + block + "\r\n\r\n"-completing CRLF: never copy more than
  // that can legally be, so a header flood costs nothing.
  const size_t room = limits_.max_header_bytes + kEnd.size() - old;
  headers_.append(in.substr(0, room));
  const size_t end = headers_.find(kEnd, old >= 3 ? old - 3 : 0);
  const auto too_long = [&] {
    fail(MultipartError::HeaderTooLong, "part headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes");
  };
  if (end == std::string::npos) {
    // A terminator still to come would start at size - 3 or later.
    if (headers_.size() > limits_.max_header_bytes + 3) too_long();
    return std::min(in.size(), room);
  }
  if (end > limits_.max_header_bytes) {  // the block (header lines with their CRLFs) is `end` bytes
    too_long();
    return in.size();
  }
  const size_t used = end + kEnd.size() - old;  // the rest of the copy is re-read from `in` as body
  const std::string block = headers_.substr(2, end);  // each line keeps its CRLF
  headers_.clear();
  headers_.shrink_to_fit();
  begin_part(block);
  return used;
}

void MultipartParser::begin_part(std::string_view block) {
  PartHeaders part;
  bool has_disposition = false;
  bool has_name = false;
  while (!block.empty()) {
    const size_t eol = block.find("\r\n");
    const std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    const size_t colon = line.find(':');
    // Obsolete line folding (a leading space) has no colon-less form we accept: RFC 7578
    // senders do not fold, and rejecting keeps the grammar unambiguous.
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
      fail(MultipartError::MalformedHeaders, "malformed part header line");
      return;
    }
    const std::string_view value = common::trim_ows(line.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](char c) {
          const auto u = static_cast<unsigned char>(c);
          return (u < 0x20 && c != '\t') || u == 0x7f;
        })) {
      fail(MultipartError::MalformedHeaders, "control character in part header");
      return;
    }
    const std::string_view name = line.substr(0, colon);
    if (iequals(name, "content-disposition")) {
      if (has_disposition) {
        fail(MultipartError::MalformedHeaders, "duplicate Content-Disposition");
        return;
      }
      has_disposition = true;
      const size_t semi = std::min(value.find(';'), value.size());
      if (!iequals(common::trim_ows(value.substr(0, semi)), "form-data")) {
        fail(MultipartError::MalformedHeaders, "Content-Disposition is not form-data");
        return;
      }
      const auto params = parse_params(value.substr(semi));
      if (!params) {
        fail(MultipartError::MalformedHeaders, "malformed Content-Disposition parameters");
        return;
      }
      for (const Param& p : *params) {
        if (p.name == "name") {
          if (has_name) {
            fail(MultipartError::MalformedHeaders, "duplicate name parameter");
            return;
          }
          has_name = true;
          part.name = p.value;
        } else if (p.name == "filename") {
          part.filename = p.value;
        } else if (p.name == "filename*") {
          part.filename_star = decode_ext_value(p.value);
          if (!part.filename_star) part.filename_star = std::string();  // still a file, name unknown
        }
      }
    } else if (iequals(name, "content-type")) {
      part.content_type = value;
    }
  }
  if (!has_disposition) {
    fail(MultipartError::MissingContentDisposition, "part without Content-Disposition");
    return;
  }
  if (part.name.empty()) {
    fail(MultipartError::MissingName, "Content-Disposition without a name");
    return;
  }
  ++parts_;
  in_file_part_ = handler_.is_file_part(part);
  field_bytes_ = 0;
  state_ = State::Body;
  handler_.on_part_begin(part);
}

bool MultipartParser::feed(std::string_view in) {
  while (!in.empty() && !error_) {
    switch (state_) {
      case State::Preamble:
      case State::Body: {
        bool found = false;
        in.remove_prefix(scan(in, found));
        if (found && !error_) {
          if (state_ == State::Body) handler_.on_part_end();
          state_ = State::AfterDelimiter;
          after_ = After::Start;
        }
        break;
      }
      case State::AfterDelimiter:
        in.remove_prefix(consume_after_delimiter(in));
        break;
      case State::Headers:
        in.remove_prefix(consume_headers(in));
        break;
      case State::Epilogue:
        // RFC 2046 would allow an epilogue, but nothing legitimate sends one to an API;
        // anything but line ends and blanks is a sign of a broken or smuggling client.
        if (in.find_first_not_of(" \t\r\n") != std::string_view::npos) {
          fail(MultipartError::DataAfterClose, "data after the closing boundary");
        }
        in = {};
        break;
    }
  }
  return !error_;
}

bool MultipartParser::finish() {
  if (error_) return false;
  if (state_ != State::Epilogue) {
    fail(MultipartError::Truncated, "body ended before the closing boundary");
    return false;
  }
  return true;
}

}  // namespace tresor::server
