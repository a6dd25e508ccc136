#include "receipts/cosignature.h"

namespace tresor::receipts::cosignature {
namespace {

constexpr uint64_t kMaxTime = (uint64_t{1} << 63) - 1;  // the spec's bound on the timestamp

std::string be64(uint64_t v) { return note::be32(static_cast<uint32_t>(v >> 32)) + note::be32(static_cast<uint32_t>(v)); }

uint64_t read_be64(std::string_view bytes) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  return v;
}

}  // namespace

uint32_t key_id(std::string_view name, const note::Ed25519Public& pub) { return note::key_hash(name, pub, kType); }

std::string vkey(std::string_view name, const note::Ed25519Public& pub) { return note::verifier_key(name, pub, kType); }

std::optional<note::VerifierKey> parse_vkey(std::string_view vkey) { return note::parse_verifier_key(vkey, kType); }

std::string signed_message(std::string_view checkpoint_text, uint64_t unix_time) {
  std::string message = "cosignature/v1\ntime " + std::to_string(unix_time) + "\n";
  message += checkpoint_text;
  return message;
}

std::optional<std::string> cosign(std::string_view checkpoint_text, std::string_view name,
                                  const note::Ed25519Seed& seed, uint64_t unix_time) {
  if (!note::valid_text(checkpoint_text) || !note::valid_name(name) || unix_time > kMaxTime) return std::nullopt;
  const auto sig = note::ed25519_sign(seed, signed_message(checkpoint_text, unix_time));
  if (!sig) return std::nullopt;
  const note::Ed25519Public pub = note::public_key(seed);
  return note::signature_line(name, note::be32(key_id(name, pub)) + be64(unix_time) + *sig);
}

std::optional<uint64_t> verify(std::string_view checkpoint_text, std::string_view line, std::string_view vkey) {
  const auto key = parse_vkey(vkey);
  if (!key || !note::valid_text(checkpoint_text)) return std::nullopt;
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  const auto parsed = note::parse_signature_line(line);
  if (!parsed || parsed->name != key->name) return std::nullopt;
  const std::string_view blob = parsed->blob;
  if (blob.size() != 4 + 8 + 64 || blob.substr(0, 4) != note::be32(key->hash)) return std::nullopt;
  const uint64_t time = read_be64(blob.substr(4, 8));
  if (time > kMaxTime) return std::nullopt;
  if (!note::ed25519_verify(key->pub, signed_message(checkpoint_text, time), blob.substr(12))) return std::nullopt;
  return time;
}

}  // namespace tresor::receipts::cosignature
