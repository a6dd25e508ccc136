#include "server/config_checks.h"

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "receipts/signer.h"
#include "storage/redis_connection.h"

namespace tresor::server {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

void require_readable(const std::string& path, const char* field) {
  if (!std::ifstream(path)) throw std::runtime_error(std::string(field) + ": cannot read '" + path + "'");
}

// A redis:// or rediss:// store as it is opened at startup, without connecting: the URL
// parsed the same way (its messages mask the password), and for rediss:// the store.tls
// files loaded as a connection loads them.
void check_redis_store(const config::StoreConfig& store) {
  const storage::RedisAddress address = storage::parse_redis_url(store.url, "store");
  if (address.tls) storage::check_redis_tls_files(store.tls);
}

// A file startup will create when missing (the SQLite store, the signing key), with its
// folders: the nearest existing ancestor must be a folder this process may write into.
// Nothing is created here.
void check_creatable(const std::string& path, const std::string& field) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    if (std::filesystem::is_directory(path, ec))
      throw std::runtime_error(field + ": '" + path + "' is a directory, not a file");
    return;
  }
  auto dir = std::filesystem::absolute(path, ec).parent_path();
  while (!dir.empty() && !std::filesystem::exists(dir, ec) && dir != dir.root_path()) dir = dir.parent_path();
  if (!std::filesystem::is_directory(dir, ec))
    throw std::runtime_error(field + ": cannot create '" + path + "': " + dir.string() + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw std::runtime_error(field + ": cannot create '" + path + "': " + dir.string() + " is not writable");
}

void check_store(const config::StoreConfig& store) {
  const std::string& url = store.url;
  if (url.rfind("sqlite:", 0) == 0) {
    if (url.size() == 7) throw std::runtime_error("store: sqlite: needs a file path (sqlite:PATH)");
    return check_creatable(url.substr(7), "store");
  }
  if (url.rfind("redis://", 0) == 0 || url.rfind("rediss://", 0) == 0) return check_redis_store(store);
  throw std::runtime_error("store must be sqlite:PATH, redis://… or rediss://…");
}

std::string listen_text(const config::ListenAddress& a) {
  const bool v6 = a.host.find(':') != std::string::npos;
  return (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);
}

// Each address resolved as Server::listen resolves it (its first result); two that come to
// the same endpoint would fail at bind with an unnamed "address in use". Port 0 (ephemeral)
// binds a fresh port each time, so it never collides.
void check_listen(const std::vector<config::ListenAddress>& listen) {
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  std::vector<std::pair<tcp::endpoint, std::string>> seen;
  for (const auto& address : listen) {
    const std::string text = listen_text(address);
    boost::system::error_code ec;
    const auto results = resolver.resolve(address.host, std::to_string(address.port), ec);
    if (ec || results.empty())
      throw std::runtime_error("server.listen '" + text + "': cannot resolve the host (" + ec.message() + ")");
    const tcp::endpoint endpoint = results.begin()->endpoint();
    for (const auto& [other, other_text] : seen)
      if (address.port != 0 && other == endpoint)
        throw std::runtime_error("server.listen '" + other_text + "' and '" + text +
                                 "' are the same address; each listen entry must be distinct");
    seen.emplace_back(endpoint, text);
  }
}

// The active key must load when its file exists (startup creates it otherwise, which
// check-config must not do); the retired keys are always read.
void check_keys(const config::ReceiptsConfig& receipts) {
  check_creatable(receipts.signing_key_file, "receipts.signing_key_file");
  try {
    receipts::Signer::load_if_exists(receipts.signing_key_file, receipts.kid);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("receipts.signing_key_file: ") + e.what());
  }
  try {
    receipts::check_retired_keys(receipts.kid, receipts.retired_keys);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("receipts.retired_keys: ") + e.what());
  }
}

}  // namespace

std::unique_ptr<asio::ssl::context> server_tls_context(const config::ServerConfig::Tls& tls) {
  require_readable(tls.cert_file, "server.tls.cert_file");
  require_readable(tls.key_file, "server.tls.key_file");
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                   asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(tls.cert_file, ec);
  if (ec) throw std::runtime_error("server.tls.cert_file " + tls.cert_file + ": " + ec.message());
  ctx->use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("server.tls.key_file " + tls.key_file + ": " + ec.message());
  return ctx;
}

void check_startup(const config::Config& cfg) {
  try {
    if (!cfg.server.tls.cert_file.empty()) server_tls_context(cfg.server.tls);
    check_store(cfg.store_config);
    check_listen(cfg.server.listen);
    check_keys(cfg.receipts);
  } catch (const std::exception& e) {
    throw config::ConfigError(cfg.source_file + ": " + e.what());
  }
}

std::shared_ptr<const Runtime> load_checked_runtime(const std::string& path) {
  auto runtime = std::make_shared<const Runtime>(config::load_config_file(path));
  check_startup(*runtime->config);
  return runtime;
}

}  // namespace tresor::server
