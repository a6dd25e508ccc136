#include "server/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <exception>
#include <thread>

#include "receipts/receipt_service.h"
#include "server/session.h"

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
  std::thread thread;
};

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
  router::RouteHealth health;  // process-wide: breakers outlive config reloads
  std::unique_ptr<receipts::ReceiptService> receipts;
  RateLimiter limiter;
  std::unique_ptr<CreditLedger> credits;
  std::string jwks;
  std::vector<std::unique_ptr<Worker>> workers;
  // Declared after the workers, so it is joined (its queued jobs finished) before the
  // workers' io_contexts, and the sessions that wait on those jobs, are destroyed.
  providers::FileIoPool file_io{kFileIoThreads};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::unique_ptr<asio::signal_set> signals;
  size_t next = 0;  // accept loops all run on worker 0's thread

  explicit Impl(RuntimeHolder& r) : runtime(r) {}

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    for (;;) {
      Worker& w = *workers[next++ % workers.size()];
      boost::system::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(w.ioc, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE and friends: log and keep accepting; the condition is usually transient.
        spdlog::warn("accept failed: {}", ec.message());
        continue;
      }
      const SessionServices services{runtime, *w.upstream, health, *receipts, limiter, *credits, file_io, jwks};
      asio::co_spawn(w.ioc, run_session(std::move(socket), services),
                     [](std::exception_ptr e) { log_exception(e, "session ended with an exception"); });
    }
  }
};

namespace {

std::unique_ptr<receipts::ReceiptStore> open_store(const std::string& url) {
  constexpr std::string_view kSqlite = "sqlite:";
  if (url.rfind(kSqlite, 0) == 0) return receipts::open_sqlite_store(url.substr(kSqlite.size()));
  if (url.rfind("redis://", 0) == 0) return receipts::open_redis_store(url);
  throw std::runtime_error("store " + url + ": expected sqlite:PATH or redis://HOST:PORT/DB");
}

}  // namespace

Server::Server(RuntimeHolder& runtime) : impl_(std::make_unique<Impl>(runtime)) {
  const auto cfg = runtime.current()->config;
  auto signer = receipts::Signer::load_or_create(cfg->receipts.signing_key_file, cfg->receipts.kid);
  impl_->jwks = receipts::jwks_json(*signer, cfg->receipts.retired_keys);
  impl_->receipts = std::make_unique<receipts::ReceiptService>(std::move(signer), open_store(cfg->store),
                                                               static_cast<int64_t>(cfg->receipts.ttl_seconds));
  impl_->credits = std::make_unique<CreditLedger>(impl_->receipts->load_spend());
  unsigned n = cfg->server.threads ? cfg->server.threads : std::max(1u, std::thread::hardware_concurrency());
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
    spdlog::info("listening on http://{}:{}", host, bound.port());
    asio::co_spawn(first, impl_->accept_loop(*acceptor),
                   [](std::exception_ptr e) { log_exception(e, "accept loop ended with an exception"); });
    impl_->acceptors.push_back(std::move(acceptor));
  }
  impl_->signals = std::make_unique<asio::signal_set>(first, SIGINT, SIGTERM);
  impl_->signals->async_wait([this](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal {} received, stopping", signal);
    stop();
  });
}

void Server::run() {
  for (auto& w : impl_->workers) {
    Worker* worker = w.get();
    worker->thread = std::thread([worker] { worker->ioc.run(); });
  }
  for (auto& w : impl_->workers) w->thread.join();
}

void Server::stop() {
  for (auto& w : impl_->workers) {
    w->guard.reset();
    w->ioc.stop();
  }
}

}  // namespace tresor::server
