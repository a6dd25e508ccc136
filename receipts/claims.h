// What a receipt says (spec §5.3) and the digests a client can recompute.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"
#include "common/sha256.h"

namespace tresor::receipts {

// Receipt ids and SHA-256 live in common/; these names keep the callers unchanged.
using common::is_receipt_id;
using common::new_random_uuid;
using common::new_receipt_id;
using common::Sha256;
using common::sha256_hex;

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
  // The token counts are the gateway's estimate (the upstream reported no usage).
  bool usage_estimated = false;
  // What the customer was charged, as an exact decimal string in `currency` (the spend
  // ledger's amount for this request id); absent on an unpriced route.
  std::optional<std::string> cost;
  std::string currency;
  std::string request_sha256;
  std::string response_sha256;
  std::optional<std::string> nonce;  // X-Tresor-Nonce
  // The router's attestation block (a JSON object, GET /attestation's stable fields).
  std::optional<std::string> router_attestation_json;
  // A stream continued on another attempt after its upstream failed (issue 18), one entry
  // per recovery: {from, to, offset (bytes of generated text the client had), mode}.
  struct Recovery {
    std::string from;
    std::string to;
    uint64_t offset = 0;
    std::string mode;  // "replay" | "prefill"
  };
  std::vector<Recovery> recoveries;
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
