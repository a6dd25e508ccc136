// C2SP tlog-cosignature v1, Ed25519 (receipts/cosignature.h, issue 19). The known answer
// was computed by a separate Go program with Go's crypto/ed25519 (not OpenSSL) following the
// spec text; the spec's own example line (whose key is not published) is checked for its key
// id and timestamp. Neither golang.org/x/mod nor the C2SP repository ships a vector with a key.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "receipts/cosignature.h"

namespace cosig = tresor::receipts::cosignature;
namespace note = tresor::receipts::note;

namespace {

// The seed of Go's sumdb/note test key "PeterNeumann" (signed_note_test.cpp uses it too), in base64.
note::Ed25519Seed test_seed() {
  const auto bytes = note::unbase64("gQoUAtUUbI2E8kQzMPVAgOv5juF9nHT2JS/F1ccoMXM=");
  REQUIRE(bytes);
  REQUIRE(bytes->size() == 32);
  note::Ed25519Seed seed{};
  std::copy(bytes->begin(), bytes->end(), seed.begin());
  return seed;
}

const std::string kName = "witness.example.com/w1";
// The checkpoint of the spec's example.
const std::string kCheckpoint = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const uint64_t kTime = 1679315147;
const std::string kVkey = "witness.example.com/w1+d46a2b1b+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const std::string kLine =
    "\xE2\x80\x94 witness.example.com/w1 "
    "1GorGwAAAABkGFDLJeR//pqzhnEKVvEm2wWbh2RJ6oru5+cUUfm5X9NnlaGr8aSH9QE5RVZD4QGlxl2F5UpVIIi94p178KLfqPPsAA==\n";

// The line with its base64 blob decoded, changed by `edit`, and encoded again.
template <class Edit>
std::string edit_blob(const std::string& line, Edit edit) {
  auto parsed = note::parse_signature_line(std::string_view(line).substr(0, line.size() - 1));
  REQUIRE(parsed);
  edit(parsed->blob);
  return note::signature_line(parsed->name, parsed->blob);
}

}  // namespace

TEST_CASE("cosignature: the known answer, byte for byte, and its verification", "[cosignature]") {
  const auto seed = test_seed();
  const auto pub = note::public_key(seed);
  CHECK(cosig::vkey(kName, pub) == kVkey);
  CHECK(cosig::key_id(kName, pub) == 0xd46a2b1bu);
  const auto line = cosig::cosign(kCheckpoint, kName, seed, kTime);
  REQUIRE(line);
  CHECK(*line == kLine);
  CHECK(cosig::verify(kCheckpoint, *line, kVkey) == kTime);
  // Without its newline, as a line split out of a note.
  CHECK(cosig::verify(kCheckpoint, line->substr(0, line->size() - 1), kVkey) == kTime);
  CHECK(cosig::signed_message(kCheckpoint, kTime) == "cosignature/v1\ntime 1679315147\n" + kCheckpoint);
}

TEST_CASE("cosignature: the spec's example line carries the key id and timestamp of its message", "[cosignature]") {
  const auto parsed = note::parse_signature_line(
      "\xE2\x80\x94 witness.example.com/w1 "
      "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==");
  REQUIRE(parsed);
  CHECK(parsed->name == kName);
  REQUIRE(parsed->blob.size() == 4 + 8 + 64);
  CHECK(parsed->blob.substr(0, 4) == note::be32(0x8d66cf3fu));
  CHECK(parsed->blob.substr(4, 8) == std::string("\0\0\0\0\x64\x18\x50\xcb", 8));  // 1679315147
}

TEST_CASE("cosignature: round trip with a fresh key and the current time", "[cosignature]") {
  note::Ed25519Seed seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(7 * i + 3);
  const std::string vkey = cosig::vkey("w.example/2", note::public_key(seed));
  const std::string text = "tresor-router.local/receipts\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
  const auto line = cosig::cosign(text, "w.example/2", seed, 1765000000);
  REQUIRE(line);
  CHECK(cosig::verify(text, *line, vkey) == 1765000000u);
  // A note-signature vkey (type 0x01) of the same key is not a cosigner key.
  CHECK_FALSE(cosig::parse_vkey(note::verifier_key("w.example/2", note::public_key(seed))));
  CHECK_FALSE(cosig::verify(text, *line, note::verifier_key("w.example/2", note::public_key(seed))));
}

TEST_CASE("cosignature: another key, a changed checkpoint or timestamp is refused", "[cosignature]") {
  const auto seed = test_seed();
  // Another key under the same name: the key id differs, and so does the signature.
  note::Ed25519Seed other = seed;
  other[0] ^= 1;
  const std::string other_vkey = cosig::vkey(kName, note::public_key(other));
  CHECK_FALSE(cosig::verify(kCheckpoint, kLine, other_vkey));
  // Another key that (by construction here) carries the same key id: the signature decides.
  const std::string forged = edit_blob(*cosig::cosign(kCheckpoint, kName, other, kTime),
                                       [](std::string& blob) { blob.replace(0, 4, note::be32(0xd46a2b1bu)); });
  CHECK_FALSE(cosig::verify(kCheckpoint, forged, kVkey));
  // Another checkpoint: one more leaf, or another root.
  CHECK_FALSE(cosig::verify("example.com/behind-the-sofa\n20852164\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", kLine,
                            kVkey));
  CHECK_FALSE(cosig::verify("example.com/behind-the-sofa\n20852163\nDsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", kLine,
                            kVkey));
  // The timestamp moved by one second: the signature covers it.
  const std::string later = edit_blob(kLine, [](std::string& blob) { blob[11] = static_cast<char>(blob[11] + 1); });
  CHECK_FALSE(cosig::verify(kCheckpoint, later, kVkey));
  // Another witness name in front of the same bytes.
  std::string renamed = kLine;
  renamed.replace(renamed.find("w1"), 2, "w2");
  CHECK_FALSE(cosig::verify(kCheckpoint, renamed, kVkey));
}

TEST_CASE("cosignature: malformed lines, keys, texts and times", "[cosignature]") {
  const auto seed = test_seed();
  CHECK_FALSE(cosig::verify(kCheckpoint, "", kVkey));
  CHECK_FALSE(cosig::verify(kCheckpoint, "- witness.example.com/w1 AAAA", kVkey));  // not an em dash
  CHECK_FALSE(cosig::verify(kCheckpoint, "\xE2\x80\x94 witness.example.com/w1", kVkey));  // no blob
  CHECK_FALSE(cosig::verify(kCheckpoint, "\xE2\x80\x94 witness.example.com/w1 !!!!", kVkey));  // not base64
  // A note signature (key hash || sig, no timestamp) is too short to be a cosignature.
  const std::string short_blob = edit_blob(kLine, [](std::string& blob) { blob.erase(4, 8); });
  CHECK_FALSE(cosig::verify(kCheckpoint, short_blob, kVkey));
  const std::string long_blob = edit_blob(kLine, [](std::string& blob) { blob += "x"; });
  CHECK_FALSE(cosig::verify(kCheckpoint, long_blob, kVkey));
  // Timestamps at and beyond 2^63 are refused, signed or not.
  CHECK_FALSE(cosig::cosign(kCheckpoint, kName, seed, uint64_t{1} << 63));
  CHECK(cosig::cosign(kCheckpoint, kName, seed, (uint64_t{1} << 63) - 1));
  const std::string huge = edit_blob(kLine, [](std::string& blob) { blob[4] = '\x80'; });
  CHECK_FALSE(cosig::verify(kCheckpoint, huge, kVkey));
  // Malformed vkeys: wrong key id, wrong type, truncated.
  CHECK_FALSE(cosig::verify(kCheckpoint, kLine, "witness.example.com/w1+d46a2b1c+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"));
  CHECK_FALSE(cosig::verify(kCheckpoint, kLine, "witness.example.com/w1+d46a2b1b+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"));
  CHECK_FALSE(cosig::verify(kCheckpoint, kLine, "witness.example.com/w1+d46a2b1b"));
  // Texts a checkpoint cannot be.
  CHECK_FALSE(cosig::cosign("no newline", kName, seed, kTime));
  CHECK_FALSE(cosig::cosign("a\n\nb\n", kName, seed, kTime));
  CHECK_FALSE(cosig::cosign(kCheckpoint, "bad name", seed, kTime));
  CHECK_FALSE(cosig::verify(kCheckpoint + "\n", kLine, kVkey));
}
