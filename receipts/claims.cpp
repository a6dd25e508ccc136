#include "receipts/claims.h"

#include <openssl/rand.h>

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

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

std::string new_receipt_id() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("RAND_bytes failed");
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  const std::string h = to_hex(b, sizeof b);
  return h.substr(0, 8) + '-' + h.substr(8, 4) + '-' + h.substr(12, 4) + '-' + h.substr(16, 4) + '-' + h.substr(20);
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

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) throw std::runtime_error("SHA-256 init failed");
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
  Sha256 h;
  h.update(bytes);
  return h.hex();
}

std::string claims_json(const Claims& c) {
  boost::json::object o;
  o["jti"] = c.id;
  o["iat"] = c.issued_at;
  o["receipt_type"] = "message";
  o["requested_route"] = c.requested_route;
  o["routed_model"] = c.routed_model;
  o["failover"] = c.failover;
  o["endpoint"] = c.endpoint;
  o["prompt_tokens"] = c.prompt_tokens;
  o["completion_tokens"] = c.completion_tokens;
  if (c.audio_seconds) o["audio_seconds"] = *c.audio_seconds;
  o["request_sha256"] = c.request_sha256;
  o["response_sha256"] = c.response_sha256;
  if (c.router_attestation_json) {
    boost::system::error_code ec;
    auto block = boost::json::parse(*c.router_attestation_json, ec);
    if (!ec) o["router_attestation"] = std::move(block);
  }
  if (c.nonce) o["nonce"] = *c.nonce;
  return boost::json::serialize(o);
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
