#include "storage/store_breaker.h"

#include <spdlog/spdlog.h>

#include <map>

namespace tresor::storage {

StoreBreaker::StoreBreaker(unsigned failures, std::chrono::milliseconds open_for,
                           std::chrono::milliseconds probe_timeout)
    : failures_(failures == 0 ? 1 : failures), open_for_(open_for), probe_timeout_(probe_timeout) {}

bool StoreBreaker::allow() {
  // The common case, the store answering, takes no lock.
  if (state_.load(std::memory_order_acquire) == State::closed) return true;
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  switch (state_.load(std::memory_order_relaxed)) {
    case State::closed: return true;
    case State::open:
      if (now < until_) return false;
      state_.store(State::half_open, std::memory_order_release);
      until_ = now + probe_timeout_;
      return true;  // this caller is the probe
    case State::half_open:
      if (now < until_) return false;  // a probe is out
      until_ = now + probe_timeout_;    // it never reported: another one
      return true;
  }
  return false;
}

void StoreBreaker::record(bool reached) {
  if (reached && state_.load(std::memory_order_acquire) == State::closed) {
    std::lock_guard lock(mutex_);
    consecutive_ = 0;
    return;
  }
  std::lock_guard lock(mutex_);
  const State was = state_.load(std::memory_order_relaxed);
  if (reached) {
    consecutive_ = 0;
    if (was != State::closed) spdlog::info("store: reachable again; breaker closed");
    state_.store(State::closed, std::memory_order_release);
    return;
  }
  ++consecutive_;
  if (was == State::half_open || (was == State::closed && consecutive_ >= failures_)) {
    if (was == State::closed)
      spdlog::warn("store: {} operations in a row could not reach it; breaker open for {} ms", consecutive_,
                   open_for_.count());
    state_.store(State::open, std::memory_order_release);
    until_ = Clock::now() + open_for_;
    openings_.fetch_add(1, std::memory_order_relaxed);
  }
}

std::shared_ptr<StoreBreaker> breaker_for(const config::StoreConfig& store) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<StoreBreaker>> breakers;
  std::lock_guard lock(mutex);
  auto& b = breakers[store.url];
  if (!b) {
    // A probe may take a connect and a command (and the reconnect-and-retry of one).
    const auto probe = std::chrono::milliseconds(2 * (store.connect_timeout_ms + store.command_timeout_ms));
    b = std::make_shared<StoreBreaker>(store.breaker_failures, std::chrono::milliseconds(store.breaker_open_ms), probe);
  }
  return b;
}

}  // namespace tresor::storage
