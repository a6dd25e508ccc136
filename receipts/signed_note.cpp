#include "receipts/signed_note.h"

#include "common/sha256.h"

#include <openssl/evp.h>

#include <memory>
#include <stdexcept>
#include <vector>

namespace tresor::receipts::note {
namespace {

constexpr std::string_view kDash = "\xE2\x80\x94";  // U+2014 EM DASH, starts a signature line

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, CtxFree>;

std::string_view chars(const Ed25519Public& pub) { return {reinterpret_cast<const char*>(pub.data()), pub.size()}; }

std::string hex8(uint32_t v) {
  const std::string b = be32(v);
  return common::to_hex(reinterpret_cast<const unsigned char*>(b.data()), b.size());
}

}  // namespace

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> unbase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * (text.size() / 4), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  size_t size = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (text.back() == '=') --size;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

std::string be32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[static_cast<size_t>(i)] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
  return out;
}

std::string signature_line(std::string_view name, std::string_view blob) {
  std::string line(kDash);
  line += ' ';
  line += name;
  line += ' ';
  line += base64(blob);
  line += '\n';
  return line;
}

std::optional<SignatureLine> parse_signature_line(std::string_view line) {
  if (line.substr(0, kDash.size() + 1) != std::string(kDash) + " ") return std::nullopt;
  line.remove_prefix(kDash.size() + 1);
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0) return std::nullopt;
  auto blob = unbase64(line.substr(space + 1));
  if (!blob) return std::nullopt;
  return SignatureLine{std::string(line.substr(0, space)), std::move(*blob)};
}

bool valid_text(std::string_view text) {
  return !text.empty() && text.back() == '\n' && text.find("\n\n") == std::string_view::npos && text.front() != '\n';
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (const char c : name)
    if (c == '+' || static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  // Non-ASCII is allowed by the spec as long as it is not a space; we refuse the
  // Unicode spaces that start with 0xE2 0x80 (U+2000..U+200A, U+2028, U+2029, U+202F).
  return name.find("\xE2\x80") == std::string_view::npos && name.find("\xC2\xA0") == std::string_view::npos;
}

uint32_t key_hash(std::string_view name, const Ed25519Public& pub, uint8_t type) {
  common::Sha256 sha;
  sha.update(name);
  sha.update("\n");
  sha.update(std::string_view(reinterpret_cast<const char*>(&type), 1));
  sha.update(chars(pub));
  const auto digest = sha.digest();
  return (uint32_t{digest[0]} << 24) | (uint32_t{digest[1]} << 16) | (uint32_t{digest[2]} << 8) | digest[3];
}

Ed25519Public public_key(const Ed25519Seed& seed) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  Ed25519Public pub{};
  size_t size = pub.size();
  if (!key || EVP_PKEY_get_raw_public_key(key.get(), pub.data(), &size) != 1 || size != pub.size())
    throw std::runtime_error("Ed25519 public key derivation failed");
  return pub;
}

std::string verifier_key(std::string_view name, const Ed25519Public& pub, uint8_t type) {
  std::string key_bytes(1, static_cast<char>(type));
  key_bytes += chars(pub);
  return std::string(name) + "+" + hex8(key_hash(name, pub, type)) + "+" + base64(key_bytes);
}

std::optional<VerifierKey> parse_verifier_key(std::string_view vkey, uint8_t type) {
  // name+hash+base64(type || 32-byte key).
  const size_t plus1 = vkey.find('+');
  const size_t plus2 = plus1 == std::string_view::npos ? plus1 : vkey.find('+', plus1 + 1);
  if (plus2 == std::string_view::npos) return std::nullopt;
  VerifierKey key;
  key.name = std::string(vkey.substr(0, plus1));
  const std::string_view hash_hex = vkey.substr(plus1 + 1, plus2 - plus1 - 1);
  const auto key_bytes = unbase64(vkey.substr(plus2 + 1));
  if (!valid_name(key.name) || hash_hex.size() != 8 || !key_bytes || key_bytes->size() != 33 ||
      static_cast<uint8_t>((*key_bytes)[0]) != type)
    return std::nullopt;
  std::copy(key_bytes->begin() + 1, key_bytes->end(), key.pub.begin());
  key.hash = key_hash(key.name, key.pub, type);
  if (hex8(key.hash) != hash_hex) return std::nullopt;
  return key;
}

std::optional<std::string> ed25519_sign(const Ed25519Seed& seed, std::string_view message) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  unsigned char sig[64];
  size_t sig_size = sizeof sig;
  if (!key || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &sig_size, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1)
    return std::nullopt;
  return std::string(reinterpret_cast<const char*>(sig), sig_size);
}

bool ed25519_verify(const Ed25519Public& pub, std::string_view message, std::string_view signature) {
  if (signature.size() != 64) return false;
  Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  return key && ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

std::optional<std::string> sign(std::string_view text, std::string_view name, const Ed25519Seed& seed) {
  if (!valid_text(text) || !valid_name(name)) return std::nullopt;
  const auto sig = ed25519_sign(seed, text);
  if (!sig) return std::nullopt;
  const Ed25519Public pub = public_key(seed);
  std::string note(text);
  note += '\n';
  note += signature_line(name, be32(key_hash(name, pub)) + *sig);
  return note;
}

std::optional<std::string> verify(std::string_view note, std::string_view verifier) {
  const auto key = parse_verifier_key(verifier);
  if (!key) return std::nullopt;

  // The text ends at the last blank line; signature lines follow.
  const size_t split = note.rfind("\n\n");
  if (split == std::string_view::npos) return std::nullopt;
  const std::string_view text = note.substr(0, split + 1);
  std::string_view sigs = note.substr(split + 2);
  if (!valid_text(text) || sigs.empty() || sigs.back() != '\n') return std::nullopt;
  while (!sigs.empty()) {
    const size_t end = sigs.find('\n');
    const auto line = parse_signature_line(sigs.substr(0, end));
    sigs.remove_prefix(end + 1);
    if (!line || line->name != key->name) continue;  // another signer's line
    const std::string_view blob = line->blob;
    if (blob.size() != 4 + 64 || blob.substr(0, 4) != be32(key->hash)) continue;
    if (ed25519_verify(key->pub, text, blob.substr(4))) return std::string(text);
  }
  return std::nullopt;
}

}  // namespace tresor::receipts::note
