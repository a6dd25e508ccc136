// What one request did, filled in as it runs (session: id, customer, status, bytes;
// endpoints: routes, attempts, upstream wait) and turned at its end into the access log
// line and the metrics. One per request, owned by the session.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"
#include "providers/upstream_client.h"
#include "router/attempts.h"

namespace tresor::server {

struct RequestRecord {
  std::string request_id;         // X-Request-Id, honoured or generated
  std::string method;
  std::string_view endpoint;      // a path template ("/v1/receipts/{id}"), bounded for metrics
  std::string customer;           // after authentication
  unsigned status = 0;            // 0 until an answer (or a stream head) was sent
  bool stream = false;
  bool inference = false;         // chat or transcription: routes, attempts, overhead apply
  std::string requested_route;
  std::string routed_model;
  bool failover = false;
  std::vector<router::AttemptRecord> attempts;
  providers::Clock::duration upstream_wait{};  // upstream I/O and backoff between attempts
  uint64_t bytes_in = 0;          // request body bytes read
  uint64_t bytes_out = 0;         // response body bytes written
  providers::Clock::time_point started{};

  // The router's own time so far: total minus the upstream wait.
  providers::Clock::duration overhead(providers::Clock::time_point now) const {
    const auto total = now - started;
    return total > upstream_wait ? total - upstream_wait : providers::Clock::duration::zero();
  }
};

// X-Request-Id as the client sent it, or a new one (common/ids.h).
using common::request_id_from;

// One JSON object (no newline): time, request_id, method, endpoint, customer, status,
// stream, requested_route, routed_model, failover, attempts, duration_ms,
// upstream_ms, overhead_us, bytes_in, bytes_out. Never keys, bodies or secrets.
std::string access_log_json(const RequestRecord& r, providers::Clock::time_point now);

}  // namespace tresor::server
