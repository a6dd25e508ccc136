// The SQLite receipt store (scoping, expiry, atomic batches, durability across reopen)
// and the ReceiptService around it (group commit, drain on destruction).
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <stdlib.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "receipts/claims.h"
#include "receipts/receipt_service.h"
#include "receipts/signer.h"
#include "receipts/store.h"

using tresor::receipts::open_sqlite_store;
using tresor::receipts::ReceiptService;
using tresor::receipts::ReceiptStore;
using tresor::receipts::Signer;
using tresor::receipts::StoredReceipt;

namespace fs = std::filesystem;

namespace {

class TempDir : public tresor::test::TempDir {
 public:
  TempDir() : tresor::test::TempDir("tresor-receipts-") {}
};


StoredReceipt receipt(const std::string& id, const std::string& customer, int64_t expires_at) {
  return StoredReceipt{id, customer, "jws-of-" + id, expires_at, "claims-of-" + id, {}, {}};
}

// What the test watches of the store the service owns (the service takes the store by
// unique_ptr, so the counters live outside it).
struct StoreProbe {
  std::atomic<int> put_batch_calls{0};
  std::atomic<int> rows_put{0};
  // While closed, put_batch waits: lets a test pile up work behind a transaction
  // deterministically instead of relying on timing.
  std::mutex mutex;
  std::condition_variable cv;
  bool gate_open = true;
  bool blocked = false;  // a put_batch is waiting at the gate

  void close_gate() {
    std::lock_guard lock(mutex);
    gate_open = false;
  }
  void open_gate() {
    {
      std::lock_guard lock(mutex);
      gate_open = true;
    }
    cv.notify_all();
  }
  void wait_until_blocked() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return blocked; });
  }
};

// Decorator counting transactions, so group commit is measured without timing.
class CountingStore final : public ReceiptStore {
 public:
  CountingStore(std::unique_ptr<ReceiptStore> inner, StoreProbe& probe) : inner_(std::move(inner)), probe_(probe) {}
  bool put_batch(const std::vector<StoredReceipt>& batch) override {
    {
      std::unique_lock lock(probe_.mutex);
      probe_.blocked = true;
      probe_.cv.notify_all();
      probe_.cv.wait(lock, [&] { return probe_.gate_open; });
      probe_.blocked = false;
    }
    ++probe_.put_batch_calls;
    probe_.rows_put += static_cast<int>(batch.size());
    return inner_->put_batch(batch);
  }
  std::optional<StoredReceipt> load(const std::string& id, const std::string& customer, int64_t now) override {
    return inner_->load(id, customer, now);
  }
  std::optional<std::string> store_signature(const std::string& id, const std::string& jws) override {
    return inner_->store_signature(id, jws);
  }
  size_t purge_expired(int64_t now) override { return inner_->purge_expired(now); }
  size_t count() override { return inner_->count(); }

 private:
  std::unique_ptr<ReceiptStore> inner_;
  StoreProbe& probe_;
};

// Counts done() callbacks and lets the test wait for the expected number.
struct DoneCounter {
  std::mutex mutex;
  std::condition_variable cv;
  int ok = 0;
  int failed = 0;

  std::function<void(bool)> callback() {
    return [this](bool success) {
      {
        std::lock_guard lock(mutex);
        (success ? ok : failed)++;
      }
      cv.notify_all();
    };
  }
  bool wait_for(int total) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return ok + failed >= total; });
  }
};

// The service's answer to a fetch, waited for.
std::optional<std::string> fetch_now(ReceiptService& service, const std::string& id, const std::string& customer) {
  std::promise<tresor::receipts::FetchResult> result;
  service.fetch(id, customer, [&](tresor::receipts::FetchResult r) { result.set_value(std::move(r)); });
  auto fetched = result.get_future().get();
  REQUIRE_FALSE(fetched.store_unavailable);
  return fetched.jws;
}

std::string claims_for(const std::string& id) { return R"({"jti":")" + id + R"(","receipt_type":"message"})"; }

}  // namespace

TEST_CASE("receipt store: put and get round trip", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("nested/folder/receipts.db"));  // parent made on open
  const int64_t now = 1'000'000;
  REQUIRE(store->put_batch({receipt("a", "cust-1", now + 60), receipt("b", "cust-2", now + 60)}));
  CHECK(store->get("a", "cust-1", now) == std::optional<std::string>("jws-of-a"));
  CHECK(store->get("b", "cust-2", now) == std::optional<std::string>("jws-of-b"));
  CHECK_FALSE(store->get("missing", "cust-1", now).has_value());
  CHECK(store->count() == 2);
  CHECK(store->put_batch({}));  // nothing to do is not a failure
}

TEST_CASE("receipt store: another customer's receipt is not found", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  REQUIRE(store->put_batch({receipt("a", "cust-1", 2000)}));
  CHECK_FALSE(store->get("a", "cust-2", 1000).has_value());
  CHECK_FALSE(store->get("a", "", 1000).has_value());
}

TEST_CASE("receipt store: an expired receipt is not found", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  REQUIRE(store->put_batch({receipt("a", "cust-1", 2000)}));
  CHECK(store->get("a", "cust-1", 1999).has_value());
  CHECK_FALSE(store->get("a", "cust-1", 2000).has_value());  // expires_at is the first dead second
  CHECK_FALSE(store->get("a", "cust-1", 5000).has_value());
}

TEST_CASE("receipt store: purge removes only expired rows", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  REQUIRE(store->put_batch({receipt("old-1", "c", 100), receipt("old-2", "c", 200), receipt("edge", "c", 300),
                            receipt("live", "c", 301)}));
  CHECK(store->count() == 4);
  CHECK(store->purge_expired(300) == 3);
  CHECK(store->count() == 1);
  CHECK(store->get("live", "c", 300) == std::optional<std::string>("jws-of-live"));
  CHECK(store->purge_expired(300) == 0);
}

TEST_CASE("receipt store: committed rows survive reopening the file", "[receipts]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  {
    auto store = open_sqlite_store(path);
    REQUIRE(store->put_batch({receipt("a", "c", 2000), receipt("b", "c", 2000)}));
    REQUIRE(store->put_batch({receipt("c", "c", 2000)}));
  }
  auto reopened = open_sqlite_store(path);
  CHECK(reopened->count() == 3);
  CHECK(reopened->get("c", "c", 1000) == std::optional<std::string>("jws-of-c"));
}

TEST_CASE("receipt store: a failing batch stores nothing", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  SECTION("duplicate id inside one batch") {
    CHECK_FALSE(store->put_batch({receipt("a", "c", 2000), receipt("b", "c", 2000), receipt("a", "c", 2000)}));
    CHECK(store->count() == 0);
    CHECK_FALSE(store->get("b", "c", 1000).has_value());
  }
  SECTION("id already stored by an earlier batch") {
    REQUIRE(store->put_batch({receipt("a", "c", 2000)}));
    CHECK_FALSE(store->put_batch({receipt("x", "c", 2000), receipt("a", "other", 2000)}));
    CHECK(store->count() == 1);
    CHECK(store->get("a", "c", 1000) == std::optional<std::string>("jws-of-a"));  // untouched
  }
  // The rollback leaves the connection usable.
  REQUIRE(store->put_batch({receipt("z", "c", 2000)}));
  CHECK(store->get("z", "c", 1000).has_value());
}

TEST_CASE("receipt store: an unopenable path throws naming the path", "[receipts]") {
  TempDir dir;
  const auto blocker = dir.file("file");
  { auto s = open_sqlite_store(blocker); }  // a regular file where a folder is needed
  try {
    open_sqlite_store(blocker + "/sub/r.db");
    FAIL("expected std::runtime_error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find(blocker) != std::string::npos);
  }
}

TEST_CASE("receipt service: concurrent issues share transactions", "[receipts]") {
  TempDir dir;
  StoreProbe probe;
  auto signer = Signer::load_or_create(dir.file("key.pem"), "router-receipt-1");
  ReceiptService service(std::move(signer), std::make_unique<CountingStore>(open_sqlite_store(dir.file("r.db")), probe),
                         3600);
  DoneCounter done;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const auto id = std::string("t").append(std::to_string(t)).append("-").append(std::to_string(i));
        service.issue(id, "cust-" + std::to_string(t), claims_for(id), done.callback());
      }
    });
  }
  for (auto& p : producers) p.join();
  REQUIRE(done.wait_for(kThreads * kPerThread));
  CHECK(done.ok == kThreads * kPerThread);
  CHECK(done.failed == 0);
  CHECK(service.stored_count() == kThreads * kPerThread);
  CHECK(probe.rows_put == kThreads * kPerThread);
  // Group commit: far fewer transactions than receipts. The exact figure depends on
  // scheduling (printed with -s); a tenth is a generous ceiling.
  CHECK(probe.put_batch_calls < kThreads * kPerThread / 10);
  WARN("group commit: " << kThreads * kPerThread << " issues in " << probe.put_batch_calls << " put_batch calls");
}

TEST_CASE("receipt service: issues queued behind a transaction share the next one", "[receipts]") {
  TempDir dir;
  StoreProbe probe;
  probe.close_gate();
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                         std::make_unique<CountingStore>(open_sqlite_store(dir.file("r.db")), probe), 3600);
  DoneCounter done;
  service.issue("first", "c", claims_for("first"), done.callback());
  probe.wait_until_blocked();  // the first transaction is "fsyncing"
  for (int i = 0; i < 100; ++i) {
    const auto id = "queued-" + std::to_string(i);
    service.issue(id, "c", claims_for(id), done.callback());
  }
  probe.open_gate();
  REQUIRE(done.wait_for(101));
  CHECK(done.ok == 101);
  CHECK(probe.put_batch_calls == 2);  // the 100 that piled up went in one transaction
  CHECK(service.stored_count() == 101);
}

TEST_CASE("receipt service: fetch returns the stored JWS to its customer only", "[receipts]") {
  TempDir dir;
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                         open_sqlite_store(dir.file("r.db")), 3600);
  const std::string claims = claims_for("r-1");
  std::promise<bool> issued;
  service.issue("r-1", "cust-1", claims, [&](bool ok) { issued.set_value(ok); });
  REQUIRE(issued.get_future().get());

  auto fetch = [&](const std::string& id, const std::string& customer) { return fetch_now(service, id, customer); };
  const auto jws = fetch("r-1", "cust-1");
  REQUIRE(jws.has_value());
  const auto verified = tresor::receipts::verify_jws(*jws, tresor::receipts::jwks_json(service.signer(), {}));
  INFO(verified.error);
  CHECK(verified.ok);
  CHECK(verified.kid == "router-receipt-1");
  CHECK(verified.payload == claims);
  CHECK_FALSE(fetch("r-1", "cust-2").has_value());
  CHECK_FALSE(fetch("nope", "cust-1").has_value());
}

TEST_CASE("receipt service: a receipt expires after the TTL", "[receipts]") {
  TempDir dir;
  // A negative TTL stands in for waiting: the receipt is born expired.
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                         open_sqlite_store(dir.file("r.db")), -1);
  std::promise<bool> issued;
  service.issue("r-1", "c", claims_for("r-1"), [&](bool ok) { issued.set_value(ok); });
  REQUIRE(issued.get_future().get());
  CHECK_FALSE(fetch_now(service, "r-1", "c").has_value());
}

TEST_CASE("receipt service: a failed transaction reports done(false) and the thread carries on", "[receipts]") {
  TempDir dir;
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                         open_sqlite_store(dir.file("r.db")), 3600);
  DoneCounter first;
  service.issue("dup", "c", claims_for("dup"), first.callback());
  REQUIRE(first.wait_for(1));
  REQUIRE(first.ok == 1);
  DoneCounter second;
  service.issue("dup", "c", claims_for("dup"), second.callback());  // primary key clash
  REQUIRE(second.wait_for(1));
  CHECK(second.failed == 1);
  DoneCounter third;
  service.issue("fresh", "c", claims_for("fresh"), third.callback());
  REQUIRE(third.wait_for(1));
  CHECK(third.ok == 1);
  CHECK(service.stored_count() == 2);
}

TEST_CASE("receipt service: destruction stores everything still queued", "[receipts]") {
  TempDir dir;
  const auto db = dir.file("r.db");
  DoneCounter done;
  constexpr int kIssues = 300;
  {
    StoreProbe probe;
    probe.close_gate();
    std::jthread opener;  // declared before the service so it is joined after it
    ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                           std::make_unique<CountingStore>(open_sqlite_store(db), probe), 3600);
    service.issue("r-0", "c", claims_for("r-0"), done.callback());
    probe.wait_until_blocked();  // hold the worker so the rest is still queued at destruction
    for (int i = 1; i < kIssues; ++i) {
      const auto id = "r-" + std::to_string(i);
      service.issue(id, "c", claims_for(id), done.callback());
    }
    // Release the worker from another thread once the destructor is (about to be) waiting.
    opener = std::jthread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      probe.open_gate();
    });
    // ~ReceiptService runs here with kIssues - 1 receipts queued.
  }
  CHECK(done.ok == kIssues);  // every callback ran before the destructor returned
  CHECK(open_sqlite_store(db)->count() == kIssues);
}

TEST_CASE("receipt store: an unsigned receipt gets its signature once", "[receipts]") {
  TempDir dir;
  auto store = open_sqlite_store(dir.file("r.db"));
  const int64_t now = 1'000'000;
  REQUIRE(store->put_batch({StoredReceipt{"u", "cust-1", "", now + 60, "claims-of-u", {}, {}}}));
  auto row = store->load("u", "cust-1", now);
  REQUIRE(row.has_value());
  CHECK(row->jws.empty());
  CHECK(row->claims == "claims-of-u");
  CHECK(store->store_signature("u", "first-jws") == std::optional<std::string>("first-jws"));
  // A second signer (another fetch, another replica) gets the first signature back.
  CHECK(store->store_signature("u", "second-jws") == std::optional<std::string>("first-jws"));
  CHECK(store->get("u", "cust-1", now) == std::optional<std::string>("first-jws"));
  CHECK_FALSE(store->store_signature("missing", "jws").has_value());
  CHECK_FALSE(store->load("u", "cust-2", now).has_value());
}

TEST_CASE("receipt store: a file from before lazy signing is upgraded in place", "[receipts]") {
  TempDir dir;
  const std::string path = dir.file("old.db");
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE receipts(id TEXT PRIMARY KEY, customer TEXT NOT NULL, jws TEXT NOT NULL, "
                         "expires_at INTEGER NOT NULL);"
                         "INSERT INTO receipts VALUES('old', 'cust-1', 'old-jws', 2000000);",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = open_sqlite_store(path);
  CHECK(store->get("old", "cust-1", 1'000'000) == std::optional<std::string>("old-jws"));
  REQUIRE(store->put_batch({StoredReceipt{"new", "cust-1", "", 2'000'000, "claims-of-new", {}, {}}}));
  CHECK(store->load("new", "cust-1", 1'000'000)->claims == "claims-of-new");
}

// One SQLite file holds the receipts and the accounts spend log (accounts/sqlite_spend_log.cpp),
// which moves an old file's `spend` totals into spend_ledger and drops `spend`. The receipt
// store must neither create that table (an empty one at every start) nor touch an old one
// (the totals would be lost before the spend log takes them over).
TEST_CASE("receipt store: no spend table is created, an old one is left for the spend log", "[receipts]") {
  TempDir dir;
  auto table_count = [](const std::string& path, const char* sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK);
    const int step = sqlite3_step(st);
    const int64_t n = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  };
  const std::string fresh = dir.file("fresh.db");
  {
    auto store = open_sqlite_store(fresh);
    REQUIRE(store->put_batch({receipt("a", "cust-1", 2000)}));
  }
  CHECK(table_count(fresh, "SELECT count(*) FROM sqlite_master WHERE name = 'spend'") == 0);

  const std::string old = dir.file("old.db");
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(old.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE spend(customer TEXT NOT NULL, route TEXT NOT NULL, amount REAL NOT NULL, "
                         "PRIMARY KEY(customer, route));"
                         "INSERT INTO spend VALUES('cust-1', 'eu/pm/a', 2.5), ('cust-2', 'eu/pm/b', 1.0);",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  {
    auto store = open_sqlite_store(old);
    REQUIRE(store->put_batch({receipt("a", "cust-1", 2000)}));
    CHECK(store->get("a", "cust-1", 1000) == std::optional<std::string>("jws-of-a"));
  }
  CHECK(table_count(old, "SELECT count(*) FROM spend") == 2);
  CHECK(table_count(old, "SELECT count(*) FROM spend WHERE customer = 'cust-1' AND amount = 2.5") == 1);
}

TEST_CASE("receipt store: a file that is not a database is refused at open, naming the path", "[receipts]") {
  TempDir dir;
  const auto path = dir.file("not-a-db");
  std::ofstream(path) << std::string(4096, 'x');
  try {
    open_sqlite_store(path);
    FAIL("opening a garbage file should throw");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("not a database") != std::string::npos);
  }
  // The file is left as it was: a wrong path must not destroy someone's data.
  CHECK(fs::file_size(path) == 4096);
}

TEST_CASE("receipt service: signing at first fetch or at issue gives the same verifiable receipt",
          "[receipts]") {
  const bool at_issue = GENERATE(false, true);
  INFO("sign_at_issue " << at_issue);
  TempDir dir;
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "router-receipt-1"),
                         open_sqlite_store(dir.file("r.db")), 3600, at_issue);
  const std::string claims = claims_for("r-1");
  std::promise<bool> issued;
  service.issue("r-1", "cust-1", claims, [&](bool ok) { issued.set_value(ok); });
  REQUIRE(issued.get_future().get());
  CHECK(service.counts().issued == 1);
  CHECK(service.counts().signed_ == (at_issue ? 1u : 0u));  // lazy: no signature until asked

  auto fetch = [&](const std::string& id, const std::string& customer) { return fetch_now(service, id, customer); };
  const auto first = fetch("r-1", "cust-1");
  REQUIRE(first.has_value());
  const auto verified = tresor::receipts::verify_jws(*first, tresor::receipts::jwks_json(service.signer(), {}));
  INFO(verified.error);
  CHECK(verified.ok);
  CHECK(verified.payload == claims);
  // ECDSA signatures are randomised: the same bytes again means the first one was stored.
  CHECK(fetch("r-1", "cust-1") == first);
  CHECK(service.counts().signed_ == 1);
  CHECK_FALSE(fetch("r-1", "cust-2").has_value());
  CHECK(service.counts().signed_ == 1);  // another customer's fetch signs nothing
}

TEST_CASE("receipt ids are time-ordered v7 UUIDs, request ids random v4 ones", "[receipts]") {
  using tresor::receipts::is_receipt_id;
  using tresor::receipts::new_random_uuid;
  using tresor::receipts::new_receipt_id;
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<std::string> ids;
  for (int i = 0; i < 2000; ++i) ids.push_back(new_receipt_id());
  const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  std::set<std::string> distinct(ids.begin(), ids.end());
  CHECK(distinct.size() == ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& id = ids[i];
    REQUIRE(is_receipt_id(id));
    CHECK(id[14] == '7');
    CHECK(std::string("89ab").find(id[19]) != std::string::npos);
    const long long ms = std::stoll(id.substr(0, 8) + id.substr(9, 4), nullptr, 16);
    CHECK(ms >= before);
    CHECK(ms <= after);
    // Millisecond prefixes never go backwards: inserts append to the B-tree's right edge.
    if (i > 0) CHECK(id.substr(0, 13) >= ids[i - 1].substr(0, 13));
  }
  const auto v4 = new_random_uuid();
  CHECK(is_receipt_id(v4));
  CHECK(v4[14] == '4');
  CHECK(new_random_uuid() != v4);
}

TEST_CASE("claims JSON is what boost::json would write, in spec order, for any string values", "[receipts]") {
  tresor::receipts::Claims c;
  c.id = tresor::receipts::new_receipt_id();
  c.issued_at = 1'795'000'000;
  // Explicit length: the literal holds control bytes, and \x01 must not end it early.
  static constexpr char kHostile[] = "eu/\"odd\"\\route\b\f\n\r\t\x01\x1f/é✓";
  c.requested_route = std::string(kHostile, sizeof kHostile - 1);
  c.routed_model = "eu/p/m";
  c.failover = true;
  c.endpoint = "/v1/audio/transcriptions";
  c.prompt_tokens = 12;
  c.completion_tokens = -1;
  c.audio_seconds = 61;
  c.usage_estimated = true;
  c.cost = "0.000001234";
  c.currency = "e\"ur";
  c.request_sha256 = std::string(64, 'a');
  c.response_sha256 = std::string(64, 'b');
  c.router_attestation_json = R"({"format":"tresor-dev","measurement":"x\"y"})";
  c.nonce = "n\x7f\"";
  const std::string text = tresor::receipts::claims_json(c);

  boost::json::object o;
  o["jti"] = c.id;
  o["iat"] = c.issued_at;
  o["receipt_type"] = "message";
  o["requested_route"] = c.requested_route;
  o["routed_model"] = c.routed_model;
  o["failover"] = c.failover;
  o["endpoint"] = c.endpoint;
  o["prompt_tokens"] = c.prompt_tokens;
  o["completion_tokens"] = c.completion_tokens;
  o["audio_seconds"] = *c.audio_seconds;
  o["usage_estimated"] = c.usage_estimated;
  o["cost"] = *c.cost;
  o["currency"] = c.currency;
  o["request_sha256"] = c.request_sha256;
  o["response_sha256"] = c.response_sha256;
  o["router_attestation"] = boost::json::parse(*c.router_attestation_json);
  o["nonce"] = *c.nonce;
  CHECK(text == boost::json::serialize(o));
  CHECK(boost::json::parse(text).as_object().at("requested_route").as_string() == c.requested_route);

  c.audio_seconds.reset();
  c.nonce.reset();
  c.router_attestation_json = "not an object";  // left out, as the parsing version did
  const auto plain = boost::json::parse(tresor::receipts::claims_json(c)).as_object();
  CHECK_FALSE(plain.contains("audio_seconds"));
  CHECK_FALSE(plain.contains("nonce"));
  CHECK_FALSE(plain.contains("router_attestation"));
}

TEST_CASE("claims JSON: recoveries (issue 18) come last, one object per recovery, and only when there are some",
          "[receipts][claims][stream_recovery]") {
  tresor::receipts::Claims c;
  c.id = "r1";
  c.issued_at = 1'795'000'000;
  c.requested_route = "eu/a/m";
  c.routed_model = "eu/b/m";
  c.failover = true;
  c.endpoint = "/v1/chat/completions";
  c.currency = "EUR";
  const std::string before = tresor::receipts::claims_json(c);
  CHECK(before.find("recoveries") == std::string::npos);

  tresor::receipts::Claims::Recovery first;
  first.from = "eu/a/m";
  first.to = "eu/a/m";
  first.offset = 12;
  first.mode = "replay";
  tresor::receipts::Claims::Recovery second;
  second.from = "eu/\"a\"/m";  // escaped like every string claim
  second.to = "eu/b/m";
  second.offset = 18446744073709551615ull;
  second.mode = "prefill";
  c.recoveries = {first, second};
  const std::string text = tresor::receipts::claims_json(c);
  // The member is appended to the claims without recoveries: `before` minus its '}'.
  REQUIRE(text.size() > before.size());
  CHECK(text.substr(0, before.size() - 1) == before.substr(0, before.size() - 1));
  CHECK(text.substr(before.size() - 1) ==
        R"(,"recoveries":[{"from":"eu/a/m","to":"eu/a/m","offset":12,"mode":"replay"},)"
        R"({"from":"eu/\"a\"/m","to":"eu/b/m","offset":18446744073709551615,"mode":"prefill"}]})");
  const auto parsed = boost::json::parse(text).as_object();
  CHECK(parsed.at("recoveries").as_array().size() == 2);
  CHECK(parsed.at("recoveries").as_array()[1].as_object().at("from").as_string() == "eu/\"a\"/m");

  c.recoveries = {first};
  const std::string one = tresor::receipts::claims_json(c);
  CHECK(one.substr(before.size() - 1) == R"(,"recoveries":[{"from":"eu/a/m","to":"eu/a/m","offset":12,"mode":"replay"}]})");
}
