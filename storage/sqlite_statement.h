// Prepared-statement helpers for the SQLite connections receipts/ and accounts/ each
// open on the same file (the receipts store and the spend log).
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>

namespace tresor::storage {

// Resets a statement on scope exit so that an early return never leaves one mid-step,
// which would hold a read transaction open and block WAL checkpoints.
class StmtReset {
 public:
  explicit StmtReset(sqlite3_stmt* s) : s_(s) {}
  ~StmtReset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtReset(const StmtReset&) = delete;
  StmtReset& operator=(const StmtReset&) = delete;

 private:
  sqlite3_stmt* s_;
};

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// SQLITE_TRANSIENT: the bound strings belong to the caller and may not outlive the call.
inline bool bind_text(sqlite3_stmt* s, int index, const std::string& value) {
  return sqlite3_bind_text(s, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT) == SQLITE_OK;
}

}  // namespace tresor::storage
