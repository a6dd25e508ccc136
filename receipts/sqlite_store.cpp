// ReceiptStore on SQLite. Used from the ReceiptService's thread only, so one
// connection and one set of prepared statements serve for the store's whole life.
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include "receipts/store.h"
#include "storage/sqlite_statement.h"

namespace tresor::receipts {
namespace {

using storage::bind_text;
using storage::Stmt;
using storage::StmtReset;

class SqliteStore final : public ReceiptStore {
 public:
  explicit SqliteStore(const std::string& path) : path_(path) {
    std::filesystem::path p(path);
    if (p.has_parent_path()) {
      std::error_code ec;
      std::filesystem::create_directories(p.parent_path(), ec);
      if (ec) throw std::runtime_error("receipt store " + path + ": cannot create folder: " + ec.message());
    }
    sqlite3* db = nullptr;
    // NOMUTEX: the service thread is the only user, so SQLite's own locking is waste.
    int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    db_ = db;  // even on failure sqlite hands back a handle that must be closed
    if (rc != SQLITE_OK) fail("open");
    // Another process (a backup, the sqlite3 CLI) may hold the lock briefly; wait
    // rather than failing a batch of receipts on SQLITE_BUSY.
    sqlite3_busy_timeout(db_, 5000);
    // WAL + synchronous=FULL: COMMIT returns only once the WAL is fsynced, so a
    // batch whose done(true) has run survives kill -9 and power loss.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    // 8 MiB of page cache (default 2): the B-tree edges that group commits write to, and
    // recently issued receipts (the ones fetched), stay in memory instead of pread().
    exec("PRAGMA cache_size=-8192");
    exec(
        "CREATE TABLE IF NOT EXISTS receipts("
        "id TEXT PRIMARY KEY, customer TEXT NOT NULL, jws TEXT NOT NULL, expires_at INTEGER NOT NULL)");
    exec("CREATE INDEX IF NOT EXISTS receipts_expires_at ON receipts(expires_at)");
    // Files from before lazy signing (0.7) have no claims column; their rows are all signed.
    if (!has_column("receipts", "claims")) exec("ALTER TABLE receipts ADD COLUMN claims TEXT NOT NULL DEFAULT ''");
    // No `spend` table any more: an old file's one is the accounts spend log's to migrate
    // into spend_ledger and drop (accounts/sqlite_spend_log.cpp); recreating it here would
    // leave an empty table behind at every start.
    // The transparency log (receipts/transparency_log.h). Its rows are never purged: the
    // tree is recomputed from them, and a checkpoint commits to every one.
    // A receipt's index is a column of its row (purged with it; the entry stays): one
    // B-tree page per batch for the log instead of two with an index on receipt ids.
    exec("CREATE TABLE IF NOT EXISTS log_entries(idx INTEGER PRIMARY KEY, entry BLOB NOT NULL)");
    if (!has_column("receipts", "log_index")) exec("ALTER TABLE receipts ADD COLUMN log_index INTEGER");
    exec(
        "CREATE TABLE IF NOT EXISTS log_checkpoint("
        "id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, note TEXT NOT NULL)");
    begin_ = prepare("BEGIN IMMEDIATE");
    commit_ = prepare("COMMIT");
    rollback_ = prepare("ROLLBACK");
    insert_ = prepare(
        "INSERT INTO receipts(id, customer, jws, expires_at, claims, log_index) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    // The next index is max + 1 inside the batch's own transaction: this file is the
    // sequencer, and a leaf is durable exactly when its receipt is.
    append_ = prepare("INSERT INTO log_entries(idx, entry) SELECT coalesce(max(idx) + 1, 0), ?1 FROM log_entries");
    get_ = prepare("SELECT jws, claims, log_index FROM receipts WHERE id = ?1 AND customer = ?2 AND expires_at > ?3");
    entries_ = prepare("SELECT idx, entry FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2");
    checkpoint_ = prepare("SELECT size, note FROM log_checkpoint WHERE id = 1");
    publish_ = prepare(
        "INSERT INTO log_checkpoint(id, size, note) VALUES(1, ?1, ?2) "
        "ON CONFLICT(id) DO UPDATE SET size = excluded.size, note = excluded.note WHERE excluded.size > size");
    cosign_ = prepare("UPDATE log_checkpoint SET note = note || ?2 WHERE id = 1 AND size = ?1 AND instr(note, ?2) = 0");
    sign_ = prepare("UPDATE receipts SET jws = ?2 WHERE id = ?1 AND jws = ''");
    jws_ = prepare("SELECT jws FROM receipts WHERE id = ?1");
    purge_ = prepare("DELETE FROM receipts WHERE expires_at <= ?1");
    count_ = prepare("SELECT count(*) FROM receipts");
  }

  // close_v2 defers the close until the member statements are finalized just after.
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  bool put_batch(const std::vector<StoredReceipt>& batch) override {
    if (batch.empty()) return true;
    // IMMEDIATE takes the write lock up front, so a busy file shows up here (under the
    // busy timeout) instead of as a deadlock-prone lock upgrade halfway through.
    if (!step_done(begin_.get())) return failed("BEGIN");
    for (const auto& r : batch) {
      // All or nothing: the caller reports every receipt of the batch as failed.
      std::optional<uint64_t> index;
      if (!r.log_entry.empty() && !(index = append_leaf(r))) return failed("log append " + r.id);
      if (!insert(r, index)) return failed("INSERT " + r.id);
    }
    if (!step_done(commit_.get())) return failed("COMMIT");
    return true;
  }

  std::optional<StoredReceipt> load(const std::string& id, const std::string& customer, int64_t now) override {
    sqlite3_stmt* s = get_.get();
    StmtReset reset(s);
    // Customer and expiry are checked in SQL so that another customer's or an expired
    // receipt is indistinguishable from a missing one (the endpoint returns 404 for all).
    if (!bind_text(s, 1, id) || !bind_text(s, 2, customer) || sqlite3_bind_int64(s, 3, now) != SQLITE_OK)
      throw StoreUnavailable(std::string("receipt lookup: ") + sqlite3_errmsg(db_));
    const int step = sqlite3_step(s);
    if (step == SQLITE_DONE) return std::nullopt;
    if (step != SQLITE_ROW) throw StoreUnavailable(std::string("receipt lookup: ") + sqlite3_errmsg(db_));
    StoredReceipt r;
    r.id = id;
    r.customer = customer;
    r.jws = column_text(s, 0);
    r.claims = column_text(s, 1);
    if (sqlite3_column_type(s, 2) == SQLITE_INTEGER) r.log_index = static_cast<uint64_t>(sqlite3_column_int64(s, 2));
    return r;
  }

  std::optional<std::string> store_signature(const std::string& id, const std::string& jws) override {
    {
      sqlite3_stmt* s = sign_.get();
      StmtReset reset(s);
      // Autocommit: one small durable write per first fetch, off the request path.
      if (!bind_text(s, 1, id) || !bind_text(s, 2, jws) || sqlite3_step(s) != SQLITE_DONE) return std::nullopt;
      if (sqlite3_changes(db_) == 1) return jws;
    }
    sqlite3_stmt* s = jws_.get();
    StmtReset reset(s);
    if (!bind_text(s, 1, id) || sqlite3_step(s) != SQLITE_ROW) return std::nullopt;
    return column_text(s, 0);
  }

  size_t purge_expired(int64_t now) override {
    sqlite3_stmt* s = purge_.get();
    StmtReset reset(s);
    if (sqlite3_bind_int64(s, 1, now) != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE) return 0;
    return static_cast<size_t>(sqlite3_changes(db_));
  }

  std::vector<std::string> log_entries(uint64_t from, size_t max) override {
    sqlite3_stmt* s = entries_.get();
    StmtReset reset(s);
    if (sqlite3_bind_int64(s, 1, static_cast<int64_t>(from)) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, static_cast<int64_t>(max)) != SQLITE_OK)
      throw StoreUnavailable(std::string("log entries: ") + sqlite3_errmsg(db_));
    std::vector<std::string> out;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
      // Indexes are dense (max + 1 per append): a hole is a deleted row, reported as such
      // instead of shifting every later entry down one place.
      if (static_cast<uint64_t>(sqlite3_column_int64(s, 0)) != from + out.size()) {
        out.emplace_back();
        return out;
      }
      out.push_back(column_blob(s, 1));
    }
    if (step != SQLITE_DONE) throw StoreUnavailable(std::string("log entries: ") + sqlite3_errmsg(db_));
    return out;
  }

  std::optional<StoredCheckpoint> latest_checkpoint() override {
    sqlite3_stmt* s = checkpoint_.get();
    StmtReset reset(s);
    const int step = sqlite3_step(s);
    if (step == SQLITE_DONE) return std::nullopt;
    if (step != SQLITE_ROW) throw StoreUnavailable(std::string("log checkpoint: ") + sqlite3_errmsg(db_));
    return StoredCheckpoint{static_cast<uint64_t>(sqlite3_column_int64(s, 0)), column_text(s, 1)};
  }

  std::optional<StoredCheckpoint> publish_checkpoint(const StoredCheckpoint& c) override {
    {
      sqlite3_stmt* s = publish_.get();
      StmtReset reset(s);
      if (sqlite3_bind_int64(s, 1, static_cast<int64_t>(c.size)) != SQLITE_OK || !bind_text(s, 2, c.note) ||
          sqlite3_step(s) != SQLITE_DONE)
        throw StoreUnavailable(std::string("log checkpoint: ") + sqlite3_errmsg(db_));
    }
    return latest_checkpoint();
  }

  bool add_cosignature(uint64_t size, const std::string& line) override {
    sqlite3_stmt* s = cosign_.get();
    StmtReset reset(s);
    if (sqlite3_bind_int64(s, 1, static_cast<int64_t>(size)) != SQLITE_OK || !bind_text(s, 2, line) ||
        sqlite3_step(s) != SQLITE_DONE)
      return false;
    return sqlite3_changes(db_) == 1;
  }

  size_t count() override {
    sqlite3_stmt* s = count_.get();
    StmtReset reset(s);
    if (sqlite3_step(s) != SQLITE_ROW) return 0;
    return static_cast<size_t>(sqlite3_column_int64(s, 0));
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    std::string msg = "receipt store " + path_ + ": " + what + ": " + (db_ ? sqlite3_errmsg(db_) : "out of memory");
    // The destructor does not run for a throwing constructor; close_v2 lets the
    // statements prepared so far be finalized afterwards by their own destructors.
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

  bool insert(const StoredReceipt& r, std::optional<uint64_t> log_index) {
    sqlite3_stmt* s = insert_.get();
    StmtReset reset(s);  // reset before any ROLLBACK runs, so no statement is left pending
    const int bound_index = log_index ? sqlite3_bind_int64(s, 6, static_cast<int64_t>(*log_index)) : sqlite3_bind_null(s, 6);
    return bind_text(s, 1, r.id) && bind_text(s, 2, r.customer) && bind_text(s, 3, r.jws) &&
           sqlite3_bind_int64(s, 4, r.expires_at) == SQLITE_OK && bind_text(s, 5, r.claims) &&
           bound_index == SQLITE_OK && sqlite3_step(s) == SQLITE_DONE;
  }

  // Appends the receipt's log entry; the index it got (idx is the rowid).
  std::optional<uint64_t> append_leaf(const StoredReceipt& r) {
    sqlite3_stmt* s = append_.get();
    StmtReset reset(s);
    if (sqlite3_bind_blob(s, 1, r.log_entry.data(), static_cast<int>(r.log_entry.size()), SQLITE_TRANSIENT) !=
            SQLITE_OK ||
        sqlite3_step(s) != SQLITE_DONE)
      return std::nullopt;
    return static_cast<uint64_t>(sqlite3_last_insert_rowid(db_));
  }

  static std::string column_blob(sqlite3_stmt* s, int column) {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(s, column));
    if (data == nullptr) return {};
    return std::string(data, static_cast<size_t>(sqlite3_column_bytes(s, column)));
  }

  static std::string column_text(sqlite3_stmt* s, int column) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, column));
    if (text == nullptr) return {};
    return std::string(text, static_cast<size_t>(sqlite3_column_bytes(s, column)));
  }

  bool has_column(const char* table, const char* column) {
    Stmt info = prepare((std::string("PRAGMA table_info(") + table + ")").c_str());
    while (sqlite3_step(info.get()) == SQLITE_ROW)
      if (column_text(info.get(), 1) == column) return true;
    return false;
  }

  static bool step_done(sqlite3_stmt* s) {
    StmtReset reset(s);
    return sqlite3_step(s) == SQLITE_DONE;
  }

  // The interface only says false, so the reason (constraint, disk full, busy) goes to
  // the log here, where sqlite3_errmsg still describes it.
  bool failed(const std::string& what) {
    spdlog::error("receipt store {}: {} failed: {}", path_, what, sqlite3_errmsg(db_));
    rollback();
    return false;
  }

  void rollback() {
    // SQLite may already have rolled back on its own (e.g. after SQLITE_FULL); only
    // roll back while a transaction is still open.
    if (!sqlite3_get_autocommit(db_)) step_done(rollback_.get());
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  Stmt begin_, commit_, rollback_, insert_, get_, sign_, jws_, purge_, count_;
  Stmt append_, entries_, checkpoint_, publish_, cosign_;
};

}  // namespace

std::unique_ptr<ReceiptStore> open_sqlite_store(const std::string& path) {
  return std::make_unique<SqliteStore>(path);
}

}  // namespace tresor::receipts
