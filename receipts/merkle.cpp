#include "receipts/merkle.h"

#include "common/sha256.h"

namespace tresor::receipts::merkle {
namespace {

std::string_view bytes(const Hash& h) { return {reinterpret_cast<const char*>(h.data()), h.size()}; }

// SHA-256 of a one-byte domain prefix (RFC 9162: 0x00 leaf, 0x01 node) and the parts.
Hash prefixed_sha256(char prefix, std::string_view a, std::string_view b = {}) {
  common::Sha256 sha;
  sha.update(std::string_view(&prefix, 1));
  sha.update(a);
  sha.update(b);
  return sha.digest();
}

// The largest power of two smaller than n (n >= 2): where RFC 9162 splits a tree.
uint64_t split(uint64_t n) {
  uint64_t k = 1;
  while (k << 1 < n) k <<= 1;
  return k;
}

bool odd(uint64_t v) { return (v & 1) != 0; }

// RFC 9162 §2.1.3.2 / §2.1.4.2: "right-shift both fn and sn equally until either LSB(fn)
// is set or fn is 0" (climbing the right edge, where a node has no right sibling).
void climb_right_edge(uint64_t& fn, uint64_t& sn) {
  while (!odd(fn) && fn != 0) {
    fn >>= 1;
    sn >>= 1;
  }
}

// PATH(m, D[begin:begin+n]) of RFC 9162 §2.1.3.1 with MTH of any range from `mth`.
void path(const RangeHash& mth, uint64_t begin, uint64_t n, uint64_t m, std::vector<Hash>& out) {
  if (n <= 1) return;
  const uint64_t k = split(n);
  if (m < k) {
    path(mth, begin, k, m, out);
    out.push_back(mth(begin + k, begin + n));
  } else {
    path(mth, begin + k, n - k, m - k, out);
    out.push_back(mth(begin, begin + k));
  }
}

// SUBPROOF(m, D[begin:begin+n], b) of RFC 9162 §2.1.4.1.
void subproof(const RangeHash& mth, uint64_t begin, uint64_t n, uint64_t m, bool complete, std::vector<Hash>& out) {
  if (m == n) {
    if (!complete) out.push_back(mth(begin, begin + n));
    return;
  }
  const uint64_t k = split(n);
  if (m <= k) {
    subproof(mth, begin, k, m, complete, out);
    out.push_back(mth(begin + k, begin + n));
  } else {
    subproof(mth, begin + k, n - k, m - k, false, out);
    out.push_back(mth(begin, begin + k));
  }
}

RangeHash over(std::span<const Hash> leaves) {
  return [leaves](uint64_t begin, uint64_t end) { return root(leaves.subspan(begin, end - begin)); };
}

}  // namespace

Hash leaf_hash(std::string_view data) { return prefixed_sha256(0x00, data); }

Hash node_hash(const Hash& left, const Hash& right) { return prefixed_sha256(0x01, bytes(left), bytes(right)); }

Hash root(std::span<const Hash> leaves) {
  if (leaves.empty()) return common::Sha256().digest();
  if (leaves.size() == 1) return leaves.front();
  const uint64_t k = split(leaves.size());
  return node_hash(root(leaves.first(k)), root(leaves.subspan(k)));
}

std::optional<std::vector<Hash>> inclusion_proof(std::span<const Hash> leaves, uint64_t index) {
  return inclusion_proof(leaves.size(), index, over(leaves));
}

std::optional<std::vector<Hash>> inclusion_proof(uint64_t size, uint64_t index, const RangeHash& mth) {
  if (index >= size) return std::nullopt;
  std::vector<Hash> out;
  path(mth, 0, size, index, out);
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
      climb_right_edge(fn, sn);
    } else {
      r = node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == expected_root;
}

std::optional<std::vector<Hash>> consistency_proof(std::span<const Hash> leaves, uint64_t old_size) {
  return consistency_proof(leaves.size(), old_size, over(leaves));
}

std::optional<std::vector<Hash>> consistency_proof(uint64_t new_size, uint64_t old_size, const RangeHash& mth) {
  if (old_size == 0 || old_size > new_size) return std::nullopt;
  std::vector<Hash> out;
  subproof(mth, 0, new_size, old_size, true, out);
  return out;
}

bool verify_consistency(uint64_t old_size, uint64_t new_size, const Hash& old_root, const Hash& new_root,
                        std::span<const Hash> proof) {
  if (old_size == 0 || old_size > new_size) return false;
  if (old_size == new_size) return proof.empty() && old_root == new_root;
  if (proof.empty()) return false;
  // An old tree whose size is a power of two is a subtree of the new one: its root is the
  // proof's implicit first node.
  const bool old_is_subtree = (old_size & (old_size - 1)) == 0;
  const Hash& first = old_is_subtree ? old_root : proof.front();
  const std::span<const Hash> rest = old_is_subtree ? proof : proof.subspan(1);
  uint64_t fn = old_size - 1;
  uint64_t sn = new_size - 1;
  while (odd(fn)) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = first;
  Hash sr = first;
  for (const Hash& c : rest) {
    if (sn == 0) return false;
    if (odd(fn) || fn == sn) {
      fr = node_hash(c, fr);
      sr = node_hash(c, sr);
      climb_right_edge(fn, sn);
    } else {
      sr = node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == old_root && sr == new_root;
}

std::string to_hex(const Hash& h) { return common::to_hex(h.data(), h.size()); }

}  // namespace tresor::receipts::merkle
