// The text of a transparency log checkpoint (C2SP tlog-checkpoint): what the log signs and
// witnesses cosign, "<origin>\n<tree size>\n<base64 root hash>\n" followed by any
// extension lines. Shared by the log (receipts/transparency_log.h) and its verifiers (the
// CLI's verify-log, witness and verify-receipt --log-key).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "receipts/merkle.h"

namespace tresor::receipts {

struct CheckpointFields {
  std::string origin;
  uint64_t size = 0;
  merkle::Hash root{};
};

std::string checkpoint_text(std::string_view origin, uint64_t size, const merkle::Hash& root);
// nullopt unless `text` is a valid note text with a non-empty origin, a decimal size
// without leading zeros, and a root that is standard base64 of exactly 32 bytes.
std::optional<CheckpointFields> parse_checkpoint(std::string_view text);

// A tree size, index or width as the log writes them: decimal digits, no sign, no leading
// zero, at most 19 digits (so it never overflows); nullopt otherwise.
std::optional<uint64_t> parse_decimal(std::string_view text);

// A hash as checkpoints and proofs write it (standard base64), and back.
std::string hash_base64(const merkle::Hash& h);
std::optional<merkle::Hash> hash_from_base64(std::string_view text);

}  // namespace tresor::receipts
