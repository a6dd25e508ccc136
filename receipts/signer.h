// ES256 compact JWS for receipts (RFC 7515/7518: raw R‖S signature), the JWKS that
// verifies them, and verification for the CLI and tests. OpenSSL 3 underneath.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace tresor::receipts {

// base64url without padding (RFC 4648 §5), as JWS segments use it.
std::string base64url_encode(std::string_view bytes);

class Signer {
 public:
  // Loads the PEM P-256 private key at `path`, creating it (mode 0600, parent folder
  // made if needed) when the file does not exist. Throws std::runtime_error with a clear
  // message on an unreadable or non-P-256 key.
  static std::unique_ptr<Signer> load_or_create(const std::string& path, std::string kid);
  // The same checks on the key at `path` without ever creating a file or folder
  // (check-config); nullptr when there is no file there.
  static std::unique_ptr<Signer> load_if_exists(const std::string& path, std::string kid);
  ~Signer();

  const std::string& kid() const;
  // header.payload.signature, base64url without padding; header {"alg":"ES256","kid":…}.
  // Thread-safe.
  std::string sign(std::string_view payload_json) const;
  // {"kty":"EC","crv":"P-256","x":…,"y":…,"kid":…,"use":"sig","alg":"ES256"}
  std::string public_jwk() const;

 private:
  struct Impl;
  explicit Signer(std::unique_ptr<Impl> impl);
  // Completes `impl` (its key set) with `kid`, the JWS header and the JWK.
  static std::unique_ptr<Signer> finish(std::unique_ptr<Impl> impl, std::string kid);
  std::unique_ptr<Impl> impl_;
};

// A new P-256 private key as PEM (PKCS#8), for `tresor-router gen-signing-key`.
std::string generate_private_key_pem();

// {"keys":[active, retired…]}; retired public keys are read from their PEM files
// (throws std::runtime_error naming the file when one cannot be read).
std::string jwks_json(const Signer& active, const std::vector<config::RetiredKey>& retired);
// The checks jwks_json makes on the retired keys, without an active key (check-config).
void check_retired_keys(const std::string& active_kid, const std::vector<config::RetiredKey>& retired);

struct VerifyResult {
  bool ok = false;
  std::string error;    // why verification failed
  std::string kid;
  std::string payload;  // the decoded claims JSON
};

// Verifies a compact ES256 JWS against a JWKS document (kid must match a key).
VerifyResult verify_jws(std::string_view jws, std::string_view jwks);

}  // namespace tresor::receipts
