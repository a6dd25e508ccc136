// What startup checks beyond load_config_file, in one place: `tresor-router check-config`
// and the gateway's startup both call load_checked_runtime, so they refuse the same
// configs with the same message and cannot drift apart.
#pragma once

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>

#include "config/config.h"
#include "server/runtime.h"

namespace tresor::server {

// Loads and validates `path` (config/), builds the runtime snapshot (provider CA files and
// base URLs, key index) and runs check_startup. Throws std::exception; the message names
// the file and the field.
std::shared_ptr<const Runtime> load_checked_runtime(const std::string& path);

// server.tls files readable and loadable (and matching), the store URL well-formed,
// server.listen addresses resolvable and distinct, the receipt signing key loadable when
// its file exists, the retired keys readable. Creates no file and opens no connection.
// Throws config::ConfigError("FILE: FIELD …"). `store_open`: this process already has the
// store open (a SIGHUP reload), so an SQLite store file is not opened again to check it:
// closing a second handle on a file drops every POSIX lock this process holds on it
// (fcntl semantics), and SQLite's WAL then loses writes to another process's checkpoint.
void check_startup(const config::Config& cfg, bool store_open = false);

// HTTPS for the listeners: TLS 1.2+, the certificate chain and key from PEM files (a key
// that does not match the certificate is refused by OpenSSL when it loads).
// Throws std::runtime_error naming server.tls.cert_file or server.tls.key_file.
std::unique_ptr<boost::asio::ssl::context> server_tls_context(const config::ServerConfig::Tls& tls);

}  // namespace tresor::server
