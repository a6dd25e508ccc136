// The transcription request: media types (spec §7.2), the streamed upload (fields kept,
// file spooled, body hashed) and the form validation table (spec §7.1, §6.3); and the
// upstream multipart body, parsed back with our own parser to prove it round-trips.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "providers/multipart_body.h"
#include "receipts/claims.h"
#include "server/multipart_parser.h"
#include "server/spool_body_source.h"
#include "server/transcription_request.h"
#include "server/upload_spool.h"

using namespace tresor;
using server::accepted_audio_type;

namespace {

std::optional<std::string> type_of(std::string_view content_type, std::optional<std::string> filename = {}) {
  return accepted_audio_type(content_type, filename);
}

struct Part {
  std::string name;
  std::string value;
  std::optional<std::string> filename;
  std::string content_type;
};

const std::string kBoundary = "XyZ-test-boundary";

std::string multipart(const std::vector<Part>& parts) {
  std::string body;
  for (const auto& p : parts) {
    body += "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"" + p.name + "\"";
    if (p.filename) body += "; filename=\"" + *p.filename + "\"";
    body += "\r\n";
    if (!p.content_type.empty()) body += "Content-Type: " + p.content_type + "\r\n";
    body += "\r\n" + p.value + "\r\n";
  }
  body += "--" + kBoundary + "--\r\n";
  return body;
}

Part file_part(std::string bytes = "RIFF....WAVEfmt ", std::string type = "audio/wav", std::string name = "a.wav") {
  return Part{"file", std::move(bytes), std::move(name), std::move(type)};
}

Part field(std::string name, std::string value) { return Part{std::move(name), std::move(value), std::nullopt, ""}; }

server::UploadLimits limits(uint64_t max_bytes = 1 << 20) {
  server::UploadLimits l;
  l.max_bytes = max_bytes;
  l.memory_bytes = 64;
  l.spool_dir = std::filesystem::temp_directory_path();
  return l;
}

// Feeds `body` in pieces of `step` bytes; returns the first error (feed or finish).
std::optional<server::ApiError> upload(server::TranscriptionUpload& u, const std::string& body, size_t step = 7) {
  for (size_t i = 0; i < body.size(); i += step)
    if (auto e = u.feed(std::string_view(body).substr(i, step))) return e;
  return u.finish();
}

std::variant<server::TranscriptionRequest, server::ApiError> validate(const std::vector<Part>& parts) {
  server::TranscriptionUpload u(kBoundary, limits());
  if (auto e = upload(u, multipart(parts))) return *e;
  return server::validate_transcription(u);
}

void expect_error(const std::vector<Part>& parts, unsigned status, const std::string& code,
                  std::optional<std::string> param) {
  const auto r = validate(parts);
  REQUIRE(std::holds_alternative<server::ApiError>(r));
  const auto& e = std::get<server::ApiError>(r);
  CHECK(e.status == status);
  CHECK(e.code == code);
  CHECK(e.param == param);
}

boost::asio::awaitable<void> drain(providers::BodySource& body, std::string& out) {
  char buf[997];  // odd-sized pieces
  while (size_t n = co_await body.read(buf, sizeof buf)) out.append(buf, n);
}

// Reads the whole body, from the start, on an io_context; file reads go to `pool` if given.
std::string read_body(providers::BodySource& body) {
  body.rewind();
  std::string out;
  boost::asio::io_context ioc;
  boost::asio::co_spawn(ioc, drain(body, out), boost::asio::detached);
  ioc.run();
  return out;
}

}  // namespace

TEST_CASE("media type from the part's Content-Type, aliases normalised") {
  CHECK(type_of("audio/wav") == "audio/wav");
  CHECK(type_of("audio/x-wav") == "audio/wav");
  CHECK(type_of("audio/wave") == "audio/wav");
  CHECK(type_of("AUDIO/WAV") == "audio/wav");
  CHECK(type_of("audio/mp3") == "audio/mpeg");
  CHECK(type_of("audio/mpeg") == "audio/mpeg");
  CHECK(type_of("audio/ogg; codecs=opus") == "audio/ogg");
  CHECK(type_of("audio/flac") == "audio/flac");
  CHECK(type_of("audio/x-m4a") == "audio/x-m4a");
  CHECK(type_of("audio/m4a") == "audio/m4a");
  CHECK(type_of("audio/mp4") == "audio/mp4");
  CHECK(type_of("audio/webm") == "audio/webm");
  // What Python's mimetypes derives for the guide's meeting.webm, and for .mp4 / .mpeg.
  CHECK(type_of("video/webm", "meeting.webm") == "audio/webm");
  CHECK(type_of("video/mp4", "a.mp4") == "audio/mp4");
  CHECK(type_of("video/mpeg", "a.mpeg") == "audio/mpeg");
}

TEST_CASE("media type falls back to the extension only when the type says nothing") {
  CHECK(type_of("", "a.wav") == "audio/wav");
  CHECK(type_of("application/octet-stream", "a.WAV") == "audio/wav");
  CHECK(type_of("application/octet-stream", "a.mpga") == "audio/mpeg");
  CHECK(type_of("application/octet-stream", "a.oga") == "audio/ogg");
  CHECK(type_of("", "x.tar.flac") == "audio/flac");
  CHECK(type_of("", "a.m4a") == "audio/m4a");
  CHECK_FALSE(type_of("application/octet-stream", "a.txt"));
  CHECK_FALSE(type_of("application/octet-stream", "noextension"));
  CHECK_FALSE(type_of("", std::nullopt));
  CHECK_FALSE(type_of("text/plain", "a.wav"));  // a declared type wins over the name
  CHECK_FALSE(type_of("video/quicktime", "a.mov"));
  CHECK_FALSE(type_of("audio/aac"));
  CHECK_FALSE(type_of("image/png", "a.png"));
}

TEST_CASE("a valid upload: fields in order, file spooled intact, body hashed") {
  const std::string audio(5000, 'a');
  const std::string body = multipart({field("model", "whisper-large-v3"), file_part(audio, "video/webm", "meeting.webm"),
                                      field("language", "en"), field("timestamp_granularities[]", "word"),
                                      field("timestamp_granularities[]", "segment"), field("region", "eu")});
  server::TranscriptionUpload u(kBoundary, limits());
  REQUIRE_FALSE(upload(u, body, 13));
  CHECK(u.spool().size() == audio.size());
  CHECK(u.spool().on_disk());  // above the 64-byte memory threshold
  std::string spooled(audio.size() + 1, '\0');
  auto reader = u.spool().reader();
  spooled.resize(reader.read(spooled.data(), spooled.size()));
  CHECK(spooled == audio);
  CHECK(u.body_sha256() == receipts::sha256_hex(body));
  REQUIRE(u.file());
  CHECK(u.file()->content_type == "audio/webm");
  CHECK(u.file()->filename == "meeting.webm");

  const auto r = server::validate_transcription(u);
  REQUIRE(std::holds_alternative<server::TranscriptionRequest>(r));
  const auto& req = std::get<server::TranscriptionRequest>(r);
  CHECK(req.model == "whisper-large-v3");
  CHECK(req.region == "eu");
  CHECK(req.format == server::TranscriptFormat::json);
  std::vector<std::string> forwarded;
  for (const auto& f : req.forwarded) forwarded.push_back(f.name + "=" + f.value);
  CHECK(forwarded == std::vector<std::string>{"language=en", "timestamp_granularities[]=word",
                                              "timestamp_granularities[]=segment"});
}

TEST_CASE("validation table: exact status, code and param") {
  const auto model = field("model", "whisper-large-v3");
  expect_error({model}, 400, "missing_required_parameter", "file");
  expect_error({file_part()}, 400, "missing_required_parameter", "model");
  expect_error({field("model", ""), file_part()}, 400, "invalid_parameter", "model");
  expect_error({model, model, file_part()}, 400, "invalid_parameter", "model");
  expect_error({model, file_part(), field("failover", "[\"eu/x/y\"]")}, 400, "failover_not_supported", "failover");
  expect_error({model, file_part(), field("failover[]", "eu/x/y")}, 400, "failover_not_supported", "failover");
  expect_error({model, file_part(), field("failover[0]", "eu/x/y")}, 400, "failover_not_supported", "failover");
  expect_error({model, file_part(), field("response_format", "srt")}, 400, "invalid_parameter", "response_format");
  expect_error({model, file_part(), field("response_format", "vtt")}, 400, "invalid_parameter", "response_format");
  expect_error({model, file_part(), field("response_format", "verbose_json")}, 400, "missing_required_parameter",
               "language");
  expect_error({model, file_part(), field("language", "EN")}, 400, "invalid_parameter", "language");
  expect_error({model, file_part(), field("language", "eng")}, 400, "invalid_parameter", "language");
  expect_error({model, file_part(), field("temperature", "1.5")}, 400, "invalid_parameter", "temperature");
  expect_error({model, file_part(), field("temperature", "warm")}, 400, "invalid_parameter", "temperature");
  expect_error({model, file_part(), field("stream", "true")}, 400, "invalid_parameter", "stream");
  expect_error({model, file_part(""), }, 400, "invalid_parameter", "file");
  expect_error({model, field("prompt", std::string("\xff\xfe", 2)), file_part()}, 400, "invalid_parameter", "prompt");
  // Refused while streaming, before validation.
  expect_error({model, file_part(), file_part()}, 400, "invalid_parameter", "file");
  expect_error({model, Part{"attachment", "x", std::string("x.wav"), "audio/wav"}, file_part()}, 400,
               "invalid_parameter", "attachment");
  expect_error({model, file_part("x", "text/plain", "a.wav")}, 400, "unsupported_media_type", "file");
}

TEST_CASE("accepted: verbose_json with language, temperature at its bounds, stream=false dropped") {
  const auto r = validate({field("model", "m"), file_part(), field("response_format", "verbose_json"),
                           field("language", "de"), field("temperature", "1"), field("stream", "false")});
  REQUIRE(std::holds_alternative<server::TranscriptionRequest>(r));
  const auto& req = std::get<server::TranscriptionRequest>(r);
  CHECK(req.format == server::TranscriptFormat::verbose_json);
  REQUIRE(req.forwarded.size() == 2);  // language, temperature; stream is consumed
  CHECK(req.forwarded[0].name == "language");
  CHECK(req.forwarded[1].name == "temperature");
}

TEST_CASE("the upload cap is a 413 file_too_large the moment it is crossed") {
  server::TranscriptionUpload u(kBoundary, limits(1000));
  const std::string body = multipart({field("model", "m"), file_part(std::string(5000, 'z'))});
  std::optional<server::ApiError> e;
  size_t fed = 0;
  for (; fed < body.size() && !e; fed += 100) e = u.feed(std::string_view(body).substr(fed, 100));
  REQUIRE(e);
  CHECK(e->status == 413);
  CHECK(e->code == "file_too_large");
  CHECK(fed < 1300);  // stopped at the cap, not at the end of the body
}

TEST_CASE("malformed framing is 400 invalid_multipart") {
  server::TranscriptionUpload truncated(kBoundary, limits());
  const std::string body = multipart({field("model", "m"), file_part()});
  auto e = upload(truncated, body.substr(0, body.size() - 10));
  REQUIRE(e);
  CHECK(e->code == "invalid_multipart");

  server::TranscriptionUpload no_disposition(kBoundary, limits());
  e = upload(no_disposition, "--" + kBoundary + "\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + kBoundary + "--\r\n");
  REQUIRE(e);
  CHECK(e->code == "invalid_multipart");
}

TEST_CASE("upstream multipart body: fields then the file streamed from the spool, parsed back intact") {
  server::UploadSpool spool(1 << 20, 16, std::filesystem::temp_directory_path());
  std::string audio;
  for (int i = 0; i < 70000; ++i) audio.push_back(static_cast<char>(i * 31 % 251));
  REQUIRE(spool.append(audio));
  spool.seal();
  std::vector<providers::FormField> fields = {{"model", "whisper-1"}, {"response_format", "json"},
                                              {"prompt", "quote \" and\r\nnewline"}};
  providers::FilePart file;
  file.filename = "we\"ird.wav";
  file.content_type = "audio/wav";
  server::FileIoPool file_io(1);
  server::SpoolBodySource file_bytes(spool, &file_io);
  providers::MultipartUploadBody body(fields, file, file_bytes);
  CHECK(body.content_type() == "multipart/form-data; boundary=" + body.boundary());

  struct Collector : server::MultipartHandler {
    std::vector<server::PartHeaders> heads;
    std::vector<std::string> values;
    void on_part_begin(const server::PartHeaders& h) override {
      heads.push_back(h);
      values.emplace_back();
    }
    void on_part_data(std::string_view b) override { values.back().append(b); }
    void on_part_end() override {}
  };
  // Read it twice (a failover replay), the file part through the pool: identical bytes.
  const std::string first = read_body(body);
  CHECK(first.size() == body.size());
  CHECK(read_body(body) == first);
  server::SpoolBodySource inline_bytes(spool);  // no pool: read on this thread
  providers::MultipartUploadBody inline_reads(fields, file, inline_bytes);
  CHECK(read_body(inline_reads).size() == first.size());
  Collector c;
  server::MultipartParser parser(body.boundary(), c);
  REQUIRE(parser.feed(first));
  REQUIRE(parser.finish());
  REQUIRE(c.heads.size() == 4);
  CHECK(c.heads[0].name == "model");
  CHECK(c.values[0] == "whisper-1");
  CHECK(c.values[2] == "quote \" and\r\nnewline");
  CHECK(c.heads[3].name == "file");
  CHECK(c.heads[3].filename == "we%22ird.wav");
  CHECK(c.heads[3].content_type == "audio/wav");
  CHECK(c.values[3] == audio);
}

TEST_CASE("random boundaries differ and are valid RFC 2046 boundaries") {
  const auto a = providers::random_multipart_boundary();
  const auto b = providers::random_multipart_boundary();
  CHECK(a != b);
  CHECK(a.size() <= 70);
  CHECK(server::boundary_from_content_type("multipart/form-data; boundary=" + a) == a);
}

TEST_CASE("an upload that will get no receipt is not hashed") {
  const std::string body = multipart({field("model", "whisper-large-v3"), file_part("abc", "audio/wav", "a.wav")});
  auto no_receipt = limits();
  no_receipt.digest_body = false;
  server::TranscriptionUpload u(kBoundary, no_receipt);
  REQUIRE_FALSE(upload(u, body, 7));
  CHECK(u.body_sha256().empty());
  CHECK(u.spool().size() == 3);
}

TEST_CASE("upstream file names: a quote as %22, a backslash as the quoted-pair \\\\, CR/LF encoded") {
  CHECK(providers::quote_disposition_value("C:\\Users\\a.wav") == "\"C:\\\\Users\\\\a.wav\"");
  CHECK(providers::quote_disposition_value("a\"b\r\n.wav") == "\"a%22b%0D%0A.wav\"");
}
