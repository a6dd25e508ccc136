#include "common/ids.h"

#include "common/secure_random.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>

namespace tresor::common {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string uuid_text(const unsigned char (&b)[16]) {
  std::string out(36, '-');
  size_t o = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (o == 8 || o == 13 || o == 18 || o == 23) ++o;
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string new_receipt_id() {
  unsigned char b[16];
  common::secure_random_bytes(b + 6, 10);
  const uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x70);  // version 7
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 9562 variant
  return uuid_text(b);
}

std::string new_random_uuid() {
  unsigned char b[16];
  common::secure_random_bytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return uuid_text(b);
}

bool is_receipt_id(std::string_view id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string request_id_from(std::string_view header) {
  constexpr size_t kMaxRequestId = 128;
  const bool usable = !header.empty() && header.size() <= kMaxRequestId &&
                      std::all_of(header.begin(), header.end(), [](unsigned char c) {
                        return std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
                      });
  return usable ? std::string(header) : new_random_uuid();
}

}  // namespace tresor::common
