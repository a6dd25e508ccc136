// The Merkle tree of the receipts transparency log (issue 19): RFC 9162 §2.1 hashing,
// inclusion and consistency proofs, produced and verified. Pure: no I/O, no state beyond
// the leaf hashes a caller passes in (the log's store keeps those; the tree can always be
// recomputed from them).
//
//   leaf hash  = SHA-256(0x00 || data)
//   node hash  = SHA-256(0x01 || left || right)
//   MTH of n leaves: split at k, the largest power of two < n (RFC 9162 §2.1.1)
//
// The same tree as Certificate Transparency and Go's sumdb (golang.org/x/mod/sumdb/tlog),
// so their tooling verifies our proofs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tresor::receipts::merkle {

using Hash = std::array<uint8_t, 32>;

Hash leaf_hash(std::string_view data);
Hash node_hash(const Hash& left, const Hash& right);
// MTH over the leaf hashes (the empty tree's root is SHA-256 of nothing).
Hash root(std::span<const Hash> leaves);

// MTH(D[begin:end]) of the tree a proof is made for: how a caller that keeps more than the
// leaves (the log's tiles) lets the proofs below skip rehashing whole subtrees.
using RangeHash = std::function<Hash(uint64_t begin, uint64_t end)>;

// PATH(index, leaves) of RFC 9162 §2.1.3.1; nullopt when index is out of range.
std::optional<std::vector<Hash>> inclusion_proof(std::span<const Hash> leaves, uint64_t index);
// The same for the tree of `size` leaves whose range hashes `mth` gives.
std::optional<std::vector<Hash>> inclusion_proof(uint64_t size, uint64_t index, const RangeHash& mth);
// RFC 9162 §2.1.3.2: `leaf` (a leaf hash) is entry `index` of the tree of `size` whose root is `root`.
bool verify_inclusion(uint64_t index, uint64_t size, const Hash& leaf, std::span<const Hash> proof,
                      const Hash& root);

// PROOF(old_size, leaves) of RFC 9162 §2.1.4.1 (0 < old_size <= leaves.size()); nullopt otherwise.
std::optional<std::vector<Hash>> consistency_proof(std::span<const Hash> leaves, uint64_t old_size);
std::optional<std::vector<Hash>> consistency_proof(uint64_t new_size, uint64_t old_size, const RangeHash& mth);
// RFC 9162 §2.1.4.2: the tree of `new_size` with `new_root` extends the one of `old_size`
// with `old_root`.
bool verify_consistency(uint64_t old_size, uint64_t new_size, const Hash& old_root, const Hash& new_root,
                        std::span<const Hash> proof);

std::string to_hex(const Hash& h);

}  // namespace tresor::receipts::merkle
