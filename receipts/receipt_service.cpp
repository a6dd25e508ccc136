// One worker thread owns the signer calls and the store: requests only enqueue, so an
// I/O thread never waits on ECDSA or fsync, and SQLite is only ever touched here.
#include "receipts/receipt_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace tresor::receipts {
namespace {

// Expired rows are only unreachable (get() filters on expiry), so purging is just
// housekeeping; once a minute keeps the table small without costing throughput.
constexpr auto kPurgeInterval = std::chrono::seconds(60);

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct PendingIssue {
  std::string id;
  std::string customer;
  std::string claims_json;
  int64_t expires_at = 0;
  std::function<void(bool)> done;
};

struct PendingFetch {
  std::string id;
  std::string customer;
  std::function<void(FetchResult)> done;
};

// A callback that throws must not take the worker (and every later receipt) down.
template <typename Fn, typename... Args>
void run_callback(const Fn& fn, const char* what, Args&&... args) {
  if (!fn) return;
  try {
    fn(std::forward<Args>(args)...);
  } catch (const std::exception& e) {
    spdlog::error("receipts: {} callback threw: {}", what, e.what());
  } catch (...) {
    spdlog::error("receipts: {} callback threw", what);
  }
}

}  // namespace

struct ReceiptService::Impl {
  std::unique_ptr<Signer> signer;
  std::unique_ptr<ReceiptStore> store;
  std::shared_ptr<TransparencyLog> log;
  // Atomic: a config reload changes them (set_policy) while workers issue.
  std::atomic<int64_t> ttl_seconds{0};
  std::atomic<bool> sign_at_issue{false};

  std::mutex mutex;
  std::condition_variable wake;
  std::vector<PendingIssue> issues;
  std::vector<PendingFetch> fetches;
  std::vector<std::function<void()>> tasks;  // stored_count(), probe_store(): run on this thread
  bool stopping = false;
  bool exited = false;
  std::atomic<uint64_t> issued{0}, stored{0}, failed{0}, signatures{0};
  std::atomic<bool> reachable{true};
  std::atomic<bool> probing{false};  // the worker has left its loop; nothing queued now would run

  std::thread worker;

  void run() {
    // Purge once at start-up too: rows that expired while the process was down.
    auto next_purge = std::chrono::steady_clock::now();
    // The log is read in (and its first checkpoint signed) at once, then every interval.
    auto next_log_sync = std::chrono::steady_clock::now();
    for (;;) {
      std::vector<PendingIssue> batch;
      std::vector<PendingFetch> reads;
      std::vector<std::function<void()>> jobs;
      {
        std::unique_lock lock(mutex);
        wake.wait_until(lock, log ? std::min(next_purge, next_log_sync) : next_purge,
                        [&] { return stopping || has_work(); });
        if (stopping && !has_work()) {
          exited = true;
          return;
        }
        // Take everything at once: all issues that piled up while the previous
        // transaction was fsyncing share the next one (group commit).
        batch.swap(issues);
        reads.swap(fetches);
        jobs.swap(tasks);
      }
      if (!batch.empty()) commit(batch);
      // Fetches after this round's issues, so a fetch queued behind its own issue sees it.
      for (auto& f : reads) serve(f);
      for (auto& job : jobs) job();
      if (log && std::chrono::steady_clock::now() >= next_log_sync) {
        sync_log();
        next_log_sync = std::chrono::steady_clock::now() + log->checkpoint_interval();
      }
      if (std::chrono::steady_clock::now() >= next_purge) {
        purge();
        next_purge = std::chrono::steady_clock::now() + kPurgeInterval;
      }
    }
  }

  // Queues `item` (moved from) and wakes the worker; false, leaving `item` intact, once
  // the worker has exited (nothing queued then would ever run).
  template <typename T>
  bool enqueue(std::vector<T>& queue, T& item) {
    {
      std::lock_guard lock(mutex);
      if (exited) return false;
      queue.push_back(std::move(item));
    }
    wake.notify_one();
    return true;
  }

  bool has_work() const { return !issues.empty() || !fetches.empty() || !tasks.empty(); }

  void commit(std::vector<PendingIssue>& batch) {
    std::vector<StoredReceipt> rows;
    std::vector<PendingIssue*> accepted;  // parallel to rows
    rows.reserve(batch.size());
    accepted.reserve(batch.size());
    for (auto& p : batch) {
      StoredReceipt row{p.id, p.customer, {}, p.expires_at, std::move(p.claims_json), {}, std::nullopt};
      // The log entry is hashed here, off the request path, like the signature.
      if (log) row.log_entry = TransparencyLog::entry_for(row.claims);
      if (sign_at_issue) {
        try {
          row.jws = signer->sign(row.claims);
          signatures.fetch_add(1, std::memory_order_relaxed);
        } catch (const std::exception& e) {
          // One bad payload fails only its own receipt, not the whole batch.
          spdlog::error("receipts: signing receipt {} failed: {}", p.id, e.what());
          failed.fetch_add(1, std::memory_order_relaxed);
          run_callback(p.done, "issue", false);
          continue;
        }
      }
      rows.push_back(std::move(row));
      accepted.push_back(&p);
      issued.fetch_add(1, std::memory_order_relaxed);
    }
    if (rows.empty()) return;
    bool ok = false;
    try {
      ok = store->put_batch(rows);
      if (!ok) spdlog::error("receipts: storing a batch of {} receipts failed", rows.size());
    } catch (const std::exception& e) {
      spdlog::error("receipts: storing a batch of {} receipts failed: {}", rows.size(), e.what());
    }
    (ok ? stored : failed).fetch_add(rows.size(), std::memory_order_relaxed);
    for (auto* p : accepted) run_callback(p->done, "issue", ok);
  }

  void serve(PendingFetch& f) {
    FetchResult result;
    try {
      if (auto r = store->load(f.id, f.customer, unix_now())) {
        result.jws = signed_form(*r);
        result.log_index = r->log_index;
      }
    } catch (const StoreUnavailable& e) {
      spdlog::error("receipts: fetching receipt {} failed: {}", f.id, e.what());
      result.store_unavailable = true;
    } catch (const std::exception& e) {
      // Signing failed or the store broke in an unexpected way: the client can retry.
      spdlog::error("receipts: fetching receipt {} failed: {}", f.id, e.what());
      result.store_unavailable = true;
    }
    run_callback(f.done, "fetch", std::move(result));
  }

  // The receipt's JWS, signing it now when it was stored unsigned. The signature is
  // stored too (best effort: the fetch is answered either way), so a later fetch
  // returns the same bytes; when another replica signed first, its JWS is returned.
  std::optional<std::string> signed_form(const StoredReceipt& r) {
    if (!r.jws.empty()) return r.jws;
    if (r.claims.empty()) return std::nullopt;
    std::string jws = signer->sign(r.claims);
    signatures.fetch_add(1, std::memory_order_relaxed);
    auto stored_jws = store->store_signature(r.id, jws);
    if (!stored_jws) {
      spdlog::warn("receipts: the signature of receipt {} could not be stored; answered unstored", r.id);
      return jws;
    }
    return stored_jws;
  }

  void sync_log() {
    try {
      log->sync(*store);
    } catch (const std::exception& e) {
      // The store is down: the log catches up at the next interval.
      if (!log_sync_failing) spdlog::warn("transparency log: reading the store failed: {}", e.what());
      log_sync_failing = true;
      return;
    }
    log_sync_failing = false;
  }
  bool log_sync_failing = false;

  void purge() {
    try {
      store->purge_expired(unix_now());
    } catch (const std::exception& e) {
      spdlog::error("receipts: purging expired receipts failed: {}", e.what());
    }
  }
};

ReceiptService::ReceiptService(std::unique_ptr<Signer> signer, std::unique_ptr<ReceiptStore> store,
                               int64_t ttl_seconds, bool sign_at_issue, std::shared_ptr<TransparencyLog> log)
    : impl_(std::make_unique<Impl>()) {
  impl_->log = std::move(log);
  impl_->sign_at_issue = sign_at_issue;
  impl_->signer = std::move(signer);
  impl_->store = std::move(store);
  impl_->ttl_seconds = ttl_seconds;
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
}

void ReceiptService::set_policy(int64_t ttl_seconds, bool sign_at_issue) {
  impl_->ttl_seconds.store(ttl_seconds, std::memory_order_relaxed);
  impl_->sign_at_issue.store(sign_at_issue, std::memory_order_relaxed);
}

ReceiptService::~ReceiptService() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  // The worker drains the queue before leaving, so no accepted issue is dropped.
  impl_->worker.join();
}

void ReceiptService::issue(std::string id, std::string customer, std::string claims_json,
                           std::function<void(bool)> done) {
  // Expiry counts from issue time, not from when the worker gets to the receipt.
  PendingIssue p{std::move(id), std::move(customer), std::move(claims_json), unix_now() + impl_->ttl_seconds,
                 std::move(done)};
  if (!impl_->enqueue(impl_->issues, p)) run_callback(p.done, "issue", false);  // shut down: say so
}

void ReceiptService::fetch(std::string id, std::string customer, std::function<void(FetchResult)> done) {
  PendingFetch f{std::move(id), std::move(customer), std::move(done)};
  if (!impl_->enqueue(impl_->fetches, f)) run_callback(f.done, "fetch", FetchResult{std::nullopt, true});
}

void ReceiptService::add_cosignature(uint64_t size, std::string line) {
  if (!impl_->log || !impl_->log->add_cosignature(size, line)) return;
  Impl* impl = impl_.get();
  std::function<void()> store_it = [impl, size, line = std::move(line)] {
    try {
      impl->store->add_cosignature(size, line);
    } catch (const std::exception& e) {
      spdlog::warn("transparency log: storing a cosignature failed: {}", e.what());
    }
  };
  impl_->enqueue(impl_->tasks, store_it);
}

const Signer& ReceiptService::signer() const { return *impl_->signer; }

bool ReceiptService::store_reachable() const { return impl_->reachable.load(); }

void ReceiptService::probe_store() {
  if (impl_->probing.exchange(true)) return;  // one probe at a time, however often /readyz is asked
  Impl* impl = impl_.get();
  std::function<void()> probe = [impl] {
    bool ok = false;
    try {
      ok = impl->store->reachable();
    } catch (const std::exception&) {
    }
    impl->reachable = ok;
    impl->probing = false;
  };
  // Stopped: nothing else uses the store any more, so the caller may ask it directly.
  if (!impl_->enqueue(impl_->tasks, probe)) probe();
}

ReceiptService::Counts ReceiptService::counts() const {
  Counts c;
  c.issued = impl_->issued.load(std::memory_order_relaxed);
  c.stored = impl_->stored.load(std::memory_order_relaxed);
  c.failed = impl_->failed.load(std::memory_order_relaxed);
  c.signed_ = impl_->signatures.load(std::memory_order_relaxed);
  return c;
}

size_t ReceiptService::stored_count() {
  auto count = [store = impl_->store.get()]() -> size_t {
    try {
      return store->count();
    } catch (const std::exception& e) {
      spdlog::error("receipts: counting receipts failed: {}", e.what());
      return 0;
    }
  };
  // Called from a callback on the worker itself: waiting for the worker would deadlock.
  if (std::this_thread::get_id() == impl_->worker.get_id()) return count();
  auto promise = std::make_shared<std::promise<size_t>>();
  auto result = promise->get_future();
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->exited) return 0;
    impl_->tasks.push_back([promise, count] { promise->set_value(count()); });
  }
  impl_->wake.notify_one();
  return result.get();
}

}  // namespace tresor::receipts
