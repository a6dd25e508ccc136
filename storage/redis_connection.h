// One blocking Redis connection, shared by the Redis stores of receipts/ and accounts/:
// URL parsing (credentials, TLS), a lazy connect with AUTH, SELECT and a server version
// check, exact deadlines, pipelined commands, and "reconnect once and retry" around an
// operation. The bytes travel over Boost.Asio (plain TCP or OpenSSL TLS); hiredis only
// encodes commands and parses replies, so callers see hiredis' redisReply. Not
// thread-safe: each store owns its connections and uses each from one thread at a time
// (never an I/O thread: every call may block up to the configured timeouts).
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <compare>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "storage/store_breaker.h"

namespace tresor::storage {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, ReplyDeleter>;

struct RedisVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  auto operator<=>(const RedisVersion&) const = default;
};

// The oldest server accepted: 6.0 brings ACL users (AUTH USER PASSWORD), HELLO (which
// reports the version whatever the user's ACL) and TLS; the ledger's scripts also need
// EVALSHA, cjson and multi-field HSET (4.0). A server below it is refused at every connect.
constexpr RedisVersion kMinRedisVersion{6, 0, 0};

// "7.0.15" → {7, 0, 15}; "6.2" → {6, 2, 0}; trailing non-digits after a part are ignored
// ("7.4.0-rc1"). nullopt when it does not start with a number.
std::optional<RedisVersion> parse_redis_version(std::string_view text);
std::string to_string(const RedisVersion& v);

struct RedisAddress {
  bool tls = false;  // rediss://
  std::string host;  // without the brackets of an IPv6 literal
  int port = 6379;
  long db = 0;
  std::string user;      // percent-decoded; empty: AUTH PASSWORD (the default user)
  std::string password;  // percent-decoded; empty: no AUTH
  std::string masked;    // the URL for logs and errors: the password is "***"
};

// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://… (TLS). HOST may be a bracketed
// IPv6 address; USER and PASSWORD are percent-decoded (RFC 3986), and the user info ends
// at the last '@', so a password may hold '@', '/' or ':' unencoded ('%' must be %25).
// Throws std::runtime_error("<who> <masked url>: <why> (expected …)"), never echoing the
// password.
RedisAddress parse_redis_url(const std::string& url, const std::string& who);
// `url` with the password of its user info replaced by *** (the whole user info when it
// has no ':'); for any text, parseable or not.
std::string mask_redis_url(const std::string& url);

// Loads store.tls the way a rediss:// connection does (CA file, client certificate and
// key, PEM) without connecting; throws std::runtime_error naming the field
// ("store.tls.ca_file: …"). check-config runs it; each connection runs it at construction.
void check_redis_tls_files(const config::StoreTlsConfig& tls);

// The bytes of a string, status or error reply; empty for others (and for null).
std::string reply_text(const redisReply* r);
// A +OK status reply.
bool reply_is_ok(const redisReply* r);

// What connecting came to. unreachable: DNS, refused, reset or timed out (Redis may come
// back); the others are a misconfiguration on one side or the other.
enum class ConnectStatus { ok, unreachable, auth_failed, tls_failed, unsupported, other };
const char* to_string(ConnectStatus s);

struct ConnectCheck {
  ConnectStatus status = ConnectStatus::ok;
  std::string message;  // names who and the masked URL; never the password
};

// What one attempt of an operation came to: done (with a value), or the connection
// failed (retry after a reconnect).
template <typename T>
struct Attempt {
  bool connection_lost = false;
  T value{};
  static Attempt lost() { return Attempt{true, T{}}; }
  static Attempt ok(T v) { return Attempt{false, std::move(v)}; }
};

class RedisConnection {
 public:
  // `who` prefixes errors and log lines ("receipt store", "ledger"). Does not connect (the
  // first operation does, so a replica starts while Redis is down). Throws
  // std::runtime_error on a malformed URL or unloadable store.tls files.
  RedisConnection(std::string who, const config::StoreConfig& store);
  // The same with every option but the URL at its default (tests).
  RedisConnection(std::string who, const std::string& url);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Connects now (replacing any open connection) and says how it went; the connection
  // stays open for the next operation. For startup: auth, TLS and version failures are
  // configuration errors, unreachable is not.
  ConnectCheck check_connect();

  // One operation: (re)connect if the last one left the connection broken, try, and on a
  // lost connection (a reset, or no reply within the command timeout) reconnect once and
  // try again (attempt(true)) before giving up with `failure`. The attempt must make its retry safe: the first try may have been applied
  // with only its reply lost.
  // While the store's breaker is open, gives up at once with `failure` (nothing is sent);
  // every outcome is reported to it.
  template <typename T, typename Fn>
  T run(const char* what, T failure, Fn&& attempt) {
    if (breaker_ && !breaker_->allow()) return failure;
    if (broken() && !reconnect(what)) return unreached(std::move(failure));
    Attempt<T> a = attempt(false);
    if (a.connection_lost) {
      log_lost(what);
      if (!reconnect(what)) return unreached(std::move(failure));
      a = attempt(true);
    }
    if (a.connection_lost) {
      log_failed(what);
      return unreached(std::move(failure));
    }
    if (breaker_) breaker_->record(true);
    return std::move(a.value);
  }

  // Queues a command (pipelining); it is written by the next read_reply().
  void append(const std::vector<std::string>& args);
  // Writes what was appended, then reads the next reply within store.command_timeout_ms.
  // Null when the connection failed or timed out (errstr() says why; the connection is
  // then closed, broken() is true).
  RedisReply read_reply();
  RedisReply command(const std::vector<std::string>& args);
  // PING through run(): whether the store answers now (reconnecting if needed; nothing is
  // sent while the breaker is open, except by its prober).
  bool ping();

  // Not connected, or the last operation failed.
  bool broken() const { return !ready_; }
  std::string errstr() const;
  void log_unexpected(const std::string& what, const redisReply* r) const;
  // The masked URL (the password is ***).
  const std::string& url() const { return addr_.masked; }

 private:
  struct Link;

  template <typename T>
  T unreached(T failure) {
    if (breaker_) breaker_->record(false);
    return failure;
  }

  ConnectStatus connect(std::string& err);
  ConnectStatus handshake(std::chrono::steady_clock::time_point deadline, std::string& err);
  bool reconnect(const char* what);
  RedisReply read_until(std::chrono::steady_clock::time_point deadline, unsigned budget_ms);
  void fail(std::string why);
  std::string scrub(std::string text) const;
  void log_lost(const char* what) const;
  void log_failed(const char* what) const;

  std::string who_;
  RedisAddress addr_;
  unsigned connect_timeout_ms_;
  unsigned command_timeout_ms_;
  std::unique_ptr<Link> link_;
  bool ready_ = false;  // connected, authenticated, version checked, no failure since
  std::string err_ = "not connected yet";
  std::string version_;
  std::shared_ptr<StoreBreaker> breaker_;  // shared by every connection to this store
};

}  // namespace tresor::storage
