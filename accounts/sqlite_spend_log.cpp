// SpendLog on SQLite: one row per settled request in `spend_ledger`, in the receipts'
// file. The log has its own connection; in WAL mode the receipts store and the log write
// in turn (BEGIN IMMEDIATE waits under the busy timeout) and read without blocking.
//
// Schema (one row per request id, written once, never updated; WITHOUT ROWID: the rows
// live in the request id's own B-tree, one insert per row instead of a table and an index):
//   spend_ledger(request_id TEXT PRIMARY KEY, customer, route, day 'YYYY-MM-DD' (UTC),
//                amount_nanos, estimated 0/1, prompt_tokens, completion_tokens, at unix s)
//
// Upgrade from the old receipts store (<= 0.7), which kept one running total per
// (customer, route) in `spend(customer, route, amount REAL)`: at open, every row of it
// becomes one spend_ledger row, request_id 'migrated:<customer>:<route>', day '' (the old
// table never knew on which days the money was spent; putting it all on the upgrade day
// would make that day look as expensive as the customer's whole history), amount_nanos =
// round(amount * 1e9), estimated 0, tokens 0, at = the upgrade time; and `spend` is
// dropped in the same transaction, so the totals are carried over exactly once.
// totals() counts those rows in `spent` and `by_route` but not in `by_day`: sum(by_day)
// is the spend whose day is known.
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "accounts/ledger.h"
#include "storage/sqlite_statement.h"

namespace tresor::accounts {
namespace {

using storage::bind_text;
using storage::Stmt;
using storage::StmtReset;

std::string column_text(sqlite3_stmt* s, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, column));
  if (text == nullptr) return {};
  return std::string(text, static_cast<size_t>(sqlite3_column_bytes(s, column)));
}

// One row of the old `spend` table.
struct OldSpend {
  std::string customer;
  std::string route;
  double amount = 0;
};

class SqliteSpendLog final : public SpendLog {
 public:
  explicit SqliteSpendLog(const std::string& path) : path_(path) {
    open();
    // WAL + synchronous=FULL: COMMIT returns only once the WAL is fsynced, so a batch
    // append() reported as written survives kill -9 and power loss.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec(
        "CREATE TABLE IF NOT EXISTS spend_ledger(request_id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
        "route TEXT NOT NULL, day TEXT NOT NULL, amount_nanos INTEGER NOT NULL, estimated INTEGER NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID");
    begin_write_ = prepare("BEGIN IMMEDIATE");
    begin_read_ = prepare("BEGIN");
    commit_ = prepare("COMMIT");
    rollback_ = prepare("ROLLBACK");
    // ON CONFLICT(request_id) rather than OR IGNORE: only a repeated request id is
    // skipped; any other constraint failing still fails the batch.
    insert_ = prepare(
        "INSERT INTO spend_ledger(request_id, customer, route, day, amount_nanos, estimated, prompt_tokens, "
        "completion_tokens, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(request_id) DO NOTHING");
    by_customer_ = prepare(
        "SELECT customer, sum(amount_nanos), sum(CASE WHEN estimated THEN amount_nanos ELSE 0 END) "
        "FROM spend_ledger GROUP BY customer");
    by_route_ = prepare(
        "SELECT customer, route, sum(amount_nanos), sum(CASE WHEN estimated THEN amount_nanos ELSE 0 END) "
        "FROM spend_ledger GROUP BY customer, route");
    by_day_ = prepare(
        "SELECT customer, day, sum(amount_nanos), sum(CASE WHEN estimated THEN amount_nanos ELSE 0 END) "
        "FROM spend_ledger WHERE day <> '' GROUP BY customer, day");
    migrate_old_spend();
  }

  // close_v2 defers the close until the member statements are finalized just after.
  ~SqliteSpendLog() override { sqlite3_close_v2(db_); }

  SqliteSpendLog(const SqliteSpendLog&) = delete;
  SqliteSpendLog& operator=(const SqliteSpendLog&) = delete;

  bool append(const std::vector<Settlement>& batch) override {
    if (batch.empty()) return true;
    std::lock_guard lock(mutex_);
    // IMMEDIATE takes the write lock up front, so the receipts store writing at the same
    // moment shows up here (waited for under the busy timeout), not as a failed upgrade
    // of a read lock halfway through the batch.
    if (!step_done(begin_write_.get())) return failed("BEGIN");
    for (const auto& s : batch) {
      // All or nothing: the caller keeps the whole batch and retries it.
      if (!insert(s)) return failed("INSERT " + s.request_id);
    }
    if (!step_done(commit_.get())) return failed("COMMIT");
    return true;
  }

  std::map<std::string, Balance> totals() override {
    std::lock_guard lock(mutex_);
    std::map<std::string, Balance> out;
    // One read transaction: the three sums come from the same snapshot even while the
    // receipts' connection (or another process) commits in between.
    if (!step_done(begin_read_.get())) throw error("BEGIN");
    try {
      read_customers(out);
      read_groups(by_route_.get(), out, &Balance::by_route);
      read_groups(by_day_.get(), out, &Balance::by_day);
    } catch (...) {
      rollback();
      throw;
    }
    if (!step_done(commit_.get())) {
      rollback();
      throw error("COMMIT");
    }
    return out;
  }

 private:
  void open() {
    std::filesystem::path p(path_);
    if (p.has_parent_path()) {
      std::error_code ec;
      std::filesystem::create_directories(p.parent_path(), ec);
      if (ec) throw std::runtime_error("spend log " + path_ + ": cannot create folder: " + ec.message());
    }
    sqlite3* db = nullptr;
    // NOMUTEX: mutex_ serialises the callers, so SQLite's own connection mutex is waste.
    const int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    db_ = db;  // even on failure sqlite hands back a handle that must be closed
    if (rc != SQLITE_OK) fail("open");
    // The receipts store's connection holds the write lock for one group commit at a
    // time; wait for it rather than failing a batch of settlements on SQLITE_BUSY.
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  }

  // The old receipts store's per-route totals, moved over once (see the top of the file).
  // The existence check runs inside the write transaction, so two processes opening the
  // file at once cannot both move the same rows.
  void migrate_old_spend() {
    if (!step_done(begin_write_.get())) fail("BEGIN (migration)");
    if (!has_table("spend")) {
      if (!step_done(commit_.get())) fail("COMMIT (migration)");
      return;
    }
    const std::vector<OldSpend> old = read_old_spend();
    Settlement row;
    row.at = static_cast<int64_t>(std::time(nullptr));
    for (const auto& e : old) {
      // A total that does not fit the integer ledger must stop the upgrade, not vanish.
      if (!std::isfinite(e.amount) || std::fabs(e.amount) > 9.0e9)
        fail_migration("amount " + std::to_string(e.amount) + " of " + e.customer + " on " + e.route);
      row.customer = e.customer;
      row.route = e.route;
      row.cost = static_cast<Nanos>(std::llround(e.amount * 1e9));
      insert_migrated(row);
    }
    exec("DROP TABLE spend");
    if (!step_done(commit_.get())) fail("COMMIT (migration)");
    if (!old.empty())
      spdlog::info("spend log {}: moved {} per-route totals from the old spend table", path_, old.size());
  }

  std::vector<OldSpend> read_old_spend() {
    // Read to the end and finalized before DROP TABLE, which a pending SELECT would block.
    Stmt s = prepare("SELECT customer, route, amount FROM spend");
    std::vector<OldSpend> out;
    int step = SQLITE_ROW;
    while ((step = sqlite3_step(s.get())) == SQLITE_ROW)
      out.push_back(OldSpend{column_text(s.get(), 0), column_text(s.get(), 1), sqlite3_column_double(s.get(), 2)});
    if (step != SQLITE_DONE) fail_migration("reading the spend table");
    return out;
  }

  // 'migrated:<customer>:<route>', or with '#N' appended when that id is taken: a ':' in
  // a customer or route name can make two old rows spell the same id, and a downgrade to
  // the old version (which creates `spend` again and counts from zero) followed by this
  // upgrade brings new totals under ids moved before. Either way the money is kept.
  void insert_migrated(Settlement& row) {
    const std::string base = "migrated:" + row.customer + ":" + row.route;
    for (int n = 0;; ++n) {
      row.request_id = n == 0 ? base : base + "#" + std::to_string(n);
      if (!insert(row)) fail_migration("INSERT " + row.request_id);
      if (sqlite3_changes(db_) == 1) return;
    }
  }

  void read_customers(std::map<std::string, Balance>& out) {
    sqlite3_stmt* s = by_customer_.get();
    StmtReset reset(s);
    int step = SQLITE_ROW;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
      Balance& b = out[column_text(s, 0)];
      b.spent = sqlite3_column_int64(s, 1);
      b.estimated = sqlite3_column_int64(s, 2);
    }
    if (step != SQLITE_DONE) throw error("totals by customer");
  }

  // Rows of (customer, key, amount, estimated) into out[customer].*field[key].
  void read_groups(sqlite3_stmt* s, std::map<std::string, Balance>& out,
                   std::map<std::string, SpendTotal> Balance::*field) {
    StmtReset reset(s);
    int step = SQLITE_ROW;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
      SpendTotal& t = (out[column_text(s, 0)].*field)[column_text(s, 1)];
      t.amount = sqlite3_column_int64(s, 2);
      t.estimated = sqlite3_column_int64(s, 3);
    }
    if (step != SQLITE_DONE) throw error("totals by route or day");
  }

  bool insert(const Settlement& r) {
    sqlite3_stmt* s = insert_.get();
    StmtReset reset(s);  // reset before any ROLLBACK runs, so no statement is left pending
    return bind_text(s, 1, r.request_id) && bind_text(s, 2, r.customer) && bind_text(s, 3, r.route) &&
           bind_text(s, 4, r.day) && sqlite3_bind_int64(s, 5, r.cost) == SQLITE_OK &&
           sqlite3_bind_int(s, 6, r.estimated ? 1 : 0) == SQLITE_OK &&
           sqlite3_bind_int64(s, 7, r.prompt_tokens) == SQLITE_OK &&
           sqlite3_bind_int64(s, 8, r.completion_tokens) == SQLITE_OK && sqlite3_bind_int64(s, 9, r.at) == SQLITE_OK &&
           sqlite3_step(s) == SQLITE_DONE;
  }

  bool has_table(const char* name) {
    Stmt s = prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    if (!bind_text(s.get(), 1, name)) fail_migration("looking for the spend table");
    const int step = sqlite3_step(s.get());
    if (step != SQLITE_ROW && step != SQLITE_DONE) fail_migration("looking for the spend table");
    return step == SQLITE_ROW;
  }

  static bool step_done(sqlite3_stmt* s) {
    StmtReset reset(s);
    return sqlite3_step(s) == SQLITE_DONE;
  }

  std::runtime_error error(const std::string& what) const {
    return std::runtime_error("spend log " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }

  // The interface only says false, so the reason (busy, disk full, I/O) goes to the log
  // here, where sqlite3_errmsg still describes it.
  bool failed(const std::string& what) {
    spdlog::error("spend log {}: {} failed: {}", path_, what, sqlite3_errmsg(db_));
    rollback();
    return false;
  }

  void rollback() {
    // SQLite may already have rolled back on its own (e.g. after SQLITE_FULL); only
    // roll back while a transaction is still open.
    if (!sqlite3_get_autocommit(db_)) step_done(rollback_.get());
  }

  // The message is taken before the rollback, which would replace sqlite3_errmsg.
  [[noreturn]] void fail_migration(const std::string& what) {
    std::string msg = "spend log " + path_ + ": moving the old spend table: " + what + ": " + sqlite3_errmsg(db_);
    rollback();
    close_and_throw(msg);
  }

  [[noreturn]] void fail(const std::string& what) {
    close_and_throw("spend log " + path_ + ": " + what + ": " + (db_ ? sqlite3_errmsg(db_) : "out of memory"));
  }

  // The destructor does not run for a throwing constructor; close_v2 lets the statements
  // prepared so far be finalized afterwards by their own destructors (and rolls back an
  // open transaction).
  [[noreturn]] void close_and_throw(const std::string& msg) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw std::runtime_error(msg);
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(sql);
  }

  Stmt prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    // PERSISTENT: these live as long as the connection.
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      fail(std::string("prepare ") + sql);
    return Stmt(s);
  }

  // As the receipts store: long enough for a backup or a slow fsync of the other
  // connection's group commit, short enough that a stuck lock shows up as a failed batch.
  static constexpr int kBusyTimeoutMs = 5000;

  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;  // append() and totals() may come from different threads
  Stmt begin_write_, begin_read_, commit_, rollback_, insert_, by_customer_, by_route_, by_day_;
};

}  // namespace

std::unique_ptr<SpendLog> open_sqlite_spend_log(const std::string& path) {
  return std::make_unique<SqliteSpendLog>(path);
}

}  // namespace tresor::accounts
