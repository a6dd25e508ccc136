// The receipt service when its store throws (a broken disk, a lost connection the store
// reports by exception) or a caller's callback throws: every caller still gets an answer
// (failed / not found / unavailable), the failure is counted, and the service thread lives on.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "receipts/receipt_service.h"
#include "receipts/signer.h"
#include "receipts/store.h"

using tresor::receipts::FetchResult;
using tresor::receipts::open_sqlite_store;
using tresor::receipts::ReceiptService;
using tresor::receipts::ReceiptStore;
using tresor::receipts::Signer;
using tresor::receipts::StoredReceipt;

namespace fs = std::filesystem;

namespace {

class TempDir : public tresor::test::TempDir {
 public:
  TempDir() : tresor::test::TempDir("tresor-service-") {}
};


// Every operation throws, as a store whose backend is gone might.
class ThrowingStore final : public ReceiptStore {
 public:
  bool put_batch(const std::vector<StoredReceipt>&) override { throw std::runtime_error("disk on fire"); }
  std::optional<StoredReceipt> load(const std::string&, const std::string&, int64_t) override {
    throw std::runtime_error("disk on fire");
  }
  std::optional<std::string> store_signature(const std::string&, const std::string&) override {
    throw std::runtime_error("disk on fire");
  }
  size_t purge_expired(int64_t) override { throw std::runtime_error("disk on fire"); }
  size_t count() override { throw std::runtime_error("disk on fire"); }
  bool reachable() override { throw std::runtime_error("disk on fire"); }
};

const std::string kClaims = R"({"jti":"r1","receipt_type":"message"})";

bool issue_and_wait(ReceiptService& service, const std::string& id) {
  std::promise<bool> done;
  auto result = done.get_future();
  service.issue(id, "acme", kClaims, [&done](bool ok) { done.set_value(ok); });
  return result.get();
}

FetchResult fetch_and_wait(ReceiptService& service, const std::string& id) {
  std::promise<FetchResult> done;
  auto result = done.get_future();
  service.fetch(id, "acme", [&done](FetchResult r) { done.set_value(std::move(r)); });
  return result.get();
}

}  // namespace

TEST_CASE("receipt service: a throwing store fails each call cleanly and the service carries on", "[receipts]") {
  TempDir dir;
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "k1"), std::make_unique<ThrowingStore>(), 3600);
  CHECK_FALSE(issue_and_wait(service, "r1"));
  CHECK(service.counts().failed == 1);
  CHECK(service.counts().stored == 0);
  // Answered, not left hanging, and as "the store cannot tell" (503), not as not found.
  const FetchResult fetched = fetch_and_wait(service, "r1");
  CHECK_FALSE(fetched.jws);
  CHECK(fetched.store_unavailable);
  CHECK(service.stored_count() == 0);
  // /readyz: a probe that throws counts as unreachable.
  CHECK(service.store_reachable());
  service.probe_store();
  CHECK(service.stored_count() == 0);  // a round trip through the service thread: the probe ran before it
  CHECK_FALSE(service.store_reachable());
  // Still serving: the next issue is answered too.
  CHECK_FALSE(issue_and_wait(service, "r2"));
  CHECK(service.counts().failed == 2);
}

TEST_CASE("receipt service: a callback that throws does not stop later receipts", "[receipts]") {
  TempDir dir;
  ReceiptService service(Signer::load_or_create(dir.file("key.pem"), "k1"), open_sqlite_store(dir.file("r.db")),
                         3600);
  service.issue("r1", "acme", kClaims, [](bool) { throw std::runtime_error("caller bug"); });
  service.issue("r2", "acme", kClaims, [](bool) { throw 42; });  // not even an exception type
  CHECK(issue_and_wait(service, "r3"));
  CHECK(service.stored_count() == 3);
  const auto jws = fetch_and_wait(service, "r1").jws;
  REQUIRE(jws);
  CHECK(std::count(jws->begin(), jws->end(), '.') == 2);  // a compact JWS
}
