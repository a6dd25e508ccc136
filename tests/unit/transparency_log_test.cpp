// The transparency log following its store (receipts/transparency_log.h): leaves in the
// order the store sequenced them, a checkpoint signed only when the tree grew and never
// smaller than the store's, one log for two replicas on one Redis, and a store whose
// entries were changed under a checkpoint refused (no checkpoint signed after it).
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "receipts/merkle.h"
#include "receipts/signed_note.h"
#include "receipts/store.h"
#include "receipts/transparency_log.h"
#include "redis_server.h"
#include "temp_dir.h"

using namespace tresor::receipts;

namespace {

note::Ed25519Seed seed_of(uint8_t b) {
  note::Ed25519Seed s{};
  s.fill(b);
  return s;
}

tresor::config::LogConfig log_config() {
  tresor::config::LogConfig c;
  c.origin = "test.example/log";
  return c;
}

StoredReceipt logged(const std::string& id) {
  StoredReceipt r{id, "acme", "", 4'000'000'000, "{\"jti\":\"" + id + "\"}", {}, std::nullopt};
  r.log_entry = TransparencyLog::entry_for(r.claims);
  return r;
}

merkle::Hash leaf_of(const std::string& id) { return merkle::leaf_hash(TransparencyLog::entry_for(logged(id).claims)); }

void put(ReceiptStore& store, const std::vector<std::string>& ids) {
  std::vector<StoredReceipt> batch;
  for (const auto& id : ids) batch.push_back(logged(id));
  REQUIRE(store.put_batch(batch));
}

void sql(const std::string& path, const std::string& statement) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

}  // namespace

TEST_CASE("log over SQLite: leaves in order, a checkpoint when it grew, the index on the receipt", "[log]") {
  tresor::test::TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  TransparencyLog log(log_config(), seed_of(1));

  log.sync(*store);  // the empty tree's checkpoint
  auto first = log.checkpoint();
  REQUIRE(first);
  CHECK(first->size == 0);
  CHECK(note::verify(first->note, log.verifier_key()) == first->text);

  put(*store, {"a", "b"});
  put(*store, {"c"});
  log.sync(*store);
  const auto c = log.checkpoint();
  REQUIRE(c->size == 3);
  CHECK(c->root == merkle::root(std::vector<merkle::Hash>{leaf_of("a"), leaf_of("b"), leaf_of("c")}));
  CHECK(c->text == "test.example/log\n3\n" + note::base64(std::string_view(
                                                   reinterpret_cast<const char*>(c->root.data()), 32)) + "\n");
  CHECK(store->load("c", "acme", 0)->log_index == uint64_t{2});

  // Nothing new: the same checkpoint (not re-signed).
  log.sync(*store);
  CHECK(log.checkpoint() == c);

  // A restarted gateway reads the log back and continues from the stored checkpoint.
  TransparencyLog again(log_config(), seed_of(1));
  again.sync(*store);
  REQUIRE(again.checkpoint());
  CHECK(again.checkpoint()->note == c->note);
  CHECK(again.consistent());
}

TEST_CASE("log over SQLite: entries changed or removed under a checkpoint stop the signing", "[log]") {
  tresor::test::TempDir dir;
  const std::string path = dir.file("r.db");
  {
    auto store = open_sqlite_store(path);
    TransparencyLog log(log_config(), seed_of(1));
    put(*store, {"a", "b", "c"});
    log.sync(*store);
    REQUIRE(log.checkpoint()->size == 3);
  }
  SECTION("an entry rewritten") { sql(path, "UPDATE log_entries SET entry = zeroblob(32) WHERE idx = 1"); }
  SECTION("the last entry removed") { sql(path, "DELETE FROM log_entries WHERE idx = 2"); }
  SECTION("an entry in the middle removed") { sql(path, "DELETE FROM log_entries WHERE idx = 1"); }
  SECTION("the checkpoint signed by another key") {
    TransparencyLog other(log_config(), seed_of(2));
    auto store = open_sqlite_store(dir.file("other.db"));
    put(*store, {"x", "y", "z", "w"});
    other.sync(*store);
    sql(path, "UPDATE log_checkpoint SET size = 4, note = '" + other.checkpoint()->note + "'");
  }
  auto store = open_sqlite_store(path);
  const auto before = store->latest_checkpoint();
  REQUIRE(before);
  TransparencyLog log(log_config(), seed_of(1));
  put(*store, {"d"});
  log.sync(*store);
  CHECK_FALSE(log.consistent());
  // Nothing is signed over the changed store: its checkpoint is still the one from before.
  CHECK(store->latest_checkpoint()->note == before->note);
  CHECK(log.checkpoint() == nullptr);
}

TEST_CASE("log over Redis: two replicas append to one log and agree on every checkpoint", "[log][redis]") {
  tresor::test::RedisServer redis;
  auto store_a = open_redis_store(redis.url());
  auto store_b = open_redis_store(redis.url());
  TransparencyLog a(log_config(), seed_of(1));
  TransparencyLog b(log_config(), seed_of(1));
  std::vector<merkle::Hash> leaves;
  for (int round = 0; round < 20; ++round) {
    const std::string ra = "a" + std::to_string(round), rb = "b" + std::to_string(round);
    put(*store_a, {ra});
    put(*store_b, {rb, rb + "'"});
    leaves.push_back(leaf_of(ra));
    leaves.push_back(leaf_of(rb));
    leaves.push_back(leaf_of(rb + "'"));
    (round % 2 ? a : b).sync(round % 2 ? *store_a : *store_b);
  }
  a.sync(*store_a);
  b.sync(*store_b);
  REQUIRE(a.checkpoint());
  REQUIRE(b.checkpoint());
  CHECK(a.checkpoint()->size == 60);
  CHECK(a.checkpoint()->note == b.checkpoint()->note);
  CHECK(a.checkpoint()->root == merkle::root(leaves));
  CHECK(store_b->load("b19'", "acme", 0)->log_index == uint64_t{59});
  CHECK(a.consistent());
  CHECK(b.consistent());

  // A cosignature line stored by one replica reaches the other's checkpoint.
  REQUIRE(store_a->add_cosignature(60, "\xe2\x80\x94 witness.example/w1 AAAA\n"));
  b.sync(*store_b);
  CHECK(b.checkpoint()->note.find("witness.example/w1") != std::string::npos);
  CHECK_FALSE(store_a->add_cosignature(59, "\xe2\x80\x94 witness.example/w2 AAAA\n"));
}

namespace {

// A replica's view of the shared store whose first entry read comes back before another
// replica's append: the store's checkpoint is then ahead of the entries this replica read.
class StaleFirstRead final : public ReceiptStore {
 public:
  explicit StaleFirstRead(ReceiptStore& real) : real_(real) {}
  bool put_batch(const std::vector<StoredReceipt>& b) override { return real_.put_batch(b); }
  std::optional<StoredReceipt> load(const std::string& id, const std::string& c, int64_t now) override {
    return real_.load(id, c, now);
  }
  std::optional<std::string> store_signature(const std::string& id, const std::string& jws) override {
    return real_.store_signature(id, jws);
  }
  size_t purge_expired(int64_t now) override { return real_.purge_expired(now); }
  size_t count() override { return real_.count(); }
  std::vector<std::string> log_entries(uint64_t from, size_t max) override {
    if (stale_) {
      stale_ = false;
      return {};
    }
    return real_.log_entries(from, max);
  }
  std::optional<StoredCheckpoint> latest_checkpoint() override { return real_.latest_checkpoint(); }
  std::optional<StoredCheckpoint> publish_checkpoint(const StoredCheckpoint& c) override {
    return real_.publish_checkpoint(c);
  }

 private:
  ReceiptStore& real_;
  bool stale_ = true;
};

}  // namespace

TEST_CASE("log: a checkpoint ahead of the entries read is another replica's progress, not a removal", "[log]") {
  tresor::test::TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  TransparencyLog other(log_config(), seed_of(1));
  put(*store, {"a", "b", "c"});
  other.sync(*store);  // checkpoint 3, signed by the other replica
  StaleFirstRead view(*store);
  TransparencyLog log(log_config(), seed_of(1));
  log.sync(view);
  CHECK(log.consistent());
  REQUIRE(log.checkpoint());
  CHECK(log.checkpoint()->size == 3);
}

TEST_CASE("log: a cosignature accepted here survives a sync before it is stored; the cosigned checkpoint stays",
          "[log]") {
  tresor::test::TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  TransparencyLog log(log_config(), seed_of(1));
  put(*store, {"a"});
  log.sync(*store);
  const auto first = log.checkpoint();
  REQUIRE(first->size == 1);
  CHECK(log.cosigned_checkpoint() == nullptr);
  const std::string line = "\xe2\x80\x94 witness.example/w1 AAAA\n";
  REQUIRE(log.add_cosignature(1, line));
  log.sync(*store);  // the store does not have the line yet
  CHECK(log.checkpoint()->note == first->note + line);
  REQUIRE(log.cosigned_checkpoint());
  CHECK(log.cosigned_checkpoint()->size == 1);

  put(*store, {"b"});
  log.sync(*store);
  CHECK(log.checkpoint()->size == 2);
  REQUIRE(log.cosigned_checkpoint());
  CHECK(log.cosigned_checkpoint()->size == 1);  // the newer one has no cosignature yet
  CHECK_FALSE(log.add_cosignature(1, line));    // superseded
}
