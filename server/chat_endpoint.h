// POST /v1/chat/completions: validate → resolve candidates → failover loop (router/)
// with one upstream exchange per attempt → JSON or SSE back with the `tresor` object.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <variant>

#include "receipts/receipt_service.h"
#include "router/route_health.h"
#include "server/api_error.h"
#include "server/credit_ledger.h"
#include "server/http_types.h"
#include "server/runtime.h"

namespace tresor::server {

// What the header phase settles before any body byte is read.
struct ChatHead {
  const config::ApiKeyConfig* key = nullptr;
  std::chrono::seconds budget{0};  // X-Tresor-Timeout-Seconds or the default
  bool receipt_opt_out = false;    // X-Tresor-Receipt: false|0
  std::optional<std::string> nonce;  // X-Tresor-Nonce, copied into the receipt
};

std::variant<ChatHead, ApiError> check_chat_head(const Runtime& rt, const RequestHead& head,
                                                 const config::ApiKeyConfig* key);

// Process-wide state the chat endpoint shares across workers and reloads.
struct ChatServices {
  providers::UpstreamClient& upstream;  // this worker's
  router::RouteHealth& health;          // the process's
  receipts::ReceiptService& receipts;   // the process's
  CreditLedger& credits;                // the process's
};

// `started` is when the request head arrived: the budget counts from there.
boost::asio::awaitable<void> handle_chat(const Runtime& rt, ChatServices services, const ChatHead& head,
                                         std::string body, providers::Clock::time_point started,
                                         ResponseSink& sink);

}  // namespace tresor::server
