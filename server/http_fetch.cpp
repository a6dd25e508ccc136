#include "server/http_fetch.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include <exception>
#include <optional>
#include <stdexcept>

namespace tresor::server::http_fetch {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

using Request = http::request<http::string_body>;
using RawResponse = http::response<http::string_body>;

struct Url {
  bool tls = false;
  std::string authority, host, port, target;
};

Url parse_url(const std::string& url) {
  Url u;
  if (url.rfind("https://", 0) == 0) u.tls = true;
  else if (url.rfind("http://", 0) != 0) throw std::runtime_error(url + ": not an http:// or https:// URL");
  const std::string rest = url.substr(u.tls ? 8 : 7);
  const auto slash = rest.find('/');
  u.authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = u.authority.rfind(':');
  u.host = colon == std::string::npos ? u.authority : u.authority.substr(0, colon);
  u.port = colon == std::string::npos ? (u.tls ? "443" : "80") : u.authority.substr(colon + 1);
  if (u.host.empty()) throw std::runtime_error(url + ": no host");
  return u;
}

// One request on a fresh connection. Asynchronous underneath only so that the stream's
// expiry bounds every step (blocking Asio calls ignore socket timeouts).
asio::awaitable<void> exchange(const Url& url, Request& req, RawResponse& res, asio::ssl::context& ctx,
                               std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(executor);
  const auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  beast::flat_buffer buffer;
  if (url.tls) {
    beast::ssl_stream<beast::tcp_stream> stream(executor, ctx);
    SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
    X509_VERIFY_PARAM_set1_host(SSL_get0_param(stream.native_handle()), url.host.c_str(), 0);
    beast::get_lowest_layer(stream).expires_after(timeout);
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::use_awaitable);
    co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_await http::async_write(stream, req, asio::use_awaitable);
    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
  } else {
    beast::tcp_stream stream(executor);
    stream.expires_after(timeout);
    co_await stream.async_connect(endpoints, asio::use_awaitable);
    co_await http::async_write(stream, req, asio::use_awaitable);
    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
  }
}

Response request(http::verb verb, const std::string& url_text, const std::string* body,
                 const std::string& content_type, std::chrono::milliseconds timeout) {
  const Url url = parse_url(url_text);
  Request req(verb, url.target, 11);
  req.set(http::field::host, url.authority);
  req.set(http::field::user_agent, "tresor-router-cli");
  req.set(http::field::connection, "close");
  if (body) {
    req.set(http::field::content_type, content_type);
    req.body() = *body;
  }
  req.prepare_payload();

  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_default_verify_paths();
  ctx.set_verify_mode(asio::ssl::verify_peer);
  RawResponse res;
  std::exception_ptr failure;
  asio::co_spawn(ioc, exchange(url, req, res, ctx, timeout), [&failure](std::exception_ptr e) { failure = e; });
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error(url_text + ": " + e.code().message());  // without the source location
    } catch (const std::exception& e) {
      throw std::runtime_error(url_text + ": " + e.what());
    }
  }
  return Response{static_cast<int>(res.result_int()), std::move(res.body())};
}

}  // namespace

Response get(const std::string& url, std::chrono::milliseconds timeout) {
  return request(http::verb::get, url, nullptr, "", timeout);
}

Response post(const std::string& url, const std::string& body, const std::string& content_type,
              std::chrono::milliseconds timeout) {
  return request(http::verb::post, url, &body, content_type, timeout);
}

struct Poster::Impl {
  explicit Impl(std::string url_text) : text(std::move(url_text)), url(parse_url(text)) {
    if (url.tls) {
      ctx.emplace(asio::ssl::context::tls_client);
      ctx->set_default_verify_paths();
      ctx->set_verify_mode(asio::ssl::verify_peer);
    }
  }

  // One request on the kept connection (made first if there is none). `answered`: some of
  // the response came, so a failure then is not the idle-close race.
  asio::awaitable<void> exchange(Request& req, RawResponse& res, std::chrono::milliseconds timeout, bool& answered) {
    auto executor = co_await asio::this_coro::executor;
    if (!plain && !tls) {
      asio::ip::tcp::resolver resolver(executor);
      const auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
      if (url.tls) {
        tls.emplace(executor, *ctx);
        SSL_set_tlsext_host_name(tls->native_handle(), url.host.c_str());
        X509_VERIFY_PARAM_set1_host(SSL_get0_param(tls->native_handle()), url.host.c_str(), 0);
        beast::get_lowest_layer(*tls).expires_after(timeout);
        co_await beast::get_lowest_layer(*tls).async_connect(endpoints, asio::use_awaitable);
        co_await tls->async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
      } else {
        plain.emplace(executor);
        plain->expires_after(timeout);
        co_await plain->async_connect(endpoints, asio::use_awaitable);
      }
    }
    buffer.clear();
    parser.emplace();
    parser->body_limit(1 << 20);  // an OTLP answer is a small status message
    if (tls) {
      beast::get_lowest_layer(*tls).expires_after(timeout);
      co_await http::async_write(*tls, req, asio::use_awaitable);
      co_await http::async_read_header(*tls, buffer, *parser, asio::use_awaitable);
      answered = true;
      co_await http::async_read(*tls, buffer, *parser, asio::use_awaitable);
    } else {
      plain->expires_after(timeout);
      co_await http::async_write(*plain, req, asio::use_awaitable);
      co_await http::async_read_header(*plain, buffer, *parser, asio::use_awaitable);
      answered = true;
      co_await http::async_read(*plain, buffer, *parser, asio::use_awaitable);
    }
    res = parser->release();
  }

  void drop_connection() {
    plain.reset();
    tls.reset();
  }

  const std::string text;
  const Url url;
  asio::io_context ioc;
  std::optional<asio::ssl::context> ctx;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  std::optional<http::response_parser<http::string_body>> parser;
  beast::flat_buffer buffer;
};

Poster::Poster(std::string url) : impl_(std::make_unique<Impl>(std::move(url))) {}
Poster::~Poster() = default;

Response Poster::post(const std::string& body, const std::string& content_type, std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  Request req(http::verb::post, m.url.target, 11);
  req.set(http::field::host, m.url.authority);
  req.set(http::field::user_agent, "tresor-router");
  req.set(http::field::content_type, content_type);
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();
  for (int attempt = 0;; ++attempt) {
    const bool reused = (m.plain || m.tls) && attempt == 0;
    RawResponse res;
    bool answered = false;
    std::exception_ptr failure;
    m.ioc.restart();
    asio::co_spawn(m.ioc, m.exchange(req, res, timeout, answered), [&failure](std::exception_ptr e) { failure = e; });
    m.ioc.run();
    if (!failure) {
      if (!res.keep_alive()) m.drop_connection();
      return Response{static_cast<int>(res.result_int()), std::move(res.body())};
    }
    m.drop_connection();
    if (reused && !answered) continue;  // the server closed the idle connection: once more
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error(m.text + ": " + e.code().message());
    } catch (const std::exception& e) {
      throw std::runtime_error(m.text + ": " + e.what());
    }
  }
}

std::string get_ok(const std::string& url, std::chrono::milliseconds timeout) {
  Response res = get(url, timeout);
  if (res.status != 200)
    throw std::runtime_error(url + " answered HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 200));
  return std::move(res.body);
}

}  // namespace tresor::server::http_fetch
