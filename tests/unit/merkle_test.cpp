// The transparency log's Merkle tree (receipts/merkle.h, issue 19): RFC 9162 hashing against
// the Certificate Transparency reference roots, and inclusion / consistency proofs produced
// and verified for every position and size up to 48 leaves, tampering included.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "receipts/merkle.h"

namespace merkle = tresor::receipts::merkle;
using merkle::Hash;

namespace {

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

// The eight leaves of the RFC 6962 reference tree (certificate-transparency merkle_tree_test).
std::vector<Hash> reference_leaves() {
  const char* data[] = {"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                        "606162636465666768696a6b6c6d6e6f"};
  std::vector<Hash> leaves;
  for (const char* d : data) leaves.push_back(merkle::leaf_hash(unhex(d)));
  return leaves;
}

std::vector<Hash> numbered_leaves(size_t n) {
  std::vector<Hash> leaves;
  for (size_t i = 0; i < n; ++i) leaves.push_back(merkle::leaf_hash("receipt " + std::to_string(i)));
  return leaves;
}

Hash flipped(Hash h) {
  h[7] ^= 0x01;
  return h;
}

}  // namespace

TEST_CASE("merkle: roots of the RFC 6962 reference tree, sizes 1 to 8", "[merkle]") {
  const char* roots[] = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  const auto leaves = reference_leaves();
  for (size_t n = 1; n <= 8; ++n)
    CHECK(merkle::to_hex(merkle::root(std::span(leaves).first(n))) == roots[n - 1]);
  // The empty tree: SHA-256 of nothing.
  CHECK(merkle::to_hex(merkle::root({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("merkle: every inclusion proof up to 48 leaves verifies, and nothing altered does", "[merkle]") {
  for (size_t n = 1; n <= 48; ++n) {
    const auto leaves = numbered_leaves(n);
    const Hash root = merkle::root(leaves);
    for (size_t i = 0; i < n; ++i) {
      const auto proof = merkle::inclusion_proof(leaves, i);
      REQUIRE(proof);
      INFO("size " << n << " index " << i);
      CHECK(merkle::verify_inclusion(i, n, leaves[i], *proof, root));
      CHECK_FALSE(merkle::verify_inclusion(i, n, flipped(leaves[i]), *proof, root));
      CHECK_FALSE(merkle::verify_inclusion(i, n, leaves[i], *proof, flipped(root)));
      if (n > 1) {
        CHECK_FALSE(merkle::verify_inclusion((i + 1) % n, n, leaves[i], *proof, root));
        auto bad = *proof;
        bad.back() = flipped(bad.back());
        CHECK_FALSE(merkle::verify_inclusion(i, n, leaves[i], bad, root));
        auto shorter = *proof;
        shorter.pop_back();
        CHECK_FALSE(merkle::verify_inclusion(i, n, leaves[i], shorter, root));
      }
      auto longer = *proof;
      longer.push_back(leaves[0]);
      CHECK_FALSE(merkle::verify_inclusion(i, n, leaves[i], longer, root));
      // (A wrong size can verify where both trees have the same shape above the leaf: the
      // size is bound by the signed checkpoint, not by the proof.)
    }
    CHECK_FALSE(merkle::inclusion_proof(leaves, n));
  }
}

TEST_CASE("merkle: every consistency proof up to 48 leaves verifies; a rewritten or removed leaf does not", "[merkle]") {
  for (size_t n = 1; n <= 48; ++n) {
    const auto leaves = numbered_leaves(n);
    const Hash new_root = merkle::root(leaves);
    for (size_t m = 1; m <= n; ++m) {
      INFO("old " << m << " new " << n);
      const Hash old_root = merkle::root(std::span(leaves).first(m));
      const auto proof = merkle::consistency_proof(leaves, m);
      REQUIRE(proof);
      CHECK(merkle::verify_consistency(m, n, old_root, new_root, *proof));
      CHECK_FALSE(merkle::verify_consistency(m, n, flipped(old_root), new_root, *proof));
      CHECK_FALSE(merkle::verify_consistency(m, n, old_root, flipped(new_root), *proof));
      if (m < n) {
        // The old tree with one leaf rewritten: the new tree no longer extends it.
        auto rewritten = leaves;
        rewritten[m - 1] = flipped(rewritten[m - 1]);
        const Hash forked_old = merkle::root(std::span(rewritten).first(m));
        CHECK_FALSE(merkle::verify_consistency(m, n, forked_old, new_root, *proof));
        auto bad = *proof;
        bad.front() = flipped(bad.front());
        CHECK_FALSE(merkle::verify_consistency(m, n, old_root, new_root, bad));
        CHECK_FALSE(merkle::verify_consistency(m, n, old_root, new_root, {}));
      }
    }
    CHECK_FALSE(merkle::consistency_proof(leaves, 0));
    CHECK_FALSE(merkle::consistency_proof(leaves, n + 1));
    CHECK_FALSE(merkle::verify_consistency(0, n, new_root, new_root, {}));
  }
  // A leaf removed: the shorter history is not an old state of the longer one.
  const auto leaves = numbered_leaves(10);
  std::vector<Hash> removed(leaves.begin(), leaves.end());
  removed.erase(removed.begin() + 3);
  const auto proof = merkle::consistency_proof(leaves, 9);
  REQUIRE(proof);
  CHECK_FALSE(merkle::verify_consistency(9, 10, merkle::root(removed), merkle::root(leaves), *proof));
}
