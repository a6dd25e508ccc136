// C2SP signed-note with Ed25519 (receipts/signed_note.h, issue 19), checked against the
// vectors of golang.org/x/mod/sumdb/note (note_test.go: TestSign, TestNewVerifier), code
// none of us wrote: the same key must give the same verifier key and, Ed25519 being
// deterministic, byte for byte the same signed note.
#include <catch2/catch.hpp>

#include <string>

#include "receipts/signed_note.h"

namespace note = tresor::receipts::note;

namespace {

// The seed of Go's test key "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALV…" (after its 0x01 type byte).
note::Ed25519Seed peter_neumann_seed() {
  const std::string hex = "810a1402d5146c8d84f2443330f54080ebf98ee17d9c74f6252fc5d5c7283173";
  note::Ed25519Seed seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return seed;
}

const std::string kText =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n";
const std::string kVerifier = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

}  // namespace

TEST_CASE("signed note: Go's test key gives Go's verifier key and Go's signed note, byte for byte", "[signed_note]") {
  const auto seed = peter_neumann_seed();
  CHECK(note::verifier_key("PeterNeumann", note::public_key(seed)) == kVerifier);
  const auto signed_note = note::sign(kText, "PeterNeumann", seed);
  REQUIRE(signed_note);
  CHECK(*signed_note == kText + "\n\xE2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n");
  CHECK(note::verify(*signed_note, kVerifier) == kText);
}

TEST_CASE("signed note: a changed text, signature, key or signer is refused", "[signed_note]") {
  const auto seed = peter_neumann_seed();
  const std::string good = *note::sign(kText, "PeterNeumann", seed);
  std::string text_changed = good;
  text_changed[3] = 'X';
  CHECK_FALSE(note::verify(text_changed, kVerifier));
  std::string sig_changed = good;
  sig_changed[sig_changed.size() - 10] = sig_changed[sig_changed.size() - 10] == 'A' ? 'B' : 'A';
  CHECK_FALSE(note::verify(sig_changed, kVerifier));
  // Another key under the same name (a checkpoint signed by another key).
  note::Ed25519Seed other = seed;
  other[0] ^= 1;
  const auto forged = note::sign(kText, "PeterNeumann", other);
  REQUIRE(forged);
  CHECK_FALSE(note::verify(*forged, kVerifier));
  CHECK(note::verify(*forged, note::verifier_key("PeterNeumann", note::public_key(other))) == kText);
  // A verifier key whose hash does not match its name and key.
  CHECK_FALSE(note::verify(good, "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"));
  CHECK_FALSE(note::verify(good, "Someone+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"));
  // Malformed texts and names are not signed.
  CHECK_FALSE(note::sign("abc", "PeterNeumann", seed));
  CHECK_FALSE(note::sign("a\n\nb\n", "PeterNeumann", seed));
  CHECK_FALSE(note::sign(kText, "a+b", seed));
  CHECK_FALSE(note::sign(kText, "a b", seed));
}

TEST_CASE("signed note: a cosigned note verifies for each of its signers", "[signed_note]") {
  const auto seed = peter_neumann_seed();
  note::Ed25519Seed witness_seed = seed;
  witness_seed[5] ^= 0x40;
  const std::string first = *note::sign(kText, "PeterNeumann", seed);
  const std::string witness_line = note::sign(kText, "witness.example", witness_seed)->substr(kText.size() + 1);
  const std::string both = first + witness_line;
  CHECK(note::verify(both, kVerifier) == kText);
  CHECK(note::verify(both, note::verifier_key("witness.example", note::public_key(witness_seed))) == kText);
}
