// storage/redis_connection: the store URL (credentials, TLS, IPv6, masking), the server
// version check, and connecting to a real redis-server (AUTH, ACL users, outcomes of
// check_connect, deadlines). The TLS side runs end to end in
// tests/integration/redis-auth-tls.test.mjs.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "storage/redis_connection.h"
#include "tests/unit/redis_server.h"

using tresor::storage::ConnectStatus;
using tresor::storage::kMinRedisVersion;
using tresor::storage::mask_redis_url;
using tresor::storage::parse_redis_url;
using tresor::storage::parse_redis_version;
using tresor::storage::RedisConnection;
using tresor::storage::RedisVersion;
using tresor::test::RedisServer;

namespace {

tresor::config::StoreConfig store_at(const std::string& url, unsigned connect_ms = 1000, unsigned command_ms = 1000) {
  tresor::config::StoreConfig s;
  s.url = url;
  s.connect_timeout_ms = connect_ms;
  s.command_timeout_ms = command_ms;
  return s;
}

std::string parse_error(const std::string& url) {
  try {
    parse_redis_url(url, "store");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(parsed)";
}

// A loopback TCP listener on a thread that answers the first read of its one connection
// with `answer` (empty: accepts and never answers), then waits until destroyed.
class FakeRedis {
 public:
  explicit FakeRedis(std::string answer) : answer_(std::move(answer)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd_, 4) == 0);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      if (!answer_.empty() && read(c, buf, sizeof buf) > 0) (void)!write(c, answer_.data(), answer_.size());
      while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // holds the link open
      close(c);
    });
  }
  ~FakeRedis() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

 private:
  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("redis url: host, port, database and scheme", "[redis_url]") {
  auto a = parse_redis_url("redis://cache.internal", "store");
  CHECK_FALSE(a.tls);
  CHECK(a.host == "cache.internal");
  CHECK(a.port == 6379);
  CHECK(a.db == 0);
  CHECK(a.user.empty());
  CHECK(a.password.empty());
  CHECK(a.masked == "redis://cache.internal");

  auto b = parse_redis_url("rediss://10.0.0.5:6380/3", "store");
  CHECK(b.tls);
  CHECK(b.host == "10.0.0.5");
  CHECK(b.port == 6380);
  CHECK(b.db == 3);

  auto v6 = parse_redis_url("rediss://app:pw@[::1]:7000/2", "store");
  CHECK(v6.host == "::1");
  CHECK(v6.port == 7000);
  CHECK(v6.db == 2);
  CHECK(parse_redis_url("redis://[fd00::1]", "store").host == "fd00::1");
  CHECK(parse_redis_url("redis://[fd00::1]/", "store").db == 0);
}

TEST_CASE("redis url: user and password, percent-decoded", "[redis_url]") {
  auto acl = parse_redis_url("redis://app:s3cret@host:6379/0", "store");
  CHECK(acl.user == "app");
  CHECK(acl.password == "s3cret");
  CHECK(acl.masked == "redis://app:***@host:6379/0");

  auto default_user = parse_redis_url("redis://:s3cret@host", "store");
  CHECK(default_user.user.empty());
  CHECK(default_user.password == "s3cret");
  CHECK(default_user.masked == "redis://:***@host");

  // RFC 3986: %40 '@', %3A ':', %2F '/', %25 '%', %20 ' ' in either part.
  auto encoded = parse_redis_url("rediss://us%65r%3A1:p%40ss%3Aw%2Fo%25rd%20x@host:6380/1", "store");
  CHECK(encoded.user == "user:1");
  CHECK(encoded.password == "p@ss:w/o%rd x");
  CHECK(encoded.host == "host");
  CHECK(encoded.port == 6380);
  CHECK(encoded.masked == "rediss://us%65r%3A1:***@host:6380/1");

  // The user info ends at the last '@': a password substituted from ${ENV} unencoded still works.
  auto raw = parse_redis_url("redis://app:p@ss/w:rd@host:6379/4", "store");
  CHECK(raw.user == "app");
  CHECK(raw.password == "p@ss/w:rd");
  CHECK(raw.host == "host");
  CHECK(raw.db == 4);
  CHECK(raw.masked == "redis://app:***@host:6379/4");
}

TEST_CASE("redis url: malformed URLs are refused with the password masked", "[redis_url]") {
  const std::string secret = "hunter2-canary";
  struct Case {
    std::string url;
    std::string why;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"http://host", "not a redis:// or rediss:// URL"},
           {"redis://", "missing host"},
           {"redis://host:notaport/0", "bad port"},
           {"redis://host:70000", "bad port"},
           {"redis://host:/0", "bad port"},
           {"redis://host:6379/x", "bad database number"},
           {"redis://host:6379/-1", "bad database number"},
           {"redis://::1:6379/0", "[brackets]"},
           {"redis://[::1/0", "unterminated"},
           {"redis://host:6379/0?timeout=1", "query"},
           {"redis://" + secret + "@host:6379/0", "needs ':' before the password"},
           {"redis://app:@host:6379/0", "empty password"},
           {"redis://app:" + secret + "%zz@host:6379/0", "percent-encoding in the password"},
           {"redis://a%4:" + secret + "@host:notaport/0", "percent-encoding in the user name"},
           {"rediss://app:" + secret + "@host:notaport/0", "bad port"},
       }) {
    CAPTURE(c.url);
    const std::string what = parse_error(c.url);
    CHECK(what.find(c.why) != std::string::npos);
    CHECK(what.rfind("store ", 0) == 0);
    CHECK(what.find(secret) == std::string::npos);
  }
  CHECK(parse_error("rediss://app:" + secret + "@host:notaport/0").find("rediss://app:***@host:notaport/0") !=
        std::string::npos);
}

TEST_CASE("redis url: masking never shows a password, parseable or not", "[redis_url]") {
  CHECK(mask_redis_url("redis://host:6379/0") == "redis://host:6379/0");
  CHECK(mask_redis_url("redis://:pw@host") == "redis://:***@host");
  CHECK(mask_redis_url("redis://app:p@w@host/0") == "redis://app:***@host/0");
  CHECK(mask_redis_url("redis://onlysecret@host") == "redis://***@host");
  CHECK(mask_redis_url("garbage:secret@host") == "***");
}

TEST_CASE("redis version: parsed and compared with the minimum", "[redis_url]") {
  CHECK(parse_redis_version("7.0.15") == RedisVersion{7, 0, 15});
  CHECK(parse_redis_version("6.2") == RedisVersion{6, 2, 0});
  CHECK(parse_redis_version("7.4.0-rc1") == RedisVersion{7, 4, 0});
  CHECK(parse_redis_version("255.255.255") == RedisVersion{255, 255, 255});
  CHECK_FALSE(parse_redis_version("").has_value());
  CHECK_FALSE(parse_redis_version("v7").has_value());
  CHECK(kMinRedisVersion == RedisVersion{6, 0, 0});
  CHECK(*parse_redis_version("5.0.14") < kMinRedisVersion);
  CHECK(*parse_redis_version("6.0.0") >= kMinRedisVersion);
  CHECK(*parse_redis_version("6.0.20") > *parse_redis_version("6.0.3"));  // numeric, not text
  CHECK(*parse_redis_version("10.0.0") > *parse_redis_version("9.9.9"));
}

TEST_CASE("redis connection: lazy, authenticated as an ACL user or the default user", "[redis_connection]") {
  RedisServer redis;
  const std::string port = std::to_string(redis.port());
  REQUIRE(redis.command({"ACL", "SETUSER", "app", "on", ">app-pass-1", "~*", "+@all"}));

  // Constructing never connects: nothing is listening on this port and it does not throw.
  RedisConnection down("store", store_at("redis://127.0.0.1:" + std::to_string(tresor::test::free_port()) + "/0"));
  CHECK(down.broken());
  const auto unreachable = down.check_connect();
  CHECK(unreachable.status == ConnectStatus::unreachable);
  CHECK(unreachable.message.find("refused") != std::string::npos);

  RedisConnection app("ledger", store_at("redis://app:app-pass-1@127.0.0.1:" + port + "/5"));
  const auto ok = app.check_connect();
  CHECK(ok.status == ConnectStatus::ok);
  CHECK(ok.message.find("app-pass-1") == std::string::npos);
  auto who = app.command({"ACL", "WHOAMI"});
  REQUIRE(who);
  CHECK(tresor::storage::reply_text(who.get()) == "app");
  REQUIRE(app.command({"SET", "k", "in-db-5"}));
  auto in5 = redis.command({"GET", "k"}, 5);
  REQUIRE(in5);
  CHECK(tresor::storage::reply_text(in5.get()) == "in-db-5");

  RedisConnection wrong("ledger", store_at("redis://app:not-the-pass@127.0.0.1:" + port + "/0"));
  const auto denied = wrong.check_connect();
  CHECK(denied.status == ConnectStatus::auth_failed);
  CHECK(denied.message.find("authentication failed") != std::string::npos);
  CHECK(denied.message.find("not-the-pass") == std::string::npos);
  CHECK(denied.message.find("redis://app:***@127.0.0.1") != std::string::npos);
  CHECK(wrong.broken());
  CHECK_FALSE(wrong.command({"PING"}));

  // The default user with a password (requirepass), and without one.
  REQUIRE(redis.command({"CONFIG", "SET", "requirepass", "default-pass-1"}));
  RedisConnection plain("store", store_at("redis://:default-pass-1@127.0.0.1:" + port));
  CHECK(plain.check_connect().status == ConnectStatus::ok);
  RedisConnection anonymous("store", store_at("redis://127.0.0.1:" + port));
  const auto noauth = anonymous.check_connect();
  CHECK(noauth.status == ConnectStatus::auth_failed);
  CHECK(noauth.message.find("requires a password") != std::string::npos);

  // run() connects on first use.
  RedisConnection lazy("store", store_at("redis://app:app-pass-1@127.0.0.1:" + port));
  CHECK(lazy.broken());
  const bool pinged = lazy.run<bool>("ping", false, [&](bool) {
    auto r = lazy.command({"PING"});
    return r ? tresor::storage::Attempt<bool>::ok(true) : tresor::storage::Attempt<bool>::lost();
  });
  CHECK(pinged);
  CHECK_FALSE(lazy.broken());
}

TEST_CASE("redis connection: a host name is looked up, within the connect deadline", "[redis_connection]") {
  RedisServer redis;
  RedisConnection named("store", store_at("redis://localhost:" + std::to_string(redis.port()) + "/0"));
  CHECK(named.check_connect().status == ConnectStatus::ok);
  // .invalid never resolves (RFC 6761): refused by the resolver, or timed out without DNS.
  RedisConnection nowhere("store", store_at("redis://no-such-host.invalid:6379/0", 500));
  const auto t0 = std::chrono::steady_clock::now();
  const auto check = nowhere.check_connect();
  CHECK(seconds_since(t0) < 2.0);
  CHECK(check.status == ConnectStatus::unreachable);
  CHECK(check.message.find("no-such-host.invalid") != std::string::npos);
}

TEST_CASE("redis connection: pipelined commands are written at the first read", "[redis_connection]") {
  RedisServer redis;
  RedisConnection c("store", store_at(redis.url()));
  REQUIRE(c.check_connect().status == ConnectStatus::ok);
  for (int i = 0; i < 100; ++i) c.append({"INCR", "n"});
  for (long long i = 1; i <= 100; ++i) {
    auto r = c.read_reply();
    REQUIRE(r);
    CHECK(r->integer == i);
  }
  // A reply larger than the read buffer arrives whole.
  const std::string big(1 << 20, 'x');
  REQUIRE(c.command({"SET", "big", big}));
  auto back = c.command({"GET", "big"});
  REQUIRE(back);
  CHECK(tresor::storage::reply_text(back.get()) == big);
}

TEST_CASE("redis connection: a server older than 6.0 is refused as unsupported", "[redis_connection]") {
  SECTION("HELLO unknown (Redis 5)") {
    FakeRedis old("-ERR unknown command `HELLO`, with args beginning with: `2`, \r\n");
    RedisConnection c("store", store_at(old.url()));
    const auto check = c.check_connect();
    CHECK(check.status == ConnectStatus::unsupported);
    CHECK(check.message.find("6.0.0") != std::string::npos);
    CHECK(c.broken());
  }
  SECTION("HELLO answers with an old version") {
    FakeRedis old("*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n5.9.99\r\n");
    RedisConnection c("store", store_at(old.url()));
    const auto check = c.check_connect();
    CHECK(check.status == ConnectStatus::unsupported);
    CHECK(check.message.find("Redis 5.9.99 is older than 6.0.0") != std::string::npos);
  }
  SECTION("HELLO answers with a supported version") {
    FakeRedis ok("*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n6.0.0\r\n");
    RedisConnection c("store", store_at(ok.url()));
    CHECK(c.check_connect().status == ConnectStatus::ok);
  }
}

TEST_CASE("redis connection: connect and command deadlines are the configured ones", "[redis_connection]") {
  SECTION("a listener that never answers: the connect deadline") {
    FakeRedis silent("");
    RedisConnection c("store", store_at(silent.url(), 300, 5000));
    const auto t0 = std::chrono::steady_clock::now();
    const auto check = c.check_connect();
    const double took = seconds_since(t0);
    CHECK(check.status == ConnectStatus::unreachable);
    CHECK(check.message.find("300 ms") != std::string::npos);
    CHECK(took >= 0.29);
    CHECK(took < 2.0);
  }
  SECTION("a hung Redis: the command deadline, then a reconnect within the connect deadline") {
    RedisServer redis;
    RedisConnection c("store", store_at(redis.url(), 400, 250));
    REQUIRE(c.check_connect().status == ConnectStatus::ok);
    redis.pause();
    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(c.command({"PING"}));
    double took = seconds_since(t0);
    CHECK(took >= 0.24);
    CHECK(took < 2.0);
    CHECK(c.broken());
    CHECK(c.errstr().find("250 ms") != std::string::npos);
    // run(): reconnecting to the hung server is bounded by the connect deadline (TCP
    // connects, the handshake gets no answer).
    t0 = std::chrono::steady_clock::now();
    const bool answered = c.run<bool>("ping", false, [&](bool) {
      return c.command({"PING"}) ? tresor::storage::Attempt<bool>::ok(true) : tresor::storage::Attempt<bool>::lost();
    });
    took = seconds_since(t0);
    CHECK_FALSE(answered);
    CHECK(took < 3.0);
    redis.resume();
    CHECK(c.check_connect().status == ConnectStatus::ok);
  }
}
