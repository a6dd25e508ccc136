// Upstream HTTP(S) client. Shape follows the Beast client examples (one connection
// object owning its stream and buffer), with C++20 coroutines for the sequential
// protocol steps and beast::tcp_stream's per-operation expiry for every deadline.
#include "providers/upstream_client.h"
#include "common/http_text.h"
#include "common/http_wire.h"

#include <cstring>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>
#include <stdexcept>
#include <variant>
#include <vector>

namespace tresor::providers {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// Connections idle longer than this are closed rather than reused: upstream servers
// commonly drop idle keep-alive connections after 60-75 s, and a request written on a
// connection the server is closing is a wasted attempt.
constexpr auto kMaxIdle = std::chrono::seconds(50);
// An upstream response head larger than this is a protocol error. Interim (1xx) heads
// before the final one count against it too.
constexpr uint32_t kMaxResponseHeaderBytes = 64 * 1024;
// More interim (1xx) responses than this before the final one is a protocol error: a
// real upstream sends one or two (100 Continue, 103 Early Hints).
constexpr int kMaxInterimResponses = 16;
// Size of one read from an upstream body (one SSE event usually fits many times).
constexpr size_t kReadChunkBytes = 16 * 1024;
// Size of one write of a streamed request body.
constexpr size_t kWriteChunkBytes = 64 * 1024;
// A streamed body up to this size is written together with the head, in one write.
constexpr size_t kSingleWriteBytes = 256 * 1024;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

}  // namespace

// ---------------------------------------------------------------------------------
// ProviderSet: parsed base URLs + TLS contexts

struct ProviderSet::Entry {
  std::string name;
  bool tls = false;
  std::string host;  // without brackets
  std::string port;
  std::string host_header;
  std::string base_path;  // no trailing slash
  std::string authorization;  // "Bearer <api_key>" or empty
  std::unique_ptr<ssl::context> tls_context;
  bool host_is_ip = false;
};

struct ProviderSet::Impl {
  std::map<std::string, Entry> entries;
};

namespace {

void parse_base_url(const std::string& url, ProviderSet::Entry& e) {
  const auto scheme_end = url.find("://");
  const std::string scheme = url.substr(0, scheme_end);
  e.tls = scheme == "https";
  std::string rest = url.substr(scheme_end + 3);
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  e.base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  if (authority.empty()) throw std::runtime_error("base_url has no host: " + url);
  e.host_header = authority;
  std::string port;
  if (authority.front() == '[') {  // IPv6 literal
    const auto close = authority.find(']');
    if (close == std::string::npos) throw std::runtime_error("bad IPv6 host in base_url: " + url);
    e.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port = authority.substr(close + 2);
  } else {
    const auto colon = authority.rfind(':');
    e.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  e.port = port.empty() ? (e.tls ? "443" : "80") : port;
  error_code ec;
  asio::ip::make_address(e.host, ec);
  e.host_is_ip = !ec;
}

}  // namespace

ProviderSet::ProviderSet(const config::Config& cfg) : impl_(std::make_unique<Impl>()) {
  for (const auto& [name, p] : cfg.providers) {
    Entry e;
    e.name = name;
    parse_base_url(p.base_url, e);
    if (!p.api_key.empty()) e.authorization = "Bearer " + p.api_key;
    if (e.tls) {
      e.tls_context = std::make_unique<ssl::context>(ssl::context::tls_client);
      e.tls_context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                 ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                 ssl::context::no_tlsv1_1);
      e.tls_context->set_default_verify_paths();  // the system CA store
      if (!p.ca_file.empty()) {
        error_code ec;
        e.tls_context->load_verify_file(p.ca_file, ec);
        if (ec)
          throw std::runtime_error("provider " + name + ": cannot load ca_file " + p.ca_file + ": " +
                                   ec.message());
      }
      e.tls_context->set_verify_mode(ssl::verify_peer);
    }
    impl_->entries.emplace(name, std::move(e));
  }
}

ProviderSet::~ProviderSet() = default;

const ProviderSet::Entry* ProviderSet::find(const std::string& provider) const {
  const auto it = impl_->entries.find(provider);
  return it == impl_->entries.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------
// Connections and pools

namespace {

struct Connection {
  std::variant<PlainStream, TlsStream> stream;
  beast::flat_buffer buffer;
  Clock::time_point idle_since{};
  // Where the response parser puts body bytes: one per connection, reused for every read
  // and never zero-filled (a fresh zeroed 16 KiB string per read cost a 16 KiB memset and
  // a malloc of that size for each ~200-byte SSE event).
  std::unique_ptr<char[]> chunk = std::make_unique_for_overwrite<char[]>(kReadChunkBytes);

  template <typename... Args>
  explicit Connection(Args&&... args) : stream(std::forward<Args>(args)...) {}

  beast::tcp_stream& tcp() {
    if (auto* p = std::get_if<PlainStream>(&stream)) return *p;
    return std::get<TlsStream>(stream).next_layer();
  }

  // The peer closed (or sent unsolicited bytes) while the connection sat idle: a
  // non-blocking peek tells without consuming anything.
  bool idle_connection_alive() {
    auto& socket = tcp().socket();
    if (!socket.is_open()) return false;
    char byte;
    const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  void close() {
    error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().close();
  }
};

}  // namespace

struct Pool {
  const ProviderSet::Entry* entry = nullptr;  // identity of the provider config it serves
  std::shared_ptr<const ProviderSet> providers;  // keeps `entry` alive
  unsigned cap = 1;
  unsigned open = 0;
  std::vector<std::unique_ptr<Connection>> idle;
  std::deque<asio::steady_timer*> waiters;

  void wake_one() {
    if (waiters.empty()) return;
    waiters.front()->cancel();
    waiters.pop_front();
  }

  void release(std::unique_ptr<Connection> conn, bool reusable) {
    if (reusable) {
      conn->idle_since = Clock::now();
      idle.push_back(std::move(conn));
    } else {
      conn->close();
      --open;
    }
    wake_one();
  }
};

struct UpstreamClient::Impl {
  asio::io_context& ioc;
  unsigned workers;
  std::map<std::string, std::shared_ptr<Pool>> pools;

  std::shared_ptr<Pool> pool_for(const std::shared_ptr<const ProviderSet>& providers,
                                 const ProviderSet::Entry* entry, unsigned max_connections) {
    auto& pool = pools[entry->name];
    if (!pool || pool->entry != entry) {  // first use, or the provider changed on reload
      pool = std::make_shared<Pool>();
      pool->entry = entry;
      pool->providers = providers;
      pool->cap = std::max(1u, (max_connections + workers - 1) / workers);
    }
    return pool;
  }
};

using ResponseParser = http::response_parser<http::buffer_body>;

struct UpstreamResponse::Impl {
  std::unique_ptr<Connection> conn;
  std::shared_ptr<Pool> pool;
  // The final response's parser (a 1xx head is read with a parser of its own and dropped).
  std::optional<ResponseParser> parser;
  bool failed = false;
  // The upstream answered before our request body was all written: whatever it did with
  // the rest of the body, the connection's state is unknown.
  bool answered_early = false;

  // Reuse is earned: the message was read to its end, its length was known (Beast's
  // keep_alive() is false for a close-delimited body), the upstream allows keep-alive,
  // and not one byte beyond the message sits in the buffer (it would be read as the
  // next request's response).
  bool reusable() const {
    return !failed && !answered_early && parser && parser->is_done() && parser->keep_alive() &&
           conn->buffer.size() == 0;
  }

  ~Impl() {
    if (!conn) return;
    const bool reuse = reusable();
    pool->release(std::move(conn), reuse);
  }
};

namespace {

TransportError classify_read_error(const error_code& ec, common::Deadline deadline, bool in_body) {
  if (ec == beast::error::timeout || deadline.passed()) return TransportError::timeout;
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
      ec == http::error::partial_message || ec == ssl::error::stream_truncated ||
      ec == asio::error::connection_aborted)
    return in_body ? TransportError::cut : TransportError::reset;
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) return TransportError::protocol;
  return in_body ? TransportError::cut : TransportError::reset;
}

// The Content-Encoding of a 2xx answer when it is not identity (cut to 64 characters for
// the log), else empty. We sent Accept-Encoding: identity: compressed bytes relayed or
// parsed as JSON/SSE would be garbage, so such an answer is a protocol error. Error
// statuses are left alone: their status is what counts, their body only lends a message.
std::string unrequested_coding(const http::response_parser<http::buffer_body>::value_type& head) {
  if (head.result_int() < 200 || head.result_int() > 299) return {};
  std::string coding;
  const auto [first, last] = head.equal_range(http::field::content_encoding);
  for (auto it = first; it != last; ++it) {
    const std::string_view v = common::trim_ows(std::string_view(it->value().data(), it->value().size()));
    if (v.empty() || beast::iequals(v, "identity")) continue;
    coding = std::string(v.substr(0, 64));
    for (auto& ch : coding)
      if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e) ch = '?';
    break;
  }
  return coding;
}

// Bytes are waiting to be read on the socket: a non-blocking peek, nothing consumed.
bool readable_now(beast::tcp_stream& s) {
  char byte;
  return ::recv(s.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

template <typename Fn>
asio::awaitable<error_code> with_stream(Connection& c, Fn fn) {
  if (auto* p = std::get_if<PlainStream>(&c.stream)) co_return co_await fn(*p);
  co_return co_await fn(std::get<TlsStream>(c.stream));
}

// The final response head, after any interim (1xx) ones. A 1xx head is a message of its
// own (Beast's parser is done after it), so each head gets a fresh parser; bytes after an
// interim head stay in the connection's buffer for the next one. All heads share one size
// budget and the deadline set on the stream.
struct HeadOutcome {
  TransportError error = TransportError::none;
  std::string detail;
  bool received = false;  // some byte of a response arrived (no stale-connection retry then)
  bool eof = false;       // the upstream closed cleanly (FIN) before a byte of a head
};

// Approximate wire size of a parsed head (start line and fields), for the shared budget.
size_t head_size(const ResponseParser::value_type& head) {
  size_t n = 15 + head.reason().size();  // "HTTP/1.1 103 " ... CRLF
  for (const auto& field : head) n += field.name_string().size() + field.value().size() + 4;
  return n + 2;
}

asio::awaitable<HeadOutcome> read_final_head(Connection& conn, std::optional<ResponseParser>& parser,
                                             common::Deadline deadline) {
  HeadOutcome out;
  size_t budget = kMaxResponseHeaderBytes;
  for (int interim = 0;; ++interim) {
    parser.emplace();
    parser->header_limit(static_cast<uint32_t>(budget));
    parser->body_limit(boost::none);  // the caller enforces its own limit
    const error_code ec = co_await with_stream(conn, [&](auto& s) -> asio::awaitable<error_code> {
      error_code e;
      co_await http::async_read_header(s, conn.buffer, *parser, asio::redirect_error(asio::use_awaitable, e));
      co_return e;
    });
    if (ec) {
      // Beast keeps the bytes of an incomplete head in the buffer; end_of_stream is its
      // "closed before the first byte of this message".
      if (conn.buffer.size() > 0 || ec == http::error::partial_message) out.received = true;
      out.eof = ec == http::error::end_of_stream && !out.received;
      out.error = ec == http::error::header_limit ? TransportError::protocol
                                                  : classify_read_error(ec, deadline, false);
      out.detail = ec.message();
      co_return out;
    }
    out.received = true;
    const int status = parser->get().result_int();
    if (status >= 200) co_return out;
    out.error = TransportError::protocol;
    if (status == 101) {
      out.detail = "101 Switching Protocols to a request that asked for no upgrade";
      co_return out;
    }
    if (status < 100) {
      out.detail = "status " + std::to_string(status);
      co_return out;
    }
    const size_t size = head_size(parser->get());
    if (interim + 1 >= kMaxInterimResponses || size >= budget) {
      out.detail = "too many or too large interim (1xx) responses";
      co_return out;
    }
    budget -= size;
    out.error = TransportError::none;  // an interim answer: read on
  }
}

// Opens a new connection (TCP, then TLS when the provider is https).
asio::awaitable<std::unique_ptr<Connection>> connect(const ProviderSet::Entry& e,
                                                     common::Deadline deadline,
                                                     std::chrono::milliseconds connect_timeout,
                                                     TransportError& error, std::string& detail) {
  auto exec = co_await asio::this_coro::executor;
  const auto connect_deadline = common::earlier_of(deadline, common::Deadline::after(connect_timeout));
  error_code ec;
  tcp::resolver resolver(exec);
  tcp::resolver::results_type endpoints;
  unsigned port = 0;
  const auto [end, parse_error] = std::from_chars(e.port.data(), e.port.data() + e.port.size(), port);
  if (e.host_is_ip && parse_error == std::errc() && end == e.port.data() + e.port.size() && port <= 65535) {
    // Nothing to look up: Asio's resolver would still hop to its own thread and back.
    endpoints = tcp::resolver::results_type::create(
        tcp::endpoint(asio::ip::make_address(e.host), static_cast<unsigned short>(port)), e.host, e.port);
  } else {
    endpoints = co_await resolver.async_resolve(e.host, e.port, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) {
    error = TransportError::connect_failed;
    detail = "cannot resolve " + e.host + ": " + ec.message();
    co_return nullptr;
  }
  std::unique_ptr<Connection> conn;
  if (e.tls)
    conn = std::make_unique<Connection>(std::in_place_type<TlsStream>, exec, *e.tls_context);
  else
    conn = std::make_unique<Connection>(std::in_place_type<PlainStream>, exec);
  auto& tcp_stream = conn->tcp();
  tcp_stream.expires_at(connect_deadline.at());
  co_await tcp_stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    error = deadline.passed() ? TransportError::timeout : TransportError::connect_failed;
    detail = "connect to " + e.host + ":" + e.port + " failed: " + ec.message();
    co_return nullptr;
  }
  tcp_stream.socket().set_option(tcp::no_delay(true), ec);
  if (auto* tls = std::get_if<TlsStream>(&conn->stream)) {
    SSL* ssl_handle = tls->native_handle();
    // Certificate must name the host we dialled (IP SAN for IP literals).
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = e.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, e.host.c_str())
                                : X509_VERIFY_PARAM_set1_host(param, e.host.c_str(), 0);
    if (!e.host_is_ip) SSL_set_tlsext_host_name(ssl_handle, e.host.c_str());  // SNI
    if (ok != 1) {
      error = TransportError::tls_failed;
      detail = "cannot set TLS host check for " + e.host;
      co_return nullptr;
    }
    co_await tls->async_handshake(ssl::stream_base::client,
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      error = connect_deadline.passed() ? (deadline.passed() ? TransportError::timeout
                                                       : TransportError::connect_failed)
                                     : TransportError::tls_failed;
      std::string reason = ec.message();
      const long verify = SSL_get_verify_result(ssl_handle);
      if (verify != X509_V_OK) reason += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
      detail = "TLS handshake with " + e.host + ":" + e.port + " failed: " + reason;
      co_return nullptr;
    }
  }
  co_return conn;
}

// Writes the request: whole, or its head and then the streamed body one buffer at a time
// (the buffer is the only copy of the body in memory). The head shares the first write
// with the start of the body, and a body up to kSingleWriteBytes (an upload still in
// memory) goes in that one write: a 64 KiB upload took four sendmsg calls before.
//
// A streamed body written in several writes is watched for an early answer: bytes to
// read before the last write mean the upstream answered (or sent something) while the
// body was still on its way, and `answered_early` keeps that connection out of the pool.
// (On TLS this also counts a session ticket not yet read: that costs a reuse, no more.)
template <typename Stream>
asio::awaitable<error_code> write_request(Stream& s, http::request<http::string_body>& req, BodySource* streamed,
                                          bool& answered_early) {
  error_code ec;
  if (!streamed) {
    const std::string wire = common::wire_bytes(req);
    co_await asio::async_write(s, asio::buffer(wire), asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  std::string head;
  common::append_head(head, req.base());
  const uint64_t total = streamed->size();
  const size_t room = total <= kSingleWriteBytes ? static_cast<size_t>(total) : kWriteChunkBytes;
  const size_t capacity = head.size() + room;
  const auto buffer = std::make_unique_for_overwrite<char[]>(capacity);  // no zero fill
  std::memcpy(buffer.get(), head.data(), head.size());
  size_t filled = head.size();  // bytes of `buffer` waiting to be written
  uint64_t written = 0;
  try {
    streamed->rewind();
    for (;;) {
      const size_t n = co_await streamed->read(buffer.get() + filled, capacity - filled);
      filled += n;
      written += n;
      const bool source_done = n == 0 || written >= total;
      if (filled == capacity || (source_done && filled > 0)) {
        if (written > filled && readable_now(beast::get_lowest_layer(s))) answered_early = true;
        co_await asio::async_write(s, asio::buffer(buffer.get(), filled), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return ec;
        filled = 0;
      }
      if (source_done) break;
    }
  } catch (const std::exception&) {
    co_return make_error_code(boost::system::errc::io_error);
  }
  // A source shorter than its declared size would leave the upstream waiting for bytes
  // that never come: fail the attempt instead.
  if (written != total) co_return make_error_code(boost::system::errc::io_error);
  co_return ec;
}

}  // namespace

// ---------------------------------------------------------------------------------
// UpstreamResponse

UpstreamResponse::UpstreamResponse(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UpstreamResponse::~UpstreamResponse() = default;

int UpstreamResponse::status() const { return impl_->parser->get().result_int(); }

std::optional<std::string> UpstreamResponse::header(std::string_view name) const {
  const auto& h = impl_->parser->get();
  const auto it = h.find(beast::string_view(name.data(), name.size()));
  if (it == h.end()) return std::nullopt;
  return std::string(it->value());
}

bool UpstreamResponse::body_done() const { return impl_->parser->is_done(); }

asio::awaitable<std::string> UpstreamResponse::read_some(common::Deadline deadline,
                                                         TransportError& error) {
  auto& im = *impl_;
  auto& parser = *im.parser;
  error = TransportError::none;
  if (im.failed) {
    error = TransportError::cut;
    co_return std::string();
  }
  std::string out;
  while (!parser.is_done()) {
    parser.get().body().data = im.conn->chunk.get();
    parser.get().body().size = kReadChunkBytes;
    im.conn->tcp().expires_at(deadline.at());
    const error_code ec = co_await with_stream(*im.conn, [&](auto& s) -> asio::awaitable<error_code> {
      error_code e;
      co_await http::async_read_some(s, im.conn->buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, e));
      co_return e;
    });
    if (ec && ec != http::error::need_buffer) {
      im.failed = true;
      error = classify_read_error(ec, deadline, true);
      co_return std::string();
    }
    const size_t got = kReadChunkBytes - parser.get().body().size;
    if (got > 0) {
      out.assign(im.conn->chunk.get(), got);
      break;
    }
    // else only framing was consumed (a chunk header): read on
  }
  if (parser.is_done()) im.conn->tcp().expires_never();
  co_return out;
}

asio::awaitable<std::string> UpstreamResponse::read_all(size_t limit, common::Deadline deadline,
                                                        TransportError& error) {
  std::string body;
  // 64 bytes of spare capacity: simdjson parses a string in place only when that much
  // padding follows it, and copies it into a fresh aligned buffer otherwise.
  constexpr size_t kParserPadding = 64;
  if (const auto len = impl_->parser->content_length(); len && *len > limit) {
    // Announced too large: refuse before reading a byte of it.
    impl_->failed = true;
    error = TransportError::too_large;
    co_return std::string();
  } else if (len) {
    body.reserve(*len + kParserPadding);
  }
  while (!impl_->parser->is_done()) {
    std::string piece = co_await read_some(deadline, error);
    if (error != TransportError::none) co_return std::string();
    body += piece;
    if (body.size() > limit) {
      impl_->failed = true;
      error = TransportError::too_large;
      co_return std::string();
    }
  }
  co_return body;
}

asio::awaitable<void> UpstreamResponse::finish_for_reuse(size_t limit, common::Deadline deadline) {
  size_t dropped = 0;
  while (!impl_->parser->is_done() && !impl_->failed) {
    TransportError error = TransportError::none;
    const std::string piece = co_await read_some(deadline, error);
    dropped += piece.size();
    if (error != TransportError::none || dropped > limit) impl_->failed = true;  // closes on release
  }
}

// ---------------------------------------------------------------------------------
// UpstreamClient

UpstreamClient::UpstreamClient(asio::io_context& ioc, unsigned workers)
    : impl_(std::make_unique<Impl>(Impl{ioc, std::max(1u, workers), {}})) {}
UpstreamClient::~UpstreamClient() = default;

asio::awaitable<UpstreamResult> UpstreamClient::send(std::shared_ptr<const ProviderSet> providers,
                                                     const config::ProviderConfig& provider,
                                                     UpstreamRequest request,
                                                     common::Deadline deadline,
                                                     std::chrono::milliseconds connect_timeout) {
  UpstreamResult result;
  const ProviderSet::Entry* entry = providers->find(provider.name);
  if (!entry) {
    result.error = TransportError::connect_failed;
    result.detail = "provider " + provider.name + " is not configured";
    co_return result;
  }
  auto pool = impl_->pool_for(providers, entry, provider.max_connections);

  const std::string target = entry->base_path + std::string(request.path);
  http::request<http::string_body> req(http::verb::post, target, 11);
  req.set(http::field::host, entry->host_header);
  req.set(http::field::user_agent, "tresor-router");
  if (!entry->authorization.empty()) req.set(http::field::authorization, entry->authorization);
  req.set(http::field::content_type, request.content_type);
  if (!request.accept.empty()) req.set(http::field::accept, request.accept);
  // We relay and parse bodies as they come and decode none: ask for them uncompressed
  // (an upstream that compresses anyway is refused below).
  req.set(http::field::accept_encoding, "identity");
  if (!request.traceparent.empty()) req.set("traceparent", request.traceparent);
  if (!request.tracestate.empty()) req.set("tracestate", request.tracestate);
  req.keep_alive(true);
  if (request.streamed_body) {
    req.content_length(request.streamed_body->size());
  } else {
    req.body() = std::move(request.body);
    req.prepare_payload();
  }

  // A reused connection the upstream had already closed fails the write, or the head read
  // with EOF before any byte of a response (the upstream closed it while idle, the close
  // crossing our request on the wire): the request is re-sent once on a new connection,
  // and the caller sees one attempt. Anything else (a byte of a response
  // came, a timeout, a fresh connection) is the caller's failed attempt; any retry after
  // that is the failover loop's, visible in X-Tresor-Attempts.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Connection> conn;
    bool reused = false;
    for (;;) {
      while (!pool->idle.empty() && !conn) {
        auto candidate = std::move(pool->idle.back());
        pool->idle.pop_back();
        if (Clock::now() - candidate->idle_since < kMaxIdle && candidate->idle_connection_alive()) {
          conn = std::move(candidate);
          reused = true;
        } else {
          candidate->close();
          --pool->open;
        }
      }
      if (conn) break;
      if (pool->open < pool->cap) {
        ++pool->open;
        conn = co_await connect(*entry, deadline, connect_timeout, result.error, result.detail);
        if (!conn) {
          --pool->open;
          pool->wake_one();
          co_return result;
        }
        break;
      }
      // At the cap: wait for a connection to come back, until the deadline.
      asio::steady_timer wait(co_await asio::this_coro::executor);
      wait.expires_at(deadline.at());
      pool->waiters.push_back(&wait);
      error_code ec;
      co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      std::erase(pool->waiters, &wait);
      if (ec != asio::error::operation_aborted) {
        result.error = TransportError::timeout;
        result.detail = "no free connection to provider " + provider.name + " (max_connections)";
        co_return result;
      }
    }

    conn->tcp().expires_at(deadline.at());  // bounds the write and every head read below
    bool answered_early = false;
    const error_code write_ec = co_await with_stream(*conn, [&](auto& s) -> asio::awaitable<error_code> {
      co_return co_await write_request(s, req, request.streamed_body, answered_early);
    });
    auto impl = std::make_unique<UpstreamResponse::Impl>();
    HeadOutcome head;
    bool stale = false;
    if (write_ec) {
      head.error = classify_read_error(write_ec, deadline, false);
      head.detail = "writing the request: " + write_ec.message();
      stale = head.error == TransportError::reset;
    } else {
      head = co_await read_final_head(*conn, impl->parser, deadline);
      stale = head.eof;
    }
    if (head.error != TransportError::none) {
      pool->release(std::move(conn), false);
      // A stale pooled connection: the upstream closed it while idle (its FIN reaches us
      // before the reset its kernel sends for our request, so we read EOF) and not one
      // byte of a response came. Re-sent once, at once, on a new connection; not an
      // attempt. A reset before any byte is not retried: it is also how an upstream
      // that refuses requests behaves, and each of those must stay a visible attempt.
      if (reused && attempt == 0 && stale && !deadline.passed()) continue;
      result.error = head.error;
      result.detail = "provider " + provider.name + ": " + std::string(to_string(head.error)) +
                      " before the response head: " + head.detail;
      co_return result;
    }
    if (const auto coding = unrequested_coding(impl->parser->get()); !coding.empty()) {
      pool->release(std::move(conn), false);
      result.error = TransportError::protocol;
      result.detail = "provider " + provider.name + ": answered with Content-Encoding " + coding +
                      ", which was not asked for";
      co_return result;
    }
    impl->answered_early = answered_early;
    impl->conn = std::move(conn);
    impl->pool = pool;
    result.response = std::make_unique<UpstreamResponse>(std::move(impl));
    co_return result;
  }
  co_return result;  // unreachable: the loop returns
}

}  // namespace tresor::providers
