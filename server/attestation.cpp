#include "server/attestation.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "receipts/claims.h"
#include "receipts/signer.h"

#ifndef TRESOR_VERSION
#define TRESOR_VERSION "dev"
#endif

namespace tresor::server {
namespace {

constexpr size_t kSnpReportBytes = 1184;    // AMD SEV-SNP ATTESTATION_REPORT
constexpr size_t kReportDataOffset = 0x50;  // REPORT_DATA, 64 bytes

std::string base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

std::vector<unsigned char> hex_bytes(const std::string& hex) {
  std::vector<unsigned char> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<unsigned char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string sha256_of_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  receipts::Sha256 digest;
  std::array<char, 1 << 16> buf;
  while (in) {
    in.read(buf.data(), buf.size());
    digest.update(std::string_view(buf.data(), static_cast<size_t>(in.gcount())));
  }
  return digest.hex();
}

// SHA-256 of the certificate's SubjectPublicKeyInfo DER (the §8.3 step 7 pin).
std::string spki_sha256_hex(const std::string& cert_file) {
  if (cert_file.empty()) return std::string(64, '0');
  FILE* f = std::fopen(cert_file.c_str(), "r");
  if (!f) throw std::runtime_error("attestation: cannot open server.tls.cert_file " + cert_file);
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (!cert) throw std::runtime_error("attestation: no PEM certificate in " + cert_file);
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  X509_free(cert);
  if (len <= 0) throw std::runtime_error("attestation: cannot encode the certificate's public key");
  std::string hex = receipts::sha256_hex(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
  OPENSSL_free(der);
  return hex;
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};

// A compact EdDSA JWS over `payload` with a fresh Ed25519 key (dev mode's stand-in for
// the release signing key).
std::string dev_manifest_jws(const std::string& payload) {
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) throw std::runtime_error("attestation: Ed25519 key generation failed");
  unsigned char raw[32];
  size_t raw_len = sizeof raw;
  EVP_PKEY_get_raw_public_key(key.get(), raw, &raw_len);
  const std::string kid =
      "dev-" + receipts::sha256_hex(std::string_view(reinterpret_cast<const char*>(raw), raw_len)).substr(0, 16);
  boost::json::object header;
  header["alg"] = "EdDSA";
  header["typ"] = "JWT";
  header["kid"] = kid;
  const std::string signing_input = receipts::base64url_encode(boost::json::serialize(header)) + "." + receipts::base64url_encode(payload);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char sig[64];
  size_t sig_len = sizeof sig;
  const bool ok = ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key.get()) == 1 &&
                  EVP_DigestSign(ctx, sig, &sig_len, reinterpret_cast<const unsigned char*>(signing_input.data()),
                                 signing_input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("attestation: Ed25519 signing failed");
  return signing_input + "." +
         receipts::base64url_encode(std::string_view(reinterpret_cast<const char*>(sig), sig_len));
}

std::string utc_now_rfc3339() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

RouterAttestation::RouterAttestation(const config::Config& cfg)
    : trust_bundle_url_(cfg.attestation.trust_bundle_url), max_age_seconds_(cfg.attestation.max_age_seconds) {
  boost::json::object build;
  build["compiler"] = __VERSION__;
  build["mode"] = cfg.attestation.mode;
  boost::json::object manifest;
  manifest["schema"] = "workload-identity/v1";
  manifest["workload"] = "router";
  manifest["version"] = "v" TRESOR_VERSION;
  const char* image = std::getenv("TRESOR_IMAGE_DIGEST");  // set by the deployment, when known
  manifest["image_digest"] = image ? image : "";
  manifest["binary_digest"] = "sha256:" + sha256_of_file("/proc/self/exe");
  manifest["build_metadata"] = std::move(build);
  manifest_jws_ = dev_manifest_jws(boost::json::serialize(manifest));
  tag_hex_ = receipts::sha256_hex(manifest_jws_);
  spki_hex_ = spki_sha256_hex(cfg.server.tls.cert_file);

  std::array<unsigned char, kSnpReportBytes> report{};
  report[0] = 2;  // report version (little-endian u32)
  std::vector<unsigned char> bound = hex_bytes(spki_hex_);
  const auto tag = hex_bytes(tag_hex_);
  bound.insert(bound.end(), tag.begin(), tag.end());
  const std::string report_data =
      receipts::sha256_hex(std::string_view(reinterpret_cast<const char*>(bound.data()), bound.size()));
  const auto report_data_bytes = hex_bytes(report_data);
  std::copy(report_data_bytes.begin(), report_data_bytes.end(), report.begin() + kReportDataOffset);
  report_b64_ = base64(report.data(), report.size());

  boost::json::object block;
  block["schema"] = "tresor.attestation/v1";
  block["mode"] = cfg.attestation.mode;
  block["workload_identity_tag"] = tag_hex_;
  block["tls_spki_sha256"] = spki_hex_;
  block["snp_report_sha256"] =
      receipts::sha256_hex(std::string_view(reinterpret_cast<const char*>(report.data()), report.size()));
  block["trust_bundle_url"] = trust_bundle_url_;
  receipt_block_ = boost::json::serialize(block);
}

RouterAttestation::~RouterAttestation() = default;

std::string RouterAttestation::envelope_json() const {
  boost::json::object o;
  o["schema"] = "tresor.attestation/v1";
  o["workload"] = "router";
  o["snp_report_b64"] = report_b64_;
  o["vcek_chain_pem"] = "";
  o["tls_spki_sha256"] = spki_hex_;
  o["workload_identity_tag"] = tag_hex_;
  o["workload_identity_manifest_jws"] = manifest_jws_;
  o["trust_bundle_url"] = trust_bundle_url_;
  o["issued_at"] = utc_now_rfc3339();
  o["max_age_seconds"] = max_age_seconds_;
  return boost::json::serialize(o);
}

}  // namespace tresor::server
