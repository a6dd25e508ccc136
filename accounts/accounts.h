// A customer's account as requests see it (spec §9): the key's request and token limits,
// the customer's credit, reservations and settlement, and /v1/usage. The one entry point
// for money: admit → reserve → settle (or release), each atomic in the ledger store so
// that any number of requests and replicas never spend more than the credit.
//
//   admit   (head phase, before the body): the request counts against the key's request
//           windows; refused 429 when one is full, 402 when the credit is used up.
//   reserve (before the first upstream attempt): the request's most expensive outcome is
//           held against the credit (402) and the token windows (429).
//   settle  (the answer was delivered, whole or cut): its actual cost replaces the hold and
//           is written to the spend ledger under the request's id.
//   release (nothing was delivered): the hold is given back. A Grant going out of scope
//           unsettled releases itself, so no failure path can leak a hold.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "accounts/ledger.h"
#include "accounts/limits.h"
#include "accounts/pricing.h"
#include "common/clock.h"
#include "config/config.h"

namespace tresor::accounts {

class Accounts;

struct Refusal {
  // store_unavailable: the shared store could not be reached in time and the outage
  // policy (store.outage) says closed for a function this request needs.
  enum class Kind { rate_limited, tokens_limited, balance_exceeded, store_unavailable };
  Kind kind = Kind::rate_limited;
  int64_t limit = 0;        // the full window's limit (requests or tokens)
  int64_t requested = 0;    // tokens_limited: what the request would hold
  unsigned retry_after = 0; // seconds until that window resets
};

// 503 store_unavailable, Retry-After 1: the store cannot be reached and store.outage is
// closed for something the request needs (accounts/ for limits and credits, the server
// for receipts).
Refusal store_unavailable_refusal();

// One request's standing with its account, from admission to settlement or release.
class Grant {
 public:
  Grant() = default;
  Grant(Grant&& other) noexcept;
  Grant& operator=(Grant&& other) noexcept;
  Grant(const Grant&) = delete;
  Grant& operator=(const Grant&) = delete;
  ~Grant();

  // The request's ledger id, set by reserve(): a fresh time-ordered UUID, also the id of
  // the receipt of its answer (the ledger row and the receipt join on it).
  const std::string& id() const { return id_; }
  // Limit headers for whatever answer follows (empty for an unlimited key).
  const HeaderList& headers() const { return headers_; }
  const std::string& customer() const { return customer_; }

 private:
  friend class Accounts;
  void release_now();

  Accounts* accounts_ = nullptr;
  const config::ApiKeyConfig* key_ = nullptr;
  std::string customer_;
  std::optional<Nanos> credit_;
  std::string id_;
  std::vector<WindowDraw> token_windows_;  // as held (their counters are settled)
  HeaderList headers_;
  bool held_ = false;    // a hold exists in the ledger
  bool closed_ = false;  // settled or released
};

struct Admission {
  Grant grant;                    // its headers go on the answer either way
  std::optional<Refusal> refusal;
};

// What an answer cost, for settle().
struct Charge {
  const config::RouteConfig* route = nullptr;
  Nanos cost = 0;
  bool estimated = false;  // the tokens were estimated (no usage from the upstream)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// What a request was served without because the shared store could not answer in time
// (store.outage says open): reported once per step to Accounts::on_outage.
enum class OutageFunction { rate_limits, credits };

class Accounts {
 public:
  // `log` makes a local ledger's settlements durable; null for a shared (Redis) ledger.
  // A shared ledger also gets `pool`: more ledger objects (each its own connection), one
  // thread each, for the steps a request waits on (count, hold, balance), so that they do
  // not queue behind each other or behind settlements; `store` gives their deadlines and
  // the outage policy.
  Accounts(std::unique_ptr<LedgerStore> ledger, std::unique_ptr<SpendLog> log,
           std::vector<std::unique_ptr<LedgerStore>> pool = {}, config::StoreConfig store = {});
  ~Accounts();  // settles what is queued, then stops the thread
  Accounts(const Accounts&) = delete;
  Accounts& operator=(const Accounts&) = delete;

  // From `store:` (sqlite:PATH or redis[s]://…). Throws std::runtime_error when it cannot
  // open (SQLite); a Redis store connects lazily, so an unreachable one does not throw.
  static std::unique_ptr<Accounts> open(const config::StoreConfig& store);

  // Called (any thread) each time a request goes on without a function under the outage
  // policy; set once before serving.
  void on_outage(std::function<void(OutageFunction)> report);

  // The head phase; the credit is checked only for a request that `spends` (inference:
  // a customer out of credit can still read /v1/usage and its receipts). A shared store
  // that has not answered by `deadline` (or whose breaker is open) is an outage: each
  // function the request needs goes by store.outage (open: admitted without it, closed:
  // refused store_unavailable).
  boost::asio::awaitable<Admission> admit(const config::Config& cfg, const config::ApiKeyConfig& key,
                                          std::chrono::system_clock::time_point now, bool spends,
                                          common::Clock::time_point deadline = common::Clock::time_point::max());
  // Holds `bound` for at most `lifetime` (the request's budget and a margin), after
  // which the ledger releases it by itself; a refusal when it does not fit, or when the
  // store has not answered by `deadline` and the policy is closed (a hold that lands
  // after the caller gave up is given back).
  boost::asio::awaitable<std::optional<Refusal>> reserve(Grant& grant, CostBound bound, std::chrono::seconds lifetime,
                                                         common::Clock::time_point deadline = common::Clock::time_point::max());
  // The answer's actual cost. With `durable`, resumes once the ledger row is on disk
  // (local) or applied in the shared store; a shared store that cannot be reached gets
  // it later (retried every second).
  boost::asio::awaitable<void> settle(Grant& grant, Charge charge, bool durable);
  // Gives the hold back now (also what ~Grant does).
  void release(Grant& grant);
  // GET /v1/usage for `customer` (nullopt: the store cannot answer now).
  boost::asio::awaitable<std::optional<std::string>> usage_json(const config::Config& cfg, const std::string& customer,
                                                                std::chrono::system_clock::time_point now,
                                                                common::Clock::time_point deadline = common::Clock::time_point::max());

  bool shared() const;

  // At shutdown, once no I/O thread runs any more (their io_contexts still exist): the
  // pool's queued steps are skipped or undone instead of resuming their callers, and its
  // threads are joined, so nothing is posted to an io_context after it is gone. Grants may
  // still be released afterwards (that is the accounts thread's).
  void stop_pool();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend class Grant;
};

// The /v1/usage document (pure, for tests): amounts as plain decimals.
std::string usage_document(const config::Config& cfg, const std::string& customer, const Balance& balance);

}  // namespace tresor::accounts
