#include "storage/redis_connection.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <ctime>
#include <stdexcept>
#include <string_view>

namespace tresor::storage {
namespace {

constexpr std::string_view kScheme = "redis://";

bool parse_number(std::string_view s, long& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

RedisAddress parse_redis_url(const std::string& url, const std::string& who) {
  auto bad = [&](const std::string& why) {
    return std::runtime_error(who + " " + url + ": " + why + " (expected redis://HOST:PORT/DB)");
  };
  if (url.rfind(kScheme, 0) != 0) throw bad("not a redis:// URL");
  std::string_view rest(url);
  rest.remove_prefix(kScheme.size());
  if (rest.find('@') != std::string_view::npos) throw bad("credentials in the URL are not supported");
  RedisAddress out;
  std::string_view hostport = rest;
  std::string_view db;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    db = rest.substr(slash + 1);
  }
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) throw bad("unterminated [IPv6] host");
    out.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw bad("junk after ]");
      port = after.substr(1);
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(hostport.substr(0, colon));
    port = hostport.substr(colon + 1);
  } else {
    out.host = std::string(hostport);
  }
  if (out.host.empty()) throw bad("missing host");
  if (!port.empty()) {
    long p = 0;
    if (!parse_number(port, p) || p < 1 || p > 65535) throw bad("bad port");
    out.port = static_cast<int>(p);
  }
  if (!db.empty() && (!parse_number(db, out.db) || out.db < 0)) throw bad("bad database number");
  return out;
}

std::string reply_text(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

bool reply_is_ok(const redisReply* r) { return r && r->type == REDIS_REPLY_STATUS && reply_text(r) == "OK"; }

SigpipeGuard::SigpipeGuard() {
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old_);
}

SigpipeGuard::~SigpipeGuard() {
  const int saved_errno = errno;
  if (!was_pending_) {
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  errno = saved_errno;
}

RedisConnection::RedisConnection(std::string who, std::string url)
    : who_(std::move(who)), url_(std::move(url)), addr_(parse_redis_url(url_, who_)) {
  config::StoreConfig store;
  store.url = url_;
  breaker_ = breaker_for(store);
  SigpipeGuard sigpipe;  // SELECT writes
  std::string err;
  if (!connect(err)) throw std::runtime_error(who_ + " " + url_ + ": " + err);
}

bool RedisConnection::connect(std::string& err) {
  c_.reset(redisConnectWithTimeout(addr_.host.c_str(), addr_.port, kRedisConnectTimeout));
  if (!c_) {
    err = "cannot allocate a redis context";
    return false;
  }
  if (c_->err) {
    err = "connect to " + addr_.host + ":" + std::to_string(addr_.port) + " failed: " + c_->errstr;
    c_.reset();
    return false;
  }
  if (redisSetTimeout(c_.get(), kRedisCommandTimeout) != REDIS_OK) {
    err = std::string("setting the command timeout failed: ") + c_->errstr;
    c_.reset();
    return false;
  }
  redisEnableKeepAlive(c_.get());  // notice a silently vanished Redis on an idle link
  if (addr_.db != 0) {
    RedisReply r = command({"SELECT", std::to_string(addr_.db)});
    if (!reply_is_ok(r.get())) {
      err = "SELECT " + std::to_string(addr_.db) + " failed: " + (r ? reply_text(r.get()) : errstr());
      c_.reset();
      return false;
    }
  }
  return true;
}

bool RedisConnection::reconnect(const char* what) {
  std::string err;
  if (connect(err)) return true;
  spdlog::error("{} {}: {}: reconnect failed: {}", who_, url_, what, err);
  return false;
}

void RedisConnection::append(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  // Only fails on out of memory, which then shows as a failed read of its reply.
  redisAppendCommandArgv(c_.get(), static_cast<int>(args.size()), argv.data(), lens.data());
}

RedisReply RedisConnection::read_reply() {
  if (c_->err) return nullptr;
  void* r = nullptr;
  if (redisGetReply(c_.get(), &r) != REDIS_OK) {
    freeReplyObject(r);
    return nullptr;
  }
  return RedisReply(static_cast<redisReply*>(r));
}

RedisReply RedisConnection::command(const std::vector<std::string>& args) {
  append(args);
  return read_reply();
}

std::string RedisConnection::errstr() const { return c_ ? std::string(c_->errstr) : std::string("not connected"); }

void RedisConnection::log_unexpected(const std::string& what, const redisReply* r) const {
  spdlog::error("{} {}: {}: unexpected reply (type {}): {}", who_, url_, what, r ? r->type : -1, reply_text(r));
}

void RedisConnection::log_lost(const char* what) const {
  spdlog::warn("{} {}: {}: connection lost ({}), reconnecting", who_, url_, what, errstr());
}

void RedisConnection::log_failed(const char* what) const {
  spdlog::error("{} {}: {} failed: {}", who_, url_, what, errstr());
}

}  // namespace tresor::storage
