// C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 signatures, the envelope of
// the transparency log's checkpoints (issue 19): a text of one or more lines, a blank
// line, then one signature line per signer, "— <name> <base64(key hash || signature)>".
// The key hash is the first 4 bytes (big-endian) of SHA-256(name || "\n" || 0x01 || public
// key); a verifier key is written "<name>+<key hash, 8 hex digits>+<base64(0x01 || public key)>".
// The same format as golang.org/x/mod/sumdb/note, so Go's tooling verifies our notes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tresor::receipts::note {

using Ed25519Seed = std::array<uint8_t, 32>;
using Ed25519Public = std::array<uint8_t, 32>;

// Standard base64 with padding (RFC 4648 §4), as notes, checkpoints and vkeys use it;
// unbase64 is nullopt for anything that is not exactly that.
std::string base64(std::string_view bytes);
std::optional<std::string> unbase64(std::string_view text);

// A valid key name: non-empty, no Unicode spaces or '+' (signed-note §"Signatures").
bool valid_name(std::string_view name);
// A text signed-note accepts: non-empty, ends in a newline, no blank line (that ends the text).
bool valid_text(std::string_view text);
// The key hash of a key of signature type `type`: 0x01 note signatures, 0x04 tlog-cosignature
// v1 (Ed25519) cosignatures, whose key ids are computed the same way with their own type byte.
uint32_t key_hash(std::string_view name, const Ed25519Public& pub, uint8_t type = 0x01);
Ed25519Public public_key(const Ed25519Seed& seed);
// "<name>+<hash>+<base64(type || pub)>"
std::string verifier_key(std::string_view name, const Ed25519Public& pub, uint8_t type = 0x01);

// A verifier key taken apart: nullopt unless well formed, of signature type `type`, with a
// 32-byte key and the key hash its name and key give.
struct VerifierKey {
  std::string name;
  uint32_t hash = 0;
  Ed25519Public pub{};
};
std::optional<VerifierKey> parse_verifier_key(std::string_view vkey, uint8_t type = 0x01);

// Raw Ed25519 (RFC 8032) over `message`: the 64-byte signature, or nullopt on failure.
std::optional<std::string> ed25519_sign(const Ed25519Seed& seed, std::string_view message);
bool ed25519_verify(const Ed25519Public& pub, std::string_view message, std::string_view signature);

// One signature line "— <name> <base64(blob)>\n", and back: the name and the decoded blob of a
// line (without its newline); nullopt when it is not a signature line.
std::string signature_line(std::string_view name, std::string_view blob);
struct SignatureLine {
  std::string name;
  std::string blob;
};
std::optional<SignatureLine> parse_signature_line(std::string_view line);

// The 4 bytes of v, big-endian (key hashes in signature lines).
std::string be32(uint32_t v);

// `text` (non-empty, ending in "\n", no blank line in it) signed by `name`: the whole note.
// nullopt for a malformed text or name.
std::optional<std::string> sign(std::string_view text, std::string_view name, const Ed25519Seed& seed);

// The note's text when `note` carries a valid signature by the key `verifier` (in the form
// verifier_key() writes); nullopt otherwise (malformed, unknown signer, bad signature).
std::optional<std::string> verify(std::string_view note, std::string_view verifier);

}  // namespace tresor::receipts::note
