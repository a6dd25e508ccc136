// Persists and signs receipts on a thread of its own, many per transaction (group
// commit), so neither ECDSA nor disk ever runs on an I/O thread. The signature is made
// either before storing (sign_at_issue) or at the receipt's first fetch, from the claims
// stored at issue (their iat is the completion time either way).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "receipts/signer.h"
#include "receipts/store.h"
#include "receipts/transparency_log.h"

namespace tresor::receipts {

// A fetch's answer: the JWS; none (unknown, expired or another customer's); or the store
// could not tell (unreachable, failing, shutting down), which the endpoint answers 503 so
// that a client retries instead of concluding the receipt does not exist.
struct FetchResult {
  std::optional<std::string> jws;
  std::optional<uint64_t> log_index;  // its leaf in the transparency log
  bool store_unavailable = false;
};

class ReceiptService {
 public:
  // With `log`, every receipt stored is also a leaf of it (in the same transaction), and
  // this thread keeps the log in step with the store every checkpoint interval.
  ReceiptService(std::unique_ptr<Signer> signer, std::unique_ptr<ReceiptStore> store, int64_t ttl_seconds,
                 bool sign_at_issue = false, std::shared_ptr<TransparencyLog> log = nullptr);
  ~ReceiptService();  // drains pending work, then stops the thread

  // A config reload's receipts.ttl_seconds and receipts.signing: they apply to receipts
  // issued from now on (stored ones keep their expiry; unsigned ones are still signed at
  // their first fetch). Thread-safe.
  void set_policy(int64_t ttl_seconds, bool sign_at_issue);

  // Stores `claims_json` (signed now or at first fetch) for `customer` under `id`;
  // `done(ok)` runs on the service thread once the receipt is durable (or failed).
  // Thread-safe.
  void issue(std::string id, std::string customer, std::string claims_json, std::function<void(bool)> done);
  // `done(result)` on the service thread; a receipt stored unsigned is signed with the
  // active key now and its JWS stored, so every later fetch returns the same bytes.
  // Thread-safe.
  void fetch(std::string id, std::string customer, std::function<void(FetchResult)> done);

  // Counters for /metrics (any thread): receipts issued (accepted for storing), stored
  // durably, failed (signing or storing), and signatures made.
  struct Counts {
    uint64_t issued = 0;
    uint64_t stored = 0;
    uint64_t failed = 0;
    uint64_t signed_ = 0;
  };
  Counts counts() const;

  // Readiness (/readyz): the store's answer to the last probe (true until one failed).
  // probe_store() asks again on the service thread without waiting for the answer.
  bool store_reachable() const;
  void probe_store();

  // Records a verified witness cosignature line on the log's checkpoint of `size`, in
  // memory now and in the store (for the other replicas) on the service thread.
  void add_cosignature(uint64_t size, std::string line);

  const Signer& signer() const;
  size_t stored_count();  // for tests and metrics (runs on the service thread, blocks the caller)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::receipts
