// tresor-router: run the gateway, or one of the operator subcommands.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "config/config.h"
#include "server/auth.h"
#include "server/cli.h"
#include "server/config_checks.h"
#include "server/log_cli.h"
#include "server/server.h"

namespace {

int usage() {
  std::cerr << "usage:\n"
               "  tresor-router [--config FILE]        run the gateway (or TRESOR_CONFIG=FILE)\n"
               "  tresor-router check-config FILE      validate a config file and exit\n"
               "  tresor-router hash-key tr-…          print the sha256 to put in auth.keys\n"
               "  tresor-router gen-signing-key [FILE] new P-256 receipt signing key (PEM, 0600)\n"
               "  tresor-router gen-log-key [FILE]     new Ed25519 transparency log key (PEM, 0600; log.key_file)\n"
               "  tresor-router verify-receipt --jwks FILE_OR_URL [--log-key VKEY] [-|FILE] [--request FILE] [--response FILE]\n"
               "  tresor-router verify-log --url BASE_URL --log-key VKEY --checkpoint OLD_FILE [--save NEW_FILE] [--full]\n"
               "  tresor-router witness --log BASE_URL --log-key VKEY --state DIR --key FILE --name NAME\n"
               "                        [--interval-ms 1000] [--once]\n"
               "  tresor-router witness-key --key FILE --name NAME   print the witness's vkey (creating the key)\n";
  return 2;
}

int check_config(const std::string& path) {
  try {
    // The same load and checks as startup (TLS files, store URL, listen addresses, keys).
    const auto runtime = tresor::server::load_checked_runtime(path);
    const auto& cfg = runtime->config;
    std::cout << path << ": OK (" << cfg->providers.size() << " providers, " << cfg->routes.size()
              << " routes, " << cfg->auth.keys.size() << " keys)\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

int hash_key(const std::string& key) {
  if (!tresor::server::is_well_formed_key(key)) {
    std::cerr << "not a tresor key: expected tr- followed by 96 hex characters\n";
    return 1;
  }
  std::cout << tresor::server::sha256_hex(key) << "\n";
  return 0;
}

// Every client connection is a descriptor: the soft limit (often 1024) is raised to the
// hard one, as nginx does with worker_rlimit_nofile, so that 10,000 idle connections fit.
// server.max_connections (by default 3/4 of this limit) then caps them below it.
void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      spdlog::warn("could not raise the file descriptor limit from {} to {}: {}", before, limit.rlim_max,
                   std::strerror(errno));
      return;
    }
  }
  if (limit.rlim_cur == RLIM_INFINITY) spdlog::info("file descriptor limit: unlimited");
  else spdlog::info("file descriptor limit: {} (soft limit was {})", limit.rlim_cur, before);
}

}  // namespace

// jemalloc (linked into the release binary, see server/CMakeLists.txt) reads this at
// start-up: a background thread hands memory freed after a load peak back to the OS
// within about a second, so RSS returns to its idle level instead of staying at the
// peak. Unused (and harmless) in builds without jemalloc.
extern "C" {
__attribute__((used)) const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}

int main(int argc, char** argv) {
  // A peer that vanishes mid-write must cost an error code, not the process (Asio sends
  // with MSG_NOSIGNAL; hiredis and OpenSSL's BIO writes do not).
  std::signal(SIGPIPE, SIG_IGN);
  // Logs go to stderr: stdout stays free for subcommand output.
  spdlog::set_default_logger(spdlog::stderr_color_mt("tresor"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  if (const char* level = std::getenv("TRESOR_LOG_LEVEL")) spdlog::set_level(spdlog::level::from_str(level));

  std::string config_path = std::getenv("TRESOR_CONFIG") ? std::getenv("TRESOR_CONFIG") : "";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "check-config") return i + 1 < argc ? check_config(argv[i + 1]) : usage();
    if (arg == "hash-key") return i + 1 < argc ? hash_key(argv[i + 1]) : usage();
    if (arg == "gen-signing-key") return tresor::server::cli_gen_signing_key(argc - i - 1, argv + i + 1);
    if (arg == "gen-log-key") return tresor::server::cli_gen_log_key(argc - i - 1, argv + i + 1);
    if (arg == "verify-receipt") return tresor::server::cli_verify_receipt(argc - i - 1, argv + i + 1);
    if (arg == "verify-log") return tresor::server::cli_verify_log(argc - i - 1, argv + i + 1);
    if (arg == "witness") return tresor::server::cli_witness(argc - i - 1, argv + i + 1);
    if (arg == "witness-key") return tresor::server::cli_witness_key(argc - i - 1, argv + i + 1);
    if (arg == "--config" && i + 1 < argc) config_path = argv[++i];
    else if (arg.rfind("--config=", 0) == 0) config_path = arg.substr(9);
    else return usage();
  }
  if (config_path.empty()) return usage();

  raise_fd_limit();
  try {
    tresor::server::RuntimeHolder holder(tresor::server::load_checked_runtime(config_path));
    tresor::server::Server server(holder);
    server.listen();
    server.run();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}
