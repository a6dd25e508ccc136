// The POST /v1/audio/transcriptions request (spec §7.1, §7.2): the multipart upload as it
// streams in (fields collected, the file spooled, the exact body bytes hashed), then the
// form validated into what the endpoint routes and forwards. No I/O of its own besides
// the spool's temporary file; the session feeds it.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "providers/multipart_body.h"
#include "receipts/claims.h"
#include "server/api_error.h"
#include "server/multipart_parser.h"
#include "server/upload_spool.h"

namespace tresor::server {

// The accepted media type for a file part (spec §7.2): from its Content-Type, or from the
// filename extension when that is missing or application/octet-stream; aliases
// normalised (audio/x-wav → audio/wav, audio/mp3 → audio/mpeg, video/webm → audio/webm,
// …). nullopt when the type is not accepted.
std::optional<std::string> accepted_audio_type(std::string_view part_content_type,
                                               const std::optional<std::string>& filename);

// 413 file_too_large: the upload is over server.max_body_bytes.
ApiError file_too_large(uint64_t limit);
// 503 spool_full: the upload spool (server.spool_max_bytes, shared by every upload in
// flight) has no room for this upload now; sent with Retry-After.
ApiError spool_full();
inline constexpr std::string_view kSpoolFullCode = "spool_full";

enum class TranscriptFormat { json, text, verbose_json };

struct UploadLimits {
  uint64_t max_bytes = 26214400;  // server.max_body_bytes: the whole request body
  size_t memory_bytes = UploadSpool::kDefaultMemoryThreshold;
  std::filesystem::path spool_dir;
  // SHA-256 of the body is the receipt's request_sha256: skipped when no receipt will be
  // issued (X-Tresor-Receipt: false), 64 KiB of audio costs ~30 us to hash.
  bool digest_body = true;
};

// Receives the request body piece by piece.
class TranscriptionUpload final : private MultipartHandler {
 public:
  // `reservation`: the upload's share of the process's spool budget (see UploadSpool).
  TranscriptionUpload(std::string_view boundary, const UploadLimits& limits,
                      SpoolReservation reservation = SpoolReservation());
  ~TranscriptionUpload() override;

  // The next piece of the body. An error means: stop reading and answer it now (400 for
  // a malformed or refused part, 413 file_too_large, 503 spool_full, 500 when the spool
  // failed).
  std::optional<ApiError> feed(std::string_view bytes);
  // True when feeding `incoming` more bytes cannot touch the disk (the spool stays in
  // memory), so the caller may feed on its I/O thread.
  bool stays_in_memory(size_t incoming) const {
    return !spool_.on_disk() && spool_.size() + incoming <= limits_.memory_bytes;
  }
  // The body ended. An error when the multipart was incomplete or malformed.
  std::optional<ApiError> finish();

  // After finish(): SHA-256 of the exact body bytes received (the receipt's
  // request_sha256); empty when limits.digest_body was false.
  const std::string& body_sha256() const { return body_sha256_; }
  const UploadSpool& spool() const { return spool_; }
  const std::vector<providers::FormField>& fields() const { return fields_; }
  // The file part's headers (type already normalised), once a file part began.
  const std::optional<providers::FilePart>& file() const { return file_; }

 private:
  void on_part_begin(const PartHeaders& headers) override;
  // The `file` part is the file with or without a filename (RFC 7578 §4.2: it is optional).
  bool is_file_part(const PartHeaders& headers) const override;
  void on_part_data(std::string_view bytes) override;
  void on_part_end() override;
  void fail(ApiError error);

  UploadLimits limits_;
  UploadSpool spool_;
  std::unique_ptr<MultipartParser> parser_;
  std::optional<receipts::Sha256> body_digest_;
  std::string body_sha256_;
  std::vector<providers::FormField> fields_;
  std::optional<providers::FilePart> file_;
  enum class Part { none, field, file } current_ = Part::none;
  std::string field_name_;
  std::string field_value_;
  std::optional<ApiError> error_;
};

struct TranscriptionRequest {
  std::string model;
  std::optional<std::string> region;
  std::optional<std::string> provider;
  TranscriptFormat format = TranscriptFormat::json;
  // Sent upstream as they came (language, prompt, temperature, timestamp_granularities[]…),
  // in arrival order; model and response_format are added per attempt.
  std::vector<providers::FormField> forwarded;
  providers::FilePart file;
};

// Validates the collected form (spec §7.1, §6.3): exact codes and params per field.
std::variant<TranscriptionRequest, ApiError> validate_transcription(const TranscriptionUpload& upload);

}  // namespace tresor::server
