#include "receipts/claims.h"

#include "common/json_text.h"
#include "common/secure_random.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace tresor::receipts {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string to_hex(const unsigned char* bytes, size_t n) {
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0xf];
  }
  return out;
}

}  // namespace

namespace {

std::string uuid_text(const unsigned char (&b)[16]) {
  std::string out(36, '-');
  size_t o = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (o == 8 || o == 13 || o == 18 || o == 23) ++o;
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string new_receipt_id() {
  unsigned char b[16];
  common::secure_random_bytes(b + 6, 10);
  const uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x70);  // version 7
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 9562 variant
  return uuid_text(b);
}

std::string new_random_uuid() {
  unsigned char b[16];
  common::secure_random_bytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return uuid_text(b);
}

bool is_receipt_id(std::string_view id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

namespace {

// OpenSSL 3 looks EVP_sha256() up in its provider tables on every init (locks and a
// hash lookup, ~1 us): fetched once per process instead.
const EVP_MD* sha256_md() {
  static EVP_MD* md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (fetched == nullptr) throw std::runtime_error("SHA-256 is not available from OpenSSL");
    return fetched;
  }();
  return md;
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex2(ctx_, sha256_md(), nullptr) != 1) throw std::runtime_error("SHA-256 init failed");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(std::string_view bytes) { EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()); }

std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, digest, &n);
  return to_hex(digest, n);
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &n, sha256_md(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return to_hex(digest, n);
}

std::string claims_json(const Claims& c) {
  // Written member by member, in the order of spec §5.3 (one receipt per request: a
  // boost::json::object here cost ~7% of an I/O thread's time with receipts on).
  std::string out;
  out.reserve(512 + (c.router_attestation_json ? c.router_attestation_json->size() : 0));
  const auto name = [&out](std::string_view n) {
    out += out.empty() ? '{' : ',';
    common::append_json_name(out, n);
  };
  const auto text = [&](std::string_view n, std::string_view v) {
    name(n);
    common::append_json_string(out, v);
  };
  const auto number = [&](std::string_view n, int64_t v) {
    name(n);
    common::append_json_int(out, v);
  };
  text("jti", c.id);
  number("iat", c.issued_at);
  text("receipt_type", "message");
  text("requested_route", c.requested_route);
  text("routed_model", c.routed_model);
  name("failover");
  common::append_json_bool(out, c.failover);
  text("endpoint", c.endpoint);
  number("prompt_tokens", c.prompt_tokens);
  number("completion_tokens", c.completion_tokens);
  if (c.audio_seconds) number("audio_seconds", *c.audio_seconds);
  text("request_sha256", c.request_sha256);
  text("response_sha256", c.response_sha256);
  // The block is compact JSON the router serialised itself at start-up (attestation.cpp),
  // so it is spliced in as it is; anything not an object is left out, as before.
  const auto& block = c.router_attestation_json;
  if (block && block->size() >= 2 && block->front() == '{' && block->back() == '}') {
    name("router_attestation");
    out += *block;
  }
  if (c.nonce) text("nonce", *c.nonce);
  out += '}';
  return out;
}

}  // namespace tresor::receipts

namespace tresor::receipts {

std::string strip_tresor_member(std::string_view json) {
  constexpr std::string_view kMember = ",\"tresor\":{";
  const auto at = json.rfind(kMember);
  if (at == std::string_view::npos) return std::string(json);
  const auto close = json.find('}', at + kMember.size());
  if (close == std::string_view::npos) return std::string(json);
  std::string out(json.substr(0, at));
  out.append(json.substr(close + 1));
  return out;
}

std::string response_sha256_of_json(std::string_view body) { return sha256_hex(strip_tresor_member(body)); }

std::string response_sha256_of_sse(std::string_view stream) {
  Sha256 digest;
  size_t pos = 0;
  while (pos < stream.size()) {
    auto end = stream.find('\n', pos);
    if (end == std::string_view::npos) end = stream.size();
    std::string_view line = stream.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    constexpr std::string_view kData = "data: ";
    if (line.substr(0, kData.size()) == kData) {
      const auto payload = line.substr(kData.size());
      if (payload != "[DONE]") digest.update(strip_tresor_member(payload));
    }
    pos = end + 1;
  }
  return digest.hex();
}

}  // namespace tresor::receipts
