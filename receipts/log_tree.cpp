#include "receipts/log_tree.h"

#include <bit>

namespace tresor::receipts {
namespace {

// Full-subtree hashes are kept every kStride levels of the tree (tile levels are every 8th):
// any subtree hash is then at most 2^kStride - 1 node hashes away, so a proof on an I/O
// thread costs ~100 SHA-256 at most, for 1/15 more memory than the tile levels alone.
constexpr unsigned kStride = 4;
constexpr uint64_t kFan = uint64_t{1} << kStride;
constexpr unsigned kStridesPerTile = LogTree::kTileHeight / kStride;

uint64_t leaves_per_hash(size_t stored_level) { return uint64_t{1} << (kStride * stored_level); }

// The MTH of a run of `n` (a power of two) consecutive hashes of one level.
merkle::Hash fold(const merkle::Hash* hashes, uint64_t n) {
  if (n == 1) return hashes[0];
  return merkle::node_hash(fold(hashes, n / 2), fold(hashes + n / 2, n / 2));
}

}  // namespace

void LogTree::append(const Entry& entry) {
  entries_.push_back(entry);
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(merkle::leaf_hash(std::string_view(reinterpret_cast<const char*>(entry.data()), entry.size())));
  // A stored level that just completed kFan hashes passes their subtree's hash up.
  for (size_t level = 0; levels_[level].size() % kFan == 0; ++level) {
    if (level + 1 == levels_.size()) levels_.emplace_back();
    const auto& below = levels_[level];
    levels_[level + 1].push_back(fold(below.data() + below.size() - kFan, kFan));
  }
}

merkle::Hash LogTree::subtree(uint64_t first, unsigned height) const {
  // The stored level just below the subtree's top, then at most kFan - 1 node hashes.
  const unsigned level = height / kStride;
  const uint64_t count = uint64_t{1} << (height % kStride);
  return fold(levels_[level].data() + first / leaves_per_hash(level), count);
}

merkle::Hash LogTree::range_hash(uint64_t begin, uint64_t end) const {
  const uint64_t n = end - begin;
  // A full, aligned subtree: RFC 9162's recursion only ever asks for ranges that start at a
  // multiple of their split point, so every power-of-two range here is one.
  if (std::has_single_bit(n) && begin % n == 0)
    return subtree(begin, static_cast<unsigned>(std::countr_zero(n)));
  const uint64_t k = std::bit_floor(n - 1);  // the largest power of two < n
  return merkle::node_hash(range_hash(begin, begin + k), range_hash(begin + k, end));
}

merkle::Hash LogTree::root(uint64_t size) const {
  if (size == 0) return merkle::root({});
  return range_hash(0, size);
}

std::optional<std::vector<merkle::Hash>> LogTree::inclusion_proof(uint64_t index, uint64_t size) const {
  if (size > this->size()) return std::nullopt;
  return merkle::inclusion_proof(size, index, [this](uint64_t b, uint64_t e) { return range_hash(b, e); });
}

std::optional<std::vector<merkle::Hash>> LogTree::consistency_proof(uint64_t old_size, uint64_t new_size) const {
  if (new_size > size()) return std::nullopt;
  return merkle::consistency_proof(new_size, old_size, [this](uint64_t b, uint64_t e) { return range_hash(b, e); });
}

std::optional<std::string> LogTree::tile(unsigned level, uint64_t index, unsigned width) const {
  const size_t stored = static_cast<size_t>(level) * kStridesPerTile;
  if (width == 0 || width > kTileWidth || stored >= levels_.size()) return std::nullopt;
  const auto& hashes = levels_[stored];
  const uint64_t first = index * kTileWidth;
  if (index > hashes.size() / kTileWidth || first + width > hashes.size()) return std::nullopt;
  std::string out;
  out.reserve(width * sizeof(merkle::Hash));
  for (uint64_t i = first; i < first + width; ++i)
    out.append(reinterpret_cast<const char*>(hashes[i].data()), hashes[i].size());
  return out;
}

std::optional<std::string> LogTree::entry_bundle(uint64_t index, unsigned width) const {
  const uint64_t first = index * kTileWidth;
  if (width == 0 || width > kTileWidth || index > size() / kTileWidth || first + width > size()) return std::nullopt;
  std::string out;
  for (uint64_t i = first; i < first + width; ++i) {
    const auto& e = entries_[i];
    out.push_back(static_cast<char>((e.size() >> 8) & 0xff));
    out.push_back(static_cast<char>(e.size() & 0xff));
    out.append(reinterpret_cast<const char*>(e.data()), e.size());
  }
  return out;
}

}  // namespace tresor::receipts
