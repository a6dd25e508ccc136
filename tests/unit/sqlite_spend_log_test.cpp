// The SQLite spend log (accounts/sqlite_spend_log.cpp): what a restart reads back of the
// money customers spent. Totals per route and day, a request counted once, a failed batch
// leaving nothing behind, the upgrade from the old receipts `spend` table (exactly once),
// the receipts store writing the same file at the same time, and kill -9 in the middle of
// a stream of batches losing no settlement that was reported written.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "accounts/ledger.h"
#include "receipts/store.h"
#include "tests/unit/temp_dir.h"

using tresor::accounts::Balance;
using tresor::accounts::Nanos;
using tresor::accounts::open_sqlite_spend_log;
using tresor::accounts::Settlement;
using tresor::accounts::SpendTotal;

namespace fs = std::filesystem;

namespace {

class TempDir : public tresor::test::TempDir {
 public:
  TempDir() : tresor::test::TempDir("tresor-spend-log-") {}
};

Settlement settlement(const std::string& id, const std::string& customer, const std::string& route,
                      const std::string& day, Nanos cost, bool estimated = false) {
  Settlement s;
  s.request_id = id;
  s.customer = customer;
  s.route = route;
  s.day = day;
  s.cost = cost;
  s.estimated = estimated;
  s.prompt_tokens = 10;
  s.completion_tokens = 20;
  s.at = 1'780'000'000;
  return s;
}

Balance balance_of(const std::map<std::string, Balance>& totals, const std::string& customer) {
  const auto it = totals.find(customer);
  return it == totals.end() ? Balance{} : it->second;
}

SpendTotal total_of(const std::map<std::string, SpendTotal>& m, const std::string& key) {
  const auto it = m.find(key);
  return it == m.end() ? SpendTotal{-1, -1} : it->second;
}

// A second, plain connection to the file: what an operator's sqlite3 shell (or the old
// version of the gateway) would do to it.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) throw std::runtime_error("raw open " + path);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = sql + ": " + (err ? err : "?");
      sqlite3_free(err);
      throw std::runtime_error(msg);
    }
  }
  int64_t scalar(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) throw std::runtime_error(sql);
    const int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
  }
  bool has_request(const std::string& id) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "SELECT 1 FROM spend_ledger WHERE request_id = ?1", -1, &s, nullptr);
    sqlite3_bind_text(s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    const bool found = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return found;
  }

 private:
  sqlite3* db_ = nullptr;
};

// The file as the receipts store of 0.7 and earlier left it: receipts plus one running
// total per (customer, route) in `spend` (its DDL as in that version's sqlite_store.cpp).
void write_old_file(const std::string& path) {
  RawDb db(path);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(
      "CREATE TABLE receipts(id TEXT PRIMARY KEY, customer TEXT NOT NULL, jws TEXT NOT NULL, "
      "expires_at INTEGER NOT NULL, claims TEXT NOT NULL DEFAULT '')");
  db.exec("INSERT INTO receipts VALUES('0190a0b0-0000-7000-8000-000000000001', 'acme', 'jws', 4000000000, 'c')");
  db.exec(
      "CREATE TABLE spend(customer TEXT NOT NULL, route TEXT NOT NULL, amount REAL NOT NULL, "
      "PRIMARY KEY(customer, route))");
  // REAL sums are a hair off: 0.1 + 0.2 is 0.30000000000000004, 1.005 is
  // 1.00499999999999989… (truncating it would lose a nano). The last two rows spell the
  // same 'migrated:a:b:c' id.
  db.exec(
      "INSERT INTO spend VALUES('acme', 'eu/pm/a', 2.5), ('acme', 'eu/pm/b', 0.1 + 0.2), "
      "('beta', 'eu/pm/a', 1.005), ('a:b', 'c', 1.0), ('a', 'b:c', 2.0)");
}

// `added`: what acme spent on eu/pm/a on 2026-12-05 after the upgrade.
void check_migrated_totals(const std::map<std::string, Balance>& totals, Nanos added = 0) {
  const Balance acme = balance_of(totals, "acme");
  CHECK(acme.spent == 2'800'000'000 + added);
  CHECK(acme.estimated == 0);
  CHECK(acme.reserved == 0);
  CHECK(total_of(acme.by_route, "eu/pm/a").amount == 2'500'000'000 + added);
  CHECK(total_of(acme.by_route, "eu/pm/b").amount == 300'000'000);
  // The old table never knew the day: none is made up.
  CHECK(acme.by_day.size() == (added == 0 ? 0 : 1));
  CHECK(balance_of(totals, "beta").spent == 1'005'000'000);
  CHECK(balance_of(totals, "a:b").spent == 1'000'000'000);
  CHECK(balance_of(totals, "a").spent == 2'000'000'000);
  CHECK(totals.size() == 4);
}

// Reads 4-byte acknowledgements from `fd` until `want` arrived (or, with want < 0, until
// EOF); false when the pipe stays silent for 30 s (the child is stuck or gone early).
bool read_acks(int fd, std::vector<uint32_t>& acks, long want) {
  while (want < 0 || static_cast<long>(acks.size()) < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 30'000) != 1) return false;
    uint32_t value = 0;
    size_t got = 0;
    while (got < sizeof value) {
      const ssize_t n = read(fd, reinterpret_cast<char*>(&value) + got, sizeof value - got);
      if (n == 0) return want < 0 && got == 0;  // EOF; a torn ack never counts
      if (n < 0) return false;
      got += static_cast<size_t>(n);
    }
    acks.push_back(value);
  }
  return true;
}

constexpr int kCrashBatch = 8;

std::string crash_id(uint32_t batch, int i) { return "b" + std::to_string(batch) + "-" + std::to_string(i); }

// The child: appends batch after batch and acknowledges each one append() reported
// written. Never returns (and never runs Catch2 code).
[[noreturn]] void append_until_killed(const std::string& path, int ack_fd) {
  try {
    auto log = open_sqlite_spend_log(path);
    for (uint32_t b = 0;; ++b) {
      std::vector<Settlement> batch;
      for (int i = 0; i < kCrashBatch; ++i)
        batch.push_back(settlement(crash_id(b, i), "acme", "eu/pm/a", "2026-12-05", 1000));
      if (!log->append(batch)) _exit(3);
      if (write(ack_fd, &b, sizeof b) != static_cast<ssize_t>(sizeof b)) _exit(4);
    }
  } catch (...) {
    _exit(2);
  }
}

}  // namespace

TEST_CASE("spend log: totals per customer, route and day, with the estimated part", "[spend_log]") {
  TempDir dir;
  auto log = open_sqlite_spend_log(dir.file("r.db"));
  CHECK(log->totals().empty());
  CHECK(log->append({}));
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-04", 1'000'000'000),
                       settlement("r2", "acme", "eu/pm/a", "2026-12-05", 250'000'000, true),
                       settlement("r3", "acme", "eu/pm/b", "2026-12-05", 7),
                       settlement("r4", "beta", "eu/pm/a", "2026-12-05", 3, true)}));
  REQUIRE(log->append({settlement("r5", "acme", "eu/pm/b", "2026-12-05", 1, true)}));

  const auto totals = log->totals();
  CHECK(totals.size() == 2);
  const Balance acme = balance_of(totals, "acme");
  CHECK(acme.spent == 1'250'000'008);
  CHECK(acme.estimated == 250'000'001);
  CHECK(acme.reserved == 0);
  CHECK(acme.by_route.size() == 2);
  CHECK(total_of(acme.by_route, "eu/pm/a").amount == 1'250'000'000);
  CHECK(total_of(acme.by_route, "eu/pm/a").estimated == 250'000'000);
  CHECK(total_of(acme.by_route, "eu/pm/b").amount == 8);
  CHECK(total_of(acme.by_route, "eu/pm/b").estimated == 1);
  CHECK(acme.by_day.size() == 2);
  CHECK(total_of(acme.by_day, "2026-12-04").amount == 1'000'000'000);
  CHECK(total_of(acme.by_day, "2026-12-04").estimated == 0);
  CHECK(total_of(acme.by_day, "2026-12-05").amount == 250'000'008);
  CHECK(total_of(acme.by_day, "2026-12-05").estimated == 250'000'001);
  const Balance beta = balance_of(totals, "beta");
  CHECK(beta.spent == 3);
  CHECK(beta.estimated == 3);
  CHECK(total_of(beta.by_day, "2026-12-05").amount == 3);
}

TEST_CASE("spend log: a request id settled twice is counted once", "[spend_log]") {
  TempDir dir;
  auto log = open_sqlite_spend_log(dir.file("r.db"));
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-05", 100)}));
  // Retried after a timeout that had in fact written it, and twice in one batch.
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-05", 100),
                       settlement("r2", "acme", "eu/pm/a", "2026-12-05", 10),
                       settlement("r2", "acme", "eu/pm/a", "2026-12-05", 10)}));
  // The first write under an id stands, whatever a later one says.
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/b", "2026-12-06", 999, true)}));
  const Balance acme = balance_of(log->totals(), "acme");
  CHECK(acme.spent == 110);
  CHECK(acme.estimated == 0);
  CHECK(acme.by_route.size() == 1);
  CHECK(acme.by_day.size() == 1);
}

TEST_CASE("spend log: a batch that fails halfway writes none of it, and the next one works", "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  auto log = open_sqlite_spend_log(path);
  REQUIRE(log->append({settlement("r0", "acme", "eu/pm/a", "2026-12-05", 5)}));
  const std::vector<Settlement> batch{settlement("r1", "acme", "eu/pm/a", "2026-12-05", 100),
                                      settlement("r-refused", "acme", "eu/pm/a", "2026-12-05", 10),
                                      settlement("r2", "beta", "eu/pm/a", "2026-12-05", 1)};
  RawDb other(path);
  // The second row's INSERT fails inside the transaction, after the first one ran.
  other.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON spend_ledger WHEN NEW.request_id = 'r-refused' "
      "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
  CHECK_FALSE(log->append(batch));
  auto totals = log->totals();
  CHECK(balance_of(totals, "acme").spent == 5);
  CHECK(totals.count("beta") == 0);
  CHECK(other.scalar("SELECT count(*) FROM spend_ledger") == 1);

  // No transaction was left open on the log's connection: the retry goes through.
  other.exec("DROP TRIGGER refuse");
  REQUIRE(log->append(batch));
  totals = log->totals();
  CHECK(balance_of(totals, "acme").spent == 115);
  CHECK(balance_of(totals, "beta").spent == 1);
}

TEST_CASE("spend log: a full disk at COMMIT fails the batch and writes none of it", "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  auto log = open_sqlite_spend_log(path);
  REQUIRE(log->append({settlement("r0", "acme", "eu/pm/a", "2026-12-05", 5)}));

  // Files may not grow past their size now (what a full disk looks like to a writer):
  // the batch's pages reach the WAL only at COMMIT, and that write fails.
  std::vector<Settlement> batch;
  for (int i = 0; i < 2000; ++i)
    batch.push_back(settlement("big-" + std::to_string(i), "acme-" + std::string(200, 'x'), "eu/pm/a",
                               "2026-12-05", 1));
  const auto wal = fs::path(path + "-wal");
  const auto largest = std::max(fs::file_size(path), fs::exists(wal) ? fs::file_size(wal) : 0);
  struct sigaction ignore {}, previous {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGXFSZ, &ignore, &previous);  // EFBIG from write() instead of the signal
  rlimit old_limit{};
  getrlimit(RLIMIT_FSIZE, &old_limit);
  rlimit small = old_limit;
  small.rlim_cur = static_cast<rlim_t>(largest + 16 * 1024);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  const bool written = log->append(batch);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  sigaction(SIGXFSZ, &previous, nullptr);

  CHECK_FALSE(written);
  CHECK(log->totals().size() == 1);
  CHECK(balance_of(log->totals(), "acme").spent == 5);
  // With room again, the same connection writes, and a reopen reads a sound file.
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-05", 10)}));
  log.reset();
  const auto totals = open_sqlite_spend_log(path)->totals();
  CHECK(totals.size() == 1);
  CHECK(balance_of(totals, "acme").spent == 15);
}

TEST_CASE("spend log: totals survive closing and reopening the file", "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("sub/dir/r.db");  // the folder is created
  {
    auto log = open_sqlite_spend_log(path);
    REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-04", 40, true),
                         settlement("r2", "acme", "eu/pm/b", "2026-12-05", 2)}));
  }
  auto log = open_sqlite_spend_log(path);
  const Balance acme = balance_of(log->totals(), "acme");
  CHECK(acme.spent == 42);
  CHECK(acme.estimated == 40);
  CHECK(total_of(acme.by_route, "eu/pm/a").estimated == 40);
  CHECK(total_of(acme.by_day, "2026-12-05").amount == 2);
  // Still one row per id after the reopen.
  REQUIRE(log->append({settlement("r1", "acme", "eu/pm/a", "2026-12-04", 40, true)}));
  CHECK(balance_of(log->totals(), "acme").spent == 42);
}

TEST_CASE("spend log: the old spend table's totals are taken over exactly once", "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  write_old_file(path);

  {
    auto log = open_sqlite_spend_log(path);
    check_migrated_totals(log->totals());
    REQUIRE(log->append({settlement("new-1", "acme", "eu/pm/a", "2026-12-05", 1)}));
  }
  {
    RawDb raw(path);
    CHECK(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'spend'") == 0);
    CHECK(raw.has_request("migrated:acme:eu/pm/a"));
    CHECK(raw.scalar("SELECT count(*) FROM spend_ledger WHERE request_id LIKE 'migrated:%'") == 5);
  }
  // Reopened: nothing moved twice. The receipts are untouched.
  check_migrated_totals(open_sqlite_spend_log(path)->totals(), 1);
  CHECK(tresor::receipts::open_sqlite_store(path)->count() == 1);
  // The receipts store no longer creates `spend` at open: opening the log after it
  // changes nothing either.
  check_migrated_totals(open_sqlite_spend_log(path)->totals(), 1);
}

TEST_CASE("spend log: the receipts store and the spend log write one file from two threads at once",
          "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  auto receipts = tresor::receipts::open_sqlite_store(path);
  auto log = open_sqlite_spend_log(path);
  constexpr int kBatches = 150;
  constexpr int kRows = 5;
  std::atomic<int> receipt_failures{0};
  std::atomic<int> log_failures{0};
  std::latch start(2);
  std::thread receipt_writer([&] {
    start.arrive_and_wait();
    for (int b = 0; b < kBatches; ++b) {
      std::vector<tresor::receipts::StoredReceipt> batch;
      for (int i = 0; i < kRows; ++i) {
        const std::string id = "rc-" + std::to_string(b) + "-" + std::to_string(i);
        batch.push_back({id, "acme", "jws-" + id, 4'000'000'000, "claims", {}, {}});
      }
      if (!receipts->put_batch(batch)) ++receipt_failures;
    }
  });
  std::thread spend_writer([&] {
    start.arrive_and_wait();
    for (int b = 0; b < kBatches; ++b) {
      std::vector<Settlement> batch;
      for (int i = 0; i < kRows; ++i)
        batch.push_back(settlement("sp-" + std::to_string(b) + "-" + std::to_string(i), "acme", "eu/pm/a",
                                   "2026-12-05", 3));
      if (!log->append(batch)) ++log_failures;
    }
  });
  receipt_writer.join();
  spend_writer.join();
  CHECK(receipt_failures == 0);
  CHECK(log_failures == 0);
  CHECK(receipts->count() == kBatches * kRows);
  CHECK(balance_of(log->totals(), "acme").spent == 3 * kBatches * kRows);
  receipts.reset();
  log.reset();
  CHECK(tresor::receipts::open_sqlite_store(path)->count() == kBatches * kRows);
  CHECK(balance_of(open_sqlite_spend_log(path)->totals(), "acme").spent == 3 * kBatches * kRows);
}

TEST_CASE("spend log: kill -9 during appends loses no batch that append() reported written", "[spend_log]") {
  std::random_device seed;
  std::mt19937 random(seed());
  for (int round = 0; round < 4; ++round) {
    TempDir dir;
    const auto path = dir.file("r.db");
    const long kill_after = std::uniform_int_distribution<long>(1, 40)(random);
    INFO("round " << round << ", SIGKILL after " << kill_after << " acknowledged batches");
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(fds[0]);
      append_until_killed(path, fds[1]);
    }
    close(fds[1]);
    std::vector<uint32_t> acks;
    const bool enough = read_acks(fds[0], acks, kill_after);
    kill(child, SIGKILL);
    // Acknowledgements written before the kill are still in the pipe: they count too.
    const bool drained = read_acks(fds[0], acks, -1);
    close(fds[0]);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(enough);
    REQUIRE(drained);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);

    const auto totals = open_sqlite_spend_log(path)->totals();
    const Nanos spent = balance_of(totals, "acme").spent;
    // Whole batches only (one transaction each), and at least every acknowledged one.
    CHECK(spent % (kCrashBatch * 1000) == 0);
    CHECK(spent >= static_cast<Nanos>(acks.size()) * kCrashBatch * 1000);
    RawDb raw(path);
    size_t missing = 0;
    for (uint32_t b : acks)
      for (int i = 0; i < kCrashBatch; ++i) missing += raw.has_request(crash_id(b, i)) ? 0 : 1;
    CHECK(missing == 0);
  }
}

TEST_CASE("spend log: a file that is not a database is refused at open and left as it was", "[spend_log]") {
  TempDir dir;
  const auto path = dir.file("not-a-db");
  { std::ofstream(path) << std::string(4096, 'x'); }
  try {
    open_sqlite_spend_log(path);
    FAIL("opening a garbage file should throw");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("not a database") != std::string::npos);
  }
  CHECK(fs::file_size(path) == 4096);
}
