// Signing key fingerprints in the shared store (receipts/README.md, "Replicas agree on
// keys"). Layout, one hash per kid:
//   tresor:keys:<kid>   {thumbprint, replica, published_at}, EXPIRE kKeyRecordTtl (or the
//                       receipts' TTL if longer), refreshed at every publish
#include "receipts/key_registry.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <climits>
#include <ctime>
#include <stdexcept>
#include <utility>

#include "receipts/signer.h"

namespace tresor::receipts {
namespace {

namespace json = boost::json;
using storage::Attempt;
using storage::RedisReply;
using storage::reply_text;

constexpr std::string_view kKeyPrefix = "tresor:keys:";

// KEYS[i] = tresor:keys:<kid i>; ARGV[1] = TTL (s), ARGV[2] = replica, ARGV[3] = now (unix
// s), ARGV[3 + i] = thumbprint i. Every kid is checked before any is written, so a
// conflict changes nothing; the same replica running it twice (a retry) changes nothing
// either. Returns 0, or {i, stored thumbprint, its replica, its published_at}.
constexpr const char* kPublishScript = R"lua(
for i = 1, #KEYS do
  local held = redis.call('HMGET', KEYS[i], 'thumbprint', 'replica', 'published_at')
  if held[1] and held[1] ~= ARGV[3 + i] then
    return {i, held[1], held[2] or '', held[3] or ''}
  end
end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'thumbprint', ARGV[3 + i], 'replica', ARGV[2], 'published_at', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 0
)lua";

const json::string& member(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) throw std::runtime_error("JWK without a string \"" + std::string(name) + "\"");
  return v->get_string();
}

std::string utc_text(const std::string& unix_seconds) {
  char* end = nullptr;
  const long long v = std::strtoll(unix_seconds.c_str(), &end, 10);
  if (unix_seconds.empty() || *end != '\0') return "an unknown time";
  const std::time_t t = static_cast<std::time_t>(v);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf.data();
}

std::string conflict_message(const KeyFingerprint& mine, const std::string& replica, const std::string& theirs,
                             const std::string& their_replica, const std::string& their_time) {
  const std::string record = std::string(kKeyPrefix) + mine.kid;
  return "signing key conflict for kid \"" + mine.kid + "\": this replica, " + replica + ", has the key " +
         mine.source + " with thumbprint " + mine.thumbprint + ", but the shared store records thumbprint " +
         theirs + " for that kid, last published by " + (their_replica.empty() ? "an unknown replica" : their_replica) +
         " at " + utc_text(their_time) +
         "; receipts signed by one would not verify against the other's JWKS. Give every replica the same key "
         "file for a kid, and a new key a new kid (the old one goes to receipts.retired_keys); if no receipt "
         "signed with the recorded key has to verify any more, delete " + record + " from the store";
}

}  // namespace

std::string jwk_thumbprint(std::string_view jwk_json) {
  const json::value v = json::parse(jwk_json);
  if (!v.is_object()) throw std::runtime_error("JWK is not a JSON object");
  const auto& o = v.get_object();
  // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
  const std::string canonical = "{\"crv\":" + json::serialize(member(o, "crv")) +
                                ",\"kty\":" + json::serialize(member(o, "kty")) +
                                ",\"x\":" + json::serialize(member(o, "x")) +
                                ",\"y\":" + json::serialize(member(o, "y")) + "}";
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (EVP_Digest(canonical.data(), canonical.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return base64url_encode(std::string_view(reinterpret_cast<const char*>(digest.data()), len));
}

std::vector<KeyFingerprint> key_fingerprints(std::string_view jwks_json, const config::ReceiptsConfig& receipts) {
  std::vector<KeyFingerprint> out;
  const json::value doc = json::parse(jwks_json);
  for (const auto& k : doc.at("keys").as_array()) {
    KeyFingerprint f;
    f.kid = std::string(member(k.as_object(), "kid"));
    f.thumbprint = jwk_thumbprint(json::serialize(k));
    f.source = f.kid == receipts.kid ? receipts.signing_key_file : std::string("(retired)");
    for (const auto& r : receipts.retired_keys)
      if (r.kid == f.kid) f.source = r.public_key_file + " (retired)";
    out.push_back(std::move(f));
  }
  return out;
}

std::string replica_label(const std::vector<config::ListenAddress>& listen) {
  std::array<char, HOST_NAME_MAX + 1> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  std::string label = (host[0] != '\0' ? std::string(host.data()) : std::string("unknown host")) + " (pid " +
                      std::to_string(getpid());
  if (!listen.empty()) {
    label += ", listen ";
    for (size_t i = 0; i < listen.size(); ++i) {
      if (i > 0) label += ", ";
      const bool v6 = listen[i].host.find(':') != std::string::npos;
      label += (v6 ? "[" + listen[i].host + "]" : listen[i].host) + ":" + std::to_string(listen[i].port);
    }
  }
  return label + ")";
}

PublishResult publish_key_fingerprints(storage::RedisConnection& conn, const std::vector<KeyFingerprint>& keys,
                                       const std::string& replica, std::chrono::seconds ttl) {
  using Result = Attempt<PublishResult>;
  std::vector<std::string> args{"EVAL", kPublishScript, std::to_string(keys.size())};
  for (const auto& k : keys) args.push_back(std::string(kKeyPrefix) + k.kid);
  args.push_back(std::to_string(std::max<long long>(1, ttl.count())));
  args.push_back(replica);
  args.push_back(std::to_string(static_cast<long long>(std::time(nullptr))));
  for (const auto& k : keys) args.push_back(k.thumbprint);

  PublishResult failed;  // unreachable
  PublishResult r = conn.run<PublishResult>("publish signing key fingerprints", failed, [&](bool) -> Result {
    RedisReply reply = conn.command(args);
    if (!reply) return Result::lost();
    PublishResult out;
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
      out.status = PublishResult::Status::ok;
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4 &&
               reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer >= 1 &&
               static_cast<size_t>(reply->element[0]->integer) <= keys.size()) {
      const auto& mine = keys[static_cast<size_t>(reply->element[0]->integer) - 1];
      out.status = PublishResult::Status::conflict;
      out.message = conflict_message(mine, replica, reply_text(reply->element[1]), reply_text(reply->element[2]),
                                     reply_text(reply->element[3]));
    } else {
      // An error reply (NOPERM, OOM, WRONGTYPE on a key someone else wrote): the store
      // answered but could not record; like an outage, retried later.
      out.message = "the store refused the script: " +
                    (reply->type == REDIS_REPLY_ERROR ? reply_text(reply.get()) : std::string("unexpected reply"));
    }
    return Result::ok(std::move(out));
  });
  if (r.status == PublishResult::Status::unreachable && r.message.empty())
    r.message = "the store did not answer: " + conn.errstr();
  return r;
}

// ---- KeyPublisher -------------------------------------------------------------------

KeyPublisher::KeyPublisher(std::vector<KeyFingerprint> keys, std::string replica, std::chrono::seconds ttl,
                           ConnectionFactory connect, Listener listener, Timing timing)
    : keys_(std::move(keys)),
      replica_(std::move(replica)),
      ttl_(ttl),
      connect_(std::move(connect)),
      listener_(std::move(listener)),
      timing_(timing) {
  for (const auto& k : keys_) spdlog::info("receipt signing key kid={} thumbprint={} ({})", k.kid, k.thumbprint, k.source);
  const PublishResult first = attempt();
  if (first.status == PublishResult::Status::conflict) throw std::runtime_error(first.message);
  if (first.status == PublishResult::Status::ok) {
    published_ = true;
    spdlog::info("signing key fingerprints published to the shared store as {}", replica_);
  } else {
    spdlog::warn("signing key fingerprints not published yet ({}); starting anyway, retrying in the background: "
                 "a replica with another key under the same kid is found once the store answers",
                 first.message);
  }
  const auto first_delay = first.status == PublishResult::Status::ok ? timing_.refresh : timing_.first_retry;
  thread_ = std::thread([this, first_delay] { loop(first_delay); });
}

KeyPublisher::~KeyPublisher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

PublishResult KeyPublisher::attempt() {
  if (!conn_) {
    try {
      conn_ = connect_();
    } catch (const std::exception& e) {
      PublishResult r;
      r.message = e.what();
      return r;
    }
  }
  return publish_key_fingerprints(*conn_, keys_, replica_, ttl_);
}

// What one background result means for the flags and the log, and when to try again.
std::chrono::milliseconds KeyPublisher::after(const PublishResult& r, std::chrono::milliseconds retry) {
  switch (r.status) {
    case PublishResult::Status::ok:
      if (conflict_.exchange(false)) spdlog::info("signing key conflict resolved: {} publishes its keys", replica_);
      else if (!published_) spdlog::info("signing key fingerprints published to the shared store as {}", replica_);
      published_ = true;
      return timing_.refresh;
    case PublishResult::Status::conflict:
      conflict_ = true;
      spdlog::error("{} (this replica keeps serving; receipts it signs may not verify elsewhere)", r.message);
      return timing_.conflict_recheck;
    case PublishResult::Status::unreachable:
      spdlog::warn("signing key fingerprints not published: {}; next try in {} ms", r.message, retry.count());
      return retry;
  }
  return retry;
}

void KeyPublisher::loop(std::chrono::milliseconds delay) {
  // The wait after the next unreachable answer: doubles up to max_retry, reset by an answer.
  auto retry = std::min(timing_.first_retry * 2, timing_.max_retry);
  std::unique_lock lock(mutex_);
  for (;;) {
    if (wake_.wait_for(lock, delay, [this] { return stopping_; })) return;
    lock.unlock();
    const PublishResult r = attempt();
    delay = after(r, retry);
    retry = r.status == PublishResult::Status::unreachable ? std::min(retry * 2, timing_.max_retry)
                                                           : timing_.first_retry;
    if (listener_) listener_(r);
    lock.lock();
  }
}

}  // namespace tresor::receipts
