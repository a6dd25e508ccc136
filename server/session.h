// One client connection (HTTP/1.1, keep-alive), one request after another, each in the
// phases head → route → admit (key, limits, credit) → body → dispatch, as one coroutine.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <unordered_set>

#include "accounts/accounts.h"
#include "providers/upstream_client.h"
#include "receipts/receipt_service.h"
#include "router/route_health.h"
#include "server/attestation.h"
#include "server/file_io_pool.h"
#include "server/metrics.h"
#include "server/tracer.h"
#include "server/runtime.h"
#include "server/status_board.h"
#include "storage/store_breaker.h"
#include "server/upload_spool.h"

namespace tresor::server {

// The process's life as sessions see it: draining (SIGTERM) and how many connections are
// still open (the drain waits for them).
struct Lifecycle {
  std::atomic<bool> draining{false};  // /readyz 503; every answer closes its connection
  std::atomic<bool> closing{false};   // listeners closed: idle connections close too
  std::atomic<size_t> open_sessions{0};
};

// A session as the server's drain sees it.
class SessionControl {
 public:
  // Called on the session's own worker thread: an idle connection (waiting for its next
  // request) closes now; a busy one closes after its current answer.
  virtual void drain() = 0;
  // Since when the session has been waiting for a request head (a new connection's first,
  // or the next one on a keep-alive connection, trickled bytes included); nullopt while
  // it serves a request. server.max_connections closes the one idle longest.
  virtual std::optional<std::chrono::steady_clock::time_point> idle_since() const = 0;

 protected:
  ~SessionControl() = default;
};

// The open sessions of one worker; only touched on that worker's thread.
using SessionRegistry = std::unordered_set<SessionControl*>;

// What a session needs besides its socket: process-wide services and its worker's
// upstream client.
struct SessionServices {
  RuntimeHolder& runtime;
  providers::UpstreamClient& upstream;  // the worker's
  router::RouteHealth& health;
  receipts::ReceiptService& receipts;
  accounts::Accounts& accounts;
  FileIoPool& file_io;  // blocking file work (upload spools)
  SpoolBudget& spool;   // server.spool_max_bytes, shared by every upload in flight
  Metrics& metrics;
  Lifecycle& lifecycle;
  const RouterAttestation& attestation;
  SessionRegistry& registry;  // the worker's
  const std::string& jwks;  // the JWKS document, built at startup
  boost::asio::ssl::context* tls = nullptr;  // HTTPS listeners (server.tls), else plain HTTP
  size_t max_sessions = 0;  // this worker's share of server.max_connections (0: no cap)
  // The shared store's breaker (Redis); null for a local SQLite store, which has no outage.
  const storage::StoreBreaker* store_breaker = nullptr;
  // store.outage as the store was opened with (a reload needs a restart to change it).
  config::StoreOutagePolicy outage;
  // The receipts transparency log; null with log.enabled: false.
  const receipts::TransparencyLog* log = nullptr;
  // Traces (tracing.otlp_endpoint); null when tracing is off.
  Tracer* tracer = nullptr;
  // The status page's rolling windows (GET /status); process-wide.
  StatusBoard* status = nullptr;
};

// Makes room for one more connection on a worker holding `max_sessions` or more: closes
// the connection idle longest (nginx reuses its oldest keep-alive connection the same
// way). False when every connection is busy. Runs on the worker's thread.
enum class Admission { admitted, idle_closed, refused };
Admission make_room(SessionRegistry& registry, size_t max_sessions);

// Serves a new connection, or (at max_sessions with none idle) answers it 503 server_busy
// with Connection: close (plain HTTP) or just closes it (HTTPS: no handshake spent on it).
boost::asio::awaitable<void> run_session(boost::asio::ip::tcp::socket socket, SessionServices services);

}  // namespace tresor::server
