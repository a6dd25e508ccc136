// Startup checks on an SQLite store file left behind by a crash (server/config_checks).
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/config_checks.h"
#include "tests/unit/temp_dir.h"

namespace {

using tresor::test::TempDir;

struct Db {
  sqlite3* handle = nullptr;
  explicit Db(const std::string& path) {
    if (sqlite3_open(path.c_str(), &handle) != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(handle));
  }
  ~Db() { sqlite3_close(handle); }
  void exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(handle, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      const std::string message = error ? error : "?";
      sqlite3_free(error);
      throw std::runtime_error(sql + ": " + message);
    }
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(handle, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(handle));
    std::string out;
    if (sqlite3_step(stmt) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    return out;
  }
};

void check_store_file(const std::string& path) {
  const auto cfg = tresor::config::load_config_text("store: sqlite:" + path + "\n", "crash.yaml");
  tresor::server::check_startup(*cfg);
}

// What kill -9 during a WAL checkpoint leaves. A checkpoint copies the WAL's pages into the
// main file in page order, page 1 first; page 1 records the grown database size. Killed
// right after it, the main file claims more pages than it has (the rest are still the old
// ones): read alone SQLite calls it "malformed", while recovery from the WAL, which holds
// every newer page, opens it whole.
void make_crashed_wal_database(const TempDir& dir, const std::string& crashed) {
  const std::string live = dir.file("live.db");
  const std::string finished = dir.file("finished.db");
  Db db(live);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec("PRAGMA wal_autocheckpoint=0");
  db.exec("CREATE TABLE receipts(id TEXT PRIMARY KEY, claims TEXT NOT NULL)");
  db.exec("CREATE TABLE log_entries(idx INTEGER PRIMARY KEY, entry BLOB NOT NULL)");
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  db.exec(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
      "INSERT INTO receipts SELECT 'rcpt_' || i, hex(randomblob(64)) FROM n");
  db.exec("INSERT INTO log_entries SELECT rowid, randomblob(32) FROM receipts");
  // Copied while the connection is open: closing it would checkpoint the WAL and delete it.
  for (const auto& target : {crashed, finished}) {
    std::filesystem::copy_file(live, target);
    std::filesystem::copy_file(live + "-wal", target + "-wal");
  }
  {
    Db done(finished);  // the checkpoint run to its end, for its page 1
    done.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  const std::uintmax_t page = 4096;
  REQUIRE(std::filesystem::file_size(finished) > 4 * std::filesystem::file_size(crashed));
  std::vector<char> page_one(page);
  std::ifstream(finished, std::ios::binary).read(page_one.data(), static_cast<std::streamsize>(page));
  std::fstream file(crashed, std::ios::binary | std::ios::in | std::ios::out);
  file.write(page_one.data(), static_cast<std::streamsize>(page));
}

}  // namespace

TEST_CASE("a WAL store killed mid-checkpoint passes the startup check and opens whole", "[config_checks]") {
  TempDir dir;
  const std::string crashed = dir.file("tresor.db");
  make_crashed_wal_database(dir, crashed);

  CHECK_NOTHROW(check_store_file(crashed));

  Db reopened(crashed);  // recovery from the WAL, as the store does when it opens
  CHECK(reopened.text("PRAGMA integrity_check") == "ok");
  CHECK(reopened.text("SELECT count(*) FROM receipts") == "2000");
  CHECK(reopened.text("SELECT count(*) FROM log_entries") == "2000");
}

TEST_CASE("a WAL beside it does not make a non-SQLite file pass the startup check", "[config_checks]") {
  TempDir dir;
  const std::string path = dir.file("tresor.db");
  std::ofstream(path) << "receipts go here\n";
  std::ofstream(path + "-wal") << "not a wal either\n";
  try {
    check_store_file(path);
    FAIL("a text file was accepted as the store");
  } catch (const std::exception& e) {
    CHECK(std::string(e.what()).find("is not an SQLite database") != std::string::npos);
  }
}
