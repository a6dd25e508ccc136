// The transparency log's operator subcommands (issue 19): verify-log (an auditor's check
// that the log only grew), witness (poll, verify, cosign), witness-key, and the log part of
// verify-receipt --log-key (the receipt's leaf is in a checkpoint signed by the log key).
// The decisions are pure functions here (unit tested); the subcommands fetch and act.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "receipts/checkpoint.h"
#include "receipts/merkle.h"

namespace tresor::server {

namespace log_cli {

// A C2SP tlog-checkpoint text: origin line, tree size (decimal, no leading zero), base64
// root hash, then any extension lines (receipts/checkpoint.h).
using Checkpoint = receipts::CheckpointFields;
std::optional<Checkpoint> parse_checkpoint(std::string_view text);

// The C2SP tlog-tiles path of a tile below the log's base: "tile/<L>/<N>" or
// "tile/entries/<N>" (level < 0), N written x001/x234/067, with ".p/<W>" for a partial
// tile of width W < 256.
std::string tile_path(int level, uint64_t index, uint64_t width);

// Why `next` must not be accepted after `old` (the same log's earlier checkpoint, verified):
// nullopt when it extends it. `proof` is the consistency proof old.size -> next.size, needed
// only when old.size > 0 and the sizes differ. The reasons are the operator's messages:
// "log rolled back from size 120 to 80", "checkpoint for size 50 has root X but the witnessed
// root was Y (fork)", "consistency proof 80 -> 120 does not verify (the log was rewritten)".
std::optional<std::string> refusal(const Checkpoint& old, const Checkpoint& next,
                                   std::span<const receipts::merkle::Hash> proof);

// verify-receipt --log-key: `receipt_json` is the whole answer of GET /v1/receipts/{id};
// `payload` the receipt's verified claims bytes. Returns the lines to print ("Log index: I",
// "Checkpoint: <origin> size N"); throws std::runtime_error with the reason otherwise.
std::string verify_receipt_inclusion(std::string_view receipt_json, std::string_view payload,
                                     std::string_view log_key);

}  // namespace log_cli

// tresor-router verify-log --url BASE_URL --log-key VKEY --checkpoint OLD_FILE [--save NEW_FILE] [--full]
int cli_verify_log(int argc, char** argv);
// tresor-router witness --log BASE_URL --log-key VKEY --state DIR --key FILE --name NAME
//                       [--interval-ms 1000] [--once]
int cli_witness(int argc, char** argv);
// tresor-router witness-key --key FILE --name NAME
int cli_witness_key(int argc, char** argv);

}  // namespace tresor::server
