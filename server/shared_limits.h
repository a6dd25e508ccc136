// Rate limits and credit checks when several replicas share one store (Redis): the
// counters and the spend live in the store, reached through the store's thread so no
// I/O thread waits on the network.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>

#include "config/config.h"
#include "receipts/receipt_service.h"
#include "server/rate_limiter.h"

namespace tresor::server {

// Same contract as RateLimiter::admit, counted in the shared store (fixed UTC windows;
// a refused request gives its increments back).
boost::asio::awaitable<RateDecision> shared_rate_admit(receipts::ReceiptService& service,
                                                       const config::ApiKeyConfig& key,
                                                       std::chrono::system_clock::time_point now);

// False when the customer has a credit and the spend all replicas recorded uses it up.
boost::asio::awaitable<bool> shared_can_spend(receipts::ReceiptService& service, const config::Config& cfg,
                                              const std::string& customer);

// The customer's spend per route as every replica recorded it (GET /v1/usage).
boost::asio::awaitable<std::optional<std::vector<receipts::SpendEntry>>> shared_spend(receipts::ReceiptService& service,
                                                                                      const std::string& customer);

}  // namespace tresor::server
