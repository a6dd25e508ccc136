// One client connection (HTTP/1.1, keep-alive): read head → auth → limits → body →
// handler → write, in that order, as one coroutine.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "providers/file_io_pool.h"
#include "providers/upstream_client.h"
#include "receipts/receipt_service.h"
#include "router/route_health.h"
#include "server/credit_ledger.h"
#include "server/rate_limiter.h"
#include "server/runtime.h"

namespace tresor::server {

// What a session needs besides its socket: process-wide services and its worker's
// upstream client.
struct SessionServices {
  RuntimeHolder& runtime;
  providers::UpstreamClient& upstream;  // the worker's
  router::RouteHealth& health;
  receipts::ReceiptService& receipts;
  RateLimiter& limiter;
  CreditLedger& credits;
  providers::FileIoPool& file_io;  // blocking file work (upload spools)
  const std::string& jwks;  // the JWKS document, built at startup
};

boost::asio::awaitable<void> run_session(boost::asio::ip::tcp::socket socket, SessionServices services);

}  // namespace tresor::server
