// The transparency log's Merkle tree, able to serve C2SP tlog-tiles (height 8): the
// entries, their leaf hashes and the hash of every full subtree of 16^k leaves (k >= 1),
// which include every tile level (256^L = 16^2L). That is all a tile, a root or a proof
// needs (any other node is at most 15 hashes away), in ~70 bytes per entry. Not
// thread-safe: receipts/transparency_log.h guards it. The tree only grows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "receipts/merkle.h"

namespace tresor::receipts {

class LogTree {
 public:
  static constexpr unsigned kTileHeight = 8;
  static constexpr uint64_t kTileWidth = 256;

  // Every entry of this log is 32 bytes: the SHA-256 of a receipt's claims.
  using Entry = merkle::Hash;
  void append(const Entry& entry);
  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  const Entry& entry(uint64_t index) const { return entries_[index]; }

  // MTH(D[0:size]); size <= size().
  merkle::Hash root(uint64_t size) const;
  // MTH(D[begin:end]) for begin < end <= size().
  merkle::Hash range_hash(uint64_t begin, uint64_t end) const;
  std::optional<std::vector<merkle::Hash>> inclusion_proof(uint64_t index, uint64_t size) const;
  std::optional<std::vector<merkle::Hash>> consistency_proof(uint64_t old_size, uint64_t new_size) const;

  // The bytes of tile <level>/<index> of width `width` (1..256): the hashes
  // MTH(D[(index*256 + i) * 256^level : ... + 256^level]) for i < width; nullopt when
  // the tree does not hold them yet.
  std::optional<std::string> tile(unsigned level, uint64_t index, unsigned width) const;
  // Entry bundle <index> of `width` entries: each as a big-endian uint16 length, then the entry.
  std::optional<std::string> entry_bundle(uint64_t index, unsigned width) const;

 private:
  // Hash of the full subtree of 2^height leaves starting at leaf `first` (aligned).
  merkle::Hash subtree(uint64_t first, unsigned height) const;

  std::vector<Entry> entries_;
  // levels_[k][i] = MTH of leaves [i * 16^k, (i+1) * 16^k).
  std::vector<std::vector<merkle::Hash>> levels_;
};

}  // namespace tresor::receipts
