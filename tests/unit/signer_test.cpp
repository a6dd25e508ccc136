// ES256 receipt signing (receipts/signer.h): key files, JWS shape, JWKS, rotation, and
// verification that refuses every tampered or hostile input without crashing.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "receipts/signer.h"

using tresor::config::RetiredKey;
using tresor::receipts::generate_private_key_pem;
using tresor::receipts::jwks_json;
using tresor::receipts::Signer;
using tresor::receipts::verify_jws;

namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "signer_test.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// base64url → bytes through OpenSSL's standard base64 decoder (an implementation
// independent of the one under test).
std::string b64url_decode(std::string s) {
  for (char& c : s) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
  }
  std::size_t pad = 0;
  while (s.size() % 4 != 0) {
    s += '=';
    ++pad;
  }
  std::string out(s.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) throw std::runtime_error("bad base64");
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::vector<std::string> split3(const std::string& jws) {
  const auto a = jws.find('.');
  const auto b = jws.find('.', a + 1);
  return {jws.substr(0, a), jws.substr(a + 1, b - a - 1), jws.substr(b + 1)};
}

// PEM of a non-P-256 key generated with the OpenSSL API ("EC"/"P-384", "RSA"/2048, …).
std::string other_key_pem(bool rsa) {
  EVP_PKEY* pkey = rsa ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048})
                       : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  REQUIRE(pkey != nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  return pem;
}

// "BEGIN PUBLIC KEY" PEM of the private key PEM in `private_pem`.
std::string public_pem_of(const std::string& private_pem) {
  BIO* in = BIO_new_mem_buf(private_pem.data(), static_cast<int>(private_pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  REQUIRE(pkey != nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PUBKEY(out, pkey) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(out, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(out);
  BIO_free(in);
  EVP_PKEY_free(pkey);
  return pem;
}

const std::string kClaims =
    R"({"jti":"7c9e6679-7425-40de-944b-e07fc1f90ae7","iat":1747822288,"receipt_type":"message",)"
    R"("routed_model":"eu/tresor/gpt-oss-120b","note":"caf\u00e9 é ✓"})";

}  // namespace

TEST_CASE("load_or_create makes a 0600 PKCS#8 key in a new folder and reloads it", "[receipts]") {
  TempDir dir;
  const std::string path = dir.file("state/nested/receipt-es256.pem");
  const auto s1 = Signer::load_or_create(path, "router-receipt-1");
  REQUIRE(fs::exists(path));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_all(path).rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
  CHECK(s1->kid() == "router-receipt-1");

  const std::string pem_before = read_all(path);
  const auto s2 = Signer::load_or_create(path, "router-receipt-1");
  CHECK(s2->public_jwk() == s1->public_jwk());
  CHECK(read_all(path) == pem_before);  // loading never rewrites the key

  // A JWS from one instance verifies with the other's JWKS.
  const auto r = verify_jws(s1->sign(kClaims), jwks_json(*s2, {}));
  CHECK(r.ok);
}

TEST_CASE("public JWK and JWKS have the RFC 7517 shape", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("k.pem"), "router-receipt-1");
  const std::string jwk = s->public_jwk();
  CHECK(jwk.rfind(R"({"kty":"EC","crv":"P-256","x":")", 0) == 0);
  const auto v = boost::json::parse(jwk).as_object();
  CHECK(v.size() == 7);
  CHECK(v.at("kid").as_string() == "router-receipt-1");
  CHECK(v.at("use").as_string() == "sig");
  CHECK(v.at("alg").as_string() == "ES256");
  const std::string x(v.at("x").as_string());
  const std::string y(v.at("y").as_string());
  CHECK(x.size() == 43);  // 32 bytes, no padding
  CHECK(y.size() == 43);
  CHECK(b64url_decode(x).size() == 32);
  CHECK(b64url_decode(y).size() == 32);
  CHECK_FALSE(contains(jwk, "\"d\""));  // never the private scalar

  const auto set = boost::json::parse(jwks_json(*s, {})).as_object();
  REQUIRE(set.at("keys").as_array().size() == 1);
  CHECK(boost::json::serialize(set.at("keys").as_array()[0]) == jwk);
}

TEST_CASE("sign produces an ES256 compact JWS that verifies and round-trips the payload", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("k.pem"), "router-receipt-1");
  const std::string jws = s->sign(kClaims);
  const auto parts = split3(jws);
  CHECK(b64url_decode(parts[0]) == R"({"alg":"ES256","kid":"router-receipt-1"})");
  CHECK(b64url_decode(parts[1]) == kClaims);
  CHECK(b64url_decode(parts[2]).size() == 64);
  for (const auto& p : parts) CHECK(p.find_first_of("+/=") == std::string::npos);

  const auto r = verify_jws(jws, jwks_json(*s, {}));
  REQUIRE(r.ok);
  CHECK(r.error.empty());
  CHECK(r.kid == "router-receipt-1");
  CHECK(r.payload == kClaims);

  // Arbitrary bytes (including NUL and invalid UTF-8) round-trip byte for byte too.
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  const auto rb = verify_jws(s->sign(bytes), jwks_json(*s, {}));
  REQUIRE(rb.ok);
  CHECK(rb.payload == bytes);

  // ECDSA is randomised: two signatures of the same payload differ, both verify.
  const std::string again = s->sign(kClaims);
  CHECK(again != jws);
  CHECK(verify_jws(again, jwks_json(*s, {})).ok);
}

TEST_CASE("flipping any byte of header, payload or signature breaks verification", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("k.pem"), "router-receipt-1");
  const std::string jwks = jwks_json(*s, {});
  const std::string jws = s->sign(kClaims);
  REQUIRE(verify_jws(jws, jwks).ok);
  const auto d1 = jws.find('.');
  const auto d2 = jws.find('.', d1 + 1);
  const std::vector<std::size_t> positions = {0,      1,      d1 / 2, d1 - 1,           d1 + 1, (d1 + d2) / 2,
                                              d2 - 1, d2 + 1, d2 + 20, jws.size() - 2, jws.size() - 1};
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (const auto pos : positions) {
    INFO("position " << pos << " of " << jws.size());
    std::string bitflip = jws;
    bitflip[pos] = static_cast<char>(bitflip[pos] ^ 0x01);
    CHECK_FALSE(verify_jws(bitflip, jwks).ok);
    // Still valid base64url, different character: must fail on the signature itself.
    std::string swapped = jws;
    const auto i = alphabet.find(swapped[pos]);
    REQUIRE(i != std::string::npos);
    swapped[pos] = alphabet[(i + 1) % alphabet.size()];
    const auto r = verify_jws(swapped, jwks);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.error.empty());
  }
}

TEST_CASE("an unknown kid is refused with a message naming it", "[receipts]") {
  TempDir dir;
  const auto known = Signer::load_or_create(dir.file("a.pem"), "router-receipt-1");
  const auto other = Signer::load_or_create(dir.file("b.pem"), "router-receipt-9");
  const auto r = verify_jws(other->sign(kClaims), jwks_json(*known, {}));
  CHECK_FALSE(r.ok);
  CHECK(r.error == "unknown kid router-receipt-9");
  CHECK(r.payload.empty());

  // Same kid, different key: a bad signature, not a match.
  const auto impostor = Signer::load_or_create(dir.file("c.pem"), "router-receipt-1");
  const auto r2 = verify_jws(impostor->sign(kClaims), jwks_json(*known, {}));
  CHECK_FALSE(r2.ok);
  CHECK(r2.error == "bad signature");
}

TEST_CASE("after rotation the retired key still verifies old receipts", "[receipts]") {
  TempDir dir;
  const std::string key1 = dir.file("key1.pem");
  const auto s1 = Signer::load_or_create(key1, "router-receipt-1");
  const std::string old_jws = s1->sign(kClaims);

  const std::string pub1 = dir.file("key1.pub.pem");
  write_all(pub1, public_pem_of(read_all(key1)));
  REQUIRE(contains(read_all(pub1), "BEGIN PUBLIC KEY"));

  const auto s2 = Signer::load_or_create(dir.file("key2.pem"), "router-receipt-2");
  const std::string new_jws = s2->sign(kClaims);
  CHECK(b64url_decode(split3(new_jws)[0]) == R"({"alg":"ES256","kid":"router-receipt-2"})");

  // The retired key as a public key PEM, and as the old private key PEM: both accepted.
  for (const auto& retired_file : {pub1, key1}) {
    INFO(retired_file);
    const std::string jwks = jwks_json(*s2, {RetiredKey{"router-receipt-1", retired_file}});
    const auto keys = boost::json::parse(jwks).at("keys").as_array();
    REQUIRE(keys.size() == 2);
    CHECK(keys[0].at("kid").as_string() == "router-receipt-2");  // active first
    CHECK(keys[1].at("kid").as_string() == "router-receipt-1");
    CHECK(boost::json::serialize(keys[1]) == s1->public_jwk());

    const auto old_r = verify_jws(old_jws, jwks);
    CHECK(old_r.ok);
    CHECK(old_r.kid == "router-receipt-1");
    CHECK(old_r.payload == kClaims);
    const auto new_r = verify_jws(new_jws, jwks);
    CHECK(new_r.ok);
    CHECK(new_r.kid == "router-receipt-2");
  }

  // Once the retired key is dropped, old receipts no longer verify.
  const auto gone = verify_jws(old_jws, jwks_json(*s2, {}));
  CHECK_FALSE(gone.ok);
  CHECK(gone.error == "unknown kid router-receipt-1");
}

TEST_CASE("jwks_json refuses unreadable, foreign or duplicate retired keys", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("active.pem"), "router-receipt-2");
  const std::string missing = dir.file("missing.pem");
  const std::string p384 = dir.file("p384.pem");
  const std::string junk = dir.file("junk.pem");
  write_all(p384, other_key_pem(false));
  write_all(junk, "not a key\n");
  CHECK_THROWS_WITH(jwks_json(*s, {RetiredKey{"router-receipt-1", missing}}), Catch::Contains(missing));
  CHECK_THROWS_WITH(jwks_json(*s, {RetiredKey{"router-receipt-1", p384}}), Catch::Contains(p384));
  CHECK_THROWS_WITH(jwks_json(*s, {RetiredKey{"router-receipt-1", junk}}), Catch::Contains(junk));
  CHECK_THROWS_WITH(jwks_json(*s, {RetiredKey{"router-receipt-2", dir.file("active.pem")}}),
                    Catch::Contains("router-receipt-2"));
}

TEST_CASE("load_or_create refuses keys that are not EC P-256", "[receipts]") {
  TempDir dir;
  const std::string p384 = dir.file("p384.pem");
  const std::string rsa = dir.file("rsa.pem");
  const std::string junk = dir.file("junk.pem");
  const std::string empty = dir.file("empty.pem");
  const std::string p384_pem = other_key_pem(false);
  write_all(p384, p384_pem);
  write_all(rsa, other_key_pem(true));
  write_all(junk, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  write_all(empty, "");
  for (const auto& path : {p384, rsa, junk, empty}) {
    INFO(path);
    CHECK_THROWS_AS(Signer::load_or_create(path, "router-receipt-1"), std::runtime_error);
    CHECK_THROWS_WITH(Signer::load_or_create(path, "router-receipt-1"), Catch::Contains(path));
  }
  CHECK(read_all(p384) == p384_pem);  // refused keys are never overwritten

  // A public key where the private key belongs is refused too.
  const std::string pub = dir.file("pub.pem");
  const std::string priv = dir.file("priv.pem");
  write_all(priv, generate_private_key_pem());
  write_all(pub, public_pem_of(read_all(priv)));
  CHECK_THROWS_WITH(Signer::load_or_create(pub, "router-receipt-1"), Catch::Contains(pub));
}

TEST_CASE("generate_private_key_pem gives a loadable PKCS#8 P-256 key", "[receipts]") {
  TempDir dir;
  const std::string pem = generate_private_key_pem();
  CHECK(pem.rfind("-----BEGIN PRIVATE KEY-----\n", 0) == 0);
  CHECK(contains(pem, "-----END PRIVATE KEY-----"));
  CHECK(pem != generate_private_key_pem());
  const std::string path = dir.file("gen.pem");
  write_all(path, pem);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  const auto s = Signer::load_or_create(path, "router-receipt-3");
  CHECK(verify_jws(s->sign("{}"), jwks_json(*s, {})).ok);
}

TEST_CASE("load_or_create refuses an existing key file other users can read or change", "[receipts]") {
  TempDir dir;
  const std::string path = dir.file("exposed.pem");
  write_all(path, generate_private_key_pem());
  for (const unsigned mode : {0644u, 0604u, 0620u, 0602u}) {
    INFO(mode);
    fs::permissions(path, static_cast<fs::perms>(mode));
    CHECK_THROWS_WITH(Signer::load_or_create(path, "router-receipt-1"),
                      Catch::Contains(path) && Catch::Contains("chmod 600"));
  }
  // Owner-only and group-read-only are what deployments use (0600 here, 0440 from a Secret).
  for (const unsigned mode : {0600u, 0400u, 0640u, 0440u}) {
    INFO(mode);
    fs::permissions(path, static_cast<fs::perms>(mode));
    CHECK_NOTHROW(Signer::load_or_create(path, "router-receipt-1"));
  }
}

TEST_CASE("sign is safe to call from many threads", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("k.pem"), "router-receipt-1");
  const std::string jwks = jwks_json(*s, {});
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string payload = R"({"t":)" + std::to_string(t) + R"(,"i":)" + std::to_string(i) + "}";
        const auto r = verify_jws(s->sign(payload), jwks);
        if (r.ok && r.payload == payload) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(good == 8 * 50);
}

TEST_CASE("verify_jws refuses garbage without crashing", "[receipts]") {
  TempDir dir;
  const auto s = Signer::load_or_create(dir.file("k.pem"), "router-receipt-1");
  const std::string jwks = jwks_json(*s, {});
  const std::string jws = s->sign(kClaims);
  const auto parts = split3(jws);
  auto b64 = [](const std::string& raw) {
    // Encode with OpenSSL's standard base64, then make it url-safe and unpadded.
    std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) {
      if (c == '+') c = '-';
      else if (c == '/') c = '_';
    }
    return out;
  };
  const std::string h = parts[0], p = parts[1], sig = parts[2];
  const std::string sig_raw = b64url_decode(sig);

  SECTION("fixed hostile inputs") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "malformed JWS"},
        {".", "malformed JWS"},
        {"..", "malformed JWS"},
        {"...", "malformed JWS"},
        {"a.b.c", "malformed JWS"},
        {"a.b.c.d", "malformed JWS"},
        {h + "." + p, "malformed JWS"},
        {h + "." + p + "." + sig + ".", "malformed JWS"},
        {"." + p + "." + sig, "malformed JWS"},
        {h + "==." + p + "." + sig, "malformed JWS"},
        {h + "." + p + "=." + sig, "malformed JWS"},
        {h + "." + p + "." + sig + "==", "malformed JWS"},
        {h + "." + p + ".", "malformed JWS"},
        {h + "." + p + "." + b64(sig_raw.substr(0, 63)), "malformed JWS"},
        {h + "." + p + "." + b64(sig_raw + "x"), "malformed JWS"},
        {h + "." + p + "." + b64(std::string(72, '\x30')), "malformed JWS"},
        {b64("not json") + "." + p + "." + sig, "malformed JWS"},
        {b64("[1,2]") + "." + p + "." + sig, "malformed JWS"},
        {b64(std::string(5000, '[')) + "." + p + "." + sig, "malformed JWS"},
        {b64(R"({"kid":"router-receipt-1"})") + "." + p + "." + sig, "malformed JWS"},
        {b64(R"({"alg":"ES256"})") + "." + p + "." + sig, "malformed JWS"},
        {b64(R"({"alg":"ES256","kid":1})") + "." + p + "." + sig, "malformed JWS"},
        {b64(R"({"alg":"none","kid":"router-receipt-1"})") + "." + p + ".", "unsupported alg none"},
        {b64(R"({"alg":"HS256","kid":"router-receipt-1"})") + "." + p + "." + sig, "unsupported alg HS256"},
        {b64(R"({"alg":"ES256","kid":"router-receipt-1","crit":["b64"]})") + "." + p + "." + sig, "crit"},
        {b64(R"({"alg":"ES256","kid":"router-receipt-1","x":1})") + "." + p + "." + sig, "bad signature"},
        {h + "." + p + "." + b64(std::string(64, '\0')), "bad signature"},
        {h + "." + p + "." + b64(std::string(64, '\xff')), "bad signature"},
        {h + "." + b64("{}") + "." + sig, "bad signature"},
        {std::string(3, '\0'), "malformed JWS"},
        {"\xff\xfe.\x80\x81.\xc0", "malformed JWS"},
    };
    for (const auto& [input, expected] : cases) {
      INFO("input: " << input.substr(0, 120));
      const auto r = verify_jws(input, jwks);
      CHECK_FALSE(r.ok);
      CHECK(contains(r.error, expected));
      CHECK(r.payload.empty());
    }
  }

  SECTION("huge inputs") {
    const std::string big(8 * 1024 * 1024, 'A');
    CHECK_FALSE(verify_jws(big, jwks).ok);
    CHECK_FALSE(verify_jws(big + "." + big + "." + big, jwks).ok);
    CHECK_FALSE(verify_jws(h + "." + big + "." + sig, jwks).ok);
    CHECK_FALSE(verify_jws(std::string(1 << 20, '.'), jwks).ok);
  }

  SECTION("hostile JWKS documents") {
    const std::vector<std::string> bad_sets = {
        "",
        "null",
        "[]",
        "{}",
        R"({"keys":{}})",
        R"({"keys":[1,"x",null]})",
        R"({"keys":[{"kid":"router-receipt-1"}]})",
        R"({"keys":[{"kid":"router-receipt-1","kty":"RSA","n":"AQAB","e":"AQAB"}]})",
        R"({"keys":[{"kid":"router-receipt-1","kty":"EC","crv":"P-384","x":"AA","y":"AA"}]})",
        R"({"keys":[{"kid":"router-receipt-1","kty":"EC","crv":"P-256","x":"AA","y":"AA"}]})",
        // A 32-byte x/y that is not on the curve.
        R"({"keys":[{"kid":"router-receipt-1","kty":"EC","crv":"P-256",)"
        R"("x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"}]})",
        std::string(5000, '['),
        std::string(100000, '{'),
    };
    for (const auto& set : bad_sets) {
      INFO("jwks: " << set.substr(0, 120));
      const auto r = verify_jws(jws, set);
      CHECK_FALSE(r.ok);
      CHECK_FALSE(r.error.empty());
    }
    // The right key, but advertised for another algorithm or use.
    auto jwk = boost::json::parse(s->public_jwk()).as_object();
    jwk["alg"] = "ES384";
    CHECK_FALSE(verify_jws(jws, R"({"keys":[)" + boost::json::serialize(jwk) + "]}").ok);
  }

  SECTION("random bytes and random mutations") {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
    for (int iter = 0; iter < 3000; ++iter) {
      std::string input;
      const int len = byte(rng) + (iter % 3 == 0 ? 200 : 0);
      for (int i = 0; i < len; ++i) {
        input += iter % 2 == 0 ? static_cast<char>(byte(rng)) : alphabet[static_cast<std::size_t>(byte(rng)) % alphabet.size()];
      }
      if (iter % 5 == 0) input = b64(input.substr(0, input.size() / 3)) + "." + b64(input) + "." + b64(input.substr(0, 64));
      CHECK_FALSE(verify_jws(input, jwks).ok);

      std::string mutated = jws;
      const int edits = 1 + byte(rng) % 4;
      for (int e = 0; e < edits; ++e) {
        const auto pos = static_cast<std::size_t>(byte(rng) * 1000 + byte(rng)) % mutated.size();
        mutated[pos] = static_cast<char>(mutated[pos] ^ (1 + byte(rng) % 255));
      }
      if (mutated != jws) CHECK_FALSE(verify_jws(mutated, jwks).ok);
    }
  }
}
