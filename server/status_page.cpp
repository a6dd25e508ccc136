#include "server/status_page.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cctype>
#include <optional>
#include <string>

#include "common/sha256.h"
#include "server/api_error.h"

namespace tresor::server {
namespace {

#include "server/status_page_html.inc"

std::string base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

// Standard base64 to bytes; nullopt for anything malformed.
std::optional<std::string> unbase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 4096) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int len = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (len < 0) return std::nullopt;
  size_t pad = 0;  // EVP_DecodeBlock counts the '=' padding as zero bytes
  while (pad < 2 && text[text.size() - 1 - pad] == '=') ++pad;
  out.resize(static_cast<size_t>(len) - pad);
  return out;
}

std::string sha256_base64(std::string_view text) {
  common::Sha256 h;
  h.update(text);
  const auto d = h.digest();
  return base64(d.data(), d.size());
}

// Equal in time independent of where they differ and of their lengths: compares digests.
bool same_secret(std::string_view a, std::string_view b) {
  common::Sha256 ha, hb;
  ha.update(a);
  hb.update(b);
  const auto da = ha.digest(), db = hb.digest();
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const std::string& page() {
  static const std::string html = std::string(kStatusHead) + std::string(kStatusCss) + std::string(kStatusBody) +
                                  std::string(kStatusScript) + std::string(kStatusTail);
  return html;
}

// Only the page's own style and script run; data comes from this origin; no framing. The
// only image is the empty data: icon that keeps the browser from asking for /favicon.ico.
const std::string& content_security_policy() {
  static const std::string csp = "default-src 'none'; connect-src 'self'; img-src data:; style-src 'sha256-" +
                                 sha256_base64(kStatusCss) + "'; script-src 'sha256-" +
                                 sha256_base64(kStatusScript) +
                                 "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
  return csp;
}

Response unauthorized(StatusAuth why) {
  const bool missing = why == StatusAuth::missing;
  Response r = error_response(ApiError{401, "authentication_error", missing ? "missing_admin_key" : "invalid_admin_key",
                                       missing ? "The status page needs the admin key (status.admin_key): HTTP Basic "
                                                 "with the key as password, or Authorization: Bearer <key>"
                                               : "Invalid admin key",
                                       std::nullopt});
  // Basic: the challenge a browser answers with its login prompt (Bearer is accepted too,
  // but a second WWW-Authenticate would replace this one in the session's header map).
  r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"tresor-router status\", charset=\"UTF-8\"");
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

}  // namespace

StatusAuth check_status_auth(const RequestHead& head, std::string_view admin_key) {
  const auto values = head.values("Authorization");
  if (values.empty()) return StatusAuth::missing;
  if (values.size() > 1) return StatusAuth::invalid;
  const std::string_view v = trim(values.front());
  if (starts_with_ci(v, "bearer ")) return same_secret(trim(v.substr(7)), admin_key) ? StatusAuth::ok : StatusAuth::invalid;
  if (starts_with_ci(v, "basic ")) {
    const auto decoded = unbase64(trim(v.substr(6)));
    if (!decoded) return StatusAuth::invalid;
    const auto colon = decoded->find(':');  // user:password; the user name is not checked
    if (colon == std::string::npos) return StatusAuth::invalid;
    return same_secret(std::string_view(*decoded).substr(colon + 1), admin_key) ? StatusAuth::ok : StatusAuth::invalid;
  }
  return StatusAuth::invalid;
}

Response status_response(bool data, const RequestHead& head, const config::Config& cfg, StatusBoard& board,
                         const router::RouteHealth& health, const receipts::TransparencyLog* log,
                         providers::Clock::time_point now) {
  if (cfg.status.admin_key.empty()) return error_response(not_found_path());
  if (const auto auth = check_status_auth(head, cfg.status.admin_key); auth != StatusAuth::ok) return unauthorized(auth);
  Response r;
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (data) {
    r.body = board.snapshot_json(cfg, health, log, now);
    return r;
  }
  r.content_type = "text/html; charset=utf-8";
  r.body = page();
  r.headers.emplace_back("Content-Security-Policy", content_security_policy());
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  return r;
}

std::string_view status_page_html() { return page(); }

}  // namespace tresor::server
