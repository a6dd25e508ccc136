// ReceiptStore on Redis (hiredis, blocking API). Like the SQLite store it is used from
// the ReceiptService's thread only, so one connection serves for the store's whole life;
// several gateway replicas may share one Redis and see each other's receipts. The
// connection (URL, timeouts, reconnect once and retry) is storage/redis_connection.h.
//
// Layout:
//   tresor:receipt:<id>          hash {customer, claims, jws, exp}, EXPIREAT exp (Redis expires
//                                it); jws is added at the first fetch when signing is lazy
//   tresor:log:size              the transparency log's tree size (its next index)
//   tresor:log:entries:<chunk>   entries chunk*65536 .. as one string of 32-byte entries
//                                (APPEND; GETRANGE reads any run of them)
//   tresor:log:checkpoint        hash {size, note}: the latest signed checkpoint (+ cosignatures)
//   tresor:spend:<customer>      old spend hashes, no longer read (accounts/ uses tresor:acct:*)
//
// Durability: a write is acknowledged once Redis has applied it in memory. Whether it
// survives a Redis crash is the operator's Redis configuration (appendonly yes with
// appendfsync always for the same guarantee as the SQLite store's synchronous=FULL;
// everysec loses up to a second; RDB snapshots only lose everything since the last one).
// This store cannot check or enforce it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "receipts/store.h"
#include "storage/redis_connection.h"

namespace tresor::receipts {
namespace {

using storage::Attempt;
using storage::RedisConnection;
using storage::reply_is_ok;
using storage::reply_text;
using Reply = storage::RedisReply;

constexpr std::string_view kReceiptPrefix = "tresor:receipt:";

std::string receipt_key(const std::string& id) { return std::string(kReceiptPrefix) + id; }

constexpr uint64_t kEntryBytes = 32;
constexpr uint64_t kEntriesPerChunk = 65536;  // 2 MiB strings, far below Redis's 512 MiB cap

std::string entries_key(uint64_t chunk) { return "tresor:log:entries:" + std::to_string(chunk); }

// Appends one leaf per receipt key (ARGV: the entries, in order) at the log's end and
// records each receipt's index. It runs inside the batch's MULTI/EXEC, so the receipts
// and their leaves become visible together, and Redis, executing scripts one at a time,
// is the one sequencer for every replica.
constexpr const char* kAppendScript = R"lua(
local size = tonumber(redis.call('GET', 'tresor:log:size') or '0')
for i = 1, #KEYS do
  local idx = size + i - 1
  redis.call('APPEND', 'tresor:log:entries:' .. math.floor(idx / 65536), ARGV[i])
  redis.call('HSET', KEYS[i], 'log_index', idx)
end
redis.call('SET', 'tresor:log:size', size + #KEYS)
return size
)lua";

// Stores the checkpoint (ARGV: size, note) unless one as large is stored; returns the stored one.
constexpr const char* kPublishScript = R"lua(
local stored = tonumber(redis.call('HGET', KEYS[1], 'size') or '-1')
if tonumber(ARGV[1]) > stored then redis.call('HSET', KEYS[1], 'size', ARGV[1], 'note', ARGV[2]) end
return redis.call('HMGET', KEYS[1], 'size', 'note')
)lua";

// Appends a cosignature line (ARGV[2]) to the stored checkpoint of size ARGV[1], once.
constexpr const char* kCosignScript = R"lua(
if redis.call('HGET', KEYS[1], 'size') ~= ARGV[1] then return 0 end
local note = redis.call('HGET', KEYS[1], 'note')
if string.find(note, ARGV[2], 1, true) then return 1 end
redis.call('HSET', KEYS[1], 'note', note .. ARGV[2])
return 1
)lua";

constexpr std::string_view kCheckpointKey = "tresor:log:checkpoint";

class RedisStore final : public ReceiptStore {
 public:
  explicit RedisStore(const config::StoreConfig& store) : conn_("receipt store", store) {}

  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  bool put_batch(const std::vector<StoredReceipt>& batch) override {
    if (batch.empty()) return true;
    std::unordered_set<std::string_view> ids;
    for (const auto& r : batch) {
      if (!ids.insert(r.id).second) {
        spdlog::error("receipt store {}: batch holds id {} twice", conn_.url(), r.id);
        return false;
      }
    }
    return conn_.run<bool>("put_batch", false, [&](bool retry) { return try_put_batch(batch, retry); });
  }

  std::optional<StoredReceipt> load(const std::string& id, const std::string& customer, int64_t now) override {
    using Result = Attempt<std::optional<StoredReceipt>>;
    bool answered = false;
    auto found = conn_.run<std::optional<StoredReceipt>>("get", std::nullopt, [&](bool) -> Result {
      Reply r = conn_.command({"HMGET", receipt_key(id), "customer", "jws", "exp", "claims", "log_index"});
      if (!r) return Result::lost();
      answered = true;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
        conn_.log_unexpected("HMGET", r.get());
        return Result::ok(std::nullopt);
      }
      const redisReply* c = r->element[0];
      const redisReply* j = r->element[1];
      const redisReply* e = r->element[2];
      const redisReply* claims = r->element[3];
      // Another customer's, expired and missing receipts all look the same (404). A
      // receipt is stored with its claims, its JWS, or both (lazy signing adds the JWS).
      if (c->type != REDIS_REPLY_STRING || reply_text(c) != customer) return Result::ok(std::nullopt);
      if (j->type != REDIS_REPLY_STRING && claims->type != REDIS_REPLY_STRING) return Result::ok(std::nullopt);
      // Redis expires the key itself (EXPIREAT); exp also guards against clock skew between
      // the gateway and Redis, so that expiry is the gateway's notion like with SQLite.
      if (e->type == REDIS_REPLY_STRING && std::strtoll(reply_text(e).c_str(), nullptr, 10) <= now)
        return Result::ok(std::nullopt);
      StoredReceipt out;
      out.id = id;
      out.customer = customer;
      out.jws = reply_text(j);
      out.claims = reply_text(claims);
      if (r->element[4]->type == REDIS_REPLY_STRING)
        out.log_index = std::strtoull(reply_text(r->element[4]).c_str(), nullptr, 10);
      return Result::ok(std::move(out));
    });
    if (!answered) throw StoreUnavailable("receipt store " + conn_.url() + " is unreachable");
    return found;
  }

  std::optional<std::string> store_signature(const std::string& id, const std::string& jws) override {
    using Result = Attempt<std::optional<std::string>>;
    return conn_.run<std::optional<std::string>>("sign", std::nullopt, [&](bool) -> Result {
      // Atomic on the server: never re-creates an expired receipt's key (HSETNX alone
      // would, without a TTL), and the first replica to sign wins; the others read it.
      Reply r = conn_.command({"EVAL",
                         "if redis.call('EXISTS', KEYS[1]) == 0 then return false end "
                         "redis.call('HSETNX', KEYS[1], 'jws', ARGV[1]) "
                         "return redis.call('HGET', KEYS[1], 'jws')",
                         "1", receipt_key(id), jws});
      if (!r) return Result::lost();
      if (r->type == REDIS_REPLY_STRING) return Result::ok(reply_text(r.get()));
      if (r->type != REDIS_REPLY_NIL) conn_.log_unexpected("EVAL", r.get());
      return Result::ok(std::nullopt);
    });
  }

  std::vector<std::string> log_entries(uint64_t from, size_t max) override {
    using Result = Attempt<std::vector<std::string>>;
    bool answered = false;
    auto out = conn_.run<std::vector<std::string>>("log entries", {}, [&](bool) -> Result {
      Reply size_reply = conn_.command({"GET", "tresor:log:size"});
      if (!size_reply) return Result::lost();
      answered = true;
      const uint64_t size =
          size_reply->type == REDIS_REPLY_STRING ? std::strtoull(reply_text(size_reply.get()).c_str(), nullptr, 10) : 0;
      std::vector<std::string> entries;
      uint64_t next = from;
      while (next < size && entries.size() < max) {
        // One GETRANGE per chunk touched.
        const uint64_t chunk = next / kEntriesPerChunk;
        const uint64_t in_chunk = std::min<uint64_t>({size - next, max - entries.size(),
                                                      kEntriesPerChunk - next % kEntriesPerChunk});
        const uint64_t offset = (next % kEntriesPerChunk) * kEntryBytes;
        Reply r = conn_.command({"GETRANGE", entries_key(chunk), std::to_string(offset),
                                 std::to_string(offset + in_chunk * kEntryBytes - 1)});
        if (!r) return Result::lost();
        const std::string bytes = reply_text(r.get());
        // Fewer bytes than the size promises: a chunk was cut (the store changed under us);
        // hand back what is there, the log's consistency checks will say the rest.
        for (uint64_t i = 0; i + kEntryBytes <= bytes.size(); i += kEntryBytes) entries.push_back(bytes.substr(i, kEntryBytes));
        if (bytes.size() < in_chunk * kEntryBytes) break;
        next += in_chunk;
      }
      return Result::ok(std::move(entries));
    });
    if (!answered) throw StoreUnavailable("receipt store " + conn_.url() + " is unreachable");
    return out;
  }

  std::optional<StoredCheckpoint> latest_checkpoint() override {
    return checkpoint_command({"HMGET", std::string(kCheckpointKey), "size", "note"});
  }

  std::optional<StoredCheckpoint> publish_checkpoint(const StoredCheckpoint& c) override {
    return checkpoint_command({"EVAL", kPublishScript, "1", std::string(kCheckpointKey), std::to_string(c.size), c.note});
  }

  bool add_cosignature(uint64_t size, const std::string& line) override {
    return conn_.run<bool>("cosignature", false, [&](bool) -> Attempt<bool> {
      Reply r = conn_.command({"EVAL", kCosignScript, "1", std::string(kCheckpointKey), std::to_string(size), line});
      if (!r) return Attempt<bool>::lost();
      return Attempt<bool>::ok(r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    });
  }

  // Redis deletes expired receipts on its own (EXPIREAT).
  size_t purge_expired(int64_t) override { return 0; }

  bool reachable() override { return conn_.ping(); }

  size_t count() override {
    return conn_.run<size_t>("count", 0, [&](bool) -> Attempt<size_t> {
      std::vector<std::string> keys;
      if (!scan(std::string(kReceiptPrefix) + "*", keys)) return Attempt<size_t>::lost();
      return Attempt<size_t>::ok(keys.size());
    });
  }

  bool shared() const override { return true; }

 private:
  Attempt<bool> try_put_batch(const std::vector<StoredReceipt>& batch, bool retry) {
    std::vector<std::string> keys;
    keys.reserve(batch.size());
    for (const auto& r : batch) keys.push_back(receipt_key(r.id));

    if (retry) {
      // The previous attempt may have committed and only lost EXEC's reply. Receipts are
      // unique (the JWS signs the id), so finding the whole batch stored as we wrote it
      // means it was ours.
      for (const auto& k : keys) conn_.append({"HMGET", k, "customer", "jws", "claims"});
      size_t ours = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        Reply r = conn_.read_reply();
        if (!r) return Attempt<bool>::lost();
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && reply_text(r->element[0]) == batch[i].customer &&
            reply_text(r->element[1]) == batch[i].jws && reply_text(r->element[2]) == batch[i].claims)
          ++ours;
      }
      if (ours == batch.size()) return Attempt<bool>::ok(true);
    }

    // Redis has no rollback, so refuse up front when an id exists. WATCH makes EXEC fail
    // if another replica writes one of these keys between the check and the EXEC.
    std::vector<std::string> watch{"WATCH"};
    watch.insert(watch.end(), keys.begin(), keys.end());
    std::vector<std::string> exists{"EXISTS"};
    exists.insert(exists.end(), keys.begin(), keys.end());
    conn_.append(watch);
    conn_.append(exists);
    Reply watched = conn_.read_reply();
    if (!watched) return Attempt<bool>::lost();
    Reply existing = conn_.read_reply();
    if (!existing) return Attempt<bool>::lost();
    if (!reply_is_ok(watched.get()) || existing->type != REDIS_REPLY_INTEGER || existing->integer != 0) {
      if (existing->type == REDIS_REPLY_INTEGER)
        spdlog::error("receipt store {}: put_batch refused: {} of {} ids already exist", conn_.url(), existing->integer,
                      batch.size());
      else
        conn_.log_unexpected("WATCH/EXISTS", reply_is_ok(watched.get()) ? existing.get() : watched.get());
      Reply unwatched = conn_.command({"UNWATCH"});
      if (!unwatched) return Attempt<bool>::lost();
      return Attempt<bool>::ok(false);
    }

    conn_.append({"MULTI"});
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto& r = batch[i];
      const std::string exp = std::to_string(r.expires_at);
      // An unsigned receipt (lazy signing) has no jws field until its first fetch.
      if (r.jws.empty())
        conn_.append({"HSET", keys[i], "customer", r.customer, "claims", r.claims, "exp", exp});
      else if (r.claims.empty())
        conn_.append({"HSET", keys[i], "customer", r.customer, "jws", r.jws, "exp", exp});
      else
        conn_.append({"HSET", keys[i], "customer", r.customer, "jws", r.jws, "claims", r.claims, "exp", exp});
      conn_.append({"EXPIREAT", keys[i], exp});
    }
    const size_t logged = append_log(batch, keys);
    conn_.append({"EXEC"});
    return finish_transaction("put_batch", 2 * batch.size() + (logged > 0 ? 1 : 0));
  }

  // Queues the log append of the batch's logged receipts (one script); how many.
  size_t append_log(const std::vector<StoredReceipt>& batch, const std::vector<std::string>& keys) {
    std::vector<std::string> receipt_keys;
    std::vector<std::string> entries;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].log_entry.empty()) continue;
      receipt_keys.push_back(keys[i]);
      entries.push_back(batch[i].log_entry);
    }
    if (receipt_keys.empty()) return 0;
    std::vector<std::string> eval{"EVAL", kAppendScript, std::to_string(receipt_keys.size())};
    eval.insert(eval.end(), receipt_keys.begin(), receipt_keys.end());
    eval.insert(eval.end(), entries.begin(), entries.end());
    conn_.append(eval);
    return receipt_keys.size();
  }

  // HMGET size note (or a script answering the same): the stored checkpoint, if any.
  std::optional<StoredCheckpoint> checkpoint_command(const std::vector<std::string>& command) {
    using Result = Attempt<std::optional<StoredCheckpoint>>;
    bool answered = false;
    auto out = conn_.run<std::optional<StoredCheckpoint>>("log checkpoint", std::nullopt, [&](bool) -> Result {
      Reply r = conn_.command(command);
      if (!r) return Result::lost();
      answered = true;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        conn_.log_unexpected("log checkpoint", r.get());
        return Result::ok(std::nullopt);
      }
      if (r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return Result::ok(std::nullopt);
      return Result::ok(StoredCheckpoint{std::strtoull(reply_text(r->element[0]).c_str(), nullptr, 10),
                                         reply_text(r->element[1])});
    });
    if (!answered) throw StoreUnavailable("receipt store " + conn_.url() + " is unreachable");
    return out;
  }

  // Reads the replies of MULTI, `queued` commands and EXEC appended just before.
  Attempt<bool> finish_transaction(const char* what, size_t queued) {
    bool ok = true;
    for (size_t i = 0; i < queued + 1; ++i) {  // MULTI's OK, then a QUEUED per command
      Reply r = conn_.read_reply();
      if (!r) return Attempt<bool>::lost();
      if (r->type == REDIS_REPLY_ERROR) {
        if (ok) conn_.log_unexpected(std::string(what) + " (queueing)", r.get());
        ok = false;  // EXEC will answer EXECABORT; nothing is applied
      }
    }
    Reply exec = conn_.read_reply();
    if (!exec) return Attempt<bool>::lost();
    if (exec->type == REDIS_REPLY_NIL) {
      spdlog::error("receipt store {}: {}: a watched key changed before EXEC; nothing stored", conn_.url(), what);
      return Attempt<bool>::ok(false);
    }
    if (exec->type != REDIS_REPLY_ARRAY) {
      conn_.log_unexpected(std::string(what) + " EXEC", exec.get());
      return Attempt<bool>::ok(false);
    }
    // A command failing inside EXEC (e.g. WRONGTYPE) does not undo the others: Redis has
    // no rollback. The checks before MULTI make that unreachable for our own keys.
    for (size_t i = 0; i < exec->elements; ++i) {
      if (exec->element[i]->type == REDIS_REPLY_ERROR) {
        conn_.log_unexpected(std::string(what) + " EXEC", exec->element[i]);
        ok = false;
      }
    }
    return Attempt<bool>::ok(ok);
  }

  // SCAN with MATCH; false when the connection was lost. SCAN may repeat a key, hence the set.
  bool scan(const std::string& pattern, std::vector<std::string>& keys) {
    std::unordered_set<std::string> seen;
    std::string cursor = "0";
    do {
      Reply r = conn_.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
      if (!r) return false;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY) {
        conn_.log_unexpected("SCAN", r.get());
        break;
      }
      cursor = reply_text(r->element[0]);
      const redisReply* batch = r->element[1];
      for (size_t i = 0; i < batch->elements; ++i) {
        std::string k = reply_text(batch->element[i]);
        if (seen.insert(k).second) keys.push_back(std::move(k));
      }
    } while (cursor != "0");
    return true;
  }

  RedisConnection conn_;
};

}  // namespace

std::unique_ptr<ReceiptStore> open_redis_store(const config::StoreConfig& store) {
  return std::make_unique<RedisStore>(store);
}

std::unique_ptr<ReceiptStore> open_redis_store(const std::string& url) {
  config::StoreConfig store;
  store.url = url;
  return open_redis_store(store);
}

}  // namespace tresor::receipts
