#include "storage/store_breaker.h"

#include <spdlog/spdlog.h>

#include <map>

namespace tresor::storage {
namespace {
// How often the prober looks at the breaker (a ping is sent only when one is due).
constexpr auto kProberTick = std::chrono::milliseconds(50);
}  // namespace

StoreBreaker::StoreBreaker(unsigned failures, std::chrono::milliseconds open_for)
    : failures_(failures == 0 ? 1 : failures), open_for_(open_for) {}

bool StoreBreaker::allow() const {
  // The common case, the store answering, takes no lock.
  const State s = state_.load(std::memory_order_acquire);
  if (s == State::closed) return true;
  if (s == State::open) return false;
  std::lock_guard lock(mutex_);
  return state_.load(std::memory_order_relaxed) == State::half_open && prober_ == std::this_thread::get_id();
}

bool StoreBreaker::begin_probe() {
  if (state_.load(std::memory_order_acquire) == State::closed) return false;
  std::lock_guard lock(mutex_);
  if (state_.load(std::memory_order_relaxed) != State::open || Clock::now() < until_) return false;
  state_.store(State::half_open, std::memory_order_release);
  prober_ = std::this_thread::get_id();
  return true;
}

void StoreBreaker::record(bool reached) {
  std::lock_guard lock(mutex_);
  const State was = state_.load(std::memory_order_relaxed);
  if (reached) {
    consecutive_ = 0;
    if (was != State::closed) {
      spdlog::info("store: reachable again; breaker closed");
      state_.store(State::closed, std::memory_order_release);
    }
    return;
  }
  ++consecutive_;
  if (was == State::open) return;
  if (was == State::half_open || consecutive_ >= failures_) {
    if (was == State::closed)
      spdlog::warn("store: {} operations in a row could not reach it; breaker open, pinging it every {} ms",
                   consecutive_, open_for_.count());
    state_.store(State::open, std::memory_order_release);
    until_ = Clock::now() + open_for_;
    if (was == State::closed) openings_.fetch_add(1, std::memory_order_relaxed);
  }
}

std::shared_ptr<StoreBreaker> breaker_for(const config::StoreConfig& store) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<StoreBreaker>> breakers;
  std::lock_guard lock(mutex);
  auto& b = breakers[store.url];
  if (!b) b = std::make_shared<StoreBreaker>(store.breaker_failures, std::chrono::milliseconds(store.breaker_open_ms));
  return b;
}

StoreProber::StoreProber(std::shared_ptr<StoreBreaker> breaker, std::function<bool()> ping)
    : breaker_(std::move(breaker)), ping_(std::move(ping)) {
  thread_ = std::thread([this] { run(); });
}

StoreProber::~StoreProber() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void StoreProber::run() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, kProberTick, [&] { return stopping_; })) {
    if (!breaker_->begin_probe()) continue;
    lock.unlock();
    bool ok = false;
    try {
      ok = ping_();  // run() records the outcome in the breaker
    } catch (const std::exception& e) {
      spdlog::debug("store probe failed: {}", e.what());
    }
    // A ping that threw never reached run()'s bookkeeping: count it as a failure.
    if (!ok && breaker_->down()) breaker_->record(false);
    lock.lock();
  }
}

}  // namespace tresor::storage
