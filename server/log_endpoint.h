// The transparency log's HTTP surface (issue 19; receipts/transparency_log.h): the
// checkpoint, tiles and entry bundles of C2SP tlog-tiles, proofs, the log's key, and the
// witnesses' cosignatures. Unauthenticated like the JWKS: a log is for auditors and
// witnesses, and its entries are digests that reveal nothing of a receipt.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "server/http_types.h"

namespace tresor::receipts {
class TransparencyLog;
}  // namespace tresor::receipts

namespace tresor::server {

inline constexpr std::string_view kLogPrefix = "/v1/log/";
inline constexpr std::string_view kCosignaturePath = "/v1/log/cosignature";

// GET /v1/log/{checkpoint, key, tile/…, proof/consistency, proof/inclusion}; `log` null
// (log.enabled: false) → 404.
Response log_response(std::string_view target, const receipts::TransparencyLog* log);

// POST /v1/log/cosignature: `body` is the checkpoint note with the witness's cosignature
// line(s) appended; lines by a key in `witnesses` (vkeys) that verify over the latest
// checkpoint are handed to `record(size, line)` (ReceiptService::add_cosignature: served
// on that checkpoint, and stored for the other replicas).
using RecordCosignature = std::function<void(uint64_t size, std::string line)>;
Response cosignature_response(std::string_view body, const receipts::TransparencyLog* log,
                              const std::vector<std::string>& witnesses, const RecordCosignature& record);

// GET /v1/receipts/{id}'s log fields: log_index, and once a checkpoint covers the leaf,
// that checkpoint and the inclusion proof against it.
void add_log_fields(boost::json::object& answer, uint64_t log_index, const receipts::TransparencyLog& log);

}  // namespace tresor::server
