// The transparency log's HTTP surface (server/log_endpoint.h) and its note parsing
// (receipts/signed_note.h) on hostile input, over a real log of 700 entries (two full
// level-0 tiles and a partial one, a level-1 partial tile).
// Input: a request target (e.g. "/v1/log/tile/0/x001/002.p/7"), optionally a 0x00 byte and
// a signed note (for the target /v1/log/cosignature: the posted body).
// Properties: log_response never throws and answers 200, 400 or 404 only; a 200 tile is a
// whole number of 32-byte hashes (at most 256), an entry bundle a whole number of
// length-prefixed 32-byte entries, a proof a JSON answer; a posted cosignature nobody could
// sign is refused (400/409) and never recorded; the note verifier never throws,
// and what it accepts is a prefix of the note ending in a newline.
#include <memory>
#include <string>
#include <vector>

#include "receipts/store.h"
#include "receipts/transparency_log.h"
#include "server/log_endpoint.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

// Just enough of a store for the log to follow: entries and one checkpoint, in memory.
class MemoryStore final : public receipts::ReceiptStore {
 public:
  explicit MemoryStore(size_t n) {
    for (size_t i = 0; i < n; ++i) entries_.push_back(receipts::TransparencyLog::entry_for(std::to_string(i)));
  }
  bool put_batch(const std::vector<receipts::StoredReceipt>&) override { return false; }
  std::optional<receipts::StoredReceipt> load(const std::string&, const std::string&, int64_t) override {
    return std::nullopt;
  }
  std::optional<std::string> store_signature(const std::string&, const std::string&) override { return std::nullopt; }
  size_t purge_expired(int64_t) override { return 0; }
  size_t count() override { return 0; }
  std::vector<std::string> log_entries(uint64_t from, size_t max) override {
    std::vector<std::string> out;
    for (uint64_t i = from; i < entries_.size() && out.size() < max; ++i) out.push_back(entries_[i]);
    return out;
  }
  std::optional<receipts::StoredCheckpoint> latest_checkpoint() override { return checkpoint_; }
  std::optional<receipts::StoredCheckpoint> publish_checkpoint(const receipts::StoredCheckpoint& c) override {
    if (!checkpoint_ || c.size > checkpoint_->size) checkpoint_ = c;
    return checkpoint_;
  }

 private:
  std::vector<std::string> entries_;
  std::optional<receipts::StoredCheckpoint> checkpoint_;
};

const receipts::TransparencyLog& fuzz_log() {
  static const auto log = [] {
    config::LogConfig cfg;
    cfg.origin = "fuzz.example/log";
    receipts::note::Ed25519Seed seed{};
    seed.fill(0x42);
    auto l = std::make_unique<receipts::TransparencyLog>(cfg, seed);
    MemoryStore store(700);
    l->sync(store);
    return l;
  }();
  return *log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t sep = in.find('\0');
  const std::string_view target = in.substr(0, sep);
  const auto& log = fuzz_log();

  if (target.substr(0, server::kLogPrefix.size()) == server::kLogPrefix) {
    const server::Response r = server::log_response(target, &log);
    const std::string_view path = target.substr(0, target.find('?'));
    FUZZ_CHECK(r.status == 200 || r.status == 400 || r.status == 404);
    if (r.status == 200 && path.find("/tile/entries/") != std::string_view::npos) {
      FUZZ_CHECK(r.body.size() % 34 == 0 && !r.body.empty() && r.body.size() <= 256 * 34);
    } else if (r.status == 200 && path.find("/tile/") != std::string_view::npos) {
      FUZZ_CHECK(r.body.size() % 32 == 0 && !r.body.empty() && r.body.size() <= 256 * 32);
    } else if (r.status == 200 && path.find("/proof/") != std::string_view::npos) {
      FUZZ_CHECK(r.content_type == "application/json");
    }
  }

  if (sep != std::string_view::npos && target == server::kCosignaturePath) {
    // The rest of the input is the posted body; a witness key the fuzzer cannot sign for.
    size_t recorded = 0;
    const server::Response r = server::cosignature_response(
        in.substr(sep + 1), &log, {"witness.example/w1+a1b2c3d4+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        [&recorded](uint64_t, std::string) { ++recorded; });
    FUZZ_CHECK(r.status == 400 || r.status == 409);
    FUZZ_CHECK(recorded == 0);
  }

  if (sep != std::string_view::npos) {
    const std::string_view note_text = in.substr(sep + 1);
    if (const auto text = receipts::note::verify(note_text, log.verifier_key())) {
      FUZZ_CHECK(note_text.substr(0, text->size()) == *text);
      FUZZ_CHECK(!text->empty() && text->back() == '\n');
    }
  }
  return 0;
}
