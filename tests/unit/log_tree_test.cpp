// The log's tiled tree (receipts/log_tree.h): roots, proofs, tiles and entry bundles agree
// with the plain RFC 9162 functions over all leaves (receipts/merkle.h, checked against the
// CT reference roots in merkle_test.cpp) for every size across tile boundaries, and with
// the C2SP tlog-tiles definition of a tile.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "receipts/log_tree.h"

using tresor::receipts::LogTree;
namespace merkle = tresor::receipts::merkle;
using merkle::Hash;

namespace {

LogTree::Entry entry(uint64_t i) {
  LogTree::Entry e{};
  std::memcpy(e.data(), &i, sizeof i);
  e[31] = 0x5a;
  return e;
}

Hash leaf(uint64_t i) {
  const auto e = entry(i);
  return merkle::leaf_hash(std::string_view(reinterpret_cast<const char*>(e.data()), e.size()));
}

std::vector<Hash> leaves(uint64_t n) {
  std::vector<Hash> out;
  for (uint64_t i = 0; i < n; ++i) out.push_back(leaf(i));
  return out;
}

std::string concat(std::span<const Hash> hashes) {
  std::string out;
  for (const auto& h : hashes) out.append(reinterpret_cast<const char*>(h.data()), h.size());
  return out;
}

}  // namespace

TEST_CASE("the tiled tree's roots and proofs equal RFC 9162 over all leaves, at every size to 600", "[log_tree]") {
  constexpr uint64_t kMax = 600;  // two full level-0 tiles and a partial one
  LogTree tree;
  const auto all = leaves(kMax);
  for (uint64_t i = 0; i < kMax; ++i) tree.append(entry(i));
  REQUIRE(tree.size() == kMax);
  CHECK(tree.root(0) == merkle::root({}));
  for (uint64_t size = 1; size <= kMax; ++size) {
    const std::span<const Hash> prefix(all.data(), size);
    const Hash root = merkle::root(prefix);
    REQUIRE(tree.root(size) == root);
    // Inclusion at the edges and inside, and consistency from a few older sizes.
    for (uint64_t index : {uint64_t{0}, size / 3, size - 1}) {
      const auto proof = tree.inclusion_proof(index, size);
      REQUIRE(proof);
      CHECK(*proof == *merkle::inclusion_proof(prefix, index));
      CHECK(merkle::verify_inclusion(index, size, all[index], *proof, root));
    }
    for (uint64_t old_size : {uint64_t{1}, size / 2 + 1, size}) {
      if (old_size > size) continue;
      const auto proof = tree.consistency_proof(old_size, size);
      REQUIRE(proof);
      CHECK(*proof == *merkle::consistency_proof(prefix, old_size));
      CHECK(merkle::verify_consistency(old_size, size, merkle::root(prefix.first(old_size)), root, *proof));
    }
  }
  CHECK_FALSE(tree.inclusion_proof(kMax, kMax));
  CHECK_FALSE(tree.inclusion_proof(0, kMax + 1));
  CHECK_FALSE(tree.consistency_proof(1, kMax + 1));
}

TEST_CASE("tiles are C2SP tlog-tiles: level 0 the leaf hashes, level 1 the MTH of each full level-0 tile",
          "[log_tree]") {
  constexpr uint64_t kSize = 256 * 256 + 300;  // a full level-1 tile, so a level-2 hash too
  LogTree tree;
  for (uint64_t i = 0; i < kSize; ++i) tree.append(entry(i));
  const auto all = leaves(kSize);
  const std::span<const Hash> span(all);

  CHECK(tree.tile(0, 0, 256) == concat(span.first(256)));
  CHECK(tree.tile(0, 257, 44) == concat(span.subspan(257 * 256, 44)));  // the partial tile
  CHECK_FALSE(tree.tile(0, 257, 45));                                   // beyond the tree
  CHECK_FALSE(tree.tile(0, 0, 0));
  CHECK_FALSE(tree.tile(0, 0, 257));

  std::vector<Hash> level1;
  for (uint64_t t = 0; t < 257; ++t) level1.push_back(merkle::root(span.subspan(t * 256, 256)));
  CHECK(tree.tile(1, 0, 256) == concat(std::span<const Hash>(level1).first(256)));
  CHECK(tree.tile(1, 1, 1) == concat(std::span<const Hash>(level1).subspan(256, 1)));
  CHECK(tree.tile(2, 0, 1) == concat(std::vector<Hash>{merkle::root(span.first(256 * 256))}));
  CHECK_FALSE(tree.tile(3, 0, 1));
  CHECK(tree.root(kSize) == merkle::root(span));

  // An entry bundle: each entry as a big-endian uint16 length (32) and its bytes.
  const auto bundle = tree.entry_bundle(257, 44);
  REQUIRE(bundle);
  REQUIRE(bundle->size() == 44 * 34);
  CHECK((*bundle)[0] == 0);
  CHECK((*bundle)[1] == 32);
  const auto first = entry(257 * 256);
  CHECK(bundle->substr(2, 32) == std::string(reinterpret_cast<const char*>(first.data()), 32));
  CHECK_FALSE(tree.entry_bundle(257, 45));
}
