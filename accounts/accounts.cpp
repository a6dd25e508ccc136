#include "accounts/accounts.h"

#include <boost/asio/this_coro.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <stdexcept>
#include <ctime>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/decimal.h"
#include "common/ids.h"
#include "common/json_text.h"
#include "common/rendezvous.h"
#include "storage/store_breaker.h"
#include "storage/store_pool.h"

namespace tresor::accounts {
namespace asio = boost::asio;
using common::Handoff;
using common::Rendezvous;
using common::resume_on;
using common::wait_for;

namespace {

// A shared store that could not take a settlement gets it again this often.
constexpr auto kRetryEvery = std::chrono::seconds(1);

int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string utc_day(int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", &tm);
  return text;
}

}  // namespace

// One thread owns every call that may block (the shared store's network round trips, the
// spend log's fsync): requests only post to it, as with the receipts service.
struct Accounts::Impl {
  std::unique_ptr<LedgerStore> ledger;
  std::unique_ptr<SpendLog> log;
  bool shared = false;
  // Shared store: the steps a request waits on run here (see the constructor).
  std::unique_ptr<storage::StorePool<LedgerStore>> pool;
  std::shared_ptr<storage::StoreBreaker> breaker;  // shared store: its breaker
  std::atomic<bool> closing{false};                 // stop_pool(): nobody waits any more
  config::StoreConfig store;
  std::function<void(OutageFunction)> report_outage;
  std::atomic<int64_t> last_outage_warning{0};  // steady ms: warn at most once a second

  struct PendingRow {
    Settlement settlement;
    std::function<void(bool)> done;  // may be empty
  };

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  std::vector<PendingRow> rows;  // for the spend log: one transaction per batch
  bool stopping = false;
  bool exited = false;
  // Worker-only: settlements the shared store or the log could not take yet.
  std::vector<Settlement> unsettled;
  std::vector<Settlement> unlogged;
  std::thread worker;

  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mutex);
      if (!exited) {
        jobs.push_back(std::move(job));
        wake.notify_one();
        return;
      }
    }
    job();  // stopped: nothing else runs on the ledger any more
  }

  void log_row(Settlement s, std::function<void(bool)> done) {
    {
      std::lock_guard lock(mutex);
      if (!exited) {
        rows.push_back(PendingRow{std::move(s), std::move(done)});
        wake.notify_one();
        return;
      }
    }
    const bool ok = log->append({s});
    if (done) done(ok);
  }

  // Runs on the worker: a shared settlement, kept for a retry when the store is away.
  bool settle_shared(const Settlement& s) {
    bool ok = false;
    try {
      ok = ledger->settle(s);
    } catch (const std::exception& e) {
      spdlog::error("accounts: settling {} failed: {}", s.request_id, e.what());
    }
    if (!ok) unsettled.push_back(s);
    return ok;
  }

  void append(std::vector<PendingRow>& batch) {
    std::vector<Settlement> settlements;
    settlements.reserve(batch.size() + unlogged.size());
    for (auto& s : unlogged) settlements.push_back(std::move(s));
    unlogged.clear();
    for (auto& p : batch) settlements.push_back(p.settlement);
    bool ok = false;
    try {
      ok = log->append(settlements);
    } catch (const std::exception& e) {
      spdlog::error("accounts: writing {} ledger rows failed: {}", settlements.size(), e.what());
    }
    if (!ok) {
      spdlog::error("accounts: {} ledger rows not written yet; retrying", settlements.size());
      unlogged = std::move(settlements);
    }
    for (auto& p : batch)
      if (p.done) p.done(ok);
  }

  void retry() {
    std::vector<Settlement> again;
    again.swap(unsettled);
    for (const auto& s : again) settle_shared(s);
    if (!unlogged.empty() && log) {
      std::vector<PendingRow> none;
      append(none);
    }
  }

  void run() {
    for (;;) {
      std::deque<std::function<void()>> todo;
      std::vector<PendingRow> batch;
      {
        std::unique_lock lock(mutex);
        const auto ready = [&] { return stopping || !jobs.empty() || !rows.empty(); };
        if (unsettled.empty() && unlogged.empty()) wake.wait(lock, ready);
        else wake.wait_for(lock, kRetryEvery, ready);
        if (stopping && jobs.empty() && rows.empty()) {
          exited = true;
          break;
        }
        todo.swap(jobs);
        batch.swap(rows);
      }
      // Rows first: a settlement acknowledged to a request is on disk before anything after it.
      if (!batch.empty()) append(batch);
      for (auto& job : todo) {
        try {
          job();
        } catch (const std::exception& e) {
          spdlog::error("accounts: a ledger job failed: {}", e.what());
        }
      }
      if (!unsettled.empty() || !unlogged.empty()) retry();
    }
    retry();  // a last try at shutdown
    for (const auto& s : unsettled)
      spdlog::error("accounts: settlement {} of {} ({} nanos) could not reach the store before shutdown",
                    s.request_id, s.customer, s.cost);
    for (const auto& s : unlogged)
      spdlog::error("accounts: ledger row {} of {} ({} nanos) could not be written before shutdown", s.request_id,
                    s.customer, s.cost);
  }

  // Runs `fn` on the worker and resumes the caller on its own executor with the result,
  // or with nullopt at `deadline` (the job then still runs: settlements are not skipped).
  template <typename T>
  asio::awaitable<std::optional<T>> on_worker(std::function<T()> fn, common::Clock::time_point deadline) {
    auto handoff = std::make_shared<Handoff<T>>(co_await asio::this_coro::executor);
    auto done = resume_on<T>(handoff);
    std::function<void()> job = [fn = std::move(fn), handoff, done] {
      T v = fn();
      if (handoff->claim()) done(std::move(v));
    };
    post(std::move(job));
    co_return co_await common::wait_until(handoff, deadline);
  }

  // Runs `fn` on a pool thread; nullopt when it has not answered by `deadline`. A job
  // whose caller gave up before it started is skipped; one that finished too late is
  // handed to `late` (e.g. to give back a hold nobody will settle).
  template <typename T>
  asio::awaitable<std::optional<T>> on_pool(std::function<T(LedgerStore&)> fn, common::Clock::time_point deadline,
                                            std::function<void(LedgerStore&, const T&)> late) {
    // Known down: no queueing behind jobs stuck on it (the prober closes the breaker).
    if (!pool || (breaker && breaker->down())) co_return std::nullopt;
    auto handoff = std::make_shared<Handoff<T>>(co_await asio::this_coro::executor);
    auto done = resume_on<T>(handoff);
    storage::StorePool<LedgerStore>::Job job = [this, fn = std::move(fn), late = std::move(late), handoff,
                                                done](LedgerStore& ledger) {
      if (handoff->given_up() || closing) return;
      T v = fn(ledger);
      if (!closing && handoff->claim()) done(std::move(v));
      else if (late) late(ledger, v);
    };
    pool->post(std::move(job));
    co_return co_await common::wait_until(handoff, deadline);
  }

  // count() or hold() on the pool: the store's decision, or unavailable when it threw or
  // has not answered by the step's deadline (defined below unavailable_on_throw).
  asio::awaitable<Decision> decide(std::function<Decision(LedgerStore&)> step, common::Clock::time_point deadline,
                                   std::function<void(LedgerStore&, const Decision&)> late);

  // A store step waits at most until the request's deadline, and never longer than a
  // connect and a command (twice: one reconnect and retry) would take.
  common::Clock::time_point step_deadline(common::Clock::time_point request_deadline) const {
    const auto cap = std::chrono::milliseconds(2 * (store.connect_timeout_ms + store.command_timeout_ms));
    return std::min(request_deadline, common::Clock::now() + cap);
  }

  // The store did not answer for a request that needs the rate limits and/or a credit
  // check: a refusal when store.outage says closed for one of them, else served without.
  std::optional<Refusal> outage(bool needs_limits, bool needs_credit, const std::string& customer) {
    const bool closed = (needs_limits && store.outage.rate_limits == config::OutageMode::closed) ||
                        (needs_credit && store.outage.credits == config::OutageMode::closed);
    if (closed) return store_unavailable_refusal();
    if (needs_limits) served_without(OutageFunction::rate_limits, customer);
    if (needs_credit) served_without(OutageFunction::credits, customer);
    return std::nullopt;
  }

  // The store did not answer: report what the request goes without (policy open) and
  // warn at most once a second.
  void served_without(OutageFunction f, const std::string& customer) {
    if (report_outage) report_outage(f);
    const int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(common::Clock::now().time_since_epoch()).count();
    int64_t last = last_outage_warning.load(std::memory_order_relaxed);
    if (now_ms - last < 1000 || !last_outage_warning.compare_exchange_strong(last, now_ms)) return;
    spdlog::warn("accounts: the shared store is unreachable; serving {} without {} (store.outage: open)", customer,
                 f == OutageFunction::rate_limits ? "rate limits" : "a credit reservation");
  }
};

namespace {

Decision unavailable_on_throw(const std::function<Decision()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    spdlog::error("accounts: the ledger store failed: {}", e.what());
    Decision d;
    d.verdict = Verdict::unavailable;
    return d;
  }
}

}  // namespace

asio::awaitable<Decision> Accounts::Impl::decide(std::function<Decision(LedgerStore&)> step,
                                                 common::Clock::time_point deadline,
                                                 std::function<void(LedgerStore&, const Decision&)> late) {
  std::function<Decision(LedgerStore&)> job = [step = std::move(step)](LedgerStore& store) {
    return unavailable_on_throw([&] { return step(store); });
  };
  const auto answer = co_await on_pool<Decision>(std::move(job), step_deadline(deadline), std::move(late));
  co_return answer ? *answer : Decision{Verdict::unavailable, 0, {}, 0};
}

namespace {

Refusal window_refusal(Refusal::Kind kind, const std::vector<WindowDraw>& windows, const Decision& d, int64_t now) {
  Refusal r;
  r.kind = kind;
  const auto& w = windows.at(d.window);
  r.limit = w.limit;
  r.requested = w.amount;
  r.retry_after = seconds_to_reset(w, now);
  return r;
}

}  // namespace

Refusal store_unavailable_refusal() {
  Refusal r;
  r.kind = Refusal::Kind::store_unavailable;
  r.retry_after = 1;
  return r;
}

namespace {

Refusal balance_refusal() {
  Refusal r;
  r.kind = Refusal::Kind::balance_exceeded;
  return r;
}

}  // namespace

Grant::Grant(Grant&& other) noexcept { *this = std::move(other); }

Grant& Grant::operator=(Grant&& other) noexcept {
  if (this == &other) return *this;
  release_now();
  accounts_ = std::exchange(other.accounts_, nullptr);
  key_ = other.key_;
  customer_ = std::move(other.customer_);
  credit_ = other.credit_;
  id_ = std::move(other.id_);
  token_windows_ = std::move(other.token_windows_);
  headers_ = std::move(other.headers_);
  held_ = std::exchange(other.held_, false);
  closed_ = std::exchange(other.closed_, true);
  return *this;
}

Grant::~Grant() { release_now(); }

void Grant::release_now() {
  if (accounts_ && held_ && !closed_) accounts_->release(*this);
}

Accounts::Accounts(std::unique_ptr<LedgerStore> ledger, std::unique_ptr<SpendLog> log,
                   std::vector<std::unique_ptr<LedgerStore>> pool, config::StoreConfig store)
    : impl_(std::make_unique<Impl>()) {
  impl_->shared = ledger->shared();
  impl_->ledger = std::move(ledger);
  impl_->log = std::move(log);
  impl_->store = std::move(store);
  if (impl_->shared) {
    // The steps a request waits on must not queue behind settlements on the worker.
    if (pool.empty()) throw std::invalid_argument("accounts: a shared ledger needs a pool");
    impl_->pool = std::make_unique<storage::StorePool<LedgerStore>>(std::move(pool));
    impl_->breaker = storage::breaker_for(impl_->store);
  }
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
}

Accounts::~Accounts() {
  stop_pool();  // nobody waits on it any more; a late hold is still given back
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  impl_->worker.join();
}

std::unique_ptr<Accounts> Accounts::open(const config::StoreConfig& store) {
  constexpr std::string_view kSqlite = "sqlite:";
  const std::string& url = store.url;
  if (url.rfind(kSqlite, 0) == 0) {
    auto log = open_sqlite_spend_log(url.substr(kSqlite.size()));
    auto ledger = open_local_ledger(log->totals());
    return std::make_unique<Accounts>(std::move(ledger), std::move(log));
  }
  if (url.rfind("redis://", 0) != 0 && url.rfind("rediss://", 0) != 0)
    throw std::runtime_error("store: expected sqlite:PATH, redis://… or rediss://…");
  std::vector<std::unique_ptr<LedgerStore>> pool;
  for (unsigned i = 0; i < std::max(1u, store.connections); ++i) pool.push_back(open_redis_ledger(store));
  return std::make_unique<Accounts>(open_redis_ledger(store), nullptr, std::move(pool), store);
}

bool Accounts::shared() const { return impl_->shared; }

void Accounts::stop_pool() {
  impl_->closing = true;
  impl_->pool.reset();
}

void Accounts::on_outage(std::function<void(OutageFunction)> report) { impl_->report_outage = std::move(report); }

asio::awaitable<Admission> Accounts::admit(const config::Config& cfg, const config::ApiKeyConfig& key,
                                           std::chrono::system_clock::time_point now, bool spends,
                                           common::Clock::time_point deadline) {
  Admission a;
  Grant& g = a.grant;
  g.accounts_ = this;
  g.key_ = &key;
  g.customer_ = key.customer;
  if (const auto it = cfg.auth.customers.find(key.customer); it != cfg.auth.customers.end())
    g.credit_ = it->second.credit_nanos;
  const int64_t t = unix_seconds(now);
  CountRequest request;
  request.customer = key.customer;
  if (spends) request.credit = g.credit_;
  request.windows = request_windows(key, t);
  request.now = t;
  if (!request.credit && request.windows.empty()) co_return a;  // nothing to count: no store call
  LedgerStore* ledger = impl_->ledger.get();
  Decision d;
  if (!impl_->shared) {
    d = ledger->count(request);  // memory, under the ledger's mutex: no thread hop
  } else {
    // Named, not a temporary in the co_await: g++ 12 double-destroys temporaries that
    // live across a suspension in a coroutine. A count that lands after its caller gave
    // up stays counted: the request was served (policy open) or refused once.
    std::function<Decision(LedgerStore&)> step = [request](LedgerStore& store) { return store.count(request); };
    std::function<void(LedgerStore&, const Decision&)> late;
    d = co_await impl_->decide(std::move(step), deadline, std::move(late));
  }
  switch (d.verdict) {
    case Verdict::unavailable:
      if (const auto refusal = impl_->outage(!request.windows.empty(), request.credit.has_value(), key.customer))
        a.refusal = refusal;
      break;
    case Verdict::over_credit: a.refusal = balance_refusal(); break;
    case Verdict::over_window: a.refusal = window_refusal(Refusal::Kind::rate_limited, request.windows, d, t); [[fallthrough]];
    case Verdict::granted:
      if (const auto w = tightest(request.windows, d, t)) add_request_headers(g.headers_, *w);
      break;
  }
  co_return a;
}

asio::awaitable<std::optional<Refusal>> Accounts::reserve(Grant& grant, CostBound bound, std::chrono::seconds lifetime,
                                                          common::Clock::time_point deadline) {
  grant.id_ = common::new_receipt_id();
  if (!grant.key_) co_return std::nullopt;
  const int64_t t = unix_seconds(std::chrono::system_clock::now());
  Hold hold;
  hold.request_id = grant.id_;
  hold.customer = grant.customer_;
  hold.credit = grant.credit_;
  hold.amount = bound.money;
  hold.windows = token_windows(*grant.key_, t, bound.tokens);
  hold.now = t;
  hold.expires_at = t + lifetime.count();
  if (!hold.credit && hold.windows.empty()) co_return std::nullopt;
  LedgerStore* ledger = impl_->ledger.get();
  Decision d;
  if (!impl_->shared) {
    d = ledger->hold(hold);
  } else {
    std::function<Decision(LedgerStore&)> step = [hold](LedgerStore& store) { return store.hold(hold); };
    // Granted after the caller gave up: nobody will settle it, so give it back now
    // rather than when it expires.
    std::function<void(LedgerStore&, const Decision&)> late = [hold](LedgerStore& store, const Decision& late_d) {
      if (late_d.verdict != Verdict::granted) return;
      try {
        store.release(hold.customer, hold.request_id);
      } catch (const std::exception& e) {
        spdlog::error("accounts: giving back late hold {} failed: {}", hold.request_id, e.what());
      }
    };
    d = co_await impl_->decide(std::move(step), deadline, std::move(late));
  }
  std::optional<Refusal> refusal;
  switch (d.verdict) {
    case Verdict::unavailable:
      refusal = impl_->outage(!hold.windows.empty(), hold.credit.has_value(), grant.customer_);
      co_return refusal;
    case Verdict::over_credit: refusal = balance_refusal(); co_return refusal;
    case Verdict::over_window: refusal = window_refusal(Refusal::Kind::tokens_limited, hold.windows, d, t); break;
    case Verdict::granted:
      grant.held_ = true;
      grant.token_windows_ = hold.windows;
      break;
  }
  if (const auto w = tightest(hold.windows, d, t)) add_token_headers(grant.headers_, *w);
  co_return refusal;
}

asio::awaitable<void> Accounts::settle(Grant& grant, Charge charge, bool durable) {
  if (grant.closed_ || !grant.accounts_) co_return;
  grant.closed_ = true;
  // Nothing to record: a free answer with no hold to replace.
  if (charge.cost <= 0 && !grant.held_) co_return;
  const int64_t t = unix_seconds(std::chrono::system_clock::now());
  Settlement s;
  s.request_id = grant.id_.empty() ? common::new_receipt_id() : grant.id_;
  s.customer = grant.customer_;
  s.route = charge.route ? charge.route->id : std::string();
  s.day = utc_day(t);
  s.cost = std::max<Nanos>(charge.cost, 0);
  s.estimated = charge.estimated;
  s.prompt_tokens = charge.prompt_tokens;
  s.completion_tokens = charge.completion_tokens;
  s.windows = grant.token_windows_;
  for (auto& w : s.windows) w.amount = charge.prompt_tokens + charge.completion_tokens;
  s.at = t;
  Impl& impl = *impl_;
  if (impl.shared) {
    // Not waited for while the store is known down: the worker retries it every second.
    if (!durable || (impl.breaker && impl.breaker->down())) {
      impl.post([&impl, s] { impl.settle_shared(s); });
      co_return;
    }
    // Waits as long as one store step may take; past that the worker still has it and
    // retries it every second until the store takes it.
    std::function<bool()> job = [&impl, s] { return impl.settle_shared(s); };
    const auto step = impl.step_deadline(common::Clock::time_point::max());
    (void)co_await impl.on_worker<bool>(std::move(job), step);
    co_return;
  }
  impl.ledger->settle(s);
  if (!impl.log || s.cost <= 0) co_return;
  if (!durable) {
    impl.log_row(std::move(s), nullptr);
    co_return;
  }
  auto rendezvous = std::make_shared<Rendezvous<bool>>(co_await asio::this_coro::executor);
  impl.log_row(std::move(s), resume_on(rendezvous));
  (void)co_await wait_for(rendezvous);
}

void Accounts::release(Grant& grant) {
  if (grant.closed_) return;
  grant.closed_ = true;
  if (!grant.held_) return;
  if (!impl_->shared) {
    impl_->ledger->release(grant.customer_, grant.id_);
    return;
  }
  LedgerStore* ledger = impl_->ledger.get();
  impl_->post([ledger, customer = grant.customer_, id = grant.id_] {
    try {
      ledger->release(customer, id);
    } catch (const std::exception& e) {
      // The hold's expiry gives it back.
      spdlog::error("accounts: releasing {} failed: {}", id, e.what());
    }
  });
}

asio::awaitable<std::optional<std::string>> Accounts::usage_json(const config::Config& cfg,
                                                                 const std::string& customer,
                                                                 std::chrono::system_clock::time_point now,
                                                                 common::Clock::time_point deadline) {
  const int64_t t = unix_seconds(now);
  using Read = std::optional<Balance>;
  std::function<Read(LedgerStore&)> read = [customer, t](LedgerStore& ledger) -> Read {
    try {
      return ledger.balance(customer, t);
    } catch (const std::exception& e) {
      spdlog::error("accounts: reading the balance of {} failed: {}", customer, e.what());
      return std::nullopt;
    }
  };
  std::optional<Balance> balance;
  if (impl_->shared) {
    std::function<void(LedgerStore&, const Read&)> late;
    const auto step = impl_->step_deadline(deadline);
    const auto answer = co_await impl_->on_pool<Read>(std::move(read), step, std::move(late));
    if (answer) balance = *answer;
  } else {
    balance = read(*impl_->ledger);
  }
  std::optional<std::string> out;
  if (balance) out = usage_document(cfg, customer, *balance);
  co_return out;
}

namespace {

void append_amount(std::string& out, std::string_view name, Nanos amount) {
  common::append_json_name(out, name);
  out += common::format_nanos(amount);
}

void append_totals(std::string& out, std::string_view name, const std::map<std::string, SpendTotal>& totals) {
  common::append_json_name(out, name);
  out += '{';
  bool first = true;
  for (const auto& [key, total] : totals) {
    if (!first) out += ',';
    first = false;
    common::append_json_string(out, key);
    out += ":{";
    append_amount(out, "spent", total.amount);
    out += ',';
    append_amount(out, "estimated", total.estimated);
    out += '}';
  }
  out += '}';
}

}  // namespace

std::string usage_document(const config::Config& cfg, const std::string& customer, const Balance& b) {
  std::string out = R"({"object":"usage","customer":)";
  common::append_json_string(out, customer);
  const auto it = cfg.auth.customers.find(customer);
  const bool limited = it != cfg.auth.customers.end();
  if (limited) {
    out += ',';
    common::append_json_name(out, "currency");
    common::append_json_string(out, it->second.currency);
    out += ',';
    append_amount(out, "credit", it->second.credit_nanos);
  } else {
    out += R"(,"credit":null)";  // unlimited
  }
  out += ',';
  append_amount(out, "spent", b.spent);
  out += ',';
  append_amount(out, "estimated", b.estimated);
  out += ',';
  append_amount(out, "reserved", b.reserved);
  out += ',';
  if (limited) append_amount(out, "remaining", it->second.credit_nanos - b.spent - b.reserved);
  else out += R"("remaining":null)";
  out += ',';
  append_totals(out, "by_route", b.by_route);
  out += ',';
  append_totals(out, "by_day", b.by_day);
  out += '}';
  return out;
}

}  // namespace tresor::accounts
