// API keys (spec §9.1): format, SHA-256 lookup and the Authorization header.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include "config/config.h"
#include "server/auth.h"

using tresor::server::AuthStatus;
using tresor::server::is_well_formed_key;
using tresor::server::KeyIndex;
using tresor::server::sha256_hex;

namespace {

const std::string kHex96 =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const std::string kAcmeKey = "tr-" + kHex96;
const std::string kGlobexKey = "tr-" + std::string(96, 'e');

// a + b by appending. Not `"tr-" + std::string&&`: that inserts at the front, where g++ 12
// at -O3 reports a false -Wrestrict inside libstdc++ (GCC bug 105329).
std::string joined(std::string_view a, std::string_view b) {
  std::string s;
  s.reserve(a.size() + b.size());
  s.append(a).append(b);
  return s;
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

std::shared_ptr<const tresor::config::Config> key_config() {
  // The second hash is written in upper case, as an operator might paste it.
  return tresor::config::load_config_text("auth:\n"
                                          "  keys:\n"
                                          "    - sha256: \"" + sha256_hex(kAcmeKey) + "\"\n"
                                          "      customer: acme\n"
                                          "    - sha256: \"" + upper(sha256_hex(kGlobexKey)) + "\"\n"
                                          "      customer: globex\n",
                                          "keys.yaml");
}

}  // namespace

TEST_CASE("sha256_hex matches the published test vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK(sha256_hex(std::string("a\0b", 3)) != sha256_hex("a"));  // not stopped by NUL
}

TEST_CASE("well-formed keys are tr- and 96 hex digits of either case") {
  CHECK(is_well_formed_key(kAcmeKey));
  CHECK(is_well_formed_key("tr-" + upper(kHex96)));
  CHECK(is_well_formed_key("tr-" + std::string(48, 'A') + std::string(48, 'f')));
}

TEST_CASE("malformed keys are refused") {
  const std::string bad[] = {
      "",
      "tr-",
      joined("tr-", kHex96.substr(1)),      // 95 digits
      kAcmeKey + "0",                        // 97 digits
      "sk-" + kHex96,                        // OpenAI-style prefix
      "tr_" + kHex96,
      "tr" + kHex96 + "0",
      joined("tr-", kHex96.substr(1)) + "g", // non-hex
      joined("tr-", kHex96.substr(1)) + " ",
      joined(" ", kAcmeKey.substr(1)),
      joined("tr-", kHex96.substr(1)) + std::string(1, '\0'),
      joined("tr-0x", kHex96.substr(2)),
  };
  for (const auto& key : bad) {
    INFO("key: '" << key << "'");
    CHECK_FALSE(is_well_formed_key(key));
  }
}

TEST_CASE("authenticate: a valid key gives its customer") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  auto r = index.authenticate("Bearer " + kAcmeKey, true);
  REQUIRE(r.status == AuthStatus::ok);
  REQUIRE(r.key != nullptr);
  CHECK(r.key->customer == "acme");

  r = index.authenticate("Bearer " + kGlobexKey, true);
  REQUIRE(r.status == AuthStatus::ok);
  CHECK(r.key->customer == "globex");
}

TEST_CASE("authenticate: the Bearer scheme is case-insensitive") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  for (const char* scheme : {"bearer ", "BEARER ", "BeArEr ", "Bearer "}) {
    INFO("scheme: " << scheme);
    const auto r = index.authenticate(scheme + kAcmeKey, true);
    CHECK(r.status == AuthStatus::ok);
    CHECK((r.key && r.key->customer == "acme"));
  }
}

TEST_CASE("authenticate: surrounding whitespace in the header value is ignored") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  CHECK(index.authenticate("  Bearer " + kAcmeKey + " \t", true).status == AuthStatus::ok);
}

TEST_CASE("authenticate: a missing or empty header is 'missing'") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  CHECK(index.authenticate("", false).status == AuthStatus::missing);
  CHECK(index.authenticate("", true).status == AuthStatus::missing);
  CHECK(index.authenticate("  \t ", true).status == AuthStatus::missing);
  CHECK(index.authenticate("", true).key == nullptr);
}

TEST_CASE("authenticate: wrong scheme, bad format and unknown keys are 'invalid'") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  const std::string unknown = "tr-" + std::string(96, 'a');
  const std::string cases[] = {
      "Basic " + kAcmeKey,
      "Token " + kAcmeKey,
      kAcmeKey,                       // no scheme
      "Bearer",
      "Bearer ",
      "Bearer" + kAcmeKey,            // no separator
      "Bearerx " + kAcmeKey,
      "Bearer " + kAcmeKey + "0",     // 97 digits
      "Bearer " + kAcmeKey.substr(0, 98),
      "Bearer sk-" + kHex96,
      "Bearer " + unknown,            // well-formed, not configured
      "Bearer " + sha256_hex(kAcmeKey),  // the stored hash is not a key
      "Bearer " + kAcmeKey + " " + kAcmeKey,
  };
  for (const auto& header : cases) {
    INFO("Authorization: '" << header << "'");
    const auto r = index.authenticate(header, true);
    CHECK(r.status == AuthStatus::invalid);
    CHECK(r.key == nullptr);
  }
}

TEST_CASE("authenticate: the key itself is compared exactly, so its hash must match") {
  const auto cfg = key_config();
  const KeyIndex index(*cfg);
  // Upper-casing the hex digits gives a different key string with a different hash.
  CHECK(index.authenticate("Bearer tr-" + upper(kHex96), true).status == AuthStatus::invalid);
}

TEST_CASE("authenticate: an index over a config without keys refuses every key") {
  const auto cfg = tresor::config::load_config_text("{}", "empty.yaml");
  const KeyIndex index(*cfg);
  CHECK(index.authenticate("Bearer " + kAcmeKey, true).status == AuthStatus::invalid);
  CHECK(index.authenticate("", false).status == AuthStatus::missing);
}
