// The Redis receipt store against a real redis-server: each test case starts its own
// server on a free loopback port (no persistence) and kills it when it ends.
#include <catch2/catch.hpp>

#include <hiredis/hiredis.h>

#include <chrono>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "receipts/store.h"
#include "storage/store_breaker.h"
#include "tests/unit/redis_server.h"

using tresor::receipts::open_redis_store;
using tresor::receipts::ReceiptStore;
using tresor::receipts::StoredReceipt;
using tresor::test::free_port;
using tresor::test::RedisServer;
using Reply = tresor::test::Reply;

namespace {

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

StoredReceipt receipt(const std::string& id, const std::string& customer, int64_t expires_at) {
  return StoredReceipt{id, customer, "jws-of-" + id, expires_at, "claims-of-" + id, {}, {}};
}

}  // namespace

TEST_CASE("redis store: put and get round trip, scoped to the customer", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  const int64_t now = unix_now();
  const int64_t exp = now + 3600;

  CHECK(store->count() == 0);
  REQUIRE(store->put_batch({receipt("r1", "acme", exp), receipt("r2", "acme", exp), receipt("r3", "globex", exp)}));
  CHECK(store->put_batch({}));

  CHECK(store->get("r1", "acme", now) == std::optional<std::string>("jws-of-r1"));
  CHECK(store->get("r3", "globex", now) == std::optional<std::string>("jws-of-r3"));
  // Another customer's receipt looks exactly like a missing one.
  CHECK_FALSE(store->get("r1", "globex", now).has_value());
  CHECK_FALSE(store->get("r3", "acme", now).has_value());
  CHECK_FALSE(store->get("nope", "acme", now).has_value());
  // The stored expiry is checked too, not only Redis's own.
  CHECK_FALSE(store->get("r1", "acme", exp).has_value());

  CHECK(store->count() == 3);
  CHECK(store->purge_expired(now + 7200) == 0);  // Redis expires keys itself

  // The key carries Redis's own expiry.
  Reply ttl = redis.command({"TTL", "tresor:receipt:r1"});
  REQUIRE(ttl);
  CHECK(ttl->integer > 3500);
}

TEST_CASE("redis store: count scans past one SCAN page", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  const int64_t exp = unix_now() + 3600;
  std::vector<StoredReceipt> batch;
  for (int i = 0; i < 2500; ++i) batch.push_back(receipt("id-" + std::to_string(i), "acme", exp));
  REQUIRE(store->put_batch(batch));
  redis.command({"SET", "unrelated", "x"});
  CHECK(store->count() == 2500);
}

TEST_CASE("redis store: URL forms and database selection", "[redis]") {
  RedisServer redis;
  const int64_t now = unix_now();
  auto db5 = open_redis_store(redis.url("/5"));
  auto db0 = open_redis_store(redis.url(""));  // no /DB: database 0
  REQUIRE(db5->put_batch({receipt("only-in-5", "acme", now + 60)}));
  CHECK(db5->get("only-in-5", "acme", now).has_value());
  CHECK_FALSE(db0->get("only-in-5", "acme", now).has_value());
  CHECK(db0->count() == 0);
  Reply in5 = redis.command({"EXISTS", "tresor:receipt:only-in-5"}, 5);
  REQUIRE(in5);
  CHECK(in5->integer == 1);
}

TEST_CASE("redis store: bad URLs throw; an unreachable server opens and is reported unreachable", "[redis]") {
  for (const std::string bad : {"sqlite:x.db", "redis://", "redis://host:notaport/0", "redis://host:70000",
                                "redis://host:6379/x", "redis://user@host:6379/0"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(open_redis_store(bad), std::runtime_error);
  }
  // Nothing listens: opening does not connect (a replica starts while Redis is down), and
  // every operation fails as unreachable.
  const std::string url = "redis://127.0.0.1:" + std::to_string(free_port()) + "/0";
  auto store = open_redis_store(url);
  CHECK_FALSE(store->reachable());
  CHECK_THROWS_AS(store->load("x", "acme", unix_now()), tresor::receipts::StoreUnavailable);
}

TEST_CASE("redis store: Redis expires receipts itself", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  const int64_t t0 = unix_now();
  REQUIRE(store->put_batch({receipt("short", "acme", t0 + 1), receipt("long", "acme", t0 + 3600)}));
  REQUIRE(store->get("short", "acme", t0).has_value());

  // Asking with `now` = t0 keeps the store's own expiry check out of it: only Redis
  // deleting the key can make it disappear.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (store->get("short", "acme", t0).has_value() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(store->get("short", "acme", t0).has_value());
  CHECK(store->count() == 1);
  CHECK(store->get("long", "acme", t0).has_value());
}

TEST_CASE("redis store: a batch is all or nothing", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  const int64_t now = unix_now();
  const int64_t exp = now + 3600;

  SECTION("the same id twice in one batch") {
    CHECK_FALSE(store->put_batch({receipt("a", "acme", exp), receipt("b", "acme", exp), receipt("a", "acme", exp)}));
    CHECK(store->count() == 0);
    CHECK_FALSE(store->get("b", "acme", now).has_value());
  }

  SECTION("an id that is already stored") {
    REQUIRE(store->put_batch({receipt("a", "acme", exp)}));
    StoredReceipt clash{"a", "globex", "other-jws", exp, "other-claims", {}, {}};
    CHECK_FALSE(store->put_batch({receipt("b", "acme", exp), clash, receipt("c", "acme", exp)}));
    CHECK(store->count() == 1);
    CHECK_FALSE(store->get("b", "acme", now).has_value());
    CHECK_FALSE(store->get("c", "acme", now).has_value());
    CHECK(store->get("a", "acme", now) == std::optional<std::string>("jws-of-a"));  // untouched
    // The store is still usable after a refused batch (no WATCH left behind).
    CHECK(store->put_batch({receipt("b", "acme", exp)}));
    CHECK(store->count() == 2);
  }
}

TEST_CASE("redis store: two replicas on one Redis see each other's writes", "[redis]") {
  RedisServer redis;
  auto a = open_redis_store(redis.url());
  auto b = open_redis_store(redis.url());
  const int64_t now = unix_now();
  REQUIRE(a->put_batch({receipt("from-a", "acme", now + 60)}));
  REQUIRE(b->put_batch({receipt("from-b", "acme", now + 60)}));
  CHECK(b->get("from-a", "acme", now) == std::optional<std::string>("jws-of-from-a"));
  CHECK(a->get("from-b", "acme", now) == std::optional<std::string>("jws-of-from-b"));
  CHECK(a->count() == 2);
  // Ids are global: b cannot store an id a already holds.
  CHECK_FALSE(b->put_batch({receipt("from-a", "globex", now + 60)}));
}

TEST_CASE("redis store: reconnects after the connection drops or Redis restarts", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url("/2"));
  const int64_t now = unix_now();
  // "lazy" is stored unsigned (signing: on_fetch), so its signature is a write of its own.
  REQUIRE(store->put_batch(
      {receipt("before", "acme", now + 60), StoredReceipt{"lazy", "acme", "", now + 60, "claims-of-lazy", {}, {}}}));

  auto kill_clients = [&] {
    Reply killed = redis.command({"CLIENT", "KILL", "TYPE", "normal"});  // SKIPME: not the admin link
    REQUIRE(killed);
    REQUIRE(killed->type == REDIS_REPLY_INTEGER);
    CHECK(killed->integer == 1);
  };

  kill_clients();
  CHECK(store->get("before", "acme", now) == std::optional<std::string>("jws-of-before"));
  kill_clients();
  CHECK(store->put_batch({receipt("after-kill", "acme", now + 60)}));
  kill_clients();
  CHECK(store->store_signature("lazy", "jws-of-lazy") == std::optional<std::string>("jws-of-lazy"));
  CHECK(store->get("lazy", "acme", now) == std::optional<std::string>("jws-of-lazy"));
  kill_clients();
  CHECK(store->count() == 3);

  // What the server runs beside a shared store: a prober that closes the store's breaker
  // once Redis answers again (the failures below open it).
  auto pinger = open_redis_store(redis.url("/2"));
  tresor::config::StoreConfig cfg;
  cfg.url = redis.url("/2");
  tresor::storage::StoreProber prober(tresor::storage::breaker_for(cfg), [&] { return pinger->reachable(); });
  auto wait_reachable = [&] {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!store->reachable() && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };

  // Redis down: operations fail cleanly; once it is back (same port, empty: no
  // persistence here), the next operation reconnects, SELECTs db 2 again and works.
  redis.stop();
  CHECK_FALSE(store->put_batch({receipt("while-down", "acme", now + 60)}));
  // A lookup cannot tell "missing" from "unreachable" by its value: it throws (→ 503).
  CHECK_THROWS_AS(store->get("before", "acme", now), tresor::receipts::StoreUnavailable);
  CHECK_FALSE(store->store_signature("lazy", "other-jws").has_value());
  CHECK(store->count() == 0);
  CHECK_FALSE(store->reachable());
  redis.start();
  wait_reachable();
  CHECK(store->put_batch({receipt("after-restart", "acme", now + 60)}));
  CHECK(store->get("after-restart", "acme", now) == std::optional<std::string>("jws-of-after-restart"));
  Reply in2 = redis.command({"EXISTS", "tresor:receipt:after-restart"}, 2);
  REQUIRE(in2);
  CHECK(in2->integer == 1);

  // Restart under an idle, still-open connection: the first operation notices and retries.
  redis.stop();
  redis.start();
  CHECK(store->put_batch({receipt("after-idle-restart", "acme", now + 60)}));
  CHECK(store->get("after-idle-restart", "acme", now) == std::optional<std::string>("jws-of-after-idle-restart"));
  CHECK(store->count() == 1);  // the restarted Redis is empty (no persistence here)
}

// Hidden (slow, ~2 s): run with "[redis-slow]". A hung Redis costs bounded time per
// operation (the default 1 s command timeout, then a reconnect bounded by the 1 s connect
// timeout) instead of blocking the service thread; the lookup then says the store could
// not answer.
TEST_CASE("redis store: a hung Redis times out", "[.][redis-slow]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  const int64_t now = unix_now();
  REQUIRE(store->put_batch({receipt("x", "acme", now + 60)}));
  redis.pause();
  const auto t0 = std::chrono::steady_clock::now();
  // Unreachable is not "missing": the fetch answers 503, not 404.
  CHECK_THROWS_AS(store->get("x", "acme", now), tresor::receipts::StoreUnavailable);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < std::chrono::seconds(4));
  redis.resume();
  CHECK(store->get("x", "acme", now) == std::optional<std::string>("jws-of-x"));
}

TEST_CASE("redis store: an unsigned receipt gets its signature once, and never outlives its key", "[redis]") {
  RedisServer redis;
  auto store = open_redis_store(redis.url());
  auto other_replica = open_redis_store(redis.url());
  const int64_t now = unix_now();
  REQUIRE(store->put_batch({StoredReceipt{"u", "acme", "", now + 3600, "claims-of-u", {}, {}}}));
  auto row = other_replica->load("u", "acme", now);
  REQUIRE(row.has_value());
  CHECK(row->jws.empty());
  CHECK(row->claims == "claims-of-u");
  CHECK_FALSE(other_replica->load("u", "globex", now).has_value());
  CHECK(other_replica->store_signature("u", "replica-b-jws") == std::optional<std::string>("replica-b-jws"));
  CHECK(store->store_signature("u", "replica-a-jws") == std::optional<std::string>("replica-b-jws"));
  CHECK(store->get("u", "acme", now) == std::optional<std::string>("replica-b-jws"));
  // Signing a receipt that is gone (expired, never stored) must not create a key.
  CHECK_FALSE(store->store_signature("gone", "jws").has_value());
  Reply exists = redis.command({"EXISTS", "tresor:receipt:gone"});
  REQUIRE(exists);
  CHECK(exists->integer == 0);
}
