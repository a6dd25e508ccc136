// One blocking hiredis connection to Redis, shared by the Redis stores of receipts/ and
// accounts/: URL parsing, connect with timeouts, SELECT, keepalive, SIGPIPE safety,
// pipelined commands, and "reconnect once and retry" around an operation. Not
// thread-safe: each store owns one and uses it from its own thread only (never an I/O
// thread: every call may block up to the timeouts below).
#pragma once

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "storage/store_breaker.h"

namespace tresor::storage {

// Connecting, and each command's reply, give up after this long: a hung Redis costs a
// bounded time per operation (twice: one reconnect and retry) instead of a stuck thread.
constexpr timeval kRedisConnectTimeout{2, 0};
constexpr timeval kRedisCommandTimeout{2, 0};

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, ReplyDeleter>;

struct RedisAddress {
  std::string host;
  int port = 6379;
  long db = 0;
};

// redis://HOST[:PORT][/DB]; HOST may be a bracketed IPv6 address. Throws
// std::runtime_error("<who> <url>: <why> (expected ...)").
RedisAddress parse_redis_url(const std::string& url, const std::string& who);

// The bytes of a string, status or error reply; empty for others (and for null).
std::string reply_text(const redisReply* r);
// A +OK status reply.
bool reply_is_ok(const redisReply* r);

// hiredis writes with write(2), and the gateway does not ignore SIGPIPE (Asio sends with
// MSG_NOSIGNAL), so a write to a connection Redis has already reset would kill the
// process. Blocking SIGPIPE in this thread turns it into EPIPE; a SIGPIPE raised meanwhile
// stays pending and is consumed before the old mask comes back.
class SigpipeGuard {
 public:
  SigpipeGuard();
  ~SigpipeGuard();
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
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
  // `who` prefixes errors and log lines ("receipt store", "ledger"). Throws
  // std::runtime_error naming `who` and `url` on a malformed URL or a failed first connect.
  RedisConnection(std::string who, std::string url);
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // One operation: (re)connect if the last one left the connection broken, try, and on a
  // lost connection (a reset, or no reply within the command timeout) reconnect once and
  // try again (attempt(true)) before giving up with `failure`. The attempt must make its retry safe: the first try may have been applied
  // with only its reply lost.
  // While the store's breaker is open, gives up at once with `failure` (nothing is sent);
  // every outcome is reported to it.
  template <typename T, typename Fn>
  T run(const char* what, T failure, Fn&& attempt) {
    if (breaker_ && !breaker_->allow()) return failure;
    SigpipeGuard sigpipe;
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

  // Queues a command (pipelining); its reply comes from a later read_reply().
  void append(const std::vector<std::string>& args);
  // The next reply; null when the connection failed (errstr() says why).
  RedisReply read_reply();
  RedisReply command(const std::vector<std::string>& args);

  bool broken() const { return !c_ || c_->err != 0; }
  std::string errstr() const;
  void log_unexpected(const std::string& what, const redisReply* r) const;
  const std::string& url() const { return url_; }

 private:
  template <typename T>
  T unreached(T failure) {
    if (breaker_) breaker_->record(false);
    return failure;
  }
  bool connect(std::string& err);
  bool reconnect(const char* what);
  void log_lost(const char* what) const;
  void log_failed(const char* what) const;

  struct ContextDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };

  std::string who_;
  std::string url_;
  RedisAddress addr_;
  std::unique_ptr<redisContext, ContextDeleter> c_;
  std::shared_ptr<StoreBreaker> breaker_;  // shared by every connection to this store
};

}  // namespace tresor::storage
