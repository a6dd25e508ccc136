// A few threads, each owning its own store object (and so its own connection), taking
// jobs from one queue: a slow or hung store blocks at most these threads, never an I/O
// thread, and independent requests do not wait behind each other's round trips on a
// single thread. Jobs are plain callables; waiting with a deadline is the caller's
// (common/rendezvous.h Handoff).
#pragma once

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tresor::storage {

template <typename Store>
class StorePool {
 public:
  using Job = std::function<void(Store&)>;

  explicit StorePool(std::vector<std::unique_ptr<Store>> stores) : stores_(std::move(stores)) {
    for (auto& s : stores_) threads_.emplace_back([this, store = s.get()] { run(*store); });
  }
  // Runs what is queued, then stops.
  ~StorePool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  StorePool(const StorePool&) = delete;
  StorePool& operator=(const StorePool&) = delete;

  void post(Job job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

  // Jobs waiting for a thread (metrics, tests).
  size_t queued() const {
    std::lock_guard lock(mutex_);
    return jobs_.size();
  }

 private:
  void run(Store& store) {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      try {
        job(store);
      } catch (const std::exception& e) {
        spdlog::error("store pool: a job failed: {}", e.what());
      }
    }
  }

  std::vector<std::unique_ptr<Store>> stores_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tresor::storage
