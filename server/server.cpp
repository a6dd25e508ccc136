#include "server/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <thread>

#include "receipts/ed25519_key.h"
#include "receipts/key_registry.h"
#include "receipts/receipt_service.h"
#include "server/config_checks.h"
#include "server/log_throttle.h"
#include "server/session.h"
#include "storage/redis_connection.h"
#include "storage/store_breaker.h"

namespace tresor::server {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// Upload spool reads and writes are sequential, mostly into the page cache: two threads
// keep one slow disk operation from holding up every other upload.
constexpr unsigned kFileIoThreads = 2;

struct Worker {
  asio::io_context ioc{1};  // one thread per io_context: concurrency hint 1 skips locking
  asio::executor_work_guard<asio::io_context::executor_type> guard{ioc.get_executor()};
  std::unique_ptr<providers::UpstreamClient> upstream;
  SessionRegistry sessions;  // touched on this worker's thread only
  std::thread thread;
};

// Out of file descriptors, the accept loop pauses this long instead of retrying at once:
// the pending connection stays in the backlog, so an immediate retry fails again and
// spins (nginx disables accept for 500 ms in the same case).
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// server.max_connections: 0 means this share of the descriptor limit; the rest is left
// for upstream connections, upload spool files, the store and the log.
uint64_t connection_cap(const config::ServerConfig& cfg) {
  if (cfg.max_connections > 0) return cfg.max_connections;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return std::max<uint64_t>(16, limit.rlim_cur / 4 * 3);
}

bool out_of_descriptors(const boost::system::error_code& ec) {
  return ec == boost::system::errc::too_many_files_open || ec == boost::system::errc::too_many_files_open_in_system ||
         ec == boost::system::errc::no_buffer_space || ec == boost::system::errc::not_enough_memory;
}

// How often a draining server checks whether its connections are gone.
constexpr auto kDrainPoll = std::chrono::milliseconds(50);

bool same_retired_keys(const config::ReceiptsConfig& a, const config::ReceiptsConfig& b) {
  if (a.retired_keys.size() != b.retired_keys.size()) return false;
  for (size_t i = 0; i < a.retired_keys.size(); ++i)
    if (a.retired_keys[i].kid != b.retired_keys[i].kid ||
        a.retired_keys[i].public_key_file != b.retired_keys[i].public_key_file)
      return false;
  return true;
}

// What a config reload can not change in a running process (bound sockets, threads, the
// store connection, the signing key): differences are logged, the old values stay.
std::vector<std::string> restart_only_changes(const config::Config& now, const config::Config& next) {
  std::vector<std::string> changed;
  auto listen_key = [](const config::Config& c) {
    std::string k;
    for (const auto& l : c.server.listen) k += l.host + ":" + std::to_string(l.port) + ",";
    return k;
  };
  if (listen_key(now) != listen_key(next)) changed.push_back("server.listen");
  if (now.server.threads != next.server.threads) changed.push_back("server.threads");
  if (now.server.max_connections != next.server.max_connections) changed.push_back("server.max_connections");
  // The connections, their timeouts and the outage policy are made at startup.
  if (now.store_config != next.store_config) changed.push_back("store");
  if (now.receipts.signing_key_file != next.receipts.signing_key_file || now.receipts.kid != next.receipts.kid)
    changed.push_back("receipts signing key");
  if (now.server.tls.cert_file != next.server.tls.cert_file || now.server.tls.key_file != next.server.tls.key_file)
    changed.push_back("server.tls");
  // The JWKS document is built once at startup and served by reference.
  if (!same_retired_keys(now.receipts, next.receipts)) changed.push_back("receipts.retired_keys");
  // The attestation envelope (manifest, report) is built once at startup.
  if (now.attestation.mode != next.attestation.mode ||
      now.attestation.trust_bundle_url != next.attestation.trust_bundle_url ||
      now.attestation.max_age_seconds != next.attestation.max_age_seconds)
    changed.push_back("attestation");
  // The span exporter (its endpoint, queue, batches, sampling) is made at startup.
  if (!(now.tracing == next.tracing)) changed.push_back("tracing");
  return changed;
}

// What a reload applies outside the config snapshot, logged so an operator sees it took.
std::vector<std::string> receipt_policy_changes(const config::ReceiptsConfig& now, const config::ReceiptsConfig& next) {
  std::vector<std::string> changed;
  if (now.ttl_seconds != next.ttl_seconds)
    changed.push_back("receipts.ttl_seconds (now " + std::to_string(next.ttl_seconds) + ")");
  if (now.signing != next.signing)
    changed.push_back(std::string("receipts.signing (now ") +
                      (next.signing == config::ReceiptsConfig::Signing::at_issue ? "at_issue" : "on_fetch") + ")");
  return changed;
}

// Built outside the coroutine (g++ 12 and captures in coroutines): loads and validates
// the file, and builds the snapshot (CA files are read here), all on the file I/O pool.
// The startup checks (config_checks.h) only concern restart-only settings, which a reload
// leaves alone: a file that fails them is still applied, with a warning now rather than a
// surprise at the next restart.
std::function<void()> load_job(std::string path, std::shared_ptr<const Runtime>& next, std::string& error) {
  return [path = std::move(path), &next, &error] {
    try {
      next = std::make_shared<const Runtime>(config::load_config_file(path));
    } catch (const std::exception& e) {
      error = e.what();
      return;
    }
    try {
      check_startup(*next->config, /*store_open=*/true);
    } catch (const std::exception& e) {
      spdlog::warn("config reload: the next restart would refuse this file: {}", e.what());
    }
  };
}

void log_exception(std::exception_ptr e, const char* what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("{}: {}", what, ex.what());
  }
}

}  // namespace

struct Server::Impl {
  RuntimeHolder& runtime;
  router::RouteHealth health;  // process-wide: breakers outlive reloads that leave their route alone
  std::shared_ptr<receipts::TransparencyLog> log;  // null with log.enabled: false
  std::unique_ptr<receipts::ReceiptService> receipts;
  // Keys' limits, credits, reservations, the spend ledger; outlives the workers (declared
  // before them) whose requests hold grants on it.
  std::unique_ptr<accounts::Accounts> accounts;
  std::string jwks;
  std::shared_ptr<storage::StoreBreaker> store_breaker;  // a shared (Redis) store's; null for SQLite
  std::unique_ptr<storage::StoreProber> store_prober;     // closes it once the store answers again
  config::StoreOutagePolicy outage;                       // store.outage at startup
  SpoolBudget spool;  // before the workers: their uploads give their reservations back to it
  Metrics metrics;
  StatusBoard status;  // GET /status: per-route windows, recent failovers
  // Redis store only; declared after `metrics`, which its thread sets, so it stops first.
  std::unique_ptr<receipts::KeyPublisher> key_publisher;
  std::unique_ptr<RouterAttestation> attestation;
  std::unique_ptr<asio::ssl::context> tls;  // server.tls, else plain HTTP
  // Before the workers: their sessions hand it spans until they are gone.
  std::unique_ptr<Tracer> tracer;
  std::vector<std::unique_ptr<Worker>> workers;
  // Declared after the workers, so it is joined (its queued jobs finished) before the
  // workers' io_contexts, and the sessions that wait on those jobs, are destroyed.
  FileIoPool file_io{kFileIoThreads};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::unique_ptr<asio::signal_set> signals;  // SIGTERM, SIGINT: drain
  std::unique_ptr<asio::signal_set> hangup;   // SIGHUP: reload
  Lifecycle lifecycle;
  size_t next = 0;  // accept loops all run on worker 0's thread
  size_t sessions_per_worker = 0;  // server.max_connections split across the workers
  LogThrottle accept_errors;  // accept loops all run on worker 0's thread

  explicit Impl(RuntimeHolder& r) : runtime(r) {}

  void stop_workers() {
    for (auto& w : workers) {
      w->guard.reset();
      w->ioc.stop();
    }
  }

  // SIGHUP: the new file is loaded and validated off the I/O threads, then swapped in as a
  // whole; requests in flight finish on the snapshot they started with.
  asio::awaitable<void> reload() {
    const auto current = runtime.current();
    std::shared_ptr<const Runtime> next;
    std::string error;
    co_await file_io.run(load_job(current->config->source_file, next, error));
    if (!next) {
      metrics.config_reload(false);
      spdlog::error("config reload failed, keeping the running config: {}", error);
      co_return;
    }
    const config::Config& before = *current->config;
    const config::Config& after = *next->config;
    for (const auto& what : restart_only_changes(before, after))
      spdlog::warn("config reload: {} changed; that takes a restart (the old value stays in use)", what);
    receipts->set_policy(static_cast<int64_t>(after.receipts.ttl_seconds),
                         after.receipts.signing == config::ReceiptsConfig::Signing::at_issue);
    for (const auto& what : receipt_policy_changes(before.receipts, after.receipts))
      spdlog::info("config reload: {} applies to receipts issued from now on", what);
    runtime.replace(next);
    // After the swap: a request still on the old snapshot may record one more failure on
    // a reset route, which costs at most one breaker count.
    const auto changed_routes = router::routes_changed_by_reload(before, after);
    for (const auto& id : changed_routes) {
      health.reset(id);
      spdlog::info("config reload: route {} changed; its breaker and Retry-After hold are cleared", id);
    }
    metrics.config_reload(true);
    spdlog::info("config reloaded from {}: {} providers, {} routes, {} keys", next->config->source_file,
                 next->config->providers.size(), next->config->routes.size(), next->config->auth.keys.size());
  }

  void wait_for_hangup() {
    hangup->async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      asio::co_spawn(workers.front()->ioc, reload(),
                     [](std::exception_ptr e) { log_exception(e, "config reload ended with an exception"); });
      wait_for_hangup();
    });
  }

  // SIGTERM: readiness off now; after the notice period stop accepting and close idle
  // connections; the process ends when the last connection is gone or the grace period is
  // over. A second signal stops at once.
  asio::awaitable<void> drain() {
    const auto& server_cfg = runtime.current()->config->server;
    const auto start = std::chrono::steady_clock::now();
    const auto grace_end = start + std::chrono::seconds(server_cfg.drain_seconds);
    lifecycle.draining = true;
    spdlog::info("draining: /readyz answers 503; listeners close in {} s, in-flight work has {} s",
                 server_cfg.drain_notice_seconds, server_cfg.drain_seconds);
    asio::steady_timer timer(co_await asio::this_coro::executor);
    if (server_cfg.drain_notice_seconds > 0) {
      timer.expires_at(start + std::chrono::seconds(server_cfg.drain_notice_seconds));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    lifecycle.closing = true;
    for (auto& acceptor : acceptors) {
      boost::system::error_code ignored;
      acceptor->close(ignored);
    }
    for (auto& w : workers) {
      Worker* worker = w.get();
      asio::post(worker->ioc, [worker] {
        // drain() may end a session, which erases itself: iterate over a copy.
        const std::vector<SessionControl*> open(worker->sessions.begin(), worker->sessions.end());
        for (auto* s : open)
          if (worker->sessions.count(s)) s->drain();
      });
    }
    while (lifecycle.open_sessions.load() > 0 && std::chrono::steady_clock::now() < grace_end) {
      timer.expires_after(kDrainPoll);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    const size_t left = lifecycle.open_sessions.load();
    if (left > 0) spdlog::warn("drain: grace period over, closing {} connection(s) still open", left);
    else spdlog::info("drain: every connection finished");
    stop_workers();
  }

  void wait_for_termination() {
    signals->async_wait([this](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      if (lifecycle.draining) {
        spdlog::info("signal {} received again, stopping now", signal);
        stop_workers();
        return;
      }
      spdlog::info("signal {} received, draining", signal);
      asio::co_spawn(workers.front()->ioc, drain(),
                     [this](std::exception_ptr e) {
                       log_exception(e, "drain ended with an exception");
                       if (e) stop_workers();
                     });
      wait_for_termination();
    });
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    for (;;) {
      Worker& w = *workers[next++ % workers.size()];
      boost::system::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(w.ioc, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE and friends: usually transient (connections close), so keep accepting,
        // but after a pause, and log at most once a second.
        const bool exhausted = out_of_descriptors(ec);
        if (const auto left_out = accept_errors.allow())
          spdlog::warn("accept failed: {}{} ({} more accept failures in the last second not logged)", ec.message(),
                       exhausted ? "; pausing accepts for 100 ms" : "", *left_out);
        if (exhausted) {
          asio::steady_timer pause(acceptor.get_executor(), kAcceptBackoff);
          co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        continue;
      }
      const SessionServices services{runtime, *w.upstream, health, *receipts, *accounts,
                                     file_io, spool, metrics, lifecycle, *attestation, w.sessions, jwks, tls.get(),
                                     sessions_per_worker, store_breaker.get(), outage, log.get(), tracer.get(),
                                     &status};
      asio::co_spawn(w.ioc, run_session(std::move(socket), services),
                     [](std::exception_ptr e) { log_exception(e, "session ended with an exception"); });
    }
  }
};

namespace {

std::unique_ptr<receipts::ReceiptStore> open_store(const config::StoreConfig& store) {
  constexpr std::string_view kSqlite = "sqlite:";
  const std::string& url = store.url;
  if (url.rfind(kSqlite, 0) == 0) return receipts::open_sqlite_store(url.substr(kSqlite.size()));
  if (url.rfind("redis://", 0) == 0 || url.rfind("rediss://", 0) == 0) return receipts::open_redis_store(store);
  throw std::runtime_error("store: expected sqlite:PATH, redis://… or rediss://…");
}

// A Redis store is tried once at startup. A wrong password, a certificate that does not
// verify or a server too old are configuration errors: the gateway refuses to start. An
// unreachable Redis is not: the replica starts and serves under the outage policy, and
// the stores connect once it answers.
void check_shared_store(const config::StoreConfig& store) {
  if (store.url.rfind("redis://", 0) != 0 && store.url.rfind("rediss://", 0) != 0) return;
  const storage::ConnectCheck check = storage::RedisConnection("store", store).check_connect();
  switch (check.status) {
    case storage::ConnectStatus::ok:
      spdlog::info("{}", check.message);
      return;
    case storage::ConnectStatus::unreachable:
    case storage::ConnectStatus::other:
      spdlog::warn("{}; starting anyway, the store is used once it answers", check.message);
      return;
    case storage::ConnectStatus::auth_failed:
    case storage::ConnectStatus::tls_failed:
    case storage::ConnectStatus::unsupported:
      break;
  }
  throw std::runtime_error(check.message + " [" + storage::to_string(check.status) + "]");
}

// Replicas on one Redis must sign with the same key per kid (receipts/key_registry.h): a
// conflict found now throws (startup error); Redis unreachable: start, publish later, and a
// conflict found then sets tresor_signing_key_conflict (and logs an error each minute).
std::unique_ptr<receipts::KeyPublisher> publish_signing_keys(const config::Config& cfg, const std::string& jwks,
                                                             Metrics& metrics) {
  if (cfg.store.rfind("sqlite:", 0) == 0) return nullptr;  // a local store: no other replica to agree with
  // A record outlives any receipt still stored under its kid.
  const auto ttl =
      std::max(receipts::kKeyRecordTtl, std::chrono::seconds(static_cast<int64_t>(cfg.receipts.ttl_seconds)));
  return std::make_unique<receipts::KeyPublisher>(
      receipts::key_fingerprints(jwks, cfg.receipts), receipts::replica_label(cfg.server.listen), ttl,
      [store = cfg.store_config] { return std::make_unique<storage::RedisConnection>("signing key registry", store); },
      [&metrics](const receipts::PublishResult& r) {
        if (r.status != receipts::PublishResult::Status::unreachable)
          metrics.signing_key_conflict(r.status == receipts::PublishResult::Status::conflict);
      });
}

// PING over a connection of the prober's own (made on first use: the store may be down
// when the gateway starts).
std::function<bool()> store_ping(const config::StoreConfig& store) {
  auto conn = std::make_shared<std::unique_ptr<storage::RedisConnection>>();
  return [conn, store] {
    if (!*conn) *conn = std::make_unique<storage::RedisConnection>("store probe", store);
    return (*conn)->ping();
  };
}

}  // namespace

Server::Server(RuntimeHolder& runtime) : impl_(std::make_unique<Impl>(runtime)) {
  const auto cfg = runtime.current()->config;
  check_shared_store(cfg->store_config);
  auto signer = receipts::Signer::load_or_create(cfg->receipts.signing_key_file, cfg->receipts.kid);
  impl_->jwks = receipts::jwks_json(*signer, cfg->receipts.retired_keys);
  if (cfg->log.enabled) {
    impl_->log = std::make_shared<receipts::TransparencyLog>(
        cfg->log, receipts::load_or_create_ed25519_seed(cfg->log.key_file));
    spdlog::info("transparency log {}: verifier key {}", cfg->log.origin, impl_->log->verifier_key());
  }
  impl_->receipts = std::make_unique<receipts::ReceiptService>(
      std::move(signer), open_store(cfg->store_config), static_cast<int64_t>(cfg->receipts.ttl_seconds),
      cfg->receipts.signing == config::ReceiptsConfig::Signing::at_issue, impl_->log);
  impl_->accounts = accounts::Accounts::open(cfg->store_config);
  impl_->outage = cfg->store_config.outage;
  if (impl_->accounts->shared()) {
    impl_->store_breaker = storage::breaker_for(cfg->store_config);
    impl_->metrics.set_store_breaker(impl_->store_breaker);
    impl_->store_prober = std::make_unique<storage::StoreProber>(impl_->store_breaker, store_ping(cfg->store_config));
  }
  impl_->accounts->on_outage([metrics = &impl_->metrics](accounts::OutageFunction f) {
    metrics->store_outage_served(f == accounts::OutageFunction::rate_limits ? "rate_limits" : "credits");
  });
  impl_->key_publisher = publish_signing_keys(*cfg, impl_->jwks, impl_->metrics);
  impl_->attestation = std::make_unique<RouterAttestation>(*cfg);
  impl_->tracer = make_tracer(*cfg);
  if (!cfg->server.tls.cert_file.empty()) impl_->tls = server_tls_context(cfg->server.tls);
  unsigned n = cfg->server.threads ? cfg->server.threads : std::max(1u, std::thread::hardware_concurrency());
  const uint64_t cap = connection_cap(cfg->server);
  impl_->sessions_per_worker = static_cast<size_t>((cap + n - 1) / n);
  spdlog::info("connection limit: {} ({} per worker thread){}", cap, impl_->sessions_per_worker,
               cfg->server.max_connections ? "" : ", from the file descriptor limit (server.max_connections: 0)");
  for (unsigned i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->upstream = std::make_unique<providers::UpstreamClient>(w->ioc, n);
    impl_->workers.push_back(std::move(w));
  }
}

Server::~Server() {
  stop();
  for (auto& w : impl_->workers)
    if (w->thread.joinable()) w->thread.join();
  // The I/O threads are gone but their io_contexts still exist: let the store threads
  // finish what they hold now, while a completion they post still has somewhere to go
  // (a hung Redis can hold a step at shutdown). Grants, destroyed with the sessions, only
  // need the accounts thread, which stays.
  if (impl_->accounts) impl_->accounts->stop_pool();
  impl_->key_publisher.reset();
  impl_->store_prober.reset();
  impl_->receipts.reset();
}

void Server::listen() {
  auto& first = impl_->workers.front()->ioc;
  for (const auto& address : impl_->runtime.current()->config->server.listen) {
    tcp::resolver resolver(first);
    const auto results = resolver.resolve(address.host, std::to_string(address.port));
    const tcp::endpoint endpoint = results.begin()->endpoint();
    auto acceptor = std::make_unique<tcp::acceptor>(first);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    acceptor->bind(endpoint);
    acceptor->listen(asio::socket_base::max_listen_connections);
    const auto bound = acceptor->local_endpoint();
    const auto host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string();
    spdlog::info("listening on {}://{}:{}", impl_->tls ? "https" : "http", host, bound.port());
    asio::co_spawn(first, impl_->accept_loop(*acceptor),
                   [](std::exception_ptr e) { log_exception(e, "accept loop ended with an exception"); });
    impl_->acceptors.push_back(std::move(acceptor));
  }
  impl_->signals = std::make_unique<asio::signal_set>(first, SIGINT, SIGTERM);
  impl_->wait_for_termination();
  impl_->hangup = std::make_unique<asio::signal_set>(first, SIGHUP);
  impl_->wait_for_hangup();
}

void Server::run() {
  for (auto& w : impl_->workers) {
    Worker* worker = w.get();
    worker->thread = std::thread([worker] { worker->ioc.run(); });
  }
  for (auto& w : impl_->workers) w->thread.join();
}

void Server::stop() { impl_->stop_workers(); }

}  // namespace tresor::server
