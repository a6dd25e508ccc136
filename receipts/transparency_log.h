// The receipts transparency log (issue 19): every stored receipt's entry, SHA-256 of its
// claims, is a leaf of one append-only Merkle tree (RFC 9162), sequenced by the store in
// the receipt batch's own transaction (receipts/store.h). This class follows the store:
// on the receipt service's thread it reads the entries appended since (by any replica),
// checks the store's latest checkpoint against them, and signs a new checkpoint (C2SP
// tlog-checkpoint in a signed note, Ed25519) when the tree grew. I/O threads read the
// latest checkpoint, tiles, entry bundles and proofs from it.
//
// It never signs a checkpoint that does not extend the latest one the store holds: if the
// stored entries no longer hash to that checkpoint's root (a rewritten or truncated store),
// the log stops signing and says so (consistent() false, an error in the log).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "receipts/log_tree.h"
#include "receipts/signed_note.h"
#include "receipts/store.h"

namespace tresor::receipts {

struct Checkpoint {
  uint64_t size = 0;
  merkle::Hash root{};
  std::string text;  // "<origin>\n<size>\n<base64 root>\n": what is signed and cosigned
  std::string note;  // the signed note as served: text, blank line, log signature, cosignatures

  // The signature lines after the log's own (every line of `note` ends in a newline).
  size_t cosignatures() const;
};

struct InclusionProof {
  uint64_t index = 0;
  std::shared_ptr<const Checkpoint> checkpoint;
  std::vector<merkle::Hash> proof;
};

class TransparencyLog {
 public:
  TransparencyLog(const config::LogConfig& cfg, const note::Ed25519Seed& seed);

  const std::string& origin() const { return origin_; }
  // "<origin>+<key hash>+<base64(0x01 || public key)>" (C2SP signed-note vkey).
  const std::string& verifier_key() const { return verifier_key_; }
  std::chrono::milliseconds checkpoint_interval() const { return interval_; }

  // The log entry of a receipt with these claims.
  static std::string entry_for(std::string_view claims);

  // Receipt service thread only: reads new entries from `store`, adopts the store's
  // latest checkpoint once it checks out, and signs (then publishes) a new one when the
  // tree grew. Throws StoreUnavailable when the store cannot answer.
  void sync(ReceiptStore& store);

  // Any thread. Null until the first checkpoint is known.
  std::shared_ptr<const Checkpoint> checkpoint() const;
  // The latest checkpoint that carries at least one witness cosignature: on a busy log a
  // newer one replaces each checkpoint within an interval, before or after its witnesses
  // cosign it; this one stays until a newer one is cosigned. Null until then.
  std::shared_ptr<const Checkpoint> cosigned_checkpoint() const;
  // Tiles and entry bundles (C2SP tlog-tiles) within the latest checkpoint's size.
  std::optional<std::string> tile(unsigned level, uint64_t index, unsigned width) const;
  std::optional<std::string> entry_bundle(uint64_t index, unsigned width) const;
  // Proofs between sizes covered by the latest checkpoint.
  std::optional<std::vector<merkle::Hash>> consistency_proof(uint64_t old_size, uint64_t new_size) const;
  std::optional<std::vector<merkle::Hash>> inclusion_proof(uint64_t index, uint64_t size) const;
  // Entry `index`'s proof against the latest checkpoint; nullopt until one covers it.
  std::optional<InclusionProof> inclusion(uint64_t index) const;
  // Adds a witness cosignature line ("— name base64…\n") to the latest checkpoint if it
  // is not there yet (the caller has verified it against checkpoint()->text); false when a
  // newer checkpoint replaced that one meanwhile.
  bool add_cosignature(uint64_t size, const std::string& line);

  // The stored entries match every checkpoint seen (false: the log stopped signing).
  bool consistent() const;
  uint64_t tree_size() const;

 private:
  std::optional<Checkpoint> parse_checkpoint(const StoredCheckpoint& stored, std::string& why) const;
  bool catch_up(ReceiptStore& store);
  void adopt_from(ReceiptStore& store, const StoredCheckpoint& stored);
  void adopt(const StoredCheckpoint& stored);
  void refuse(const std::string& why);
  void set_latest(std::shared_ptr<const Checkpoint> c);  // under the unique lock
  Checkpoint sign_current() const;

  std::string origin_;
  note::Ed25519Seed seed_;
  std::string verifier_key_;
  std::chrono::milliseconds interval_;

  mutable std::shared_mutex mutex_;
  LogTree tree_;
  std::shared_ptr<const Checkpoint> latest_;
  std::shared_ptr<const Checkpoint> cosigned_;
  bool consistent_ = true;
  std::string refused_why_;
};

}  // namespace tresor::receipts
