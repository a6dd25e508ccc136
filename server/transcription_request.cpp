#include "server/transcription_request.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <set>

#include "common/http_text.h"

namespace tresor::server {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Media type without parameters (";codecs=opus"), lower-case.
std::string bare_media_type(std::string_view content_type) {
  return lower(common::trim_ows(content_type.substr(0, content_type.find(';'))));
}

std::optional<std::string> type_from_extension(const std::optional<std::string>& filename) {
  if (!filename) return std::nullopt;
  const auto dot = filename->rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  static const std::map<std::string, std::string, std::less<>> by_extension = {
      {"flac", "audio/flac"}, {"m4a", "audio/m4a"},  {"mp4", "audio/mp4"},   {"mp3", "audio/mpeg"},
      {"mpeg", "audio/mpeg"}, {"mpga", "audio/mpeg"}, {"ogg", "audio/ogg"},  {"oga", "audio/ogg"},
      {"wav", "audio/wav"},   {"webm", "audio/webm"}};
  const auto it = by_extension.find(lower(std::string_view(*filename).substr(dot + 1)));
  if (it == by_extension.end()) return std::nullopt;
  return it->second;
}

ApiError invalid_multipart(std::string message) { return invalid_request("invalid_multipart", std::move(message)); }

ApiError missing_param(const std::string& param) {
  return invalid_request("missing_required_parameter", param + " is required", param);
}

// Fields the router consumes (never forwarded as they came).
bool consumed_field(std::string_view name) {
  return name == "model" || name == "region" || name == "provider" || name == "response_format" ||
         name == "stream";
}

// A field that may repeat (the PHP/Rails array convention OpenAI uses for
// timestamp_granularities[]).
bool repeatable(std::string_view name) { return name.size() > 2 && name.ends_with("[]"); }

std::optional<TranscriptFormat> parse_format(std::string_view v) {
  if (v == "json") return TranscriptFormat::json;
  if (v == "text") return TranscriptFormat::text;
  if (v == "verbose_json") return TranscriptFormat::verbose_json;
  return std::nullopt;
}

bool is_language_code(std::string_view v) {
  return v.size() == 2 && std::islower(static_cast<unsigned char>(v[0])) &&
         std::islower(static_cast<unsigned char>(v[1])) && v[0] <= 'z' && v[1] <= 'z';
}

bool is_temperature(std::string_view v) {
  double t = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), t);
  return ec == std::errc() && end == v.data() + v.size() && std::isfinite(t) && t >= 0 && t <= 1;
}

}  // namespace

ApiError file_too_large(uint64_t limit) {
  return ApiError{413, "invalid_request_error", "file_too_large",
                  "The upload exceeds the limit of " + std::to_string(limit) + " bytes", std::string("file")};
}

ApiError spool_full() {
  return ApiError{503, "service_unavailable", std::string(kSpoolFullCode),
                  "The upload spool is full (server.spool_max_bytes); retry shortly", std::nullopt};
}

std::optional<std::string> accepted_audio_type(std::string_view part_content_type,
                                               const std::optional<std::string>& filename) {
  const std::string type = bare_media_type(part_content_type);
  if (type.empty() || type == "application/octet-stream") return type_from_extension(filename);
  static const std::map<std::string, std::string, std::less<>> accepted = {
      // spec §7.2
      {"audio/flac", "audio/flac"},
      {"audio/m4a", "audio/m4a"},
      {"audio/mp4", "audio/mp4"},
      {"audio/mpeg", "audio/mpeg"},
      {"audio/ogg", "audio/ogg"},
      {"audio/wav", "audio/wav"},
      {"audio/webm", "audio/webm"},
      {"audio/x-m4a", "audio/x-m4a"},
      // aliases
      {"audio/x-wav", "audio/wav"},
      {"audio/wave", "audio/wav"},
      {"audio/vnd.wave", "audio/wav"},
      {"audio/mp3", "audio/mpeg"},
      {"audio/x-flac", "audio/flac"},
      // what SDKs derive from a file name (Python's mimetypes: .webm, .mp4, .mpeg)
      {"video/webm", "audio/webm"},
      {"video/mp4", "audio/mp4"},
      {"video/mpeg", "audio/mpeg"}};
  const auto it = accepted.find(type);
  if (it == accepted.end()) return std::nullopt;
  return it->second;
}

TranscriptionUpload::TranscriptionUpload(std::string_view boundary, const UploadLimits& limits,
                                         SpoolReservation reservation)
    : limits_(limits), spool_(limits.max_bytes, limits.memory_bytes, limits.spool_dir, std::move(reservation)) {
  parser_ = std::make_unique<MultipartParser>(boundary, static_cast<MultipartHandler&>(*this));
  if (limits.digest_body) body_digest_.emplace();
}

TranscriptionUpload::~TranscriptionUpload() = default;

void TranscriptionUpload::fail(ApiError error) {
  if (!error_) error_ = std::move(error);
}

std::optional<ApiError> TranscriptionUpload::feed(std::string_view bytes) {
  if (error_) return error_;
  if (body_digest_) body_digest_->update(bytes);
  try {
    if (!parser_->feed(bytes) && !error_) fail(invalid_multipart(parser_->error()->message));
  } catch (const std::exception& e) {
    // The spool's file system failed (full disk, spool_dir gone): our fault, not the client's.
    spdlog::error("transcription upload: cannot spool the file: {}", e.what());
    fail(internal_error());
  }
  return error_;
}

std::optional<ApiError> TranscriptionUpload::finish() {
  if (error_) return error_;
  if (!parser_->finish()) {
    fail(invalid_multipart(parser_->error()->message));
    return error_;
  }
  spool_.seal();
  if (body_digest_) body_sha256_ = body_digest_->hex();
  return std::nullopt;
}

bool TranscriptionUpload::is_file_part(const PartHeaders& headers) const {
  return headers.name == "file" || MultipartHandler::is_file_part(headers);
}

void TranscriptionUpload::on_part_begin(const PartHeaders& headers) {
  if (error_) return;
  if (headers.name == "file") {
    if (file_) return fail(invalid_parameter("file", "exactly one file part is allowed"));
    // filename* only when there is no filename (RFC 7578 senders send filename alone).
    const std::optional<std::string> filename = headers.filename ? headers.filename : headers.filename_star;
    const auto type = accepted_audio_type(headers.content_type, filename);
    if (!type) {
      const std::string given = headers.content_type.empty() ? std::string("no Content-Type") : headers.content_type;
      return fail(ApiError{400, "invalid_request_error", "unsupported_media_type",
                           "Unsupported audio type (" + given +
                               "); accepted: flac, m4a, mp4, mpeg (mp3), ogg, wav, webm",
                           std::string("file")});
    }
    providers::FilePart file;
    file.filename = filename.value_or("");
    if (file.filename.empty()) file.filename = "audio." + type->substr(type->find('/') + 1);
    file.content_type = *type;
    file_ = std::move(file);
    current_ = Part::file;
    return;
  }
  if (headers.filename || headers.filename_star)
    return fail(invalid_parameter(headers.name, "only the file part may carry a file"));
  current_ = Part::field;
  field_name_ = headers.name;
  field_value_.clear();
}

void TranscriptionUpload::on_part_data(std::string_view bytes) {
  if (error_) return;
  if (current_ == Part::file) {
    if (!spool_.append(bytes)) fail(spool_.spool_full() ? spool_full() : file_too_large(limits_.max_bytes));
  } else if (current_ == Part::field) {
    field_value_.append(bytes);  // bounded by the parser's max_field_bytes
  }
}

void TranscriptionUpload::on_part_end() {
  if (error_) return;
  if (current_ == Part::field) {
    providers::FormField f;
    f.name = field_name_;
    f.value = std::move(field_value_);
    fields_.push_back(std::move(f));
  }
  current_ = Part::none;
}

std::variant<TranscriptionRequest, ApiError> validate_transcription(const TranscriptionUpload& upload) {
  TranscriptionRequest req;
  std::map<std::string, std::string, std::less<>> single;  // non-repeatable fields by name
  for (const auto& f : upload.fields()) {
    // Values reach JSON (requested_route, error messages) and upstream forms.
    if (!simdjson::validate_utf8(f.name.data(), f.name.size()) ||
        !simdjson::validate_utf8(f.value.data(), f.value.size()))
      return invalid_parameter(simdjson::validate_utf8(f.name.data(), f.name.size()) ? f.name : std::string("form"),
                           "form fields must be UTF-8 text");
    if (!repeatable(f.name) && !single.emplace(f.name, f.value).second)
      return invalid_parameter(f.name, "field " + f.name + " is given more than once");
  }
  if (!upload.file()) return missing_param("file");
  if (upload.spool().size() == 0) return invalid_parameter("file", "the file is empty");
  // SDKs send a list as `failover[]` (openai-node) or `failover[0]` fields: all of them
  // are the failover list the client asked for.
  const auto is_failover = [](const providers::FormField& f) {
    return f.name == "failover" || f.name.starts_with("failover[");
  };
  if (std::any_of(upload.fields().begin(), upload.fields().end(), is_failover))
    return invalid_request("failover_not_supported",
                           "Transcriptions do not accept a failover list: use a bare model key or auto/auto/<key> "
                           "and the router fails over between eligible routes",
                           std::string("failover"));
  const auto model = single.find("model");
  if (model == single.end()) return missing_param("model");
  if (model->second.empty()) return invalid_parameter("model", "model must be a non-empty string");
  req.model = model->second;
  if (const auto it = single.find("region"); it != single.end()) req.region = it->second;
  if (const auto it = single.find("provider"); it != single.end()) req.provider = it->second;
  if (const auto it = single.find("response_format"); it != single.end()) {
    const auto format = parse_format(it->second);
    if (!format)
      return invalid_parameter("response_format", "response_format must be json, text or verbose_json (got '" +
                                                  it->second.substr(0, 64) + "')");
    req.format = *format;
  }
  const auto language = single.find("language");
  if (language != single.end() && !is_language_code(language->second))
    return invalid_parameter("language", "language must be a two-letter lower-case ISO-639-1 code such as en");
  if (req.format == TranscriptFormat::verbose_json && language == single.end())
    return invalid_request("missing_required_parameter", "language is required with response_format verbose_json",
                           std::string("language"));
  if (const auto it = single.find("temperature"); it != single.end() && !is_temperature(it->second))
    return invalid_parameter("temperature", "temperature must be a number between 0 and 1");
  if (const auto it = single.find("stream"); it != single.end() && it->second != "false")
    return invalid_parameter("stream", "transcriptions do not stream");
  for (const auto& f : upload.fields())
    if (!consumed_field(f.name)) req.forwarded.push_back(f);
  req.file = *upload.file();
  return req;
}

}  // namespace tresor::server
