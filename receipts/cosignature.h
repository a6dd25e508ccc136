// C2SP tlog-cosignature v1, Ed25519 (https://c2sp.org/tlog-cosignature): a witness's
// statement that, at time T, the checkpoint it signs is the largest consistent tree head it
// has seen of that log (issue 19). A cosignature is a signed-note signature line
//   "— <witness name> base64(key id 4 || u64 BE T || Ed25519 signature 64)"
// over "cosignature/v1\ntime <T>\n" followed by the checkpoint text (its lines up to and
// including the last newline, no signature lines). The key id is
// SHA-256(name || "\n" || 0x04 || public key)[:4]; the witness's verifier key (vkey) is
// "<name>+<key id, 8 hex>+<base64(0x04 || public key)>".
// The signed message does not include the witness name: one key must never serve two names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "receipts/signed_note.h"

namespace tresor::receipts::cosignature {

constexpr uint8_t kType = 0x04;  // the signed-note signature type of Ed25519 cosignatures

uint32_t key_id(std::string_view name, const note::Ed25519Public& pub);
std::string vkey(std::string_view name, const note::Ed25519Public& pub);
// A cosigner vkey taken apart (name, key id, key); nullopt unless well formed and of type 0x04.
std::optional<note::VerifierKey> parse_vkey(std::string_view vkey);

// The message a cosignature signs: "cosignature/v1\ntime <T>\n" + checkpoint text.
std::string signed_message(std::string_view checkpoint_text, uint64_t unix_time);

// The cosignature line (ending in "\n") by `name` over `checkpoint_text` at `unix_time`;
// nullopt for a malformed text or name, or a time beyond 2^63 - 1.
std::optional<std::string> cosign(std::string_view checkpoint_text, std::string_view name,
                                  const note::Ed25519Seed& seed, uint64_t unix_time);

// The cosignature's timestamp when `line` (with or without its newline) is a valid
// cosignature over `checkpoint_text` by the cosigner `vkey`; nullopt otherwise (another
// signer, wrong key id, malformed, bad signature, timestamp beyond 2^63 - 1).
std::optional<uint64_t> verify(std::string_view checkpoint_text, std::string_view line, std::string_view vkey);

}  // namespace tresor::receipts::cosignature
