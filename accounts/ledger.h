// The accounts ledger: what a store must do so that money and token limits add up, on
// one replica (SQLite) and across replicas (Redis). The Accounts service (accounts.h)
// decides amounts; a LedgerStore applies them atomically.
//
// Every operation is atomic on its own (Redis: one Lua script per step; local: one mutex),
// so replicas sharing a store can never overspend together:
//   count  — the head phase: one request in each request window, all or nothing, and the
//            customer's credit not used up (spent + reserved < credit);
//   hold   — before the first upstream attempt: the request's most expensive outcome in
//            money (against the credit) and in tokens (against the token windows);
//   settle — the answer's actual cost replaces its hold; recorded in the spend ledger
//            under the request id, once (a repeated settle changes nothing);
//   release— the request failed: its hold is given back, nothing is charged.
// A hold carries an expiry: a hold whose request died with its replica (kill -9) is
// released by the next operation on that customer after `expires_at`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tresor::accounts {

// Money as an exact integer: 1e-9 of the currency unit ("nanos"). Summed over millions of
// requests it never drifts as binary floating point does; int64 holds 9.2e9 units.
using Nanos = int64_t;

// One fixed UTC window of a key's limit (requests or tokens) that a request draws on.
struct WindowDraw {
  std::string counter;      // unique per key, kind and window index, e.g. "<sha>:tpm:29511"
  int64_t limit = 0;        // the window's capacity
  int64_t amount = 0;       // what this request draws (1 for requests; tokens)
  int64_t ttl_seconds = 0;  // the counter's lifetime once created: its window plus slack
};

enum class Verdict { granted, over_credit, over_window, unavailable };

struct Decision {
  Verdict verdict = Verdict::granted;
  size_t window = 0;          // over_window: the index of the first window that is full
  std::vector<int64_t> used;  // per window: its count with this draw (granted), without (refused)
  Nanos available = 0;        // when a credit applies: credit − spent − reserved before this draw
};

// The head phase of a request.
struct CountRequest {
  std::string customer;
  std::optional<Nanos> credit;     // nullopt: the customer has no credit limit
  std::vector<WindowDraw> windows; // the key's request windows (amount 1)
  int64_t now = 0;                 // unix seconds
};

// A reservation: over_credit when amount > credit − spent − reserved; over_window when a
// window's count + amount > its limit. Granted: all of it is drawn at once.
struct Hold {
  std::string request_id;
  std::string customer;
  std::optional<Nanos> credit;      // nullopt: nothing is checked (and nothing reserved) in money
  Nanos amount = 0;
  std::vector<WindowDraw> windows;  // the key's token windows
  int64_t now = 0;                  // unix seconds
  int64_t expires_at = 0;           // unix seconds: released by itself after this
};

// What a request cost. `windows` are the hold's windows with `amount` = the actual tokens:
// each counter moves by actual − held (a counter that expired meanwhile is left alone).
struct Settlement {
  std::string request_id;
  std::string customer;
  std::string route;
  std::string day;  // UTC, YYYY-MM-DD, of the settlement
  Nanos cost = 0;
  bool estimated = false;  // the tokens were estimated (the upstream sent no usage)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::vector<WindowDraw> windows;
  int64_t at = 0;  // unix seconds
};

struct SpendTotal {
  Nanos amount = 0;
  Nanos estimated = 0;  // the part of `amount` from estimated tokens
};

// A customer's money as the store sees it now.
struct Balance {
  Nanos spent = 0;
  Nanos estimated = 0;
  Nanos reserved = 0;  // live holds (in flight)
  std::map<std::string, SpendTotal> by_route;
  std::map<std::string, SpendTotal> by_day;
};

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;
  // Several replicas share this store (Redis): every call is network I/O and runs on the
  // accounts thread. A local store answers from memory under a mutex.
  virtual bool shared() const = 0;
  virtual Decision count(const CountRequest& request) = 0;
  virtual Decision hold(const Hold& hold) = 0;
  // True once applied (or applied before under the same request id); false when the
  // store could not be reached (the caller retries it later). Redis checks the request id
  // (a retry after a lost reply must not charge twice); the local store, which has no lost
  // replies, relies on the Accounts service settling each grant once.
  virtual bool settle(const Settlement& settlement) = 0;
  // Gives the hold back; nothing when there is none (already settled, expired, never made).
  virtual void release(const std::string& customer, const std::string& request_id) = 0;
  // nullopt when the store cannot answer.
  virtual std::optional<Balance> balance(const std::string& customer, int64_t now) = 0;
  // Whether the store answers now (Redis: PING, reconnecting if needed).
  virtual bool reachable() { return true; }
};

// The durable record of settlements on one replica: every settlement is a row under its
// request id (written once), and the totals are read back at start-up.
class SpendLog {
 public:
  virtual ~SpendLog() = default;
  // Appends every settlement in one transaction (one fsync); a request id already present
  // is skipped. False on failure (none written).
  virtual bool append(const std::vector<Settlement>& batch) = 0;
  // Per customer: totals by route and by day (spent, estimated), for start-up.
  virtual std::map<std::string, Balance> totals() = 0;
};

// The local ledger: holds and counters in memory (one replica; a restart releases every
// hold, since no request survives it), settlements mirrored into memory and written to
// `log` by the caller.
std::unique_ptr<LedgerStore> open_local_ledger(const std::map<std::string, Balance>& persisted);

// SQLite at `path`, the same file as the receipts (table `spend_ledger`); takes over the
// totals of the old `spend` table once. Throws std::runtime_error on open failure.
std::unique_ptr<SpendLog> open_sqlite_spend_log(const std::string& path);

// Redis at `store.url` (redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], with store.tls and
// the timeouts); several replicas share it. Does not connect (the first operation does);
// throws std::runtime_error on a malformed URL or unloadable store.tls files.
std::unique_ptr<LedgerStore> open_redis_ledger(const config::StoreConfig& store);
// The same with every option but the URL at its default (tests).
std::unique_ptr<LedgerStore> open_redis_ledger(const std::string& url);

}  // namespace tresor::accounts
