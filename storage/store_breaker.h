// A circuit breaker on one shared store (every connection to the same Redis shares it):
// after `failures` operations in a row could not reach the store, it opens, and for
// `open_for` nothing is sent there at all — callers are told "unavailable" at once instead
// of each paying a connect or command timeout. Then exactly one operation goes through as
// a probe (half-open); its outcome closes the breaker or opens it again. A probe that
// never reports (its caller gave up and the job was skipped) frees its slot after
// `probe_timeout`, so the breaker cannot stay half-open forever.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "config/config.h"

namespace tresor::storage {

class StoreBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  StoreBreaker(unsigned failures, std::chrono::milliseconds open_for, std::chrono::milliseconds probe_timeout);

  // Whether an operation may go to the store now (closed, or this caller is the probe).
  bool allow();
  // The outcome of an operation that went to the store: reached it (any reply) or not.
  void record(bool reached);
  // Open or half-open: the store was not reachable lately. For /readyz and metrics.
  bool down() const { return state_.load(std::memory_order_relaxed) != State::closed; }
  // Times it opened (metrics).
  uint64_t openings() const { return openings_.load(std::memory_order_relaxed); }

 private:
  enum class State { closed, open, half_open };
  const unsigned failures_;
  const std::chrono::milliseconds open_for_;
  const std::chrono::milliseconds probe_timeout_;
  mutable std::mutex mutex_;
  std::atomic<State> state_{State::closed};
  unsigned consecutive_ = 0;
  Clock::time_point until_{};  // open: when a probe may go; half_open: when the probe's slot expires
  std::atomic<uint64_t> openings_{0};
};

// The breaker of the store at `store.url` (one per URL in the process, made on first use
// with `store`'s breaker settings), shared by every connection to it.
std::shared_ptr<StoreBreaker> breaker_for(const config::StoreConfig& store);

}  // namespace tresor::storage
