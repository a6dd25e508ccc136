#include "server/config_checks.h"

#include <sqlite3.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
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

// `path` as the path of an SQLite URI filename (file:…): ?, # and % would end or escape it.
std::string sqlite_uri(const std::string& path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string uri = "file:";
  for (const unsigned char c : path) {
    if (c == '?' || c == '#' || c == '%' || c < 0x20 || c >= 0x7f) {
      uri += '%';
      uri += kHex[c >> 4];
      uri += kHex[c & 15];
    } else {
      uri += static_cast<char>(c);
    }
  }
  return uri + "?mode=ro&immutable=1";
}

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};

// Whether `path` has a write-ahead log or rollback journal beside it that SQLite has not
// folded back into the main file: the file a process killed mid-write (or mid-checkpoint)
// leaves behind, and then the main file alone is not the database.
bool has_pending_journal(const std::string& path) {
  for (const char* suffix : {"-wal", "-journal"}) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path + suffix, ec);
    if (!ec && size > 0) return true;
  }
  return false;
}

// An existing store file must be an SQLite database, or every request that stores a
// receipt or settles a charge would fail later. Checked without creating or changing
// anything: the 16-byte header first (the common mistake, a text file), then the schema
// read through a read-only, immutable connection (no lock taken, no -wal or -shm file made).
// An empty file is fine: SQLite makes it a database.
// With a -wal (or -journal) file beside it only the header is checked: an immutable
// connection ignores the WAL, and after kill -9 during a WAL checkpoint the main file holds
// half-copied pages that only the WAL's newer frames make whole — a valid database that
// read alone looks "malformed". Recovering it is the store's job when it opens.
void check_sqlite_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || std::filesystem::file_size(path, ec) == 0 || ec) return;
  const auto refuse = [&](const std::string& why) {
    throw std::runtime_error("store: '" + path + "' is not an SQLite database (" + why + ")");
  };
  static constexpr char kMagic[16] = {'S', 'Q', 'L', 'i', 't', 'e', ' ', 'f', 'o', 'r', 'm', 'a', 't', ' ', '3', '\0'};
  char header[sizeof kMagic] = {};
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("store: cannot read '" + path + "'");
  in.read(header, sizeof header);
  if (in.gcount() != static_cast<std::streamsize>(sizeof header) || std::memcmp(header, kMagic, sizeof header) != 0)
    refuse("its header is not \"SQLite format 3\"");
  if (has_pending_journal(path)) return;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(sqlite_uri(path).c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
  const std::unique_ptr<sqlite3, SqliteCloser> db(raw);  // a failed open hands back a handle too
  if (rc != SQLITE_OK) refuse(raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc));
  if (sqlite3_exec(db.get(), "PRAGMA schema_version", nullptr, nullptr, nullptr) != SQLITE_OK)
    refuse(sqlite3_errmsg(db.get()));
}

void check_store(const config::StoreConfig& store, bool store_open) {
  const std::string& url = store.url;
  if (url.rfind("sqlite:", 0) == 0) {
    if (url.size() == 7) throw std::runtime_error("store: sqlite: needs a file path (sqlite:PATH)");
    check_creatable(url.substr(7), "store");
    if (!store_open) check_sqlite_file(url.substr(7));
    return;
  }
  if (url.rfind("redis://", 0) == 0 || url.rfind("rediss://", 0) == 0) return check_redis_store(store);
  throw std::runtime_error("store must be sqlite:PATH, redis://… or rediss://…");
}

std::string listen_text(const config::ListenAddress& a) {
  const bool v6 = a.host.find(':') != std::string::npos;
  return (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);
}

// Whether an IPv6 wildcard listener takes IPv4 connections too (Linux's default, and the
// server does not set IPV6_V6ONLY): then :: also covers every IPv4 address.
bool v6_wildcard_is_dual_stack() {
  std::ifstream in("/proc/sys/net/ipv6/bindv6only");
  int only = 0;
  return !(in >> only) || only == 0;
}

// The wildcard `any` covers `other` on the same port: 0.0.0.0 every IPv4 address, :: every
// IPv6 one (and the IPv4 ones when dual-stack). Binding the two fails with "address in use"
// (Linux refuses a specific address beside a listening wildcard, and the reverse).
bool wildcard_covers(const tcp::endpoint& any, const tcp::endpoint& other) {
  if (!any.address().is_unspecified() || any.port() != other.port()) return false;
  if (any.address().is_v4()) return other.address().is_v4();
  return other.address().is_v6() || v6_wildcard_is_dual_stack();
}

// Each address resolved as Server::listen resolves it (its first result); two that come to
// the same endpoint, or a wildcard and an address it covers on the same port, would fail at
// bind with an unnamed "address in use". Port 0 (ephemeral) binds a fresh port each time,
// so it never collides.
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
    for (const auto& [other, other_text] : seen) {
      if (address.port == 0) break;
      if (other == endpoint)
        throw std::runtime_error("server.listen '" + other_text + "' and '" + text +
                                 "' are the same address; each listen entry must be distinct");
      const bool other_covers = wildcard_covers(other, endpoint);
      if (other_covers || wildcard_covers(endpoint, other))
        throw std::runtime_error("server.listen '" + other_text + "' and '" + text + "' overlap: the wildcard '" +
                                 (other_covers ? other_text : text) + "' already listens on the other's address (" +
                                 "binding both fails with 'address in use'); keep only one of them");
    }
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

void check_startup(const config::Config& cfg, bool store_open) {
  try {
    if (!cfg.server.tls.cert_file.empty()) server_tls_context(cfg.server.tls);
    check_store(cfg.store_config, store_open);
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
