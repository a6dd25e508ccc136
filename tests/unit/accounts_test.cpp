// accounts::Accounts on a local ledger with an in-memory SpendLog: admission (request
// windows, credit), reservation (credit, token windows), durable settlement, a Grant that
// releases itself, and the /v1/usage document. The coroutines run on a real io_context.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "accounts/accounts.h"

using namespace tresor::accounts;
namespace asio = boost::asio;
namespace config = tresor::config;

namespace {

constexpr Nanos kUnit = 1'000'000'000;

// Keeps every row it is given; while its gate is closed, append() blocks (on the accounts
// thread) after taking the rows, so a test can see whether a settlement waits for it.
class MemorySpendLog final : public SpendLog {
 public:
  bool append(const std::vector<Settlement>& batch) override {
    std::unique_lock lock(mutex_);
    rows_.insert(rows_.end(), batch.begin(), batch.end());
    changed_.notify_all();
    // Bounded: a broken test must not hang the accounts thread for ever.
    changed_.wait_for(lock, std::chrono::seconds(30), [&] { return gate_open_; });
    return true;
  }
  std::map<std::string, Balance> totals() override { return {}; }

  void close_gate() {
    std::lock_guard lock(mutex_);
    gate_open_ = false;
  }
  void open_gate() {
    std::lock_guard lock(mutex_);
    gate_open_ = true;
    changed_.notify_all();
  }
  bool wait_for_rows(size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(10), [&] { return rows_.size() >= n; });
  }
  std::vector<Settlement> rows() {
    std::lock_guard lock(mutex_);
    return rows_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Settlement> rows_;
  bool gate_open_ = true;
};

// Runs one coroutine to completion on `ioc` and returns its value.
template <typename T>
T run(asio::io_context& ioc, asio::awaitable<T> work) {
  std::optional<T> out;
  std::exception_ptr error;
  asio::co_spawn(ioc, std::move(work), [&](std::exception_ptr e, T value) {
    error = e;
    out = std::move(value);
  });
  ioc.restart();
  ioc.run();
  if (error) std::rethrow_exception(error);
  REQUIRE(out.has_value());
  return std::move(*out);
}

asio::awaitable<void> settle_then_mark(Accounts& accounts, Grant& grant, Charge charge, bool durable, bool& done) {
  co_await accounts.settle(grant, charge, durable);
  done = true;
}

std::optional<std::string> header(const HeaderList& headers, const std::string& name) {
  for (const auto& [n, v] : headers)
    if (n == name) return v;
  return std::nullopt;
}

std::string utc_day(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", &tm);
  return text;
}

// A customer "acme" (with `credit` unless nullopt), one key of acme's with `limits`, and an
// Accounts on a local ledger seeded with `persisted`, whose ledger and log stay visible.
struct World {
  explicit World(std::optional<Nanos> credit, config::KeyLimits limits = {}, std::map<std::string, Balance> persisted = {}) {
    key.sha256_hex = std::string(64, 'a');
    key.customer = "acme";
    key.limits = limits;
    cfg.auth.keys.push_back(key);
    if (credit) {
      config::CustomerConfig c;
      c.credit = static_cast<double>(*credit) / kUnit;
      c.credit_nanos = *credit;
      c.currency = "eur";
      cfg.auth.customers.emplace("acme", c);
    }
    route.id = "eu/pm/chat";
    auto store = open_local_ledger(persisted);
    ledger = store.get();
    auto memory = std::make_unique<MemorySpendLog>();
    log = memory.get();
    accounts = std::make_unique<Accounts>(std::move(store), std::move(memory));
  }

  Admission admit(bool spends = true) {
    return run(ioc, accounts->admit(cfg, key, std::chrono::system_clock::now(), spends));
  }
  std::optional<Refusal> reserve(Grant& grant, Nanos money, int64_t tokens) {
    CostBound bound;
    bound.money = money;
    bound.tokens = tokens;
    return run(ioc, accounts->reserve(grant, bound, std::chrono::seconds(600)));
  }
  Balance balance() {
    const auto b = ledger->balance("acme", std::chrono::duration_cast<std::chrono::seconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    REQUIRE(b);
    return *b;
  }

  asio::io_context ioc;
  config::Config cfg;
  config::ApiKeyConfig key;
  config::RouteConfig route;
  LedgerStore* ledger = nullptr;
  MemorySpendLog* log = nullptr;
  std::unique_ptr<Accounts> accounts;
};

config::KeyLimits limits(std::optional<uint64_t> per_minute, std::optional<uint64_t> tokens_per_minute) {
  config::KeyLimits l;
  l.per_minute = per_minute;
  l.tokens_per_minute = tokens_per_minute;
  return l;
}

}  // namespace

TEST_CASE("accounts: admit counts the request windows and announces them", "[accounts]") {
  World w(std::nullopt, limits(2, std::nullopt));
  const auto now = std::chrono::system_clock::now();
  Admission a = run(w.ioc, w.accounts->admit(w.cfg, w.key, now, true));
  CHECK_FALSE(a.refusal);
  const HeaderList& h = a.grant.headers();
  CHECK(header(h, "X-RateLimit-Limit") == "2");
  CHECK(header(h, "X-RateLimit-Remaining") == "1");
  CHECK(header(h, "x-ratelimit-limit-requests") == "2");
  CHECK(header(h, "x-ratelimit-remaining-requests") == "1");
  REQUIRE(header(h, "x-ratelimit-reset-requests"));
  CHECK(std::regex_match(*header(h, "x-ratelimit-reset-requests"), std::regex("([1-9]|[1-5][0-9]|1m0)s")));
  CHECK_FALSE(header(h, "x-ratelimit-limit-tokens"));
  a = run(w.ioc, w.accounts->admit(w.cfg, w.key, now, true));
  CHECK_FALSE(a.refusal);
  CHECK(header(a.grant.headers(), "X-RateLimit-Remaining") == "0");
  // The third in the same minute: 429.
  a = run(w.ioc, w.accounts->admit(w.cfg, w.key, now, true));
  REQUIRE(a.refusal);
  CHECK(a.refusal->kind == Refusal::Kind::rate_limited);
  CHECK(a.refusal->limit == 2);
  CHECK(a.refusal->retry_after >= 1);
  CHECK(a.refusal->retry_after <= 60);
  CHECK(header(a.grant.headers(), "X-RateLimit-Limit") == "2");
  CHECK(header(a.grant.headers(), "X-RateLimit-Remaining") == "0");
  // The next minute counts afresh.
  a = run(w.ioc, w.accounts->admit(w.cfg, w.key, now + std::chrono::seconds(60), true));
  CHECK_FALSE(a.refusal);
  CHECK(header(a.grant.headers(), "X-RateLimit-Remaining") == "1");
}

TEST_CASE("accounts: an unlimited key is admitted without headers", "[accounts]") {
  World w(std::nullopt);
  for (int i = 0; i < 3; ++i) {
    Admission a = w.admit();
    CHECK_FALSE(a.refusal);
    CHECK(a.grant.headers().empty());
    CHECK(a.grant.customer() == "acme");
  }
}

TEST_CASE("accounts: a used-up credit refuses 402 only requests that spend", "[accounts]") {
  Balance spent;
  spent.spent = 5 * kUnit;
  World w(5 * kUnit, limits(100, std::nullopt), {{"acme", spent}});
  Admission a = w.admit(true);
  REQUIRE(a.refusal);
  CHECK(a.refusal->kind == Refusal::Kind::balance_exceeded);
  a = w.admit(false);  // /v1/usage, receipts: still served
  CHECK_FALSE(a.refusal);
  CHECK(header(a.grant.headers(), "X-RateLimit-Limit") == "100");
  // One nano left: admitted.
  Balance almost;
  almost.spent = 5 * kUnit - 1;
  World v(5 * kUnit, {}, {{"acme", almost}});
  CHECK_FALSE(v.admit(true).refusal);
}

TEST_CASE("accounts: reserve refuses 402 when the bound exceeds the remaining credit", "[accounts]") {
  Balance persisted;
  persisted.spent = 6 * kUnit;
  World w(10 * kUnit, {}, {{"acme", persisted}});
  Admission a = w.admit();
  REQUIRE_FALSE(a.refusal);
  auto refusal = w.reserve(a.grant, 4 * kUnit + 1, 100);
  REQUIRE(refusal);
  CHECK(refusal->kind == Refusal::Kind::balance_exceeded);
  CHECK_FALSE(a.grant.id().empty());
  CHECK(w.balance().reserved == 0);
  Admission b = w.admit();
  CHECK_FALSE(w.reserve(b.grant, 4 * kUnit, 100));
  CHECK(w.balance().reserved == 4 * kUnit);
  // Now nothing is left for a third.
  Admission c = w.admit();
  REQUIRE(c.refusal);
  CHECK(c.refusal->kind == Refusal::Kind::balance_exceeded);
}

TEST_CASE("accounts: reserve refuses 429 over tokens_per_minute with token headers", "[accounts]") {
  World w(std::nullopt, limits(std::nullopt, 100));
  Admission a = w.admit();
  REQUIRE_FALSE(a.refusal);
  auto refusal = w.reserve(a.grant, 0, 101);
  REQUIRE(refusal);
  CHECK(refusal->kind == Refusal::Kind::tokens_limited);
  CHECK(refusal->limit == 100);
  CHECK(refusal->requested == 101);
  CHECK(refusal->retry_after >= 1);
  CHECK(refusal->retry_after <= 60);
  CHECK(header(a.grant.headers(), "x-ratelimit-limit-tokens") == "100");
  CHECK(header(a.grant.headers(), "x-ratelimit-remaining-tokens") == "100");
  REQUIRE(header(a.grant.headers(), "x-ratelimit-reset-tokens"));
  CHECK(std::regex_match(*header(a.grant.headers(), "x-ratelimit-reset-tokens"), std::regex("([1-9]|[1-5][0-9]|1m0)s")));
  Admission b = w.admit();
  CHECK_FALSE(w.reserve(b.grant, 0, 60));
  CHECK(header(b.grant.headers(), "x-ratelimit-limit-tokens") == "100");
  CHECK(header(b.grant.headers(), "x-ratelimit-remaining-tokens") == "40");
}

TEST_CASE("accounts: a durable settle resumes only once the spend log has the row", "[accounts]") {
  World w(10 * kUnit, limits(std::nullopt, 1000));
  Admission a = w.admit();
  REQUIRE_FALSE(w.reserve(a.grant, kUnit, 500));
  REQUIRE(w.balance().reserved == kUnit);
  const std::string id = a.grant.id();
  Charge charge;
  charge.route = &w.route;
  charge.cost = 6000;
  charge.estimated = true;
  charge.prompt_tokens = 9;
  charge.completion_tokens = 7;
  const auto before = std::chrono::system_clock::now();
  w.log->close_gate();
  bool done = false;
  asio::co_spawn(w.ioc, settle_then_mark(*w.accounts, a.grant, charge, true, done), asio::detached);
  w.ioc.restart();
  w.ioc.poll();
  REQUIRE(w.log->wait_for_rows(1));
  w.ioc.poll();  // whatever is ready runs: the settlement must still be waiting
  CHECK_FALSE(done);
  w.log->open_gate();
  w.ioc.run();
  CHECK(done);
  const auto after = std::chrono::system_clock::now();
  const auto rows = w.log->rows();
  REQUIRE(rows.size() == 1);
  const Settlement& row = rows[0];
  CHECK(row.request_id == id);
  CHECK(row.customer == "acme");
  CHECK(row.route == "eu/pm/chat");
  CHECK(row.cost == 6000);
  CHECK(row.estimated);
  CHECK(row.prompt_tokens == 9);
  CHECK(row.completion_tokens == 7);
  CHECK(std::regex_match(row.day, std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}")));
  CHECK((row.day == utc_day(before) || row.day == utc_day(after)));
  const Balance b = w.balance();
  CHECK(b.reserved == 0);
  CHECK(b.spent == 6000);
  CHECK(b.estimated == 6000);
  CHECK(b.by_route.at("eu/pm/chat").amount == 6000);
  CHECK(b.by_day.at(row.day).estimated == 6000);
  const auto usage = run(w.ioc, w.accounts->usage_json(w.cfg, "acme", std::chrono::system_clock::now()));
  REQUIRE(usage);
  CHECK(usage->find(R"("spent":0.000006,"estimated":0.000006,"reserved":0.00,"remaining":9.999994)") !=
        std::string::npos);
  CHECK(usage->find(R"("eu/pm/chat":{"spent":0.000006,"estimated":0.000006})") != std::string::npos);
  // Settled once: a second settle of the same grant changes nothing.
  bool again = false;
  asio::co_spawn(w.ioc, settle_then_mark(*w.accounts, a.grant, charge, true, again), asio::detached);
  w.ioc.restart();
  w.ioc.run();
  CHECK(again);
  CHECK(w.balance().spent == 6000);
  CHECK(w.log->rows().size() == 1);
}

TEST_CASE("accounts: a Grant dropped without settle releases its hold", "[accounts]") {
  World w(10 * kUnit, limits(std::nullopt, 1000));
  {
    Admission a = w.admit();
    REQUIRE_FALSE(w.reserve(a.grant, 3 * kUnit, 400));
    CHECK(w.balance().reserved == 3 * kUnit);
  }
  CHECK(w.balance().reserved == 0);
  CHECK(w.balance().spent == 0);
  // The tokens came back too: 1000 fit again.
  Admission b = w.admit();
  CHECK_FALSE(w.reserve(b.grant, 0, 1000));
  w.accounts->release(b.grant);
  // Moved: only the last owner releases, once.
  Grant kept;
  {
    Admission c = w.admit();
    REQUIRE_FALSE(w.reserve(c.grant, 2 * kUnit, 10));
    kept = std::move(c.grant);
  }
  CHECK(w.balance().reserved == 2 * kUnit);
  kept = Grant();
  CHECK(w.balance().reserved == 0);
  CHECK(w.log->rows().empty());
}

TEST_CASE("accounts: usage_document renders plain decimals and marks estimates", "[accounts]") {
  config::Config cfg;
  config::CustomerConfig acme;
  acme.credit = 100;
  acme.credit_nanos = 100 * kUnit;
  acme.currency = "eur";
  cfg.auth.customers.emplace("acme", acme);
  Balance b;
  b.spent = 6000;
  b.estimated = 2000;
  b.by_route["eu/pm/chat"] = SpendTotal{6000, 2000};
  b.by_day["2027-01-15"] = SpendTotal{6000, 2000};
  CHECK(usage_document(cfg, "acme", b) ==
        R"({"object":"usage","customer":"acme","currency":"eur","credit":100.00,"spent":0.000006,)"
        R"("estimated":0.000002,"reserved":0.00,"remaining":99.999994,)"
        R"("by_route":{"eu/pm/chat":{"spent":0.000006,"estimated":0.000002}},)"
        R"("by_day":{"2027-01-15":{"spent":0.000006,"estimated":0.000002}}})");
  // Unlimited customer: no credit, nothing remaining to speak of.
  Balance big;
  big.spent = 9'000'000'000 * kUnit + 1;
  big.reserved = 1;
  const std::string unlimited = usage_document(cfg, "globex", big);
  CHECK(unlimited ==
        R"({"object":"usage","customer":"globex","credit":null,"spent":9000000000.000000001,"estimated":0.00,)"
        R"("reserved":0.000000001,"remaining":null,"by_route":{},"by_day":{}})");
  // Never an exponent, whatever the amounts.
  CHECK_FALSE(std::regex_search(unlimited, std::regex("[0-9][eE]")));
  // What is in flight counts against what remains.
  Balance in_flight;
  in_flight.spent = 10 * kUnit;
  in_flight.reserved = 25 * kUnit / 100;
  CHECK(usage_document(cfg, "acme", in_flight).find(R"("spent":10.00,"estimated":0.00,"reserved":0.25,"remaining":89.75,)") !=
        std::string::npos);
  // Overspent (a cut stream may cost more than its hold): remaining goes negative, plainly.
  Balance over;
  over.spent = 100 * kUnit + kUnit / 2;
  CHECK(usage_document(cfg, "acme", over).find(R"("remaining":-0.50)") != std::string::npos);
}
