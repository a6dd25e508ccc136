// POST /v1/audio/transcriptions as the session feeds it: TranscriptionUpload (multipart
// parsing, field collection, the file spooled, the body hashed), then
// validate_transcription (server/transcription_request.h) and route resolution of the
// accepted form against a small fixed config.
// Input: a split plan (see fuzz_input.h), a flags byte (bit 0: hash the body; bits 1..7:
// a small max_bytes), the request Content-Type up to '\n', then the body.
// Properties: a refusal while reading is 400 or 413 (the spool stays in memory here, so
// never 500) and sticks; the receipt's request_sha256 is the SHA-256 of exactly the bytes
// fed; an accepted form has a model, a non-empty file of an accepted audio type, and
// UTF-8 fields.
#include <simdjson.h>

#include <filesystem>
#include <string>

#include "receipts/claims.h"
#include "router/route_resolution.h"
#include "server/transcription_request.h"
#include "tests/fuzz/fixed_config.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto plan = tresor::fuzz::take_split_plan(in);
  const uint8_t flags = tresor::fuzz::take_byte(in);
  const size_t nl = in.find('\n');
  const std::string_view content_type = in.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  const auto boundary = server::boundary_from_content_type(content_type);
  if (!boundary) return 0;

  server::UploadLimits limits;
  limits.digest_body = flags & 1;
  limits.max_bytes = (flags >> 1) == 0 ? 1024 * 1024 : (flags >> 1) * 8u;
  limits.memory_bytes = 2 * 1024 * 1024;  // never touches the disk: this target fuzzes parsing
  limits.spool_dir = std::filesystem::temp_directory_path();

  server::TranscriptionUpload upload(*boundary, limits);
  std::optional<server::ApiError> error;
  for (const auto piece : tresor::fuzz::split_cyclic(body, plan)) {
    error = upload.feed(piece);
    if (error) break;
  }
  if (!error) error = upload.finish();
  if (error) {
    FUZZ_CHECK(error->status == 400 || error->status == 413);
    FUZZ_CHECK(!error->code.empty() && !error->message.empty());
    const auto again = upload.feed("more");
    FUZZ_CHECK(again && again->code == error->code);  // refused stays refused
    return 0;
  }
  if (limits.digest_body) FUZZ_CHECK(upload.body_sha256() == receipts::sha256_hex(body));
  FUZZ_CHECK(upload.spool().size() <= limits.max_bytes);

  auto validated = server::validate_transcription(upload);
  if (const auto* err = std::get_if<server::ApiError>(&validated)) {
    FUZZ_CHECK(err->status >= 400 && err->status < 500);
    return 0;
  }
  const auto& req = std::get<server::TranscriptionRequest>(validated);
  FUZZ_CHECK(!req.model.empty());
  FUZZ_CHECK(upload.spool().size() > 0);
  FUZZ_CHECK(server::accepted_audio_type(req.file.content_type, std::nullopt) == req.file.content_type);
  for (const auto& f : req.forwarded) FUZZ_CHECK(simdjson::validate_utf8(f.value.data(), f.value.size()));
  router::RouteHints hints;
  if (req.region) hints.region = *req.region;
  if (req.provider) hints.provider = *req.provider;
  const auto resolved =
      router::resolve_routes(tresor::fuzz::fixed_config(), req.model, hints, config::RouteType::transcription);
  if (resolved.resolution)
    for (const auto* route : resolved.resolution->candidates) FUZZ_CHECK(route->type == config::RouteType::transcription);
  return 0;
}
