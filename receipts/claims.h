// What a receipt says (spec §5.3) and the digests a client can recompute.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace tresor::receipts {

// A fresh time-ordered (v7, RFC 9562) UUID: the receipt id and the JWS's jti. 48 bits of
// Unix milliseconds, then 74 random bits. Time order makes the store's inserts land at
// the right edge of its B-tree (a few pages written per group commit instead of one
// random page per receipt); the random part keeps ids unguessable.
std::string new_receipt_id();
// A fresh random (v4) UUID, e.g. a generated X-Request-Id.
std::string new_random_uuid();
// Any lowercase 8-4-4-4-12 hex UUID (older receipts are v4).
bool is_receipt_id(std::string_view id);

// Incremental SHA-256 (OpenSSL EVP), lowercase hex out.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view bytes);
  std::string hex();  // finalises; call once

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha256_hex(std::string_view bytes);

struct Claims {
  std::string id;  // jti
  int64_t issued_at = 0;  // iat: completion time, unix seconds
  std::string requested_route;
  std::string routed_model;
  bool failover = false;
  std::string endpoint;  // "/v1/chat/completions"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<int64_t> audio_seconds;  // transcriptions billed by duration
  std::string request_sha256;
  std::string response_sha256;
  std::optional<std::string> nonce;  // X-Tresor-Nonce
  // The router's attestation block (a JSON object, GET /attestation's stable fields).
  std::optional<std::string> router_attestation_json;
};

// The JWS payload, compact JSON, claims in the order of spec §5.3.
std::string claims_json(const Claims& c);

}  // namespace tresor::receipts

namespace tresor::receipts {

// The response digests as a client recomputes them (spec §5.3, README "Receipts"):
// remove the bytes `,"tresor":{…}` (always the last member, compact, no nested braces).
std::string strip_tresor_member(std::string_view json);
// SHA-256 of a JSON body as received, tresor member removed.
std::string response_sha256_of_json(std::string_view body);
// SHA-256 over the data payloads of an SSE stream as received, each stripped of its
// tresor member, [DONE] excluded, concatenated without separators.
std::string response_sha256_of_sse(std::string_view stream);

}  // namespace tresor::receipts
