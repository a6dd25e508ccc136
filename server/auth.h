// API keys (spec §9.1): `Authorization: Bearer tr-<96 hex>`, looked up by SHA-256.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

#include "config/config.h"

namespace tresor::server {

// Lower-case hex SHA-256 of `data` (OpenSSL).
std::string sha256_hex(std::string_view data);

// "tr-" followed by exactly 96 hex digits (either case).
bool is_well_formed_key(std::string_view key);

enum class AuthStatus { ok, missing, invalid };

struct AuthResult {
  AuthStatus status = AuthStatus::missing;
  const config::ApiKeyConfig* key = nullptr;  // set when ok
};

// Index of a config snapshot's keys; immutable once built.
class KeyIndex {
 public:
  explicit KeyIndex(const config::Config& cfg);
  // `authorization` is the header value, or nullptr-equivalent empty when absent.
  AuthResult authenticate(std::string_view authorization, bool header_present) const;

 private:
  std::unordered_map<std::string, const config::ApiKeyConfig*> by_hash_;
};

}  // namespace tresor::server
