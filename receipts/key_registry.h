// Replicas sharing a store agree on their signing keys: each publishes the RFC 7638
// thumbprint of every key it signs with or lists in its JWKS (active + retired) under
// `tresor:keys:<kid>`, and a kid already recorded with another key is a conflict (a
// receipt signed by one replica would not verify against the other's JWKS).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.h"
#include "storage/redis_connection.h"

namespace tresor::receipts {

// A record lives this long after its last publish (each startup, then daily): longer than
// a year so that a key kept only in retired_keys, or replicas stopped for a season, are
// still checked, and finite so that a kid nobody lists any more is forgotten eventually.
constexpr std::chrono::seconds kKeyRecordTtl{400LL * 24 * 3600};

struct KeyFingerprint {
  std::string kid;
  std::string thumbprint;  // RFC 7638, SHA-256, base64url without padding
  std::string source;      // where the key comes from (its file), for messages only
};

// The RFC 7638 thumbprint of an EC public JWK (members crv, kty, x, y). Throws
// std::runtime_error when one of them is missing.
std::string jwk_thumbprint(std::string_view jwk_json);
// Every key of a JWKS document ({"keys":[…]}), the key files of `receipts` as sources.
std::vector<KeyFingerprint> key_fingerprints(std::string_view jwks_json, const config::ReceiptsConfig& receipts);

// "<host name> (pid <pid>, listen <configured addresses>)": who published a record.
std::string replica_label(const std::vector<config::ListenAddress>& listen);

struct PublishResult {
  enum class Status {
    ok,           // every kid recorded (or already recorded) with this replica's key; TTLs refreshed
    conflict,     // a kid holds another key; nothing was written
    unreachable,  // the store did not answer, or refused the script (message says why)
  };
  Status status = Status::unreachable;
  std::string message;  // conflict: the kid, both thumbprints and both replicas
};

// One Lua script: all kids checked, then all recorded (thumbprint, replica, published_at)
// with their TTL set, or none when one conflicts. Safe to retry after a lost reply.
PublishResult publish_key_fingerprints(storage::RedisConnection& conn, const std::vector<KeyFingerprint>& keys,
                                       const std::string& replica, std::chrono::seconds ttl = kKeyRecordTtl);

// When KeyPublisher's thread tries again.
struct PublishTiming {
  std::chrono::milliseconds first_retry{1000};  // unreachable: then doubling up to max_retry
  std::chrono::milliseconds max_retry{60000};
  std::chrono::milliseconds refresh{24LL * 3600 * 1000};  // after a publish: refresh the TTLs
  std::chrono::milliseconds conflict_recheck{60000};      // while in conflict: check again, log again
};

// Publishes at startup and keeps the records fresh from a thread of its own.
class KeyPublisher {
 public:
  // Makes the connection; may throw (counted as unreachable) or return a connection that
  // is not connected yet (its run() reconnects).
  using ConnectionFactory = std::function<std::unique_ptr<storage::RedisConnection>()>;
  // Called with each background attempt's result (on the publisher's thread).
  using Listener = std::function<void(const PublishResult&)>;
  using Timing = PublishTiming;

  // Publishes once on the calling thread. A conflict throws std::runtime_error with the
  // message (a startup error); an unreachable store is a warning. Then a thread retries
  // until the store answers, and refreshes the records every `refresh`.
  KeyPublisher(std::vector<KeyFingerprint> keys, std::string replica, std::chrono::seconds ttl,
               ConnectionFactory connect, Listener listener = {}, Timing timing = {});
  ~KeyPublisher();  // stops the thread (an attempt in progress ends within its timeouts)
  KeyPublisher(const KeyPublisher&) = delete;
  KeyPublisher& operator=(const KeyPublisher&) = delete;

  // True while the last answer from the store was a conflict (found after startup: an
  // error is logged at each recheck). Any thread.
  bool key_conflict() const { return conflict_.load(); }
  // True once the store has recorded this replica's keys. Any thread.
  bool published() const { return published_.load(); }

 private:
  PublishResult attempt();
  std::chrono::milliseconds after(const PublishResult& r, std::chrono::milliseconds retry);
  void loop(std::chrono::milliseconds first_delay);

  std::vector<KeyFingerprint> keys_;
  std::string replica_;
  std::chrono::seconds ttl_;
  ConnectionFactory connect_;
  Listener listener_;
  Timing timing_;
  std::unique_ptr<storage::RedisConnection> conn_;  // the thread's once started
  std::atomic<bool> conflict_{false};
  std::atomic<bool> published_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tresor::receipts
