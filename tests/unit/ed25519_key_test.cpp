// The transparency log's and the witness's Ed25519 key files (receipts/ed25519_key.h):
// created 0600, read back to the same key, refused when exposed or of another type.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "receipts/ed25519_key.h"
#include "receipts/signer.h"
#include "temp_dir.h"

using namespace tresor::receipts;

TEST_CASE("an Ed25519 key file is created 0600 and read back to the same key", "[ed25519_key]") {
  tresor::test::TempDir dir;
  const std::string path = dir.file("state/log.pem");
  const auto created = load_or_create_ed25519_seed(path);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto again = load_or_create_ed25519_seed(path);
  CHECK(again == created);
  // The key signs notes that its verifier key accepts.
  const auto vkey = note::verifier_key("log.example/x", note::public_key(again));
  const auto signed_note = note::sign("log.example/x\n1\nAAAA\n", "log.example/x", again);
  REQUIRE(signed_note);
  CHECK(note::verify(*signed_note, vkey));
}

TEST_CASE("an Ed25519 key file others can read, or of another type, is refused", "[ed25519_key]") {
  tresor::test::TempDir dir;
  const std::string path = dir.file("log.pem");
  load_or_create_ed25519_seed(path);
  std::filesystem::permissions(path, std::filesystem::perms::others_read, std::filesystem::perm_options::add);
  CHECK_THROWS_WITH(load_or_create_ed25519_seed(path), Catch::Contains("other users can read"));

  const std::string p256 = dir.file("p256.pem");
  Signer::load_or_create(p256, "k");
  CHECK_THROWS_WITH(load_or_create_ed25519_seed(p256), Catch::Contains("not an Ed25519 private key"));

  const std::string junk = dir.file("junk.pem");
  std::ofstream(junk) << "not a key";
  std::filesystem::permissions(junk, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  CHECK_THROWS_WITH(load_or_create_ed25519_seed(junk), Catch::Contains("does not hold a readable"));
}
