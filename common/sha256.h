// SHA-256 (OpenSSL EVP), lowercase hex out: receipt digests, key hashes, upload digests.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace tresor::common {

// Incremental SHA-256 (OpenSSL EVP), lowercase hex out.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view bytes);
  std::string hex();  // finalises; call once
  std::array<unsigned char, 32> digest();  // the same, as the 32 raw bytes

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha256_hex(std::string_view bytes);

// Lowercase hex of `n` bytes.
std::string to_hex(const unsigned char* bytes, size_t n);

}  // namespace tresor::common
