// The multipart/form-data parser of the transcription upload: events must not depend on
// how the socket splits the body, file parts must stream, and every malformed input
// must end in a specific error rather than a guess.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "server/multipart_parser.h"

using tresor::server::boundary_from_content_type;
using tresor::server::MultipartError;
using tresor::server::MultipartHandler;
using tresor::server::MultipartLimits;
using tresor::server::MultipartParser;
using tresor::server::PartHeaders;

namespace {

constexpr std::string_view kBoundary = "----tresorBoundary7MA4YWxk";

// Records events; consecutive data pieces are joined because their split legitimately
// depends on how the body was fed.
struct Recorder : MultipartHandler {
  std::vector<std::string> events;
  bool in_data = false;
  void on_part_begin(const PartHeaders& h) override {
    events.push_back("begin name=" + h.name + " filename=" + (h.filename ? "<" + *h.filename + ">" : "none") +
                     " type=" + h.content_type);
    in_data = false;
  }
  void on_part_data(std::string_view bytes) override {
    REQUIRE(!bytes.empty());  // empty callbacks would be noise for the spool
    if (!in_data) events.emplace_back("data ");
    events.back().append(bytes);
    in_data = true;
  }
  void on_part_end() override {
    events.emplace_back("end");
    in_data = false;
  }
};

// Audio-like bytes that try hard to look like the delimiter without being one.
std::string tricky_binary() {
  std::string b;
  for (int i = 0; i < 256; ++i) b.push_back(static_cast<char>(i));
  const std::string near = "\r\n--" + std::string(kBoundary.substr(0, kBoundary.size() - 1));
  b += near + "X";                              // all but the last boundary char
  b += "\r\n--\r\n-\r\r\n\n--";                 // CR, LF, dashes
  b += "\n--" + std::string(kBoundary);         // boundary after a bare LF: not a delimiter
  b += "\r--" + std::string(kBoundary) + "--";  // after a bare CR: not a delimiter
  b += near;
  b += "\r\r";  // the data ends in CRs, right before the real delimiter
  return b;
}

std::string reference_body() {
  const std::string dash = "--" + std::string(kBoundary);
  return "This preamble is ignored.\r\n" + dash +
         "\r\n"
         "Content-Disposition: form-data; name=\"model\"\r\n"
         "\r\n"
         "whisper-large-v3\r\n" +
         dash +
         "\r\n"
         "content-disposition: FORM-DATA; name=language\r\n"
         "\r\n"
         "en\r\n" +
         dash +
         "  \r\n"  // transport padding after the delimiter
         "Content-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".wav\"; filename*=UTF-8''x.wav\r\n"
         "Content-Type: audio/wav\r\n"
         "\r\n" +
         tricky_binary() + "\r\n" + dash + "--\r\n";
}

std::vector<std::string> expected_events() {
  return {"begin name=model filename=none type=",
          "data whisper-large-v3",
          "end",
          "begin name=language filename=none type=",
          "data en",
          "end",
          "begin name=file filename=<a \"b\".wav> type=audio/wav",
          "data " + tricky_binary(),
          "end"};
}

struct Outcome {
  std::vector<std::string> events;
  bool ok = false;
  std::optional<MultipartError> error;
};

template <typename Split>
Outcome run(std::string_view body, Split split, MultipartLimits limits = {}, std::string_view boundary = kBoundary) {
  Recorder rec;
  MultipartParser parser(boundary, rec, limits);
  split(body, parser);
  Outcome out;
  out.ok = parser.finish();
  out.events = rec.events;
  if (parser.error()) {
    out.error = parser.error()->code;
    CHECK(!parser.error()->message.empty());
  }
  return out;
}

void whole(std::string_view body, MultipartParser& p) { p.feed(body); }

void bytewise(std::string_view body, MultipartParser& p) {
  for (char c : body) p.feed(std::string_view(&c, 1));
}

struct RandomSplit {
  std::mt19937* rng;
  size_t max_piece;
  void operator()(std::string_view body, MultipartParser& p) const {
    std::uniform_int_distribution<size_t> len(0, max_piece);  // 0: empty feeds are legal too
    while (!body.empty()) {
      const size_t n = std::min(len(*rng), body.size());
      p.feed(body.substr(0, n));
      body.remove_prefix(n);
    }
  }
};

std::string dash() { return "--" + std::string(kBoundary); }

std::string field(std::string_view name, std::string_view value) {
  return dash() + "\r\nContent-Disposition: form-data; name=\"" + std::string(name) + "\"\r\n\r\n" + std::string(value) +
         "\r\n";
}

std::string close_delimiter() { return dash() + "--\r\n"; }

// An error must be found whatever the split: checks whole and byte-by-byte feeding.
void expect_error(const std::string& body, MultipartError code, MultipartLimits limits = {}) {
  const Outcome a = run(body, whole, limits);
  CHECK_FALSE(a.ok);
  REQUIRE(a.error);
  CHECK(*a.error == code);
  const Outcome b = run(body, bytewise, limits);
  CHECK_FALSE(b.ok);
  REQUIRE(b.error);
  CHECK(*b.error == code);
  // Events before the error may differ (a field streamed byte by byte delivers its
  // first bytes before the limit trips), so only the verdict is compared.
}

}  // namespace

TEST_CASE("multipart: reference body gives the same events for any split", "[multipart]") {
  const std::string body = reference_body();
  const auto expected = expected_events();

  const Outcome w = run(body, whole);
  CHECK(w.ok);
  CHECK_FALSE(w.error);
  CHECK(w.events == expected);

  const Outcome b = run(body, bytewise);
  CHECK(b.ok);
  CHECK(b.events == expected);

  std::mt19937 rng(20240611);
  for (int i = 0; i < 400; ++i) {
    const size_t max_piece = (i % 4 == 0) ? 3 : (i % 4 == 1) ? 40 : (i % 4 == 2) ? 80 : 700;
    const Outcome r = run(body, RandomSplit{&rng, max_piece});
    REQUIRE(r.ok);
    REQUIRE(r.events == expected);
  }
}

TEST_CASE("multipart: body may start with the delimiter, no preamble", "[multipart]") {
  const Outcome o = run(field("model", "m") + close_delimiter(), whole);
  CHECK(o.ok);
  CHECK(o.events == std::vector<std::string>{"begin name=model filename=none type=", "data m", "end"});
}

TEST_CASE("multipart: empty values and trailing whitespace after the close are fine", "[multipart]") {
  const std::string body = field("prompt", "") + close_delimiter() + "\r\n \t\r\n";
  const Outcome o = run(body, bytewise);
  CHECK(o.ok);
  CHECK(o.events == std::vector<std::string>{"begin name=prompt filename=none type=", "end"});
}

TEST_CASE("multipart: boundary_from_content_type", "[multipart]") {
  CHECK(boundary_from_content_type("multipart/form-data; boundary=abc") == "abc");
  CHECK(boundary_from_content_type("Multipart/Form-Data ; charset=utf-8;BOUNDARY=\"a b:c\"") == "a b:c");
  CHECK(boundary_from_content_type("multipart/form-data; boundary=\"x\\\"y\"").has_value() == false);  // '"' is no bchar
  CHECK(boundary_from_content_type("multipart/form-data;boundary=\"----WebKitFormBoundary7MA4YWxkTrZu0gW\"") ==
        "----WebKitFormBoundary7MA4YWxkTrZu0gW");
  CHECK(boundary_from_content_type("multipart/form-data; boundary=" + std::string(70, 'a')) == std::string(70, 'a'));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary=" + std::string(71, 'a')));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary=\"\""));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary="));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data"));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary=\"ends in space \""));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary=a; boundary=b"));
  CHECK_FALSE(boundary_from_content_type("multipart/form-data; boundary=\"unterminated"));
  CHECK_FALSE(boundary_from_content_type("multipart/mixed; boundary=abc"));
  CHECK_FALSE(boundary_from_content_type("application/json"));
  CHECK_FALSE(boundary_from_content_type(""));
}

TEST_CASE("multipart: a quoted boundary from Content-Type parses a body", "[multipart]") {
  const auto boundary = boundary_from_content_type("multipart/form-data; boundary=\"my boundary:1\"");
  REQUIRE(boundary == "my boundary:1");
  const std::string body =
      "--my boundary:1\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--my boundary:1--";
  const Outcome o = run(body, bytewise, {}, *boundary);
  CHECK(o.ok);
  CHECK(o.events == std::vector<std::string>{"begin name=model filename=none type=", "data x", "end"});
}

TEST_CASE("multipart: error cases", "[multipart]") {
  SECTION("malformed header line") {
    expect_error(dash() + "\r\nContent-Disposition form-data; name=\"a\"\r\n\r\nx\r\n" + close_delimiter(),
                 MultipartError::MalformedHeaders);
  }
  SECTION("malformed Content-Disposition parameters") {
    expect_error(dash() + "\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n" + close_delimiter(),
                 MultipartError::MalformedHeaders);
  }
  SECTION("disposition type other than form-data") {
    expect_error(dash() + "\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n" + close_delimiter(),
                 MultipartError::MalformedHeaders);
  }
  SECTION("missing Content-Disposition") {
    expect_error(dash() + "\r\nContent-Type: text/plain\r\n\r\nx\r\n" + close_delimiter(),
                 MultipartError::MissingContentDisposition);
    expect_error(dash() + "\r\n\r\nx\r\n" + close_delimiter(), MultipartError::MissingContentDisposition);
  }
  SECTION("missing name") {
    expect_error(dash() + "\r\nContent-Disposition: form-data; filename=\"a.wav\"\r\n\r\nx\r\n" + close_delimiter(),
                 MultipartError::MissingName);
  }
  SECTION("too many parts") {
    MultipartLimits limits;
    limits.max_parts = 2;
    CHECK(run(field("a", "1") + field("b", "2") + close_delimiter(), whole, limits).ok);
    expect_error(field("a", "1") + field("b", "2") + field("c", "3") + close_delimiter(), MultipartError::TooManyParts,
                 limits);
  }
  SECTION("header too long") {
    MultipartLimits limits;
    const std::string line = "Content-Disposition: form-data; name=\"a\"\r\n";
    limits.max_header_bytes = line.size();  // exactly at the limit passes
    CHECK(run(dash() + "\r\n" + line + "\r\nx\r\n" + close_delimiter(), bytewise, limits).ok);
    limits.max_header_bytes = line.size() - 1;
    expect_error(dash() + "\r\n" + line + "\r\nx\r\n" + close_delimiter(), MultipartError::HeaderTooLong, limits);
    // A header flood without any terminator fails too, without buffering it.
    limits.max_header_bytes = 8 * 1024;
    expect_error(dash() + "\r\nX-Junk: " + std::string(100000, 'j'), MultipartError::HeaderTooLong, limits);
  }
  SECTION("field too long; file parts are not limited by it") {
    MultipartLimits limits;
    limits.max_field_bytes = 4;
    CHECK(run(field("a", "1234") + close_delimiter(), bytewise, limits).ok);
    expect_error(field("a", "12345") + close_delimiter(), MultipartError::FieldTooLong, limits);
    const std::string file = dash() + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n" +
                             std::string(100, 'z') + "\r\n" + close_delimiter();
    CHECK(run(file, whole, limits).ok);
  }
  SECTION("data after the closing boundary") {
    expect_error(field("a", "1") + close_delimiter() + "trailing", MultipartError::DataAfterClose);
    expect_error(field("a", "1") + dash() + "--x", MultipartError::DataAfterClose);
  }
  SECTION("delimiter followed by junk") {
    expect_error(field("a", "1") + dash() + "X\r\n" + close_delimiter(), MultipartError::MalformedBoundary);
    expect_error(field("a", "1") + dash() + "\rX", MultipartError::MalformedBoundary);
  }
  SECTION("body ended before the closing boundary") {
    expect_error("", MultipartError::Truncated);
    expect_error("only a preamble", MultipartError::Truncated);
    expect_error(field("a", "1"), MultipartError::Truncated);
    expect_error(field("a", "1") + dash(), MultipartError::Truncated);
    expect_error(field("a", "1") + dash() + "-", MultipartError::Truncated);
    expect_error(dash() + "\r\nContent-Disposition: form-data; name=\"a\"\r\n", MultipartError::Truncated);
  }
}

TEST_CASE("multipart: a 3 MiB file part streams through a boundary-sized lookbehind", "[multipart]") {
  std::mt19937 rng(7);
  std::string file(3 * 1024 * 1024, '\0');
  std::uniform_int_distribution<int> byte(0, 255);
  for (char& c : file) c = static_cast<char>(byte(rng));
  // Sprinkle near-delimiters so the lookbehind is exercised, not just the fast path.
  const std::string near = "\r\n--" + std::string(kBoundary.substr(0, 10));
  for (size_t pos = 1000; pos + near.size() < file.size(); pos += 4093) file.replace(pos, near.size(), near);

  const std::string head = dash() + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n\r\n";
  const std::string tail = "\r\n" + close_delimiter();

  struct Counter : MultipartHandler {
    size_t data = 0;
    size_t largest_piece = 0;
    void on_part_begin(const PartHeaders&) override {}
    void on_part_data(std::string_view b) override {
      data += b.size();
      largest_piece = std::max(largest_piece, b.size());
    }
    void on_part_end() override {}
  } counter;
  MultipartParser parser(kBoundary, counter);
  const size_t delim = parser.delimiter_size();
  REQUIRE(parser.feed(head));

  std::uniform_int_distribution<size_t> len(1, 64 * 1024);
  size_t fed = 0;
  size_t largest_fed = 0;
  while (fed < file.size()) {
    const size_t n = std::min(len(rng), file.size() - fed);
    REQUIRE(parser.feed(std::string_view(file).substr(fed, n)));
    fed += n;
    largest_fed = std::max(largest_fed, n);
    // Everything fed has been delivered except a partial delimiter.
    REQUIRE(parser.buffered_bytes() < delim);
    REQUIRE(counter.data + parser.buffered_bytes() == fed);
  }
  REQUIRE(parser.feed(tail));
  CHECK(parser.finish());
  CHECK(counter.data == file.size());
  CHECK(parser.peak_lookbehind_bytes() < delim);
  CHECK(counter.largest_piece <= largest_fed + delim);
}

namespace {

// One part with the given Content-Disposition parameters; the recorded begin event.
std::string begin_event(std::string_view params) {
  const std::string body = dash() + "\r\nContent-Disposition: form-data; name=\"file\"" + std::string(params) +
                           "\r\n\r\nx\r\n" + close_delimiter();
  Recorder r;
  MultipartParser p(kBoundary, r);
  p.feed(body);
  REQUIRE(p.finish());
  return r.events.at(0);
}

}  // namespace

TEST_CASE("multipart: backslashes in a quoted filename", "[multipart]") {
  // Browsers send Windows paths unescaped: only \" and \\ are escapes.
  CHECK(begin_event("; filename=\"C:\\Users\\me\\a.wav\"") == "begin name=file filename=<C:\\Users\\me\\a.wav> type=");
  CHECK(begin_event("; filename=\"a\\\"b\\\\c.wav\"") == "begin name=file filename=<a\"b\\c.wav> type=");
}

TEST_CASE("multipart: filename* alone is a file part, decoded from UTF-8''", "[multipart]") {
  struct StarRecorder : MultipartHandler {
    std::optional<std::string> star;
    size_t bytes = 0;
    void on_part_begin(const PartHeaders& h) override { star = h.filename_star; }
    void on_part_data(std::string_view b) override { bytes += b.size(); }
    void on_part_end() override {}
  };
  const std::string big(200, 'a');
  const std::string body = dash() + "\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''r%C3%A9union%201.mp3" +
                           "\r\n\r\n" + big + "\r\n" + close_delimiter();
  StarRecorder r;
  MultipartLimits limits;
  limits.max_field_bytes = 100;  // a field could not hold it: only a file part can
  MultipartParser p(kBoundary, r, limits);
  p.feed(body);
  REQUIRE(p.finish());
  CHECK(r.star == std::optional<std::string>("r\xC3\xA9union 1.mp3"));
  CHECK(r.bytes == big.size());
}

TEST_CASE("multipart: the handler decides what a file part is (one without a filename)", "[multipart]") {
  struct FileByName : Recorder {
    bool is_file_part(const PartHeaders& h) const override { return h.name == "file"; }
  };
  const std::string big(200, 'a');
  const std::string body =
      dash() + "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + big + "\r\n" + close_delimiter();
  MultipartLimits limits;
  limits.max_field_bytes = 100;
  FileByName r;
  MultipartParser p(kBoundary, r, limits);
  p.feed(body);
  CHECK(p.finish());
  expect_error(body, MultipartError::FieldTooLong, limits);  // the default: no filename, a field
}
