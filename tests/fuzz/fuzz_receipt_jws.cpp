// Receipt signatures (receipts/signer.h): verify_jws on hostile JWS and JWKS text, and
// the sign → verify round trip on hostile claims.
// Input: the JWS, a 0x00 byte, the JWKS; without a 0x00 the whole input is the JWS and
// the JWKS is the signer's own. The signer's key is the checked-in test key
// receipt_fuzz_key.pem, so the corpus's real receipts verify and their mutations are
// checked against the real key. The whole input is also signed as a payload.
// Properties: verify_jws never throws and never accepts without a kid and payload; what
// the signer signs, the signer's JWKS verifies, payload unchanged, under the signer's kid;
// a changed payload or signature does not verify.
#include <memory>
#include <string>

#include "receipts/signer.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

// The checked-in test key (TRESOR_FUZZ_KEY_FILE, set by tests/fuzz/CMakeLists.txt): only
// loaded, never created, as the file exists.
const receipts::Signer& signer() {
  static const std::unique_ptr<receipts::Signer> s =
      receipts::Signer::load_or_create(TRESOR_FUZZ_KEY_FILE, "router-receipt-1");
  return *s;
}

const std::string& own_jwks() {
  static const std::string jwks = receipts::jwks_json(signer(), {});
  return jwks;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t sep = in.find('\0');
  const std::string_view jws = in.substr(0, sep);
  const std::string_view jwks = sep == std::string_view::npos ? std::string_view(own_jwks()) : in.substr(sep + 1);

  const auto verified = receipts::verify_jws(jws, jwks);
  if (verified.ok) {
    FUZZ_CHECK(verified.error.empty());
    FUZZ_CHECK(!verified.kid.empty());
  } else {
    FUZZ_CHECK(!verified.error.empty());
  }

  // The round trip: anything signed verifies against the signer's own JWKS.
  const std::string signed_jws = signer().sign(in);
  const auto round = receipts::verify_jws(signed_jws, own_jwks());
  FUZZ_CHECK(round.ok);
  FUZZ_CHECK(round.kid == signer().kid());
  FUZZ_CHECK(round.payload == in);

  // Tampering is caught: another payload under the same signature, or a changed first
  // signature character (it carries 6 bits of R), must not verify.
  const size_t dot1 = signed_jws.find('.');
  const size_t dot2 = signed_jws.find('.', dot1 + 1);
  const std::string other_payload = signed_jws.substr(0, dot1 + 1) + receipts::base64url_encode(std::string(in) + " ") +
                                    signed_jws.substr(dot2);
  FUZZ_CHECK(!receipts::verify_jws(other_payload, own_jwks()).ok);
  std::string other_signature = signed_jws;
  other_signature[dot2 + 1] = other_signature[dot2 + 1] == 'A' ? 'B' : 'A';
  FUZZ_CHECK(!receipts::verify_jws(other_signature, own_jwks()).ok);
  return 0;
}
