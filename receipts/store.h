// Receipt storage. Implementations are synchronous and used from the ReceiptService's
// own thread only (never from an I/O thread). Receipts only: the spend ledger,
// reservations and the shared rate-limit counters are accounts/ledger.h's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.h"

namespace tresor::receipts {

struct StoredReceipt {
  std::string id;        // UUID, the JWS's jti
  std::string customer;  // receipts are scoped to the customer, not the key
  std::string jws;       // empty until signed (receipts.signing: on_fetch)
  int64_t expires_at = 0;  // unix seconds
  std::string claims;    // the JWS payload as issued; what a lazy signature signs
  // The transparency log: put_batch appends `log_entry` (SHA-256 of `claims`, 32 bytes;
  // empty = not logged) as the log's next leaf in the same transaction as the receipt;
  // load() returns the index it got.
  std::string log_entry;
  std::optional<uint64_t> log_index;
};

// The latest checkpoint the store holds: the signed note (plus any witness cosignature
// lines) and the tree size it commits to.
struct StoredCheckpoint {
  uint64_t size = 0;
  std::string note;
};

// Thrown by load() when the store could not answer (Redis unreachable, an SQLite error):
// the receipt may well exist, so the fetch is a 503 to retry, not a 404.
class StoreUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ReceiptStore {
 public:
  virtual ~ReceiptStore() = default;
  // Persists all of `batch` durably in one transaction; false on failure (none stored).
  virtual bool put_batch(const std::vector<StoredReceipt>& batch) = 0;
  // The receipt when `id` exists, belongs to `customer` and has not expired at `now`;
  // throws StoreUnavailable when the store cannot tell.
  virtual std::optional<StoredReceipt> load(const std::string& id, const std::string& customer, int64_t now) = 0;
  // Records `jws` for a receipt stored unsigned; returns the JWS the store holds now (an
  // earlier one, e.g. another replica's, wins) or nullopt when the receipt is gone.
  virtual std::optional<std::string> store_signature(const std::string& id, const std::string& jws) = 0;
  // The stored JWS (empty while unsigned) under the same conditions as load().
  std::optional<std::string> get(const std::string& id, const std::string& customer, int64_t now) {
    auto r = load(id, customer, now);
    if (!r) return std::nullopt;
    return std::move(r->jws);
  }
  // Deletes expired rows; returns how many.
  virtual size_t purge_expired(int64_t now) = 0;
  virtual size_t count() = 0;

  // The transparency log's entries from index `from` on, at most `max`, in index order
  // (the sequence the store assigned: one sequencer for every replica). An index the
  // store should hold but does not (a row deleted) comes back as an empty entry, which
  // the log refuses. Throws StoreUnavailable when the store cannot answer.
  virtual std::vector<std::string> log_entries(uint64_t /*from*/, size_t /*max*/) { return {}; }
  virtual std::optional<StoredCheckpoint> latest_checkpoint() { return std::nullopt; }
  // Stores `checkpoint` unless the store holds one of the same size or larger (checkpoints
  // never roll back, whichever replica signs); returns what the store holds afterwards.
  virtual std::optional<StoredCheckpoint> publish_checkpoint(const StoredCheckpoint& checkpoint) { return checkpoint; }
  // Appends `line` (a witness cosignature line, "\n"-terminated) to the stored checkpoint
  // of `size` unless it carries it already; false when the stored one has another size.
  virtual bool add_cosignature(uint64_t /*size*/, const std::string& /*line*/) { return false; }

  // Whether several replicas share the store (Redis) and so see each other's receipts.
  virtual bool shared() const { return false; }
  // Whether the store answers now (Redis: PING, reconnecting if needed); /readyz.
  virtual bool reachable() { return true; }
};

// SQLite in WAL mode at `path` (parent folder created if needed; synchronous=FULL so a
// committed batch survives a crash). Throws std::runtime_error on open failure.
std::unique_ptr<ReceiptStore> open_sqlite_store(const std::string& path);

// Redis at `store.url` = redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] (DB defaults to 0;
// storage/redis_connection.h), with store.tls and the timeouts. Several replicas may share
// one Redis. Receipts expire through Redis's own EXPIREAT, so purge_expired() is a no-op.
// Durability is the Redis server's persistence config (AOF appendfsync), not this
// store's. Does not connect (the first operation does); throws std::runtime_error on a
// malformed URL or unloadable store.tls files.
std::unique_ptr<ReceiptStore> open_redis_store(const config::StoreConfig& store);
// The same with every option but the URL at its default (tests).
std::unique_ptr<ReceiptStore> open_redis_store(const std::string& url);

}  // namespace tresor::receipts
