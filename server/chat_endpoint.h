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
#include "server/endpoint_support.h"
#include "server/http_types.h"
#include "server/runtime.h"

namespace tresor::server {

// `started` is when the request head arrived: the budget counts from there.
boost::asio::awaitable<void> handle_chat(const Runtime& rt, EndpointServices services, const ControlHeaders& head,
                                         std::string body, providers::Clock::time_point started,
                                         ResponseSink& sink);

}  // namespace tresor::server
