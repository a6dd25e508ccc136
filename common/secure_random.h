// Random bytes from OpenSSL's CSPRNG, drawn 4 KiB at a time into a per-thread pool:
// RAND_bytes per call cost a getpid() syscall (its fork check) and a lock, once or twice
// per request (receipt ids, request ids, multipart boundaries). Each byte is handed out
// once and wiped from the pool. Thread-safe (the pool is thread_local). Callers link
// OpenSSL's libcrypto.
#pragma once

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>

namespace tresor::common {

inline void secure_random_bytes(unsigned char* out, size_t n) {
  thread_local unsigned char pool[4096];
  thread_local size_t left = 0;
  while (n > 0) {
    if (left == 0) {
      if (RAND_bytes(pool, sizeof pool) != 1) throw std::runtime_error("RAND_bytes failed");
      left = sizeof pool;
    }
    const size_t take = std::min(n, left);
    unsigned char* from = pool + (sizeof pool - left);
    std::memcpy(out, from, take);
    OPENSSL_cleanse(from, take);
    left -= take;
    out += take;
    n -= take;
  }
}

}  // namespace tresor::common
