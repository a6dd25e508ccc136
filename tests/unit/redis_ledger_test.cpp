// The Redis ledger (accounts/redis_ledger.cpp) against a real redis-server: each test case
// starts its own server on a free loopback port (tests/unit/redis_server.h). Several
// RedisLedger objects on one server stand for several gateway replicas.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "accounts/ledger.h"
#include "storage/store_breaker.h"
#include "tests/unit/redis_server.h"

using tresor::accounts::Balance;
using tresor::accounts::CountRequest;
using tresor::accounts::Decision;
using tresor::accounts::Hold;
using tresor::accounts::LedgerStore;
using tresor::accounts::Nanos;
using tresor::accounts::open_redis_ledger;
using tresor::accounts::Settlement;
using tresor::accounts::Verdict;
using tresor::accounts::WindowDraw;
using tresor::test::RedisServer;
using Reply = tresor::test::Reply;

namespace {

constexpr Nanos kUnit = 1'000'000'000;  // one currency unit in nanos
constexpr int64_t kT0 = 1'800'000'000;  // a fixed "now": the ledger takes the caller's clock

WindowDraw window(const std::string& counter, int64_t limit, int64_t amount, int64_t ttl = 120) {
  return WindowDraw{counter, limit, amount, ttl};
}

CountRequest count_of(const std::string& customer, std::optional<Nanos> credit, std::vector<WindowDraw> windows,
                      int64_t now = kT0) {
  return CountRequest{customer, credit, std::move(windows), now};
}

Hold hold_of(const std::string& id, const std::string& customer, std::optional<Nanos> credit, Nanos amount,
             std::vector<WindowDraw> windows = {}, int64_t now = kT0, int64_t expires_at = kT0 + 600) {
  return Hold{id, customer, credit, amount, std::move(windows), now, expires_at};
}

Settlement settlement_of(const std::string& id, const std::string& customer, Nanos cost,
                         std::vector<WindowDraw> windows = {}, bool estimated = false, int64_t at = kT0 + 1) {
  Settlement s;
  s.request_id = id;
  s.customer = customer;
  s.route = "eu/tresor/gpt-oss-120b";
  s.day = "2027-01-15";
  s.cost = cost;
  s.estimated = estimated;
  s.prompt_tokens = 10;
  s.completion_tokens = 20;
  s.windows = std::move(windows);
  s.at = at;
  return s;
}

// A window counter as Redis holds it; -1 when the key does not exist.
int64_t counter(const RedisServer& redis, const std::string& name) {
  Reply r = redis.command({"GET", "tresor:acct:win:" + name});
  REQUIRE(r);
  if (r->type == REDIS_REPLY_NIL) return -1;
  REQUIRE(r->type == REDIS_REPLY_STRING);
  return std::stoll(std::string(r->str, r->len));
}

int64_t ttl(const RedisServer& redis, const std::string& key) {
  Reply r = redis.command({"TTL", key});
  REQUIRE(r);
  REQUIRE(r->type == REDIS_REPLY_INTEGER);
  return r->integer;
}

Balance balance(LedgerStore& ledger, const std::string& customer, int64_t now = kT0 + 2) {
  auto b = ledger.balance(customer, now);
  REQUIRE(b.has_value());
  return *b;
}

// A loopback proxy in front of Redis. Armed, it passes the next EVAL/EVALSHA to Redis,
// waits for the first byte of its reply (Redis has run the whole script by then) and
// closes the client's connection instead of passing the reply on: the "applied, reply
// lost" case that the ledger's retry must not apply twice.
class ReplyCutter {
 public:
  explicit ReplyCutter(int redis_port) : redis_port_(redis_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(listen_fd_, 8) == 0);
    REQUIRE(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~ReplyCutter() {
    stop_ = true;
    thread_.join();
    for (auto& l : links_) close_link(l);
    close(listen_fd_);
  }
  ReplyCutter(const ReplyCutter&) = delete;
  ReplyCutter& operator=(const ReplyCutter&) = delete;

  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }
  void arm() { armed_ = true; }
  int cuts() const { return cuts_; }

 private:
  struct Link {
    int client = -1;
    int upstream = -1;
    bool cut_at_reply = false;
  };

  static sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    return a;
  }

  static void close_link(Link& l) {
    if (l.client >= 0) close(l.client);
    if (l.upstream >= 0) close(l.upstream);
    l.client = l.upstream = -1;
  }

  static bool send_all(int fd, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  void accept_one() {
    Link l;
    l.client = accept(listen_fd_, nullptr, nullptr);
    if (l.client < 0) return;
    l.upstream = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(redis_port_);
    if (l.upstream < 0 || connect(l.upstream, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close_link(l);
      return;
    }
    links_.push_back(l);
  }

  // One readable side of a link: forward it, or cut the link at an armed reply.
  void forward(Link& l, bool from_client) {
    char buf[65536];
    const ssize_t n = read(from_client ? l.client : l.upstream, buf, sizeof buf);
    if (n <= 0) return close_link(l);
    if (from_client) {
      if (armed_ && std::string_view(buf, static_cast<size_t>(n)).find("EVAL") != std::string_view::npos) {
        armed_ = false;
        l.cut_at_reply = true;
      }
      if (!send_all(l.upstream, buf, static_cast<size_t>(n))) close_link(l);
      return;
    }
    if (l.cut_at_reply) {
      ++cuts_;
      return close_link(l);
    }
    if (!send_all(l.client, buf, static_cast<size_t>(n))) close_link(l);
  }

  void loop() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (const auto& l : links_) {
        fds.push_back({l.client, POLLIN, 0});
        fds.push_back({l.upstream, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;  // the timeout only lets stop_ be seen
      for (size_t i = 0; i < links_.size(); ++i) {
        for (int side = 0; side < 2; ++side) {
          const short ev = fds[1 + 2 * i + static_cast<size_t>(side)].revents;
          if ((ev & (POLLIN | POLLHUP | POLLERR)) && links_[i].client >= 0) forward(links_[i], side == 0);
        }
      }
      if (fds[0].revents & POLLIN) accept_one();
      std::erase_if(links_, [](const Link& l) { return l.client < 0; });
    }
  }

  int redis_port_;
  int port_ = 0;
  int listen_fd_ = -1;
  std::vector<Link> links_;  // the proxy thread's only
  std::atomic<bool> armed_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> cuts_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("redis ledger: count draws on every request window or on none, and new counters get a TTL",
          "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  CHECK(ledger->shared());
  auto rpm = [](int64_t limit) { return window("k1:rpm:100", limit, 1, 90); };
  auto rpd = [](int64_t limit) { return window("k1:rpd:7", limit, 1, 90000); };

  Decision d = ledger->count(count_of("acme", std::nullopt, {rpm(2), rpd(100)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.used == std::vector<int64_t>{1, 1});
  // Created with their lifetimes: a counter without a TTL would never reset.
  CHECK(ttl(redis, "tresor:acct:win:k1:rpm:100") > 0);
  CHECK(ttl(redis, "tresor:acct:win:k1:rpm:100") <= 90);
  CHECK(ttl(redis, "tresor:acct:win:k1:rpd:7") > 90);
  CHECK(ttl(redis, "tresor:acct:win:k1:rpd:7") <= 90000);

  CHECK(ledger->count(count_of("acme", std::nullopt, {rpm(2), rpd(100)})).used == std::vector<int64_t>{2, 2});

  // The minute is full: refused, and the day is not drawn on either.
  d = ledger->count(count_of("acme", std::nullopt, {rpm(2), rpd(100)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 0);
  CHECK(d.used == std::vector<int64_t>{2, 2});
  CHECK(counter(redis, "k1:rpd:7") == 2);

  // The second window full: the first is not drawn on.
  d = ledger->count(count_of("acme", std::nullopt, {window("k1:rpm:101", 5, 1), rpd(2)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 1);
  CHECK(d.used == std::vector<int64_t>{0, 2});
  CHECK(counter(redis, "k1:rpm:101") == -1);
  CHECK(ttl(redis, "tresor:acct:win:k1:rpd:7") > 90);  // still has its lifetime

  // What makes a retried count safe is one key per ledger, not one per request.
  Reply ops = redis.command({"KEYS", "tresor:acct:op:*"});
  REQUIRE(ops);
  REQUIRE(ops->elements == 1);
  CHECK(ttl(redis, std::string(ops->element[0]->str)) > 0);
}

TEST_CASE("redis ledger: count refuses a customer whose credit is used up", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  const auto rpm = window("k1:rpm:100", 100, 1);
  REQUIRE(ledger->settle(settlement_of("r1", "acme", 6 * kUnit)));
  REQUIRE(ledger->hold(hold_of("r2", "acme", 10 * kUnit, 3 * kUnit)).verdict == Verdict::granted);

  Decision d = ledger->count(count_of("acme", 10 * kUnit, {rpm}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 1 * kUnit);  // 10 − 6 spent − 3 reserved

  // spent + reserved == credit: refused, and the window is not drawn on.
  d = ledger->count(count_of("acme", 9 * kUnit, {rpm}));
  CHECK(d.verdict == Verdict::over_credit);
  CHECK(d.available == 0);
  CHECK(d.used == std::vector<int64_t>{1});
  CHECK(counter(redis, "k1:rpm:100") == 1);
  // Another customer is not affected.
  CHECK(ledger->count(count_of("globex", 9 * kUnit, {window("k2:rpm:100", 100, 1)})).verdict == Verdict::granted);
}

TEST_CASE("redis ledger: hold checks money and token windows, and reserves both when granted", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  const Nanos credit = 1000;
  auto tpm = [](int64_t tokens) { return window("k1:tpm:100", 1000, tokens); };

  Decision d = ledger->hold(hold_of("r1", "acme", credit, 600, {tpm(600)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 1000);
  CHECK(d.used == std::vector<int64_t>{600});
  CHECK(balance(*ledger, "acme").reserved == 600);
  CHECK(ttl(redis, "tresor:acct:win:k1:tpm:100") > 0);

  d = ledger->hold(hold_of("r2", "acme", credit, 401, {tpm(10)}));
  CHECK(d.verdict == Verdict::over_credit);
  CHECK(d.available == 400);
  CHECK(d.used == std::vector<int64_t>{600});
  CHECK(counter(redis, "k1:tpm:100") == 600);

  d = ledger->hold(hold_of("r3", "acme", credit, 300, {tpm(401)}));
  CHECK(d.verdict == Verdict::over_window);
  CHECK(d.window == 0);
  CHECK(d.used == std::vector<int64_t>{600});
  CHECK(balance(*ledger, "acme").reserved == 600);

  d = ledger->hold(hold_of("r4", "acme", credit, 400, {tpm(400)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.used == std::vector<int64_t>{1000});
  CHECK(balance(*ledger, "acme").reserved == 1000);

  // No credit limit: money is neither checked nor reserved.
  CHECK(ledger->hold(hold_of("r5", "acme", std::nullopt, 1'000'000 * kUnit)).verdict == Verdict::granted);
  CHECK(balance(*ledger, "acme").reserved == 1000);

  // The same hold again (a retry after a lost reply): granted once, nothing drawn twice.
  d = ledger->hold(hold_of("r1", "acme", credit, 600, {tpm(600)}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 0 + 600);  // without its own reservation
  CHECK(balance(*ledger, "acme").reserved == 1000);
  CHECK(counter(redis, "k1:tpm:100") == 1000);
}

TEST_CASE("redis ledger: settle replaces the hold with the actual cost and tokens", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  auto tpm = [](int64_t tokens) { return window("k1:tpm:100", 100000, tokens); };
  REQUIRE(ledger->hold(hold_of("r1", "acme", 10 * kUnit, 4 * kUnit, {tpm(5000)})).verdict == Verdict::granted);
  REQUIRE(counter(redis, "k1:tpm:100") == 5000);

  REQUIRE(ledger->settle(settlement_of("r1", "acme", 1'234'567'891, {tpm(120)})));
  Balance b = balance(*ledger, "acme");
  CHECK(b.spent == 1'234'567'891);
  CHECK(b.reserved == 0);
  CHECK(b.estimated == 0);
  CHECK(b.by_route["eu/tresor/gpt-oss-120b"].amount == 1'234'567'891);
  CHECK(b.by_day["2027-01-15"].amount == 1'234'567'891);
  CHECK(counter(redis, "k1:tpm:100") == 120);  // moved by actual − held

  // Estimated tokens, no hold (never made): charged all the same, and counted apart.
  REQUIRE(ledger->settle(settlement_of("r2", "acme", 5, {tpm(30)}, true)));
  b = balance(*ledger, "acme");
  CHECK(b.spent == 1'234'567'896);
  CHECK(b.estimated == 5);
  CHECK(b.by_route["eu/tresor/gpt-oss-120b"].estimated == 5);
  CHECK(b.by_day["2027-01-15"].estimated == 5);
  CHECK(counter(redis, "k1:tpm:100") == 150);

  // The ledger entry of the request, kept for 400 days.
  const std::string entry = "tresor:acct:entry:4:acme:r1";
  Reply cost = redis.command({"HMGET", entry, "customer", "cost", "route", "prompt_tokens", "completion_tokens"});
  REQUIRE(cost);
  REQUIRE(cost->type == REDIS_REPLY_ARRAY);
  CHECK(std::string(cost->element[0]->str) == "acme");
  CHECK(std::string(cost->element[1]->str) == "1234567891");
  CHECK(std::string(cost->element[2]->str) == "eu/tresor/gpt-oss-120b");
  CHECK(std::string(cost->element[3]->str) == "10");
  CHECK(std::string(cost->element[4]->str) == "20");
  CHECK(ttl(redis, entry) > 399 * 86400);
}

TEST_CASE("redis ledger: a repeated settle charges once", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  auto replica = open_redis_ledger(redis.url());
  const auto tpm = window("k1:tpm:100", 100000, 700);
  REQUIRE(ledger->hold(hold_of("r1", "acme", 10 * kUnit, 2 * kUnit, {tpm})).verdict == Verdict::granted);
  REQUIRE(ledger->settle(settlement_of("r1", "acme", kUnit, {tpm})));
  CHECK(ledger->settle(settlement_of("r1", "acme", kUnit, {tpm})));   // applied before: true
  CHECK(replica->settle(settlement_of("r1", "acme", kUnit, {tpm})));  // from another replica too
  Balance b = balance(*ledger, "acme");
  CHECK(b.spent == kUnit);
  CHECK(b.reserved == 0);
  CHECK(b.by_route["eu/tresor/gpt-oss-120b"].amount == kUnit);
  CHECK(counter(redis, "k1:tpm:100") == 700);
  // The same request id of another customer is another request.
  REQUIRE(ledger->settle(settlement_of("r1", "globex", kUnit)));
  CHECK(balance(*ledger, "globex").spent == kUnit);
  CHECK(balance(*ledger, "acme").spent == kUnit);
}

TEST_CASE("redis ledger: release gives the hold back, once", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url());
  const auto tpm = window("k1:tpm:100", 1000, 800);
  REQUIRE(ledger->hold(hold_of("r1", "acme", 10 * kUnit, 9 * kUnit, {tpm})).verdict == Verdict::granted);
  CHECK(ledger->hold(hold_of("r2", "acme", 10 * kUnit, 2 * kUnit)).verdict == Verdict::over_credit);

  ledger->release("acme", "r1");
  CHECK(balance(*ledger, "acme").reserved == 0);
  CHECK(counter(redis, "k1:tpm:100") == 0);
  ledger->release("acme", "r1");       // already given back
  ledger->release("acme", "unknown");  // never held
  ledger->release("globex", "r1");     // not that customer's
  CHECK(balance(*ledger, "acme").reserved == 0);
  CHECK(counter(redis, "k1:tpm:100") == 0);
  Decision d = ledger->hold(hold_of("r2", "acme", 10 * kUnit, 2 * kUnit, {tpm}));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 10 * kUnit);
  CHECK(d.used == std::vector<int64_t>{800});
}

TEST_CASE("redis ledger: an expired hold is given back by the next operation on its customer", "[redis_ledger]") {
  RedisServer redis;
  auto replica_that_dies = open_redis_ledger(redis.url());
  auto survivor = open_redis_ledger(redis.url());
  const auto tpm = window("k1:tpm:100", 1000, 900);
  REQUIRE(replica_that_dies->hold(hold_of("r1", "acme", 10 * kUnit, 9 * kUnit, {tpm}, kT0, kT0 + 10)).verdict ==
          Verdict::granted);
  replica_that_dies.reset();  // its request never settles nor releases

  // Before expires_at the hold stands.
  CHECK(survivor->hold(hold_of("r2", "acme", 10 * kUnit, 2 * kUnit, {}, kT0 + 9)).verdict == Verdict::over_credit);
  CHECK(balance(*survivor, "acme", kT0 + 9).reserved == 9 * kUnit);
  // At expires_at it is given back, money and tokens, before the check.
  Decision d = survivor->hold(hold_of("r2", "acme", 10 * kUnit, 2 * kUnit, {window("k1:tpm:100", 1000, 200)}, kT0 + 10));
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 10 * kUnit);
  CHECK(d.used == std::vector<int64_t>{200});
  CHECK(balance(*survivor, "acme", kT0 + 10).reserved == 2 * kUnit);
  Reply left = redis.command({"ZRANGE", "tresor:acct:expiry:acme", "0", "-1"});
  REQUIRE(left);
  REQUIRE(left->elements == 1);
  CHECK(std::string(left->element[0]->str) == "r2");

  // balance() purges too; a settle after its hold expired still charges.
  CHECK(balance(*survivor, "acme", kT0 + 600).reserved == 0);
  CHECK(counter(redis, "k1:tpm:100") == 0);
  REQUIRE(survivor->settle(settlement_of("r2", "acme", kUnit, {}, false, kT0 + 601)));
  CHECK(balance(*survivor, "acme", kT0 + 602).spent == kUnit);
}

TEST_CASE("redis ledger: eight replicas holding at once never overspend the credit", "[redis_ledger]") {
  RedisServer redis;
  constexpr Nanos kAmount = 7 * kUnit;
  constexpr int kReplicas = 8;
  constexpr int kHolds = 200;
  std::vector<std::unique_ptr<LedgerStore>> replicas;
  for (int i = 0; i < kReplicas; ++i) replicas.push_back(open_redis_ledger(redis.url()));

  std::atomic<int> next{0};
  std::atomic<int> granted{0};
  std::atomic<int> refused{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReplicas; ++t) {
    threads.emplace_back([&, t] {
      LedgerStore& ledger = *replicas[t];
      for (int i = next++; i < kHolds; i = next++) {
        const std::string id = "req-" + std::to_string(i);
        Decision d = ledger.hold(hold_of(id, "acme", 3 * kAmount, kAmount));
        if (d.verdict == Verdict::granted) {
          ++granted;
          if (!ledger.settle(settlement_of(id, "acme", kAmount))) ++failed;
        } else if (d.verdict == Verdict::over_credit) {
          ++refused;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  CHECK(failed == 0);
  CHECK(granted == 3);
  CHECK(refused == kHolds - 3);
  Balance b = balance(*replicas[0], "acme");
  CHECK(b.spent == 3 * kAmount);
  CHECK(b.reserved == 0);
}

TEST_CASE("redis ledger: unavailable while Redis is down, working again once it is back", "[redis_ledger]") {
  RedisServer redis;
  auto ledger = open_redis_ledger(redis.url("/3"));
  // What the server runs beside a shared store: a prober that closes the breaker again.
  auto pinger = open_redis_ledger(redis.url("/3"));
  tresor::config::StoreConfig store;
  store.url = redis.url("/3");
  tresor::storage::StoreProber prober(tresor::storage::breaker_for(store), [&] { return pinger->reachable(); });
  const auto rpm = window("k1:rpm:100", 10, 1);
  REQUIRE(ledger->count(count_of("acme", 10 * kUnit, {rpm})).verdict == Verdict::granted);
  REQUIRE(ledger->hold(hold_of("r1", "acme", 10 * kUnit, kUnit)).verdict == Verdict::granted);

  // Killed mid-request: between the hold and its settlement.
  redis.stop();
  CHECK_FALSE(ledger->balance("acme", kT0 + 2).has_value());
  CHECK(ledger->count(count_of("acme", 10 * kUnit, {rpm})).verdict == Verdict::unavailable);
  CHECK(ledger->hold(hold_of("r2", "acme", 10 * kUnit, kUnit)).verdict == Verdict::unavailable);
  CHECK_FALSE(ledger->settle(settlement_of("r1", "acme", kUnit)));
  CHECK_FALSE(ledger->reachable());

  // Back on the same port, empty (no persistence in this test) and without the scripts:
  // EVALSHA answers NOSCRIPT, the ledger falls back to EVAL, in database 3 again.
  redis.start();
  // The store's breaker opened after those failures: nothing is sent until the prober's
  // ping (every store.breaker.open_ms, 2 s by default) finds Redis back and closes it.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!ledger->reachable() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(ledger->reachable());
  Balance b = balance(*ledger, "acme");
  CHECK(b.spent == 0);
  CHECK(b.reserved == 0);
  CHECK(ledger->settle(settlement_of("r1", "acme", kUnit)));  // the caller's retry
  CHECK(balance(*ledger, "acme").spent == kUnit);
  Reply in3 = redis.command({"HGET", "tresor:acct:money:acme", "spent"}, 3);
  REQUIRE(in3);
  CHECK(in3->type == REDIS_REPLY_STRING);

  // A dropped connection and a flushed script cache cost nothing either.
  Reply killed = redis.command({"CLIENT", "KILL", "TYPE", "normal"});
  REQUIRE(killed);
  CHECK(killed->integer == 2);  // the ledger's and the pinger's
  redis.command({"SCRIPT", "FLUSH"});
  CHECK(ledger->count(count_of("acme", 10 * kUnit, {rpm})).verdict == Verdict::granted);
  CHECK(counter(redis, "k1:rpm:100") == -1);  // database 0 untouched
}

TEST_CASE("redis ledger: a malformed URL throws; an absent server opens and answers unavailable", "[redis_ledger]") {
  CHECK_THROWS_WITH(open_redis_ledger("redis://host:notaport/0"), Catch::Contains("ledger") && Catch::Contains("bad port"));
  const std::string url = "redis://127.0.0.1:" + std::to_string(tresor::test::free_port()) + "/0";
  auto ledger = open_redis_ledger(url);
  CHECK_FALSE(ledger->reachable());
  CHECK(ledger->count(count_of("acme", 10 * kUnit, {window("k1:rpm:100", 10, 1)})).verdict == Verdict::unavailable);
}

TEST_CASE("redis ledger: a step applied whose reply was lost is retried without applying it twice",
          "[redis_ledger]") {
  RedisServer redis;
  ReplyCutter cutter(redis.port());
  auto ledger = open_redis_ledger(cutter.url());
  const auto rpm = window("k1:rpm:100", 10, 1);
  auto tpm = [](int64_t tokens) { return window("k1:tpm:100", 1000, tokens); };

  cutter.arm();
  Decision d = ledger->count(count_of("acme", 10 * kUnit, {rpm}));
  CHECK(cutter.cuts() == 1);
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.used == std::vector<int64_t>{1});
  CHECK(counter(redis, "k1:rpm:100") == 1);

  cutter.arm();
  d = ledger->hold(hold_of("r1", "acme", 10 * kUnit, 3 * kUnit, {tpm(500)}));
  CHECK(cutter.cuts() == 2);
  CHECK(d.verdict == Verdict::granted);
  CHECK(d.available == 10 * kUnit);
  CHECK(d.used == std::vector<int64_t>{500});
  CHECK(balance(*ledger, "acme").reserved == 3 * kUnit);
  CHECK(counter(redis, "k1:tpm:100") == 500);

  cutter.arm();
  CHECK(ledger->settle(settlement_of("r1", "acme", 2 * kUnit, {tpm(40)})));
  CHECK(cutter.cuts() == 3);
  Balance b = balance(*ledger, "acme");
  CHECK(b.spent == 2 * kUnit);
  CHECK(b.reserved == 0);
  CHECK(counter(redis, "k1:tpm:100") == 40);

  REQUIRE(ledger->hold(hold_of("r2", "acme", 10 * kUnit, 3 * kUnit, {tpm(100)})).verdict == Verdict::granted);
  cutter.arm();
  ledger->release("acme", "r2");
  CHECK(cutter.cuts() == 4);
  CHECK(balance(*ledger, "acme").reserved == 0);
  CHECK(counter(redis, "k1:tpm:100") == 40);
}
