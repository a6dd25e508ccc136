// The decisions of the transparency log's CLI (server/log_cli.h, issue 19): what a witness
// or an auditor refuses, checkpoint parsing, tile paths, and verify-receipt --log-key.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/sha256.h"
#include "receipts/merkle.h"
#include "receipts/signed_note.h"
#include "server/log_cli.h"

namespace log_cli = tresor::server::log_cli;
namespace merkle = tresor::receipts::merkle;
namespace note = tresor::receipts::note;

namespace {

std::vector<merkle::Hash> leaves(int n, const std::string& salt = "") {
  std::vector<merkle::Hash> out;
  for (int i = 0; i < n; ++i) out.push_back(merkle::leaf_hash(salt + "entry " + std::to_string(i)));
  return out;
}

log_cli::Checkpoint checkpoint(const std::vector<merkle::Hash>& tree) {
  return log_cli::Checkpoint{"tresor.test/log", tree.size(), merkle::root(tree)};
}

std::string b64(const merkle::Hash& h) { return note::base64({reinterpret_cast<const char*>(h.data()), h.size()}); }

note::Ed25519Seed seed(uint8_t x) {
  note::Ed25519Seed s{};
  s.fill(x);
  return s;
}

}  // namespace

TEST_CASE("log cli: a grown log is accepted, with a proof that verifies", "[log_cli]") {
  const auto tree = leaves(120);
  const auto old = checkpoint(std::vector<merkle::Hash>(tree.begin(), tree.begin() + 80));
  const auto proof = merkle::consistency_proof(tree, 80);
  REQUIRE(proof);
  CHECK_FALSE(log_cli::refusal(old, checkpoint(tree), *proof));
  CHECK_FALSE(log_cli::refusal(checkpoint(tree), checkpoint(tree), {}));  // unchanged
  CHECK_FALSE(log_cli::refusal(checkpoint({}), checkpoint(tree), {}));  // from the empty tree
}

TEST_CASE("log cli: rollback, fork, rewrite and origin change are refused with the operator's message", "[log_cli]") {
  const auto tree = leaves(120);
  const std::vector<merkle::Hash> first80(tree.begin(), tree.begin() + 80);
  CHECK(log_cli::refusal(checkpoint(tree), checkpoint(first80), {}) == "log rolled back from size 120 to 80");

  const auto other = leaves(50, "other ");
  const std::vector<merkle::Hash> first50(tree.begin(), tree.begin() + 50);
  CHECK(log_cli::refusal(checkpoint(first50), checkpoint(other), {}) ==
        "checkpoint for size 50 has root " + b64(merkle::root(other)) + " but the witnessed root was " +
            b64(merkle::root(first50)) + " (fork)");

  // Leaf 3 rewritten: the log's own proof for its new tree does not link it to the old root.
  auto rewritten = tree;
  rewritten[3] = merkle::leaf_hash("changed");
  const auto proof = merkle::consistency_proof(rewritten, 80);
  REQUIRE(proof);
  CHECK(log_cli::refusal(checkpoint(first80), checkpoint(rewritten), *proof) ==
        "consistency proof 80 -> 120 does not verify (the log was rewritten)");
  CHECK(log_cli::refusal(checkpoint(first80), checkpoint(tree), {}) ==
        "consistency proof 80 -> 120 does not verify (the log was rewritten)");

  auto moved = checkpoint(tree);
  moved.origin = "elsewhere/log";
  CHECK(log_cli::refusal(checkpoint(tree), moved, {}) == "origin changed from tresor.test/log to elsewhere/log");
}

TEST_CASE("log cli: checkpoint texts", "[log_cli]") {
  const std::string root = b64(merkle::root(leaves(3)));
  const auto cp = log_cli::parse_checkpoint("tresor.test/log\n3\n" + root + "\n");
  REQUIRE(cp);
  CHECK(cp->origin == "tresor.test/log");
  CHECK(cp->size == 3);
  CHECK(cp->root == merkle::root(leaves(3)));
  CHECK(log_cli::parse_checkpoint("tresor.test/log\n3\n" + root + "\nextension line\n"));
  CHECK_FALSE(log_cli::parse_checkpoint("tresor.test/log\n03\n" + root + "\n"));  // leading zero
  CHECK_FALSE(log_cli::parse_checkpoint("tresor.test/log\n-3\n" + root + "\n"));
  CHECK_FALSE(log_cli::parse_checkpoint("tresor.test/log\n3\nAAAA\n"));  // not 32 bytes
  CHECK_FALSE(log_cli::parse_checkpoint("tresor.test/log\n3\n"));
  CHECK_FALSE(log_cli::parse_checkpoint("tresor.test/log\n3\n" + root));  // no final newline
}

TEST_CASE("log cli: tlog-tiles paths", "[log_cli]") {
  CHECK(log_cli::tile_path(0, 0, 256) == "tile/0/000");
  CHECK(log_cli::tile_path(0, 0, 5) == "tile/0/000.p/5");
  CHECK(log_cli::tile_path(1, 1234067, 256) == "tile/1/x001/x234/067");
  CHECK(log_cli::tile_path(-1, 1000, 17) == "tile/entries/x001/000.p/17");
}

TEST_CASE("log cli: verify-receipt --log-key checks the receipt's leaf against a signed checkpoint", "[log_cli]") {
  const std::string payload = R"({"jti":"r-2","receipt_type":"message"})";
  auto tree = leaves(5);
  tresor::common::Sha256 sha;
  sha.update(payload);
  const auto digest = sha.digest();
  tree[2] = merkle::leaf_hash({reinterpret_cast<const char*>(digest.data()), digest.size()});
  const std::string text = "tresor.test/log\n5\n" + b64(merkle::root(tree)) + "\n";
  const auto signed_note = note::sign(text, "tresor.test/log", seed(1));
  REQUIRE(signed_note);
  const std::string log_key = note::verifier_key("tresor.test/log", note::public_key(seed(1)));
  std::string proof_json = "[";
  const auto proof = merkle::inclusion_proof(tree, 2);
  REQUIRE(proof);
  for (const auto& h : *proof) proof_json += (proof_json.size() > 1 ? ",\"" : "\"") + b64(h) + "\"";
  proof_json += "]";
  const auto answer = [&](int index, const std::string& note_text) {
    std::string escaped;
    for (const char c : note_text) escaped += c == '\n' ? std::string("\\n") : std::string(1, c);
    return R"({"id":"r-2","receipt":"x.y.z","log_index":)" + std::to_string(index) + R"(,"checkpoint":")" + escaped +
           R"(","inclusion_proof":)" + proof_json + "}";
  };

  CHECK(log_cli::verify_receipt_inclusion(answer(2, *signed_note), payload, log_key) ==
        "Log index: 2\nCheckpoint: tresor.test/log size 5\n");
  // Another index, another payload, another log key, no log fields: refused.
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion(answer(3, *signed_note), payload, log_key),
                    Catch::Contains("does not verify"));
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion(answer(2, *signed_note), payload + " ", log_key),
                    Catch::Contains("does not verify"));
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion(answer(7, *signed_note), payload, log_key),
                    Catch::Contains("outside the checkpoint of size 5"));
  const std::string other_key = note::verifier_key("tresor.test/log", note::public_key(seed(2)));
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion(answer(2, *signed_note), payload, other_key),
                    Catch::Contains("checkpoint signature does not verify with the given log key"));
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion(R"({"id":"r-2","receipt":"x.y.z","log_index":2})", payload, log_key),
                    Catch::Contains("has no log_index, checkpoint and inclusion_proof"));
  CHECK_THROWS_WITH(log_cli::verify_receipt_inclusion("x.y.z", payload, log_key), Catch::Contains("whole JSON answer"));
}
