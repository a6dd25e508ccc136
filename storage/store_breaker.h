// A circuit breaker on one shared store (every connection to the same Redis shares it):
// after `failures` operations in a row could not reach the store, it opens, and nothing a
// request does is sent there any more — callers are told "unavailable" at once instead of
// each paying a connect or command timeout. Requests never probe: a StoreProber thread
// pings the store every `open_for` while the breaker is open, and its first answer closes
// it. (Half-open is the prober's ping in flight; only the prober's thread is let through.)
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/config.h"

namespace tresor::storage {

class StoreBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  StoreBreaker(unsigned failures, std::chrono::milliseconds open_for);

  // Whether an operation may go to the store now: closed, or this is the prober's ping.
  bool allow() const;
  // The outcome of an operation that went to the store: reached it (any reply) or not.
  void record(bool reached);
  // Open (or probing): the store was not reachable lately. For callers that would queue
  // work for the store, /readyz and metrics.
  bool down() const { return state_.load(std::memory_order_acquire) != State::closed; }
  // Times it opened (metrics).
  uint64_t openings() const { return openings_.load(std::memory_order_relaxed); }

  // For the prober: true (and half-open, letting this thread through) when a ping is due.
  bool begin_probe();

 private:
  enum class State { closed, open, half_open };
  const unsigned failures_;
  const std::chrono::milliseconds open_for_;
  mutable std::mutex mutex_;
  std::atomic<State> state_{State::closed};
  unsigned consecutive_ = 0;
  Clock::time_point until_{};   // open: when the next ping is due
  std::thread::id prober_{};    // half_open: the thread whose ping is in flight
  std::atomic<uint64_t> openings_{0};
};

// The breaker of the store at `store.url` (one per URL in the process, made on first use
// with `store`'s breaker settings), shared by every connection to it.
std::shared_ptr<StoreBreaker> breaker_for(const config::StoreConfig& store);

// A thread that pings the store while its breaker is open (`ping` goes through a
// connection of its own whose run() the breaker lets through), so that the breaker closes
// by itself once the store answers, with no request paying for the probe.
class StoreProber {
 public:
  StoreProber(std::shared_ptr<StoreBreaker> breaker, std::function<bool()> ping);
  ~StoreProber();
  StoreProber(const StoreProber&) = delete;
  StoreProber& operator=(const StoreProber&) = delete;

 private:
  void run();
  std::shared_ptr<StoreBreaker> breaker_;
  std::function<bool()> ping_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tresor::storage
