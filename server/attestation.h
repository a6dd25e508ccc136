// GET /attestation (spec §8.1, §8.5): the router's attestation envelope, and the block of
// it that receipts embed as `router_attestation`.
//
// Only `dev` mode exists: no SEV-SNP hardware here. The envelope is still built the way
// a real one binds together, so clients can exercise their verification code:
//   * workload_identity_manifest_jws: an EdDSA JWS over {schema workload-identity/v1,
//     workload, version, image_digest, binary_digest, build_metadata}, signed with an
//     Ed25519 key made at start-up (a release key signs it in a real deployment);
//   * workload_identity_tag = SHA-256 of the manifest JWS bytes;
//   * tls_spki_sha256 = SHA-256 of the serving certificate's SubjectPublicKeyInfo DER
//     (server.tls), or 64 zeros when TLS terminates in front of the router (the binding
//     then means nothing: documented);
//   * snp_report_b64: a placeholder 1184-byte report, zero except version 2 and
//     REPORT_DATA[0:32] = SHA-256(spki_sha256 bytes ‖ tag bytes), as §8.3 step 6 checks;
//   * vcek_chain_pem empty (allowed in dev mode), issued_at now, max_age_seconds and
//     trust_bundle_url from config.
#pragma once

#include <memory>
#include <string>

#include "config/config.h"

namespace tresor::server {

class RouterAttestation {
 public:
  // Throws std::runtime_error when server.tls.cert_file cannot be read.
  explicit RouterAttestation(const config::Config& cfg);
  ~RouterAttestation();

  // The §8.1 envelope, issued now.
  std::string envelope_json() const;
  // For receipts: {"schema","mode","workload_identity_tag","tls_spki_sha256",
  // "snp_report_sha256","trust_bundle_url"}: everything in the envelope that does not
  // change between fetches, so a verifier can compare it with GET /attestation.
  const std::string& receipt_block() const { return receipt_block_; }

 private:
  std::string trust_bundle_url_;
  unsigned max_age_seconds_ = 600;
  std::string manifest_jws_;
  std::string tag_hex_;
  std::string spki_hex_;
  std::string report_b64_;
  std::string receipt_block_;
};

}  // namespace tresor::server
