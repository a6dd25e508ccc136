#include "server/auth.h"

#include "common/http_text.h"
#include "receipts/claims.h"

#include <algorithm>
#include <cctype>

namespace tresor::server {

std::string sha256_hex(std::string_view data) { return receipts::sha256_hex(data); }

bool is_well_formed_key(std::string_view key) {
  constexpr size_t kHexDigits = 96;
  return key.size() == 3 + kHexDigits && key.substr(0, 3) == "tr-" &&
         std::all_of(key.begin() + 3, key.end(), [](unsigned char c) { return std::isxdigit(c); });
}

KeyIndex::KeyIndex(const config::Config& cfg) {
  for (const auto& k : cfg.auth.keys) by_hash_.emplace(k.sha256_hex, &k);
}

AuthResult KeyIndex::authenticate(std::string_view authorization, bool header_present) const {
  authorization = common::trim_ows(authorization);
  if (!header_present || authorization.empty()) return {AuthStatus::missing, nullptr};
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), authorization.begin(),
                  [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
    return {AuthStatus::invalid, nullptr};
  const std::string_view key = common::trim_ows(authorization.substr(kScheme.size()));
  if (!is_well_formed_key(key)) return {AuthStatus::invalid, nullptr};
  const auto it = by_hash_.find(sha256_hex(key));
  if (it == by_hash_.end()) return {AuthStatus::invalid, nullptr};
  return {AuthStatus::ok, it->second};
}

}  // namespace tresor::server
