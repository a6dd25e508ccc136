// Signing key fingerprints in the shared store (receipts/key_registry.h) against a real
// redis-server (tests/unit/redis_server.h): RFC 7638 thumbprints, publish / same key again
// / another key under the same kid, TTLs, and the publisher that starts while Redis is down.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "receipts/key_registry.h"
#include "receipts/signer.h"
#include "tests/unit/redis_server.h"
#include "tests/unit/temp_dir.h"

using tresor::receipts::jwk_thumbprint;
using tresor::receipts::key_fingerprints;
using tresor::receipts::KeyFingerprint;
using tresor::receipts::KeyPublisher;
using tresor::receipts::kKeyRecordTtl;
using tresor::receipts::publish_key_fingerprints;
using tresor::receipts::PublishResult;
using tresor::storage::RedisConnection;
using tresor::test::RedisServer;
using tresor::test::TempDir;
using Reply = tresor::test::Reply;
using Status = PublishResult::Status;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

KeyFingerprint fp(const std::string& kid, const std::string& thumbprint) {
  return KeyFingerprint{kid, thumbprint, "/keys/" + kid + ".pem"};
}

std::string field(const RedisServer& redis, const std::string& key, const std::string& name) {
  Reply r = redis.command({"HGET", key, name});
  REQUIRE(r);
  return r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : std::string();
}

long long ttl(const RedisServer& redis, const std::string& key) {
  Reply r = redis.command({"TTL", key});
  REQUIRE(r);
  REQUIRE(r->type == REDIS_REPLY_INTEGER);
  return r->integer;
}

// Every key in the database has an expiry (TTL -1 means none, -2 gone).
void require_every_key_expires(const RedisServer& redis) {
  Reply keys = redis.command({"KEYS", "*"});
  REQUIRE(keys);
  REQUIRE(keys->type == REDIS_REPLY_ARRAY);
  for (size_t i = 0; i < keys->elements; ++i) {
    const std::string k(keys->element[i]->str, keys->element[i]->len);
    INFO(k);
    CHECK(ttl(redis, k) > 0);
  }
}

// The results a KeyPublisher's thread reports, waited on with a bound.
struct Reports {
  std::mutex m;
  std::condition_variable cv;
  std::vector<PublishResult> seen;

  KeyPublisher::Listener listener() {
    return [this](const PublishResult& r) {
      {
        std::lock_guard lock(m);
        seen.push_back(r);
      }
      cv.notify_all();
    };
  }
  // Waits (10 s at most) for a report with `status`; returns it.
  PublishResult wait_for(Status status) {
    std::unique_lock lock(m);
    const PublishResult* found = nullptr;
    const bool ok = cv.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& r : seen)
        if (r.status == status) found = &r;
      return found != nullptr;
    });
    REQUIRE(ok);
    return *found;
  }
};

KeyPublisher::Timing fast_timing() {
  KeyPublisher::Timing t;
  t.first_retry = std::chrono::milliseconds(20);
  t.max_retry = std::chrono::milliseconds(100);
  t.refresh = std::chrono::hours(1);
  t.conflict_recheck = std::chrono::milliseconds(50);
  return t;
}

}  // namespace

TEST_CASE("key registry: RFC 7638 thumbprint of an EC JWK", "[key_registry]") {
  // The P-256 key of RFC 7515 appendix A.3, members in another order and with kid/use/alg,
  // which the thumbprint leaves out; the expected value was computed independently
  // (Python: sha256 of the canonical {"crv","kty","x","y"} JSON, base64url).
  const std::string jwk =
      R"({"kid":"k","y":"x_FEzRjmX9sp8fN4O6M7Q_oQ5ZHqKc9Cge9vFxHNxpQ","use":"sig","kty":"EC",)"
      R"("x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","crv":"P-256","alg":"ES256"})";
  CHECK(jwk_thumbprint(jwk) == "PDBfKtxINXLNlY1W5zbsKGYvs7Re1yitq8osRGKUnwk");
  CHECK_THROWS_AS(jwk_thumbprint(R"({"kty":"EC","crv":"P-256","x":"AA"})"), std::runtime_error);
}

TEST_CASE("key registry: every key of the JWKS, active and retired, with its source", "[key_registry]") {
  TempDir dir;
  auto active = tresor::receipts::Signer::load_or_create(dir.file("active.pem"), "k-2");
  auto old = tresor::receipts::Signer::load_or_create(dir.file("old.pem"), "k-1");
  tresor::config::ReceiptsConfig cfg;
  cfg.kid = "k-2";
  cfg.signing_key_file = dir.file("active.pem");
  cfg.retired_keys = {{"k-1", dir.file("old.pem")}};
  const auto keys = key_fingerprints(tresor::receipts::jwks_json(*active, cfg.retired_keys), cfg);
  REQUIRE(keys.size() == 2);
  CHECK(keys[0].kid == "k-2");
  CHECK(keys[0].thumbprint == jwk_thumbprint(active->public_jwk()));
  CHECK(keys[0].source == dir.file("active.pem"));
  CHECK(keys[1].kid == "k-1");
  CHECK(keys[1].thumbprint == jwk_thumbprint(old->public_jwk()));
  CHECK(contains(keys[1].source, dir.file("old.pem")));
  CHECK(keys[0].thumbprint != keys[1].thumbprint);
  CHECK(keys[0].thumbprint.size() == 43);  // 32 bytes, base64url without padding
}

TEST_CASE("key registry: publish records each kid with a TTL; the same key again is ok", "[redis][key_registry]") {
  RedisServer redis;
  RedisConnection a("replica A", redis.url());
  const std::vector<KeyFingerprint> keys{fp("k-2", "THUMB-2"), fp("k-1", "THUMB-1")};

  const auto first = publish_key_fingerprints(a, keys, "host-a (pid 1)");
  CHECK(first.status == Status::ok);
  CHECK(field(redis, "tresor:keys:k-2", "thumbprint") == "THUMB-2");
  CHECK(field(redis, "tresor:keys:k-1", "thumbprint") == "THUMB-1");
  CHECK(field(redis, "tresor:keys:k-1", "replica") == "host-a (pid 1)");
  CHECK_FALSE(field(redis, "tresor:keys:k-1", "published_at").empty());
  CHECK(ttl(redis, "tresor:keys:k-2") > kKeyRecordTtl.count() - 60);
  CHECK(ttl(redis, "tresor:keys:k-2") <= kKeyRecordTtl.count());
  require_every_key_expires(redis);

  // Another replica with the same key: ok, the TTL is refreshed and it is the last publisher.
  REQUIRE(redis.command({"EXPIRE", "tresor:keys:k-2", "100"}));
  RedisConnection b("replica B", redis.url());
  const auto second = publish_key_fingerprints(b, {fp("k-2", "THUMB-2")}, "host-b (pid 2)");
  CHECK(second.status == Status::ok);
  CHECK(second.message.empty());
  CHECK(ttl(redis, "tresor:keys:k-2") > kKeyRecordTtl.count() - 60);
  CHECK(field(redis, "tresor:keys:k-2", "replica") == "host-b (pid 2)");
  // And the first replica again (a restart, a retry after a lost reply): still ok.
  CHECK(publish_key_fingerprints(a, keys, "host-a (pid 1)").status == Status::ok);
  require_every_key_expires(redis);
}

TEST_CASE("key registry: another key under a recorded kid is a conflict naming both, writing nothing",
          "[redis][key_registry]") {
  RedisServer redis;
  RedisConnection a("replica A", redis.url());
  REQUIRE(publish_key_fingerprints(a, {fp("k-1", "THUMB-A")}, "host-a (pid 1)").status == Status::ok);

  RedisConnection b("replica B", redis.url());
  // k-new is fine on its own, k-1 conflicts: neither is written.
  const auto r = publish_key_fingerprints(b, {fp("k-new", "THUMB-N"), fp("k-1", "THUMB-B")}, "host-b (pid 2)");
  REQUIRE(r.status == Status::conflict);
  CHECK(contains(r.message, "\"k-1\""));
  CHECK(contains(r.message, "THUMB-A"));
  CHECK(contains(r.message, "THUMB-B"));
  CHECK(contains(r.message, "host-a (pid 1)"));  // the other replica
  CHECK(contains(r.message, "host-b (pid 2)"));  // this one
  CHECK(contains(r.message, "/keys/k-1.pem"));   // this one's key file
  CHECK(contains(r.message, "tresor:keys:k-1"));  // the way out
  CHECK_FALSE(contains(r.message, "THUMB-N"));
  CHECK(field(redis, "tresor:keys:k-1", "thumbprint") == "THUMB-A");
  CHECK(field(redis, "tresor:keys:k-1", "replica") == "host-a (pid 1)");
  Reply exists = redis.command({"EXISTS", "tresor:keys:k-new"});
  REQUIRE(exists);
  CHECK(exists->integer == 0);
  require_every_key_expires(redis);
}

TEST_CASE("key registry: a store that refuses the script is not a conflict", "[redis][key_registry]") {
  RedisServer redis;
  REQUIRE(redis.command({"SET", "tresor:keys:k-1", "not a hash"}));
  RedisConnection a("replica A", redis.url());
  const auto r = publish_key_fingerprints(a, {fp("k-1", "THUMB-A")}, "host-a (pid 1)");
  CHECK(r.status == Status::unreachable);
  CHECK(contains(r.message, "WRONGTYPE"));
}

TEST_CASE("key publisher: a conflict at startup throws the message", "[redis][key_registry]") {
  RedisServer redis;
  RedisConnection other("replica A", redis.url());
  REQUIRE(publish_key_fingerprints(other, {fp("k-1", "THUMB-A")}, "host-a (pid 1)").status == Status::ok);
  const std::string url = redis.url();
  try {
    KeyPublisher p({fp("k-1", "THUMB-B")}, "host-b (pid 2)", kKeyRecordTtl,
                   [url] { return std::make_unique<RedisConnection>("replica B", url); });
    FAIL("no conflict reported");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(contains(what, "THUMB-A"));
    CHECK(contains(what, "THUMB-B"));
    CHECK(contains(what, "host-a (pid 1)"));
  }
}

TEST_CASE("key publisher: started while Redis is down, it publishes once Redis is up", "[redis][key_registry]") {
  RedisServer redis;
  redis.stop();
  const std::string url = redis.url();
  Reports reports;
  KeyPublisher p({fp("k-1", "THUMB-A")}, "host-a (pid 1)", kKeyRecordTtl,
                 [url] { return std::make_unique<RedisConnection>("replica A", url); }, reports.listener(),
                 fast_timing());
  CHECK_FALSE(p.published());
  redis.start();  // same port
  reports.wait_for(Status::ok);
  CHECK(p.published());
  CHECK_FALSE(p.key_conflict());
  CHECK(field(redis, "tresor:keys:k-1", "thumbprint") == "THUMB-A");
  require_every_key_expires(redis);
}

TEST_CASE("key publisher: a conflict found after startup sets key_conflict", "[redis][key_registry]") {
  RedisServer redis;
  const std::string url = redis.url();
  std::atomic<bool> reachable{false};
  Reports reports;
  KeyPublisher p({fp("k-1", "THUMB-B")}, "host-b (pid 2)", kKeyRecordTtl,
                 [&reachable, url] {
                   if (!reachable) throw std::runtime_error("connect refused (test)");
                   return std::make_unique<RedisConnection>("replica B", url);
                 },
                 reports.listener(), fast_timing());
  CHECK_FALSE(p.key_conflict());
  // Meanwhile another replica recorded its own key under k-1.
  RedisConnection other("replica A", url);
  REQUIRE(publish_key_fingerprints(other, {fp("k-1", "THUMB-A")}, "host-a (pid 1)").status == Status::ok);
  reachable = true;
  const auto r = reports.wait_for(Status::conflict);
  CHECK(contains(r.message, "THUMB-A"));
  CHECK(p.key_conflict());
  CHECK_FALSE(p.published());
  CHECK(field(redis, "tresor:keys:k-1", "thumbprint") == "THUMB-A");
}
