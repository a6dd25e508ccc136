// The local ledger (accounts/local_ledger.cpp, one replica): counting, holds, settlement
// and release add up, expired holds come back, persisted totals seed the balance, and
// many threads reserving at once never spend more than the credit.
#include <catch2/catch.hpp>

#include <atomic>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "accounts/ledger.h"

using namespace tresor::accounts;

namespace {

constexpr Nanos kUnit = 1'000'000'000;
constexpr int64_t kT0 = 1'800'000'020;  // a fixed "now" (20 s into a minute): the ledger takes the caller's clock

WindowDraw window(const std::string& counter, int64_t limit, int64_t amount, int64_t ttl = 120) {
  return WindowDraw{counter, limit, amount, ttl};
}

CountRequest count_of(std::optional<Nanos> credit, std::vector<WindowDraw> windows, int64_t now = kT0) {
  return CountRequest{"acme", credit, std::move(windows), now};
}

Hold hold_of(const std::string& id, std::optional<Nanos> credit, Nanos amount, std::vector<WindowDraw> windows = {},
             int64_t now = kT0, int64_t expires_at = kT0 + 600) {
  return Hold{id, "acme", credit, amount, std::move(windows), now, expires_at};
}

Settlement settlement_of(const std::string& id, Nanos cost, std::vector<WindowDraw> windows = {},
                         bool estimated = false, const std::string& route = "eu/pm/chat",
                         const std::string& day = "2027-01-15") {
  Settlement s;
  s.request_id = id;
  s.customer = "acme";
  s.route = route;
  s.day = day;
  s.cost = cost;
  s.estimated = estimated;
  s.prompt_tokens = 10;
  s.completion_tokens = 20;
  s.windows = std::move(windows);
  s.at = kT0 + 1;
  return s;
}

// The token counter's current value, read through a zero-token hold's decision.
int64_t tokens_used(LedgerStore& ledger, const std::string& counter, int64_t now = kT0) {
  static int probe = 0;
  const Decision d = ledger.hold(hold_of("probe-" + std::to_string(++probe), std::nullopt, 0,
                                         {window(counter, 1'000'000, 0)}, now));
  REQUIRE(d.verdict == Verdict::granted);
  REQUIRE(d.used.size() == 1);
  ledger.release("acme", "probe-" + std::to_string(probe));
  return d.used[0];
}

Balance balance_of(LedgerStore& ledger, int64_t now = kT0) {
  const auto b = ledger.balance("acme", now);
  REQUIRE(b);
  return *b;
}

}  // namespace

TEST_CASE("local ledger: count draws every request window or none", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  CHECK_FALSE(ledger->shared());
  Decision d = ledger->count(count_of(std::nullopt, {window("k:m:1", 5, 1), window("k:d:1", 1, 1, 86460)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.used == std::vector<int64_t>{1, 1});
  // The day window is full: refused there, and the minute window is not drawn either.
  d = ledger->count(count_of(std::nullopt, {window("k:m:1", 5, 1), window("k:d:1", 1, 1, 86460)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 1);
  CHECK(d.used == std::vector<int64_t>{1, 1});  // without this draw
  d = ledger->count(count_of(std::nullopt, {window("k:m:1", 5, 1)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.used == std::vector<int64_t>{2});
  // The first window full: index 0.
  d = ledger->count(count_of(std::nullopt, {window("k:m:1", 2, 1), window("k:d:2", 10, 1)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 0);
  CHECK(ledger->count(count_of(std::nullopt, {window("k:d:2", 10, 1)})).used == std::vector<int64_t>{1});
}

TEST_CASE("local ledger: a window counter starts again after its ttl", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  CHECK(ledger->count(count_of(std::nullopt, {window("k:m:1", 1, 1, 120)})).verdict == Verdict::granted);
  CHECK(ledger->count(count_of(std::nullopt, {window("k:m:1", 1, 1, 120)}, kT0 + 119)).verdict ==
        Verdict::over_window);
  CHECK(ledger->count(count_of(std::nullopt, {window("k:m:1", 1, 1, 120)}, kT0 + 120)).verdict == Verdict::granted);
}

TEST_CASE("local ledger: count refuses over_credit once spent + reserved reaches the credit",
          "[accounts][local_ledger]") {
  Balance persisted;
  persisted.spent = 10 * kUnit - 1;
  auto ledger = open_local_ledger({{"acme", persisted}});
  Decision d = ledger->count(count_of(10 * kUnit, {window("k:m:1", 100, 1)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 1);
  // A hold of the last nano: spent + reserved == credit.
  REQUIRE(ledger->hold(hold_of("r1", 10 * kUnit, 1)).verdict == Verdict::granted);
  d = ledger->count(count_of(10 * kUnit, {window("k:m:1", 100, 1)}));
  CHECK(d.verdict == Verdict::over_credit);
  CHECK(d.available == 0);
  // Refused on credit: the window was not drawn.
  CHECK(ledger->count(count_of(std::nullopt, {window("k:m:1", 100, 1)})).used == std::vector<int64_t>{2});
  // Released: the credit has one nano left again.
  ledger->release("acme", "r1");
  CHECK(ledger->count(count_of(10 * kUnit, {})).verdict == Verdict::granted);
  // Spent beyond the credit: refused; without a credit nothing is checked.
  REQUIRE(ledger->settle(settlement_of("r2", 5 * kUnit)));
  CHECK(ledger->count(count_of(10 * kUnit, {})).verdict == Verdict::over_credit);
  CHECK(ledger->count(count_of(std::nullopt, {})).verdict == Verdict::granted);
}

TEST_CASE("local ledger: hold refuses over credit or over a window, else reserves", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  const Nanos credit = 10 * kUnit;
  Decision d = ledger->hold(hold_of("a", credit, 6 * kUnit, {window("k:tm:1", 1000, 600)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == credit);
  CHECK(d.used == std::vector<int64_t>{600});
  CHECK(balance_of(*ledger).reserved == 6 * kUnit);
  // 5 > 10 − 6: over credit; nothing drawn.
  d = ledger->hold(hold_of("b", credit, 5 * kUnit, {window("k:tm:1", 1000, 100)}));
  CHECK(d.verdict == Verdict::over_credit);
  CHECK(d.available == 4 * kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1") == 600);
  // Exactly what remains fits.
  d = ledger->hold(hold_of("c", credit, 4 * kUnit, {window("k:tm:1", 1000, 400)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(balance_of(*ledger).reserved == 10 * kUnit);
  // A token window over its limit: refused, no money reserved.
  ledger->release("acme", "c");
  d = ledger->hold(hold_of("d", credit, 1, {window("k:tm:1", 1000, 401)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 0);
  CHECK(d.used == std::vector<int64_t>{600});
  CHECK(balance_of(*ledger).reserved == 6 * kUnit);
  // No credit: tokens only, nothing reserved in money.
  d = ledger->hold(hold_of("e", std::nullopt, 100 * kUnit, {window("k:tm:1", 1000, 10)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(balance_of(*ledger).reserved == 6 * kUnit);
}

TEST_CASE("local ledger: settle replaces the hold with the actual cost and tokens", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  const Nanos credit = 10 * kUnit;
  REQUIRE(ledger->hold(hold_of("a", credit, 3 * kUnit, {window("k:tm:1", 1000, 300)})).verdict == Verdict::granted);
  REQUIRE(ledger->settle(settlement_of("a", 2 * kUnit, {window("k:tm:1", 1000, 120)}, true, "eu/pm/chat", "2027-01-15")));
  Balance b = balance_of(*ledger);
  CHECK(b.reserved == 0);
  CHECK(b.spent == 2 * kUnit);
  CHECK(b.estimated == 2 * kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1") == 120);  // moved by 120 − 300
  // A second, exact settlement on another route and day.
  REQUIRE(ledger->hold(hold_of("b", credit, kUnit, {window("k:tm:1", 1000, 100)})).verdict == Verdict::granted);
  REQUIRE(ledger->settle(settlement_of("b", kUnit / 2, {window("k:tm:1", 1000, 150)}, false, "eu/pm/other", "2027-01-16")));
  b = balance_of(*ledger);
  CHECK(b.reserved == 0);
  CHECK(b.spent == 2 * kUnit + kUnit / 2);
  CHECK(b.estimated == 2 * kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1") == 270);  // moved by 150 − 100
  REQUIRE(b.by_route.size() == 2);
  CHECK(b.by_route["eu/pm/chat"].amount == 2 * kUnit);
  CHECK(b.by_route["eu/pm/chat"].estimated == 2 * kUnit);
  CHECK(b.by_route["eu/pm/other"].amount == kUnit / 2);
  CHECK(b.by_route["eu/pm/other"].estimated == 0);
  REQUIRE(b.by_day.size() == 2);
  CHECK(b.by_day["2027-01-15"].amount == 2 * kUnit);
  CHECK(b.by_day["2027-01-15"].estimated == 2 * kUnit);
  CHECK(b.by_day["2027-01-16"].amount == kUnit / 2);
  CHECK(b.by_day["2027-01-16"].estimated == 0);
  // The credit sees the spend: 10 − 2.5 left.
  CHECK(ledger->hold(hold_of("c", credit, 7 * kUnit + kUnit / 2 + 1)).verdict == Verdict::over_credit);
  CHECK(ledger->hold(hold_of("c", credit, 7 * kUnit + kUnit / 2)).verdict == Verdict::granted);
  // Another customer is untouched.
  const auto other = ledger->balance("globex", kT0);
  REQUIRE(other);
  CHECK(other->spent == 0);
  CHECK(other->by_route.empty());
}

TEST_CASE("local ledger: release gives the money and tokens back, once", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  REQUIRE(ledger->hold(hold_of("a", 10 * kUnit, 4 * kUnit, {window("k:tm:1", 1000, 700)})).verdict ==
          Verdict::granted);
  REQUIRE(ledger->hold(hold_of("b", 10 * kUnit, 1 * kUnit, {window("k:tm:1", 1000, 100)})).verdict ==
          Verdict::granted);
  ledger->release("acme", "a");
  Balance b = balance_of(*ledger);
  CHECK(b.reserved == kUnit);
  CHECK(b.spent == 0);
  CHECK(tokens_used(*ledger, "k:tm:1") == 100);
  ledger->release("acme", "a");        // again: nothing
  ledger->release("acme", "unknown");  // never held: nothing
  CHECK(balance_of(*ledger).reserved == kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1") == 100);
  // A settled hold is not released afterwards.
  REQUIRE(ledger->settle(settlement_of("b", kUnit, {window("k:tm:1", 1000, 80)})));
  ledger->release("acme", "b");
  b = balance_of(*ledger);
  CHECK(b.reserved == 0);
  CHECK(b.spent == kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1") == 80);
}

TEST_CASE("local ledger: an expired hold is given back by a later operation", "[accounts][local_ledger]") {
  auto ledger = open_local_ledger({});
  const Nanos credit = 10 * kUnit;
  // Minute counter with a day-long ttl so that only the hold expires here.
  REQUIRE(ledger->hold(hold_of("a", credit, 8 * kUnit, {window("k:tm:1", 1000, 900, 86460)}, kT0, kT0 + 10)).verdict ==
          Verdict::granted);
  // Not yet expired: still held.
  CHECK(balance_of(*ledger, kT0 + 9).reserved == 8 * kUnit);
  CHECK(ledger->hold(hold_of("b", credit, 3 * kUnit, {}, kT0 + 9)).verdict == Verdict::over_credit);
  // Past expires_at and the 5 s sweep interval: the next operation gives it back.
  const int64_t later = kT0 + 10 + 5;
  CHECK(ledger->hold(hold_of("b", credit, 3 * kUnit, {}, later)).verdict == Verdict::granted);
  CHECK(balance_of(*ledger, later).reserved == 3 * kUnit);
  CHECK(tokens_used(*ledger, "k:tm:1", later) == 0);
  // Settling the expired request still charges it (no hold to replace).
  REQUIRE(ledger->settle(settlement_of("a", kUnit)));
  const Balance b = balance_of(*ledger, later);
  CHECK(b.spent == kUnit);
  CHECK(b.reserved == 3 * kUnit);
}

TEST_CASE("local ledger: settling after the hold expired still draws the actual tokens", "[accounts][local_ledger]") {
  // As the Redis ledger does: without a hold (given back at expiry) the actual tokens are
  // drawn all the same on the window counters that still exist.
  auto ledger = open_local_ledger({});
  REQUIRE(ledger->hold(hold_of("a", std::nullopt, 0, {window("k:td:1", 1000, 300, 86460)}, kT0, kT0 + 10)).verdict ==
          Verdict::granted);
  const int64_t later = kT0 + 10 + 5;
  CHECK(tokens_used(*ledger, "k:td:1", later) == 0);  // expired and given back
  REQUIRE(ledger->settle(settlement_of("a", kUnit, {window("k:td:1", 1000, 120, 86460)})));
  CHECK(tokens_used(*ledger, "k:td:1", later) == 120);
  // A counter that no longer exists is left alone (its window is over).
  REQUIRE(ledger->settle(settlement_of("b", kUnit, {window("k:td:gone", 1000, 50, 86460)})));
  CHECK(tokens_used(*ledger, "k:td:gone", later) == 0);
}

TEST_CASE("local ledger: persisted totals seed the balance, without holds", "[accounts][local_ledger]") {
  Balance persisted;
  persisted.spent = 7 * kUnit;
  persisted.estimated = 2 * kUnit;
  persisted.reserved = 5 * kUnit;  // cannot survive a restart
  persisted.by_route["eu/pm/chat"] = SpendTotal{7 * kUnit, 2 * kUnit};
  persisted.by_day["2027-01-14"] = SpendTotal{7 * kUnit, 2 * kUnit};
  auto ledger = open_local_ledger({{"acme", persisted}});
  Balance b = balance_of(*ledger);
  CHECK(b.spent == 7 * kUnit);
  CHECK(b.estimated == 2 * kUnit);
  CHECK(b.reserved == 0);
  CHECK(b.by_route["eu/pm/chat"].amount == 7 * kUnit);
  CHECK(b.by_day["2027-01-14"].estimated == 2 * kUnit);
  // The credit starts from what was spent before.
  CHECK(ledger->hold(hold_of("a", 10 * kUnit, 3 * kUnit + 1)).verdict == Verdict::over_credit);
  CHECK(ledger->hold(hold_of("a", 10 * kUnit, 3 * kUnit)).verdict == Verdict::granted);
  REQUIRE(ledger->settle(settlement_of("a", kUnit, {}, false, "eu/pm/chat", "2027-01-15")));
  b = balance_of(*ledger);
  CHECK(b.spent == 8 * kUnit);
  CHECK(b.by_route["eu/pm/chat"].amount == 8 * kUnit);
  CHECK(b.by_day["2027-01-14"].amount == 7 * kUnit);
  CHECK(b.by_day["2027-01-15"].amount == kUnit);
}

TEST_CASE("local ledger: concurrent holds never spend more than the credit", "[accounts][local_ledger]") {
  // 8 threads × 50 holds of A against a credit of 3A, each granted hold settled at cost A:
  // after three settlements nothing more fits, so exactly three are granted in all.
  constexpr int kThreads = 8;
  constexpr int kHoldsEach = 50;
  constexpr Nanos kA = 1'234'567;
  auto ledger = open_local_ledger({});
  std::latch start(kThreads);
  std::atomic<int> granted{0};
  std::atomic<int> over_credit{0};
  std::atomic<int> other{0};  // any other verdict (Catch2 assertions are not thread-safe)
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
      std::uniform_int_distribution<int> spins(0, 200);
      start.arrive_and_wait();
      for (int i = 0; i < kHoldsEach; ++i) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        const Decision d = ledger->hold(hold_of(id, 3 * kA, kA, {window("k:tm:1", 1'000'000, 10)}));
        if (d.verdict == Verdict::over_credit) {
          ++over_credit;
          continue;
        }
        if (d.verdict != Verdict::granted) {
          ++other;
          continue;
        }
        ++granted;
        // A tiny random delay (work, not synchronisation) so settlements interleave with holds.
        for (int s = spins(rng); s > 0; --s) std::this_thread::yield();
        ledger->settle(settlement_of(id, kA, {window("k:tm:1", 1'000'000, 10)}));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(other == 0);
  CHECK(granted == 3);
  CHECK(over_credit == kThreads * kHoldsEach - 3);
  const Balance b = balance_of(*ledger);
  CHECK(b.spent == 3 * kA);
  CHECK(b.reserved == 0);
  CHECK(tokens_used(*ledger, "k:tm:1") == 30);
}
