// GET /status (one HTML page, embedded: no CDN, no framework) and GET /status/data (its
// JSON snapshot, polled every second by the page), behind status.admin_key.
//
// The key comes as HTTP Basic (any user name, the key as password: a browser prompts for
// it on the 401's WWW-Authenticate) or as Authorization: Bearer <key> (curl, scripts); it
// is compared in constant time (digests of both sides) and never logged. Without
// status.admin_key both paths answer 404, as if they did not exist.
#pragma once

#include <string_view>

#include "config/config.h"
#include "router/route_health.h"
#include "server/http_types.h"
#include "server/status_board.h"

namespace tresor::server {

inline constexpr std::string_view kStatusPath = "/status";
inline constexpr std::string_view kStatusDataPath = "/status/data";

enum class StatusAuth { ok, missing, invalid };
// Whether the request's Authorization header carries `admin_key` (Basic password or Bearer).
StatusAuth check_status_auth(const RequestHead& head, std::string_view admin_key);

// The whole answer to GET/HEAD /status (`data` false) or /status/data (`data` true).
Response status_response(bool data, const RequestHead& head, const config::Config& cfg, StatusBoard& board,
                         const router::RouteHealth& health, const receipts::TransparencyLog* log,
                         providers::Clock::time_point now);

// The embedded page (tests check it references nothing outside the gateway).
std::string_view status_page_html();

}  // namespace tresor::server
