#include "receipts/checkpoint.h"

#include <cstring>
#include <vector>

#include "receipts/signed_note.h"

namespace tresor::receipts {
std::optional<uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 19 || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  uint64_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::string hash_base64(const merkle::Hash& h) {
  return note::base64(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
}

std::optional<merkle::Hash> hash_from_base64(std::string_view text) {
  const auto bytes = note::unbase64(text);
  if (!bytes || bytes->size() != sizeof(merkle::Hash)) return std::nullopt;
  merkle::Hash h{};
  std::memcpy(h.data(), bytes->data(), h.size());
  return h;
}

std::string checkpoint_text(std::string_view origin, uint64_t size, const merkle::Hash& root) {
  return std::string(origin) + "\n" + std::to_string(size) + "\n" + hash_base64(root) + "\n";
}

std::optional<CheckpointFields> parse_checkpoint(std::string_view text) {
  if (!note::valid_text(text)) return std::nullopt;
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (lines.size() < 3) return std::nullopt;
  const auto size = parse_decimal(lines[1]);
  const auto root = hash_from_base64(lines[2]);
  if (lines[0].empty() || !size || !root) return std::nullopt;
  return CheckpointFields{std::string(lines[0]), *size, *root};
}

}  // namespace tresor::receipts
