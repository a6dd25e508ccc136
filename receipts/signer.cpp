// ES256 compact JWS (RFC 7515/7518) with OpenSSL 3 EVP APIs: P-256 keys in PKCS#8 PEM,
// raw R‖S signatures, RFC 7517 JWKs. See shared/spec/tresor-api.md §5.2 and §5.5.
#include "receipts/signer.h"

#include "receipts/key_file.h"


#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace tresor::receipts {

namespace {

namespace json = boost::json;

constexpr std::size_t kCoordBytes = 32;  // P-256 field element / scalar size
constexpr int kCoordLen = static_cast<int>(kCoordBytes);
constexpr const char* kCurveName = "prime256v1";

// ---- OpenSSL RAII -----------------------------------------------------------------

struct PkeyFree { void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); } };
struct PkeyCtxFree { void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); } };
struct MdCtxFree { void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); } };
struct BioFree { void operator()(BIO* p) const { BIO_free(p); } };
struct BnFree { void operator()(BIGNUM* p) const { BN_free(p); } };
struct SigFree { void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); } };
struct ParamBldFree { void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); } };
struct ParamFree { void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); } };

using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;
using SigPtr = std::unique_ptr<ECDSA_SIG, SigFree>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, ParamFree>;

// The oldest queued OpenSSL error as text (then the queue is cleared), for messages.
std::string openssl_error() {
  const unsigned long code = ERR_peek_error();
  std::string text;
  if (code != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(code, buf.data(), buf.size());
    text = buf.data();
  }
  ERR_clear_error();
  return text.empty() ? std::string("unknown OpenSSL error") : text;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + openssl_error());
}

// Never prompt on a terminal for a passphrase: encrypted keys are simply refused.
int no_password(char*, int, int, void*) { return -1; }

// ---- base64url (RFC 4648 §5, no padding) -----------------------------------------

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string b64url_encode(const unsigned char* data, std::size_t n) {
  std::string out;
  out.reserve((n * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kB64Alphabet[(v >> 18) & 63];
    out += kB64Alphabet[(v >> 12) & 63];
    out += kB64Alphabet[(v >> 6) & 63];
    out += kB64Alphabet[v & 63];
  }
  if (n - i == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16;
    out += kB64Alphabet[(v >> 18) & 63];
    out += kB64Alphabet[(v >> 12) & 63];
  } else if (n - i == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out += kB64Alphabet[(v >> 18) & 63];
    out += kB64Alphabet[(v >> 12) & 63];
    out += kB64Alphabet[(v >> 6) & 63];
  }
  return out;
}

std::string b64url_encode(std::string_view s) {
  return b64url_encode(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

int b64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Strict decoder: only the url-safe alphabet, no padding, no whitespace, and unused
// trailing bits must be zero (so every byte string has exactly one accepted encoding).
std::optional<std::string> b64url_decode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    const int v = b64url_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return std::nullopt;  // non-zero leftover bits: not canonical
  return out;
}

// ---- keys -------------------------------------------------------------------------

// True for an EC key on P-256.
bool is_p256(EVP_PKEY* pkey) {
  if (pkey == nullptr || EVP_PKEY_is_a(pkey, "EC") != 1) return false;
  std::array<char, 64> group{};
  std::size_t len = 0;
  if (EVP_PKEY_get_group_name(pkey, group.data(), group.size(), &len) != 1) {
    ERR_clear_error();
    return false;
  }
  const std::string_view name(group.data(), len);
  return name == "prime256v1" || name == "P-256" || name == "secp256r1";
}

// Affine coordinates of the public point, each left-padded to 32 bytes.
std::pair<std::string, std::string> public_xy(EVP_PKEY* pkey) {
  BIGNUM* x_raw = nullptr;
  BIGNUM* y_raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x_raw) != 1) fail("reading EC public x");
  BnPtr x(x_raw);
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y_raw) != 1) fail("reading EC public y");
  BnPtr y(y_raw);
  std::string xs(kCoordBytes, '\0');
  std::string ys(kCoordBytes, '\0');
  if (BN_bn2binpad(x.get(), reinterpret_cast<unsigned char*>(xs.data()), kCoordLen) != kCoordLen ||
      BN_bn2binpad(y.get(), reinterpret_cast<unsigned char*>(ys.data()), kCoordLen) != kCoordLen)
    fail("encoding EC public point");
  return {std::move(xs), std::move(ys)};
}

json::object jwk_object(EVP_PKEY* pkey, const std::string& kid) {
  const auto [x, y] = public_xy(pkey);
  json::object o;
  o["kty"] = "EC";
  o["crv"] = "P-256";
  o["x"] = b64url_encode(x);
  o["y"] = b64url_encode(y);
  o["kid"] = kid;
  o["use"] = "sig";
  o["alg"] = "ES256";
  return o;
}

PkeyPtr generate_p256() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!pkey) fail("generating a P-256 key");
  return pkey;
}

std::string private_key_pem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) fail("allocating a BIO");
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY").
  if (PEM_write_bio_PrivateKey(bio.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("writing the private key PEM");
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) fail("writing the private key PEM");
  return std::string(data, static_cast<std::size_t>(len));
}

// A private key PEM (PKCS#8, or traditional "BEGIN EC PRIVATE KEY"); nullptr if none.
PkeyPtr parse_private_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
  ERR_clear_error();
  return pkey;
}

// A public key PEM ("BEGIN PUBLIC KEY"), else a private key PEM; nullptr if neither.
PkeyPtr parse_any_pem(const std::string& pem) {
  {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return nullptr;
    PkeyPtr pkey(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_password, nullptr));
    ERR_clear_error();
    if (pkey) return pkey;
  }
  return parse_private_pem(pem);
}

// ---- ECDSA signature encodings ----------------------------------------------------

std::optional<std::string> der_to_raw(const unsigned char* der, std::size_t len) {
  const unsigned char* p = der;
  SigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len)));
  if (!sig) return std::nullopt;
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::string raw(2 * kCoordBytes, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(r, out, kCoordLen) != kCoordLen || BN_bn2binpad(s, out + kCoordBytes, kCoordLen) != kCoordLen)
    return std::nullopt;
  return raw;
}

std::optional<std::string> raw_to_der(std::string_view raw) {
  if (raw.size() != 2 * kCoordBytes) return std::nullopt;
  const auto* in = reinterpret_cast<const unsigned char*>(raw.data());
  BnPtr r(BN_bin2bn(in, kCoordLen, nullptr));
  BnPtr s(BN_bin2bn(in + kCoordBytes, kCoordLen, nullptr));
  SigPtr sig(ECDSA_SIG_new());
  if (!r || !s || !sig) return std::nullopt;
  if (ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) return std::nullopt;
  r.release();  // owned by sig now
  s.release();
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0 || der == nullptr) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

// ---- verification helpers ---------------------------------------------------------

const json::string* string_member(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_string() : nullptr;
}

// The P-256 public key of a JWK {"kty":"EC","crv":"P-256","x":…,"y":…}, or an error.
PkeyPtr pkey_from_jwk(const json::object& jwk, std::string& error) {
  const auto* kty = string_member(jwk, "kty");
  const auto* crv = string_member(jwk, "crv");
  const auto* x64 = string_member(jwk, "x");
  const auto* y64 = string_member(jwk, "y");
  if (kty == nullptr || *kty != "EC" || crv == nullptr || *crv != "P-256" || x64 == nullptr || y64 == nullptr) {
    error = "not an EC P-256 JWK";
    return nullptr;
  }
  if (const auto* alg = jwk.if_contains("alg"); alg != nullptr && !(alg->is_string() && alg->get_string() == "ES256")) {
    error = "JWK alg is not ES256";
    return nullptr;
  }
  if (const auto* use = jwk.if_contains("use"); use != nullptr && !(use->is_string() && use->get_string() == "sig")) {
    error = "JWK use is not sig";
    return nullptr;
  }
  const auto x = b64url_decode(*x64);
  const auto y = b64url_decode(*y64);
  if (!x || !y || x->size() != kCoordBytes || y->size() != kCoordBytes) {
    error = "JWK x/y must be 32-byte base64url";
    return nullptr;
  }
  std::string point;
  point.reserve(1 + 2 * kCoordBytes);
  point += '\x04';
  point += *x;
  point += *y;

  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kCurveName, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    ERR_clear_error();
    error = "cannot build JWK key parameters";
    return nullptr;
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 || raw == nullptr) {
    ERR_clear_error();
    error = "JWK is not a valid P-256 public key";
    return nullptr;
  }
  PkeyPtr pkey(raw);
  // fromdata already rejects points off the curve; check again, cheaply, to be sure.
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    error = "JWK is not a valid P-256 public key";
    return nullptr;
  }
  return pkey;
}

VerifyResult failed(std::string error, std::string kid = {}) {
  ERR_clear_error();
  VerifyResult r;
  r.error = std::move(error);
  r.kid = std::move(kid);
  return r;
}

VerifyResult verify_impl(std::string_view jws, std::string_view jwks) {
  const auto dot1 = jws.find('.');
  const auto dot2 = dot1 == std::string_view::npos ? dot1 : jws.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || jws.find('.', dot2 + 1) != std::string_view::npos)
    return failed("malformed JWS: expected header.payload.signature");
  const std::string_view header64 = jws.substr(0, dot1);
  const std::string_view payload64 = jws.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig64 = jws.substr(dot2 + 1);

  const auto header = b64url_decode(header64);
  if (!header || header->empty()) return failed("malformed JWS: header is not base64url");
  json::error_code ec;
  const json::value hv = json::parse(*header, ec);
  if (ec || !hv.is_object()) return failed("malformed JWS: header is not a JSON object");
  const auto& h = hv.get_object();
  const auto* alg = string_member(h, "alg");
  if (alg == nullptr) return failed("malformed JWS: header has no alg");
  if (*alg != "ES256") return failed("unsupported alg " + std::string(*alg) + " (expected ES256)");
  if (h.contains("crit")) return failed("unsupported crit header");
  const auto* kid_v = string_member(h, "kid");
  if (kid_v == nullptr) return failed("malformed JWS: header has no kid");
  std::string kid(*kid_v);

  const auto payload = b64url_decode(payload64);
  if (!payload) return failed("malformed JWS: payload is not base64url", kid);
  const auto sig = b64url_decode(sig64);
  if (!sig) return failed("malformed JWS: signature is not base64url", kid);
  if (sig->size() != 2 * kCoordBytes)
    return failed("malformed JWS: signature must be 64 bytes (R||S), got " + std::to_string(sig->size()), kid);

  const json::value kv = json::parse(jwks, ec);
  if (ec || !kv.is_object()) return failed("invalid JWKS: not a JSON object", kid);
  const auto* keys = kv.get_object().if_contains("keys");
  if (keys == nullptr || !keys->is_array()) return failed("invalid JWKS: no keys array", kid);
  const json::object* jwk = nullptr;
  for (const auto& k : keys->get_array()) {
    if (!k.is_object()) continue;
    const auto* id = string_member(k.get_object(), "kid");
    if (id != nullptr && *id == kid) {
      jwk = &k.get_object();
      break;
    }
  }
  if (jwk == nullptr) return failed("unknown kid " + kid, kid);
  std::string key_error;
  PkeyPtr pkey = pkey_from_jwk(*jwk, key_error);
  if (!pkey) return failed("unusable key " + kid + ": " + key_error, kid);

  const auto der = raw_to_der(*sig);
  if (!der) return failed("malformed JWS: cannot encode signature", kid);

  const std::string_view signing_input = jws.substr(0, dot2);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey.get()) != 1)
    return failed("cannot initialise verification", kid);
  const int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der->data()), der->size(),
                                  reinterpret_cast<const unsigned char*>(signing_input.data()),
                                  signing_input.size());
  if (rc != 1) return failed("bad signature", kid);

  VerifyResult r;
  r.ok = true;
  r.kid = std::move(kid);
  r.payload = *payload;
  return r;
}

}  // namespace

std::string base64url_encode(std::string_view bytes) { return b64url_encode(bytes); }

// ---- Signer -----------------------------------------------------------------------

struct Signer::Impl {
  PkeyPtr pkey;
  std::string kid;
  std::string header64;  // base64url({"alg":"ES256","kid":…})
  std::string jwk;       // public JWK, serialised
};

Signer::Signer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Signer::~Signer() = default;

// The P-256 private key in `pem`, read from `path` (named in errors).
static PkeyPtr p256_from_pem(const std::string& pem, const std::string& path) {
  PkeyPtr pkey = parse_private_pem(pem);
  if (!pkey) throw std::runtime_error("key file " + path + " does not hold a readable (unencrypted) PEM private key");
  if (!is_p256(pkey.get())) throw std::runtime_error("key file " + path + " is not an EC P-256 private key");
  return pkey;
}

// The P-256 private key at `path`, refused when others may read or change the file.
static PkeyPtr load_private_key(const std::string& path) {
  PkeyPtr pkey = p256_from_pem(key_file::read(path), path);
  key_file::refuse_if_exposed(path);
  return pkey;
}

std::unique_ptr<Signer> Signer::load_or_create(const std::string& path, std::string kid) {
  const auto file = key_file::read_or_create(path, [] { return private_key_pem(generate_p256().get()); });
  PkeyPtr pkey = p256_from_pem(file.pem, path);
  if (!file.created) key_file::refuse_if_exposed(path);
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(pkey);
  return finish(std::move(impl), std::move(kid));
}

std::unique_ptr<Signer> Signer::load_if_exists(const std::string& path, std::string kid) {
  std::error_code fs_ec;
  if (!std::filesystem::exists(path, fs_ec) && !fs_ec) return nullptr;
  auto impl = std::make_unique<Impl>();
  impl->pkey = load_private_key(path);
  return finish(std::move(impl), std::move(kid));
}

std::unique_ptr<Signer> Signer::finish(std::unique_ptr<Impl> impl, std::string kid) {
  impl->kid = std::move(kid);
  json::object header;
  header["alg"] = "ES256";
  header["kid"] = impl->kid;
  impl->header64 = b64url_encode(json::serialize(header));
  impl->jwk = json::serialize(jwk_object(impl->pkey.get(), impl->kid));
  return std::unique_ptr<Signer>(new Signer(std::move(impl)));
}

const std::string& Signer::kid() const { return impl_->kid; }

std::string Signer::public_jwk() const { return impl_->jwk; }

std::string Signer::sign(std::string_view payload_json) const {
  std::string input = impl_->header64;
  input += '.';
  input += b64url_encode(payload_json);

  // A fresh context per call: the EVP_PKEY is only read, so concurrent calls are safe.
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->pkey.get()) != 1)
    fail("initialising ES256 signing");
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  std::size_t der_len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &der_len, data, input.size()) != 1) fail("ES256 signing");
  std::string der(der_len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(der.data()), &der_len, data, input.size()) != 1)
    fail("ES256 signing");
  const auto raw = der_to_raw(reinterpret_cast<const unsigned char*>(der.data()), der_len);
  if (!raw) fail("converting the ECDSA signature to R||S");

  input += '.';
  input += b64url_encode(*raw);
  return input;
}

std::string generate_private_key_pem() {
  PkeyPtr pkey = generate_p256();
  return private_key_pem(pkey.get());
}

// The JWKs of the retired keys, read from their files; a kid may appear once, the active
// one included.
static json::array retired_jwks(const std::string& active_kid, const std::vector<config::RetiredKey>& retired) {
  json::array keys;
  std::vector<std::string> kids{active_kid};
  for (const auto& r : retired) {
    if (r.kid == active_kid)
      throw std::runtime_error("retired key " + r.public_key_file + " reuses the active kid " + r.kid);
    if (std::find(kids.begin(), kids.end(), r.kid) != kids.end())
      throw std::runtime_error("retired key " + r.public_key_file + " reuses kid " + r.kid);
    kids.push_back(r.kid);
    const std::string pem = key_file::read(r.public_key_file);
    PkeyPtr pkey = parse_any_pem(pem);
    if (!pkey) throw std::runtime_error("retired key file " + r.public_key_file + " holds no readable PEM key");
    if (!is_p256(pkey.get()))
      throw std::runtime_error("retired key file " + r.public_key_file + " is not an EC P-256 key");
    keys.push_back(jwk_object(pkey.get(), r.kid));
  }
  return keys;
}

std::string jwks_json(const Signer& active, const std::vector<config::RetiredKey>& retired) {
  json::array keys;
  keys.push_back(json::parse(active.public_jwk()));
  for (auto& k : retired_jwks(active.kid(), retired)) keys.push_back(std::move(k));
  json::object doc;
  doc["keys"] = std::move(keys);
  return json::serialize(doc);
}

void check_retired_keys(const std::string& active_kid, const std::vector<config::RetiredKey>& retired) {
  retired_jwks(active_kid, retired);
}

VerifyResult verify_jws(std::string_view jws, std::string_view jwks) {
  try {
    return verify_impl(jws, jwks);
  } catch (const std::exception& e) {
    return failed(std::string("verification error: ") + e.what());
  }
}

}  // namespace tresor::receipts
