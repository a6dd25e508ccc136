#include "receipts/transparency_log.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "common/sha256.h"
#include "receipts/checkpoint.h"

namespace tresor::receipts {
namespace {

// How many entries one store read brings (a restart reads the whole log in such steps).
constexpr size_t kSyncBatch = 65536;

}  // namespace

size_t Checkpoint::cosignatures() const {
  // After the text and the blank line: the log's own signature line, then one per witness.
  const auto lines = std::string_view(note).substr(std::min(note.size(), text.size() + 1));
  const auto count = static_cast<size_t>(std::count(lines.begin(), lines.end(), '\n'));
  return count > 0 ? count - 1 : 0;
}

TransparencyLog::TransparencyLog(const config::LogConfig& cfg, const note::Ed25519Seed& seed)
    : origin_(cfg.origin),
      seed_(seed),
      verifier_key_(note::verifier_key(cfg.origin, note::public_key(seed))),
      interval_(cfg.checkpoint_interval_ms) {}

std::string TransparencyLog::entry_for(std::string_view claims) {
  common::Sha256 sha;
  sha.update(claims);
  const auto digest = sha.digest();
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

void TransparencyLog::sync(ReceiptStore& store) {
  // 1. The entries appended since (by this replica or another, in the store's order).
  if (!catch_up(store)) return;
  // 2. The store's latest checkpoint (another replica's, or ours from before a restart).
  if (auto stored = store.latest_checkpoint()) adopt_from(store, *stored);
  if (!consistent()) return;
  // 3. A new checkpoint when the tree grew (and the first one, of the empty tree).
  const auto latest = checkpoint();
  if (latest && latest->size >= tree_size()) return;
  Checkpoint fresh = sign_current();
  auto stored = store.publish_checkpoint(StoredCheckpoint{fresh.size, fresh.note});
  if (!stored) return;
  if (stored->note == fresh.note) {
    // Ours, made from this tree just now: nothing to verify.
    std::unique_lock lock(mutex_);
    set_latest(std::make_shared<const Checkpoint>(std::move(fresh)));
    return;
  }
  adopt_from(store, *stored);  // another replica's, as large or larger
}

bool TransparencyLog::catch_up(ReceiptStore& store) {
  for (;;) {
    const auto entries = store.log_entries(tree_size(), kSyncBatch);
    {
      std::unique_lock lock(mutex_);
      for (const auto& e : entries) {
        LogTree::Entry entry{};
        if (e.size() != entry.size()) {
          const uint64_t index = tree_.size();
          lock.unlock();
          refuse(e.empty() ? "log entry " + std::to_string(index) + " is missing from the store (deleted)"
                           : "the store holds a log entry of " + std::to_string(e.size()) + " bytes at index " +
                                 std::to_string(index) + " (every entry is 32)");
          return false;
        }
        std::memcpy(entry.data(), e.data(), entry.size());
        tree_.append(entry);
      }
    }
    if (entries.size() < kSyncBatch) return true;
  }
}

void TransparencyLog::adopt_from(ReceiptStore& store, const StoredCheckpoint& stored) {
  // Another replica may have appended, and checkpointed, since this one read the entries.
  if (stored.size > tree_size() && !catch_up(store)) return;
  adopt(stored);
}

Checkpoint TransparencyLog::sign_current() const {
  std::shared_lock lock(mutex_);
  Checkpoint c;
  c.size = tree_.size();
  c.root = tree_.root(c.size);
  c.text = checkpoint_text(origin_, c.size, c.root);
  c.note = note::sign(c.text, origin_, seed_).value();
  return c;
}

std::optional<Checkpoint> TransparencyLog::parse_checkpoint(const StoredCheckpoint& stored, std::string& why) const {
  const auto text = note::verify(stored.note, verifier_key_);
  if (!text) {
    why = "the stored checkpoint is not signed by this log's key (" + verifier_key_ +
          "): replicas sharing a store must share log.key_file and log.origin";
    return std::nullopt;
  }
  const auto fields = receipts::parse_checkpoint(*text);
  if (!fields || fields->origin != origin_ || fields->size != stored.size) {
    why = "the stored checkpoint is malformed or for another origin";
    return std::nullopt;
  }
  Checkpoint c;
  c.size = fields->size;
  c.root = fields->root;
  c.text = *text;
  c.note = stored.note;
  return c;
}

void TransparencyLog::adopt(const StoredCheckpoint& stored) {
  {
    // The steady state of an idle log: the store still holds what is served. Verifying its
    // signature and root again every interval would cost more than everything else here.
    std::shared_lock lock(mutex_);
    if (latest_ && stored.size == latest_->size && stored.note == latest_->note) return;
  }
  std::string why;
  auto parsed = parse_checkpoint(stored, why);
  if (!parsed) return refuse(why);
  std::unique_lock lock(mutex_);
  if (parsed->size > tree_.size()) {
    lock.unlock();
    return refuse("the store's checkpoint commits to " + std::to_string(parsed->size) + " entries but it holds " +
                  std::to_string(tree_size()) + " (entries were removed)");
  }
  if (tree_.root(parsed->size) != parsed->root) {
    lock.unlock();
    return refuse("the stored entries no longer hash to checkpoint " + std::to_string(parsed->size) +
                  " (root " + merkle::to_hex(parsed->root) + "): the log's entries were changed in the store");
  }
  // Never backwards.
  if (latest_ && parsed->size < latest_->size) return;
  if (latest_ && parsed->size == latest_->size) {
    // The same checkpoint: keep every cosignature either copy has (one accepted here may
    // not have reached the store yet; another replica's may be only there).
    std::string merged = latest_->note;
    std::string_view lines = std::string_view(parsed->note).substr(parsed->text.size() + 1);
    while (!lines.empty()) {
      const auto nl = lines.find('\n');
      const auto line = lines.substr(0, nl == std::string_view::npos ? lines.size() : nl + 1);
      lines.remove_prefix(line.size());
      if (merged.find(line) == std::string::npos) merged += line;
    }
    if (merged == latest_->note) return;
    parsed->note = std::move(merged);
  }
  set_latest(std::make_shared<const Checkpoint>(std::move(*parsed)));
}

void TransparencyLog::refuse(const std::string& why) {
  std::unique_lock lock(mutex_);
  if (!consistent_ && refused_why_ == why) return;
  consistent_ = false;
  refused_why_ = why;
  lock.unlock();
  spdlog::error("transparency log {}: {}; no checkpoint is signed until this is resolved", origin_, why);
}

void TransparencyLog::set_latest(std::shared_ptr<const Checkpoint> c) {
  if (c->cosignatures() > 0) cosigned_ = c;
  latest_ = std::move(c);
}

std::shared_ptr<const Checkpoint> TransparencyLog::cosigned_checkpoint() const {
  std::shared_lock lock(mutex_);
  return cosigned_;
}

std::shared_ptr<const Checkpoint> TransparencyLog::checkpoint() const {
  std::shared_lock lock(mutex_);
  return latest_;
}

bool TransparencyLog::consistent() const {
  std::shared_lock lock(mutex_);
  return consistent_;
}

uint64_t TransparencyLog::tree_size() const {
  std::shared_lock lock(mutex_);
  return tree_.size();
}

std::optional<std::string> TransparencyLog::tile(unsigned level, uint64_t index, unsigned width) const {
  std::shared_lock lock(mutex_);
  if (!latest_ || level >= 64) return std::nullopt;
  // Only what a published checkpoint commits to: tile i of level L ends at leaf (i*256+w)*256^L.
  const unsigned shift = LogTree::kTileHeight * level;
  if (shift >= 64 || (index * LogTree::kTileWidth + width) > (latest_->size >> shift)) return std::nullopt;
  return tree_.tile(level, index, width);
}

std::optional<std::string> TransparencyLog::entry_bundle(uint64_t index, unsigned width) const {
  std::shared_lock lock(mutex_);
  if (!latest_ || index * LogTree::kTileWidth + width > latest_->size) return std::nullopt;
  return tree_.entry_bundle(index, width);
}

std::optional<std::vector<merkle::Hash>> TransparencyLog::consistency_proof(uint64_t old_size,
                                                                            uint64_t new_size) const {
  std::shared_lock lock(mutex_);
  if (!latest_ || old_size > new_size || new_size > latest_->size) return std::nullopt;
  if (old_size == 0 || old_size == new_size) return std::vector<merkle::Hash>{};
  return tree_.consistency_proof(old_size, new_size);
}

std::optional<std::vector<merkle::Hash>> TransparencyLog::inclusion_proof(uint64_t index, uint64_t size) const {
  std::shared_lock lock(mutex_);
  if (!latest_ || index >= size || size > latest_->size) return std::nullopt;
  return tree_.inclusion_proof(index, size);
}

std::optional<InclusionProof> TransparencyLog::inclusion(uint64_t index) const {
  std::shared_lock lock(mutex_);
  if (!latest_ || index >= latest_->size) return std::nullopt;
  auto proof = tree_.inclusion_proof(index, latest_->size);
  if (!proof) return std::nullopt;
  return InclusionProof{index, latest_, std::move(*proof)};
}

bool TransparencyLog::add_cosignature(uint64_t size, const std::string& line) {
  std::unique_lock lock(mutex_);
  if (!latest_ || latest_->size != size) return false;
  if (latest_->note.find(line) != std::string::npos) return true;
  auto next = std::make_shared<Checkpoint>(*latest_);
  next->note += line;
  set_latest(std::move(next));
  return true;
}

}  // namespace tresor::receipts
