#include "receipts/merkle.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace tresor::receipts::merkle {
namespace {

Hash sha256(std::span<const std::string_view> parts) {
  Hash out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) throw std::bad_alloc();
  bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  for (const auto part : parts) ok = ok && EVP_DigestUpdate(ctx, part.data(), part.size()) == 1;
  unsigned int size = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, out.data(), &size) == 1 && size == out.size();
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("SHA-256 failed");
  return out;
}

std::string_view bytes(const Hash& h) { return {reinterpret_cast<const char*>(h.data()), h.size()}; }

// The largest power of two smaller than n (n >= 2): where RFC 9162 splits a tree.
uint64_t split(uint64_t n) {
  uint64_t k = 1;
  while (k << 1 < n) k <<= 1;
  return k;
}

bool odd(uint64_t v) { return (v & 1) != 0; }

void path(std::span<const Hash> leaves, uint64_t m, std::vector<Hash>& out) {
  const uint64_t n = leaves.size();
  if (n <= 1) return;
  const uint64_t k = split(n);
  if (m < k) {
    path(leaves.first(k), m, out);
    out.push_back(root(leaves.subspan(k)));
  } else {
    path(leaves.subspan(k), m - k, out);
    out.push_back(root(leaves.first(k)));
  }
}

void subproof(std::span<const Hash> leaves, uint64_t m, bool complete, std::vector<Hash>& out) {
  const uint64_t n = leaves.size();
  if (m == n) {
    if (!complete) out.push_back(root(leaves));
    return;
  }
  const uint64_t k = split(n);
  if (m <= k) {
    subproof(leaves.first(k), m, complete, out);
    out.push_back(root(leaves.subspan(k)));
  } else {
    subproof(leaves.subspan(k), m - k, false, out);
    out.push_back(root(leaves.first(k)));
  }
}

}  // namespace

Hash leaf_hash(std::string_view data) {
  static constexpr char kLeaf = 0x00;
  const std::string_view parts[] = {std::string_view(&kLeaf, 1), data};
  return sha256(parts);
}

Hash node_hash(const Hash& left, const Hash& right) {
  static constexpr char kNode = 0x01;
  const std::string_view parts[] = {std::string_view(&kNode, 1), bytes(left), bytes(right)};
  return sha256(parts);
}

Hash root(std::span<const Hash> leaves) {
  if (leaves.empty()) return sha256({});
  if (leaves.size() == 1) return leaves.front();
  const uint64_t k = split(leaves.size());
  return node_hash(root(leaves.first(k)), root(leaves.subspan(k)));
}

std::optional<std::vector<Hash>> inclusion_proof(std::span<const Hash> leaves, uint64_t index) {
  if (index >= leaves.size()) return std::nullopt;
  std::vector<Hash> out;
  path(leaves, index, out);
  return out;
}

bool verify_inclusion(uint64_t index, uint64_t size, const Hash& leaf, std::span<const Hash> proof,
                      const Hash& expected_root) {
  if (index >= size) return false;
  uint64_t fn = index;
  uint64_t sn = size - 1;
  Hash r = leaf;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if (odd(fn) || fn == sn) {
      r = node_hash(p, r);
      if (!odd(fn))
        while (!odd(fn) && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      r = node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == expected_root;
}

std::optional<std::vector<Hash>> consistency_proof(std::span<const Hash> leaves, uint64_t old_size) {
  if (old_size == 0 || old_size > leaves.size()) return std::nullopt;
  std::vector<Hash> out;
  subproof(leaves, old_size, true, out);
  return out;
}

bool verify_consistency(uint64_t old_size, uint64_t new_size, const Hash& old_root, const Hash& new_root,
                        std::span<const Hash> proof) {
  if (old_size == 0 || old_size > new_size) return false;
  if (old_size == new_size) return proof.empty() && old_root == new_root;
  if (proof.empty()) return false;
  // An old tree whose size is a power of two is a subtree of the new one: its root is the
  // proof's implicit first node.
  std::vector<Hash> path(proof.begin(), proof.end());
  if ((old_size & (old_size - 1)) == 0) path.insert(path.begin(), old_root);
  uint64_t fn = old_size - 1;
  uint64_t sn = new_size - 1;
  while (odd(fn)) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = path.front();
  Hash sr = path.front();
  for (size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return false;
    if (odd(fn) || fn == sn) {
      fr = node_hash(c, fr);
      sr = node_hash(c, sr);
      if (!odd(fn))
        while (!odd(fn) && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      sr = node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == old_root && sr == new_root;
}

std::string to_hex(const Hash& h) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (const uint8_t b : h) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

}  // namespace tresor::receipts::merkle
