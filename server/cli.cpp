#include "server/cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/parse.hpp>
#include <openssl/ssl.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "receipts/claims.h"
#include "receipts/signer.h"

namespace tresor::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string read_all(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_file(const std::string& path) {
  if (path == "-") return read_all(std::cin);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return read_all(in);
}

// GET of an http:// or https:// URL (the JWKS), TLS verified against the system store.
std::string http_get(const std::string& url) {
  const bool tls = url.rfind("https://", 0) == 0;
  const std::string rest = url.substr(tls ? 8 : 7);
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  const std::string target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = authority.rfind(':');
  const std::string host = colon == std::string::npos ? authority : authority.substr(0, colon);
  const std::string port = colon == std::string::npos ? (tls ? "443" : "80") : authority.substr(colon + 1);

  asio::io_context ioc;
  asio::ip::tcp::resolver resolver(ioc);
  const auto endpoints = resolver.resolve(host, port);
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, authority);
  req.set(http::field::user_agent, "tresor-router verify-receipt");
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (tls) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_default_verify_paths();
    ctx.set_verify_mode(asio::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
    X509_VERIFY_PARAM_set1_host(SSL_get0_param(stream.native_handle()), host.c_str(), 0);
    beast::get_lowest_layer(stream).connect(endpoints);
    stream.handshake(asio::ssl::stream_base::client);
    http::write(stream, req);
    http::read(stream, buffer, res);
  } else {
    beast::tcp_stream stream(ioc);
    stream.connect(endpoints);
    http::write(stream, req);
    http::read(stream, buffer, res);
  }
  if (res.result_int() != 200)
    throw std::runtime_error(url + " answered HTTP " + std::to_string(res.result_int()));
  return res.body();
}

// The input may be the whole {"id","receipt"} answer of GET /v1/receipts/{id}, or a JWS.
std::string extract_jws(const std::string& input) {
  boost::system::error_code ec;
  const auto value = boost::json::parse(input, ec);
  if (!ec && value.is_object()) {
    const auto* receipt = value.as_object().if_contains("receipt");
    if (!receipt || !receipt->is_string()) throw std::runtime_error("input JSON has no \"receipt\" string");
    return std::string(receipt->as_string());
  }
  std::string jws = input;
  while (!jws.empty() && std::isspace(static_cast<unsigned char>(jws.back()))) jws.pop_back();
  while (!jws.empty() && std::isspace(static_cast<unsigned char>(jws.front()))) jws.erase(jws.begin());
  return jws;
}

std::string claim(const std::string& payload, const char* name) {
  const auto value = boost::json::parse(payload);
  const auto* v = value.as_object().if_contains(name);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

int cli_gen_signing_key(int argc, char** argv) {
  const std::string pem = receipts::generate_private_key_pem();
  if (argc < 1) {
    std::cout << pem;
    return 0;
  }
  const std::string path = argv[0];
  // O_EXCL: never overwrite a key that signed receipts still being verified.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    std::cerr << path << ": cannot create (" << std::strerror(errno) << ")\n";
    return 1;
  }
  const bool ok = ::write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size());
  ::close(fd);
  if (!ok) {
    std::cerr << path << ": write failed\n";
    return 1;
  }
  std::cout << "wrote " << path << " (P-256, mode 0600)\n";
  return 0;
}

int cli_verify_receipt(int argc, char** argv) {
  std::string jwks_source, input = "-";
  std::optional<std::string> request_file, response_file;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--jwks" && i + 1 < argc) jwks_source = argv[++i];
    else if (arg == "--request" && i + 1 < argc) request_file = argv[++i];
    else if (arg == "--response" && i + 1 < argc) response_file = argv[++i];
    else input = arg;
  }
  if (jwks_source.empty()) {
    std::cerr << "usage: tresor-router verify-receipt --jwks FILE_OR_URL [-|FILE] [--request FILE] [--response FILE]\n";
    return 2;
  }
  try {
    const bool is_url = jwks_source.rfind("http://", 0) == 0 || jwks_source.rfind("https://", 0) == 0;
    const std::string jwks = is_url ? http_get(jwks_source) : read_file(jwks_source);
    const auto result = receipts::verify_jws(extract_jws(read_file(input)), jwks);
    if (!result.ok) {
      std::cout << "FAIL\n" << result.error << "\n";
      return 1;
    }
    if (request_file) {
      const auto digest = receipts::sha256_hex(read_file(*request_file));
      if (digest != claim(result.payload, "request_sha256")) {
        std::cout << "FAIL\nrequest_sha256 does not match " << *request_file << "\n";
        return 1;
      }
    }
    if (response_file) {
      const std::string body = read_file(*response_file);
      const bool sse = body.rfind("data:", 0) == 0;
      const auto digest = sse ? receipts::response_sha256_of_sse(body) : receipts::response_sha256_of_json(body);
      if (digest != claim(result.payload, "response_sha256")) {
        std::cout << "FAIL\nresponse_sha256 does not match " << *response_file << "\n";
        return 1;
      }
    }
    std::cout << "PASS\n"
              << "Receipt type:  " << claim(result.payload, "receipt_type") << "\n"
              << "Key ID:        " << result.kid << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cout << "FAIL\n" << e.what() << "\n";
    return 1;
  }
}

}  // namespace tresor::server
