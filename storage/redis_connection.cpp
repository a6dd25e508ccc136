#include "storage/redis_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace tresor::storage {
namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace sys = boost::system;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kPlainScheme = "redis://";
constexpr std::string_view kTlsScheme = "rediss://";
constexpr const char* kExpected = " (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://…)";
// hiredis' keepalive (redisEnableKeepAlive): a Redis that vanished without a FIN is
// noticed on an idle link within ~30 s instead of the kernel's two hours.
constexpr int kKeepaliveIdleSeconds = 15;
constexpr int kKeepaliveIntervalSeconds = 5;
constexpr int kKeepaliveProbes = 3;

bool parse_number(std::string_view s, long& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 percent-decoding; false on a '%' not followed by two hex digits.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_digit(in[i + 1]);
    const int lo = hex_digit(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

std::string_view scheme_of(std::string_view url) {
  if (url.rfind(kTlsScheme, 0) == 0) return kTlsScheme;
  if (url.rfind(kPlainScheme, 0) == 0) return kPlainScheme;
  return {};
}

bool starts_with(const std::string& text, std::string_view prefix) { return text.rfind(prefix, 0) == 0; }

// Error replies that pass by themselves: Redis is starting, busy or full, not misconfigured.
bool transient_error(const std::string& text) {
  return starts_with(text, "LOADING") || starts_with(text, "BUSY") || starts_with(text, "MASTERDOWN") ||
         starts_with(text, "TRYAGAIN") || starts_with(text, "ERR max number of clients");
}

// The TLS context of a rediss:// connection: the system CAs plus ca_file, TLS 1.2 at
// least, the peer verified; a client certificate when configured.
std::unique_ptr<ssl::context> tls_context(const config::StoreTlsConfig& tls) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  sys::error_code ec;
  ctx->set_default_verify_paths(ec);  // the system CA store; absent is not an error here
  auto readable = [](const std::string& path, const char* field) {
    if (!std::ifstream(path)) throw std::runtime_error(std::string(field) + ": cannot read '" + path + "'");
  };
  if (!tls.ca_file.empty()) {
    readable(tls.ca_file, "store.tls.ca_file");
    ctx->load_verify_file(tls.ca_file, ec);
    if (ec) throw std::runtime_error("store.tls.ca_file: cannot load '" + tls.ca_file + "' (PEM): " + ec.message());
  }
  if (!tls.cert_file.empty()) {
    readable(tls.cert_file, "store.tls.cert_file");
    readable(tls.key_file, "store.tls.key_file");
    ctx->use_certificate_chain_file(tls.cert_file, ec);
    if (ec) throw std::runtime_error("store.tls.cert_file: cannot load '" + tls.cert_file + "' (PEM): " + ec.message());
    ctx->use_private_key_file(tls.key_file, ssl::context::pem, ec);
    if (ec) throw std::runtime_error("store.tls.key_file: cannot load '" + tls.key_file + "' (PEM): " + ec.message());
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
      throw std::runtime_error("store.tls.key_file: '" + tls.key_file + "' does not belong to store.tls.cert_file");
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

// A host name looked up on a thread of its own, so that the connect deadline holds even
// when the resolver does not answer (getaddrinfo cannot be cancelled): on the deadline the
// caller leaves, and the thread finishes on its own later.
struct Lookup {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::vector<tcp::endpoint> endpoints;
  std::string error;
};

bool resolve(const std::string& host, int port, Clock::time_point deadline, std::vector<tcp::endpoint>& out,
             std::string& err) {
  sys::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  if (!ec) {
    out.assign(1, tcp::endpoint(ip, static_cast<unsigned short>(port)));
    return true;
  }
  auto lookup = std::make_shared<Lookup>();
  try {
    std::thread([lookup, host, port] {
      asio::io_context ioc;
      tcp::resolver resolver(ioc);
      sys::error_code rec;
      const auto results = resolver.resolve(host, std::to_string(port), rec);
      std::lock_guard lock(lookup->mutex);
      if (rec)
        lookup->error = rec.message();
      else
        for (const auto& r : results) lookup->endpoints.push_back(r.endpoint());
      lookup->done = true;
      lookup->done_cv.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    err = std::string("cannot start the host name lookup: ") + e.what();
    return false;
  }
  std::unique_lock lock(lookup->mutex);
  if (!lookup->done_cv.wait_until(lock, deadline, [&] { return lookup->done; })) {
    err = "looking up " + host + " timed out";
    return false;
  }
  if (lookup->endpoints.empty()) {
    err = "cannot resolve " + host + ": " + (lookup->error.empty() ? "no address" : lookup->error);
    return false;
  }
  out = std::move(lookup->endpoints);
  return true;
}

std::string ms_text(unsigned ms) { return std::to_string(ms) + " ms"; }

}  // namespace

// ---------------------------------------------------------------------------------------
// URL and version

std::string mask_redis_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url.find('@') == std::string::npos ? url : "***";
  const size_t start = scheme_end + 3;
  const auto at = url.rfind('@');
  if (at == std::string::npos || at < start) return url;
  const std::string user_info = url.substr(start, at - start);
  const auto colon = user_info.find(':');
  const std::string shown = colon == std::string::npos ? "***" : user_info.substr(0, colon) + ":***";
  return url.substr(0, start) + shown + url.substr(at);
}

RedisAddress parse_redis_url(const std::string& url, const std::string& who) {
  auto bad = [&](const std::string& why) { return std::runtime_error(who + " " + mask_redis_url(url) + ": " + why + kExpected); };
  const std::string_view scheme = scheme_of(url);
  if (scheme.empty()) throw bad("not a redis:// or rediss:// URL");
  RedisAddress out;
  out.tls = scheme == kTlsScheme;
  out.masked = mask_redis_url(url);
  std::string_view rest(url);
  rest.remove_prefix(scheme.size());
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view user_info = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    const auto colon = user_info.find(':');
    if (colon == std::string_view::npos)
      throw bad("the user info needs ':' before the password (redis://:PASSWORD@… or redis://USER:PASSWORD@…)");
    if (!percent_decode(user_info.substr(0, colon), out.user)) throw bad("bad percent-encoding in the user name");
    if (!percent_decode(user_info.substr(colon + 1), out.password)) throw bad("bad percent-encoding in the password");
    if (out.password.empty()) throw bad("empty password");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) throw bad("query and fragment are not supported");
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
      if (port.empty()) throw bad("bad port");
    }
  } else if (auto colon = hostport.find(':'); colon != std::string_view::npos) {
    if (hostport.find(':', colon + 1) != std::string_view::npos) throw bad("an IPv6 host needs [brackets]");
    out.host = std::string(hostport.substr(0, colon));
    port = hostport.substr(colon + 1);
    if (port.empty()) throw bad("bad port");
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

std::optional<RedisVersion> parse_redis_version(std::string_view text) {
  int parts[3] = {0, 0, 0};
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 3; ++i) {
    auto [next, ec] = std::from_chars(p, end, parts[i]);
    if (ec != std::errc()) {
      if (i == 0) return std::nullopt;
      break;
    }
    p = next;
    if (p == end || *p != '.') break;
    ++p;
  }
  return RedisVersion{parts[0], parts[1], parts[2]};
}

std::string to_string(const RedisVersion& v) {
  return std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.patch);
}

void check_redis_tls_files(const config::StoreTlsConfig& tls) { tls_context(tls); }

std::string reply_text(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

bool reply_is_ok(const redisReply* r) { return r && r->type == REDIS_REPLY_STATUS && reply_text(r) == "OK"; }

const char* to_string(ConnectStatus s) {
  switch (s) {
    case ConnectStatus::ok: return "ok";
    case ConnectStatus::unreachable: return "unreachable";
    case ConnectStatus::auth_failed: return "auth_failed";
    case ConnectStatus::tls_failed: return "tls_failed";
    case ConnectStatus::unsupported: return "unsupported";
    case ConnectStatus::other: return "other";
  }
  return "other";
}

// ---------------------------------------------------------------------------------------
// The link: one io_context per connection, driven only by the thread calling in, so every
// operation is an async one run until its completion or its deadline.

struct RedisConnection::Link {
  struct ReaderDeleter {
    void operator()(redisReader* r) const { redisReaderFree(r); }
  };

  asio::io_context ioc{1};
  std::unique_ptr<ssl::context> tls;  // rediss:// only
  std::optional<tcp::socket> socket;  // redis://
  std::optional<ssl::stream<tcp::socket>> stream;  // rediss://
  std::unique_ptr<redisReader, ReaderDeleter> reader;
  std::string out;  // appended commands, written at the next read
  std::array<char, 16384> buffer{};

  bool open() const { return socket.has_value() || stream.has_value(); }

  tcp::socket& lowest() { return stream ? stream->next_layer() : *socket; }

  void close() {
    sys::error_code ignored;
    if (open()) lowest().close(ignored);
    stream.reset();
    socket.reset();
    out.clear();
    reader.reset();
  }

  // Runs the operation `start` begins (it is handed the completion handler) until it
  // completes or `deadline` passes. On the deadline the socket is closed, which aborts the
  // operation, and the io_context is run until it has finished (it refers to this frame).
  template <typename Start>
  sys::error_code run(Clock::time_point deadline, size_t& transferred, Start&& start) {
    bool done = false;
    sys::error_code result;
    ioc.restart();
    start([&](sys::error_code ec, size_t n) {
      done = true;
      result = ec;
      transferred = n;
    });
    while (!done && ioc.run_one_until(deadline) > 0) {
    }
    if (done) return result;
    sys::error_code ignored;
    lowest().close(ignored);
    ioc.restart();
    ioc.run();
    return asio::error::timed_out;
  }
};

// ---------------------------------------------------------------------------------------
// The connection

RedisConnection::RedisConnection(std::string who, const config::StoreConfig& store)
    : who_(std::move(who)),
      addr_(parse_redis_url(store.url, who_)),
      connect_timeout_ms_(store.connect_timeout_ms),
      command_timeout_ms_(store.command_timeout_ms),
      link_(std::make_unique<Link>()),
      breaker_(breaker_for(store)) {
  if (addr_.tls) link_->tls = tls_context(store.tls);
}

namespace {
config::StoreConfig with_url(const std::string& url) {
  config::StoreConfig store;
  store.url = url;
  return store;
}
}  // namespace

RedisConnection::RedisConnection(std::string who, const std::string& url)
    : RedisConnection(std::move(who), with_url(url)) {}

RedisConnection::~RedisConnection() = default;

ConnectCheck RedisConnection::check_connect() {
  std::string err;
  const ConnectStatus s = connect(err);
  if (s == ConnectStatus::ok) return {s, who_ + " " + url() + ": connected (Redis " + version_ + ")"};
  return {s, who_ + " " + url() + ": " + err};
}

ConnectStatus RedisConnection::connect(std::string& err) {
  ready_ = false;
  link_->close();
  const auto deadline = Clock::now() + std::chrono::milliseconds(connect_timeout_ms_);
  const std::string where = (addr_.host.find(':') != std::string::npos ? "[" + addr_.host + "]" : addr_.host) + ":" +
                            std::to_string(addr_.port);
  std::vector<tcp::endpoint> endpoints;
  if (!resolve(addr_.host, addr_.port, deadline, endpoints, err)) {
    err_ = err;
    return ConnectStatus::unreachable;
  }
  if (link_->tls)
    link_->stream.emplace(link_->ioc, *link_->tls);
  else
    link_->socket.emplace(link_->ioc);
  size_t n = 0;
  sys::error_code ec = link_->run(deadline, n, [&](auto done) {
    asio::async_connect(link_->lowest(), endpoints, [done](sys::error_code e, const tcp::endpoint&) { done(e, 0); });
  });
  if (ec) {
    err = "connect to " + where + " failed: " +
          (ec == asio::error::timed_out ? "no answer within " + ms_text(connect_timeout_ms_) : ec.message());
    fail(err);
    return ConnectStatus::unreachable;
  }
  tcp::socket& s = link_->lowest();
  s.set_option(tcp::no_delay(true), ec);
  s.set_option(asio::socket_base::keep_alive(true), ec);
  const int idle = kKeepaliveIdleSeconds, interval = kKeepaliveIntervalSeconds, probes = kKeepaliveProbes;
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);

  if (link_->stream) {
    SSL* handle = link_->stream->native_handle();
    // The certificate must name the host dialled (an IP SAN for an IP literal).
    X509_VERIFY_PARAM* param = SSL_get0_param(handle);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    sys::error_code not_ip;
    asio::ip::make_address(addr_.host, not_ip);
    const int set = not_ip ? X509_VERIFY_PARAM_set1_host(param, addr_.host.c_str(), 0)
                           : X509_VERIFY_PARAM_set1_ip_asc(param, addr_.host.c_str());
    if (not_ip) SSL_set_tlsext_host_name(handle, addr_.host.c_str());  // SNI
    if (set != 1) {
      err = "cannot set the TLS host check for " + addr_.host;
      fail(err);
      return ConnectStatus::tls_failed;
    }
    ec = link_->run(deadline, n, [&](auto done) {
      link_->stream->async_handshake(ssl::stream_base::client, [done](sys::error_code e) { done(e, 0); });
    });
    if (ec == asio::error::timed_out) {
      err = "TLS handshake with " + where + ": no answer within " + ms_text(connect_timeout_ms_) +
            " (a plain, non-TLS port? then use redis://)";
      fail(err);
      return ConnectStatus::unreachable;
    }
    if (ec) {
      std::string reason = ec.message();
      const long verify = SSL_get_verify_result(handle);
      if (verify != X509_V_OK) reason += " (certificate: " + std::string(X509_verify_cert_error_string(verify)) + ")";
      err = "TLS handshake with " + where + " failed: " + reason;
      fail(err);
      return ConnectStatus::tls_failed;
    }
  }
  link_->reader.reset(redisReaderCreate());
  if (!link_->reader) {
    err = "cannot allocate a reply reader";
    fail(err);
    return ConnectStatus::other;
  }
  const ConnectStatus status = handshake(deadline, err);
  if (status != ConnectStatus::ok) {
    fail(err);
    return status;
  }
  ready_ = true;
  err_.clear();
  return ConnectStatus::ok;
}

// AUTH, HELLO 2 (the server's version) and SELECT, pipelined: one round trip.
ConnectStatus RedisConnection::handshake(Clock::time_point deadline, std::string& err) {
  const bool auth = !addr_.password.empty();
  if (auth) {
    if (addr_.user.empty())
      append({"AUTH", addr_.password});
    else
      append({"AUTH", addr_.user, addr_.password});
  }
  append({"HELLO", "2"});
  if (addr_.db != 0) append({"SELECT", std::to_string(addr_.db)});

  auto lost = [&] {
    err = "connection failed during the handshake: " + errstr();
    if (!addr_.tls && errstr().find("closed by the server") != std::string::npos)
      err += " (a TLS port? then use rediss://)";
    return ConnectStatus::unreachable;
  };
  if (auth) {
    RedisReply r = read_until(deadline, connect_timeout_ms_);
    if (!r) return lost();
    if (r->type == REDIS_REPLY_ERROR) {
      const std::string text = scrub(reply_text(r.get()));
      err = "authentication failed" + (addr_.user.empty() ? std::string() : " for user '" + addr_.user + "'") + ": " + text;
      return transient_error(text) ? ConnectStatus::unreachable : ConnectStatus::auth_failed;
    }
  }
  RedisReply hello = read_until(deadline, connect_timeout_ms_);
  if (!hello) return lost();
  RedisReply select;
  if (addr_.db != 0) {
    select = read_until(deadline, connect_timeout_ms_);
    if (!select) return lost();
  }
  std::string version;
  if (hello->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i + 1 < hello->elements; i += 2)
      if (reply_text(hello->element[i]) == "version") version = reply_text(hello->element[i + 1]);
  } else {
    const std::string text = scrub(reply_text(hello.get()));
    if (starts_with(text, "NOAUTH")) {
      err = (auth ? "authentication failed: " : "the server requires a password and the URL has none: ") + text;
      return ConnectStatus::auth_failed;
    }
    if (starts_with(text, "ERR unknown command")) {
      err = "the server does not know HELLO, so it is older than Redis 6.0; the oldest supported is " +
            to_string(kMinRedisVersion);
      return ConnectStatus::unsupported;
    }
    if (transient_error(text)) {
      err = "the server is not ready: " + text;
      return ConnectStatus::unreachable;
    }
    if (!starts_with(text, "NOPERM")) {
      err = "HELLO failed: " + text;
      return ConnectStatus::other;
    }
    // An ACL user without HELLO (Redis 6.0 checks it): INFO tells the version too.
    append({"INFO", "server"});
    RedisReply info = read_until(deadline, connect_timeout_ms_);
    if (!info) return lost();
    const std::string body = reply_text(info.get());
    const auto at = info->type == REDIS_REPLY_STRING ? body.find("redis_version:") : std::string::npos;
    if (at != std::string::npos) version = body.substr(at + 14, body.find_first_of("\r\n", at) - at - 14);
  }
  const auto parsed = parse_redis_version(version);
  if (!parsed) {
    // A server that hides its version (HELLO and INFO refused to this user, a look-alike
    // that reports something else) is taken at its word: the check is there to refuse
    // servers known to be too old, with a clear message, not to lock out the unknown.
    version_ = "unknown";
    spdlog::warn("{} {}: cannot read the server version (HELLO and INFO server); assuming at least {}", who_, url(),
                 to_string(kMinRedisVersion));
  } else {
    version_ = to_string(*parsed);
  }
  if (parsed && *parsed < kMinRedisVersion) {
    err = "Redis " + version_ + " is older than " + to_string(kMinRedisVersion) + ", the oldest version supported";
    return ConnectStatus::unsupported;
  }
  if (select && !reply_is_ok(select.get())) {
    const std::string text = scrub(reply_text(select.get()));
    err = "SELECT " + std::to_string(addr_.db) + " failed: " + text;
    return starts_with(text, "NOAUTH") ? ConnectStatus::auth_failed : ConnectStatus::other;
  }
  return ConnectStatus::ok;
}

bool RedisConnection::reconnect(const char* what) {
  std::string err;
  if (connect(err) == ConnectStatus::ok) return true;
  spdlog::error("{} {}: {}: connect failed: {}", who_, url(), what, err);
  return false;
}

void RedisConnection::fail(std::string why) {
  ready_ = false;
  err_ = scrub(std::move(why));
  link_->close();
}

// Defence in depth: no server or library message should hold the password, but none
// that does gets through. A password under 4 characters is left alone: replacing every
// "a" would garble the message and hide nothing worth hiding.
std::string RedisConnection::scrub(std::string text) const {
  const std::string& p = addr_.password;
  if (p.size() < 4) return text;
  for (auto at = text.find(p); at != std::string::npos; at = text.find(p, at + 3)) text.replace(at, p.size(), "***");
  return text;
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
  char* cmd = nullptr;
  const int len = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
  // Only fails on out of memory, which then shows as a failed read of its reply.
  if (len < 0 || !cmd) {
    fail("cannot format a command (out of memory)");
    return;
  }
  link_->out.append(cmd, static_cast<size_t>(len));
  redisFreeCommand(cmd);
}

RedisReply RedisConnection::read_reply() {
  if (broken()) return nullptr;
  return read_until(Clock::now() + std::chrono::milliseconds(command_timeout_ms_), command_timeout_ms_);
}

RedisReply RedisConnection::read_until(Clock::time_point deadline, unsigned budget_ms) {
  Link& l = *link_;
  if (!l.open() || !l.reader) return nullptr;
  size_t n = 0;
  if (!l.out.empty()) {
    sys::error_code ec = l.run(deadline, n, [&](auto done) {
      if (l.stream)
        asio::async_write(*l.stream, asio::buffer(l.out), done);
      else
        asio::async_write(*l.socket, asio::buffer(l.out), done);
    });
    if (ec) {
      fail(ec == asio::error::timed_out ? "write not done within " + ms_text(budget_ms) : "write failed: " + ec.message());
      return nullptr;
    }
    l.out.clear();
  }
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(l.reader.get(), &reply) != REDIS_OK) {
      fail(std::string("protocol error: ") + l.reader->errstr);
      return nullptr;
    }
    if (reply) return RedisReply(static_cast<redisReply*>(reply));
    sys::error_code ec = l.run(deadline, n, [&](auto done) {
      if (l.stream)
        l.stream->async_read_some(asio::buffer(l.buffer), done);
      else
        l.socket->async_read_some(asio::buffer(l.buffer), done);
    });
    if (ec == asio::error::timed_out) {
      fail("no reply within " + ms_text(budget_ms));
      return nullptr;
    }
    if (ec == asio::error::eof || ec == ssl::error::stream_truncated) {
      fail("connection closed by the server");
      return nullptr;
    }
    if (ec) {
      fail("read failed: " + ec.message());
      return nullptr;
    }
    if (redisReaderFeed(l.reader.get(), l.buffer.data(), n) != REDIS_OK) {
      fail("cannot buffer a reply (out of memory)");
      return nullptr;
    }
  }
}

RedisReply RedisConnection::command(const std::vector<std::string>& args) {
  append(args);
  return read_reply();
}

bool RedisConnection::ping() {
  return run<bool>("ping", false, [&](bool) -> Attempt<bool> {
    RedisReply r = command({"PING"});
    if (!r) return Attempt<bool>::lost();
    return Attempt<bool>::ok(r->type == REDIS_REPLY_STATUS);
  });
}

std::string RedisConnection::errstr() const { return err_.empty() ? std::string("no error") : err_; }

void RedisConnection::log_unexpected(const std::string& what, const redisReply* r) const {
  spdlog::error("{} {}: {}: unexpected reply (type {}): {}", who_, url(), what, r ? r->type : -1,
                scrub(reply_text(r)));
}

void RedisConnection::log_lost(const char* what) const {
  spdlog::warn("{} {}: {}: connection lost ({}), reconnecting", who_, url(), what, errstr());
}

void RedisConnection::log_failed(const char* what) const {
  spdlog::error("{} {}: {} failed: {}", who_, url(), what, errstr());
}

}  // namespace tresor::storage
