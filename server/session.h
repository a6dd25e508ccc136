// One client connection (HTTP/1.1, keep-alive): read head → auth → limits → body →
// handler → write, in that order, as one coroutine.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "providers/upstream_client.h"
#include "router/route_health.h"
#include "server/runtime.h"

namespace tresor::server {

boost::asio::awaitable<void> run_session(boost::asio::ip::tcp::socket socket, RuntimeHolder& runtime,
                                         providers::UpstreamClient& upstream, router::RouteHealth& health);

}  // namespace tresor::server
