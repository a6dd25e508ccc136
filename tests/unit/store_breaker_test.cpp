// The shared store's breaker and prober (storage/store_breaker.h), the deadline handoff
// between a store thread and a coroutine (common/rendezvous.h Handoff), and the store
// pool's threads (storage/store_pool.h).
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/rendezvous.h"
#include "storage/store_breaker.h"
#include "storage/store_pool.h"

namespace {

using namespace std::chrono_literals;
using tresor::storage::StoreBreaker;

// Polls `cond` every 5 ms for at most `limit` (a condition, bounded: no sleep as a wait).
template <typename Cond>
bool eventually(Cond cond, std::chrono::milliseconds limit = 5000ms) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace

TEST_CASE("store breaker: opens after N failures in a row, a success in between resets the count",
          "[store_breaker]") {
  StoreBreaker b(3, 60000ms);
  b.record(false);
  b.record(false);
  b.record(true);  // reached: the count starts again
  b.record(false);
  b.record(false);
  CHECK(b.allow());
  CHECK_FALSE(b.down());
  b.record(false);
  CHECK(b.down());
  CHECK_FALSE(b.allow());  // nothing a request does goes to the store now
  CHECK(b.openings() == 1);
  CHECK_FALSE(b.begin_probe());  // not due yet (60 s)
}

TEST_CASE("store breaker: only the prober's thread gets through while probing; its answer decides",
          "[store_breaker]") {
  StoreBreaker b(1, 1ms);
  b.record(false);
  REQUIRE(b.down());
  REQUIRE(eventually([&] { return b.begin_probe(); }));
  CHECK(b.allow());  // this thread is the prober
  bool other_allowed = true;
  std::thread other([&] { other_allowed = b.allow(); });
  other.join();
  CHECK_FALSE(other_allowed);  // a request is not the probe
  b.record(false);             // the ping failed: open again, not counted as a new opening
  CHECK(b.down());
  CHECK(b.openings() == 1);
  REQUIRE(eventually([&] { return b.begin_probe(); }));
  b.record(true);
  CHECK_FALSE(b.down());
  CHECK(b.allow());
}

TEST_CASE("store prober: closes the breaker once the ping answers, without any request", "[store_breaker]") {
  auto b = std::make_shared<StoreBreaker>(1, 20ms);
  std::atomic<bool> store_up{false};
  std::atomic<int> pings{0};
  tresor::storage::StoreProber prober(b, [&] {
    ++pings;
    const bool ok = store_up.load();
    b->record(ok);  // what RedisConnection::run() does with the ping's outcome
    return ok;
  });
  b->record(false);
  REQUIRE(b->down());
  REQUIRE(eventually([&] { return pings.load() >= 2; }));
  CHECK(b->down());
  store_up = true;
  CHECK(eventually([&] { return !b->down(); }));
  const int after_close = pings.load();
  std::this_thread::sleep_for(100ms);  // closed: no more pings (a bound, not a synchronisation)
  CHECK(pings.load() == after_close);
}

TEST_CASE("handoff: the caller stops waiting at its deadline and the late value is not delivered",
          "[store_breaker]") {
  namespace asio = boost::asio;
  asio::io_context ioc;
  std::mutex m;
  std::condition_variable cv;
  bool release_worker = false;
  std::optional<std::optional<int>> got;
  bool late_claimed = true;
  std::thread worker;
  auto caller = [&]() -> asio::awaitable<void> {
    auto h = std::make_shared<tresor::common::Handoff<int>>(co_await asio::this_coro::executor);
    auto deliver = tresor::common::resume_on<int>(h);
    worker = std::thread([&, h, deliver] {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return release_worker; });
      late_claimed = h->claim();  // the caller gave up: the job must undo, not deliver
      if (late_claimed) deliver(42);
    });
    const auto t0 = std::chrono::steady_clock::now();
    got = co_await tresor::common::wait_until(h, std::chrono::steady_clock::now() + 50ms);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(h->given_up());
    {
      std::lock_guard lock(m);
      release_worker = true;
    }
    cv.notify_one();
  };
  asio::co_spawn(ioc, caller(), asio::detached);
  ioc.run();
  worker.join();
  REQUIRE(got.has_value());
  CHECK_FALSE(got->has_value());
  CHECK_FALSE(late_claimed);
}

TEST_CASE("handoff: a value claimed before the deadline is delivered", "[store_breaker]") {
  namespace asio = boost::asio;
  asio::io_context ioc;
  std::optional<std::optional<int>> got;
  std::thread worker;
  auto caller = [&]() -> asio::awaitable<void> {
    auto h = std::make_shared<tresor::common::Handoff<int>>(co_await asio::this_coro::executor);
    auto deliver = tresor::common::resume_on<int>(h);
    worker = std::thread([h, deliver] {
      if (h->claim()) deliver(7);
    });
    got = co_await tresor::common::wait_until(h, std::chrono::steady_clock::now() + 10s);
  };
  asio::co_spawn(ioc, caller(), asio::detached);
  ioc.run();
  worker.join();
  REQUIRE(got.has_value());
  CHECK(*got == std::optional<int>(7));
}

TEST_CASE("store pool: a job stuck on one connection does not hold up the others", "[store_breaker]") {
  struct Conn {
    int id;
  };
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 3; ++i) conns.push_back(std::make_unique<Conn>(Conn{i}));
  std::mutex m;
  std::condition_variable cv;
  bool unblock = false;
  std::atomic<int> done{0};
  {
    tresor::storage::StorePool<Conn> pool(std::move(conns));
    pool.post([&](Conn&) {  // a hung store call
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return unblock; });
    });
    for (int i = 0; i < 20; ++i) pool.post([&](Conn&) { ++done; });
    CHECK(eventually([&] { return done.load() == 20; }));
    {
      std::lock_guard lock(m);
      unblock = true;
    }
    cv.notify_one();
  }  // the destructor runs what is queued, then joins
  CHECK(done.load() == 20);
}
