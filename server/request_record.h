// What one request did, filled in as it runs (session: id, customer, status, bytes;
// endpoints: routes, attempts, upstream wait) and turned at its end into the access log
// line and the metrics. One per request, owned by the session.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"
#include "providers/upstream_client.h"
#include "router/attempts.h"
#include "telemetry/trace_context.h"

namespace tresor::server {

// A stream's pace as its client saw it (issue 20): when the first content reached the
// client, and the gaps between later writes of content, counted straight into the buckets
// of the time-between-tokens histogram so that a long stream costs no allocation.
struct StreamPace {
  // Upper bounds of the gap buckets, in seconds (the last bucket is +Inf).
  static constexpr std::array<double, 12> kGapBounds = {0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                                        0.1,   0.2,  0.4,  0.8,  1.6,  5.0};
  std::optional<providers::Clock::time_point> first_write;  // the first content the client got
  std::optional<providers::Clock::time_point> last_write;
  std::array<uint64_t, kGapBounds.size() + 1> gap_counts{};
  double gap_seconds_sum = 0;
  uint64_t gaps = 0;

  // Content was written to the client at `now`.
  void wrote(providers::Clock::time_point now) {
    if (last_write) {
      const double gap = std::chrono::duration<double>(now - *last_write).count();
      size_t bucket = 0;
      while (bucket < kGapBounds.size() && gap > kGapBounds[bucket]) ++bucket;
      ++gap_counts[bucket];
      gap_seconds_sum += gap;
      ++gaps;
    } else {
      first_write = now;
    }
    last_write = now;
  }
};

// What an answer cost, as billed (EndpointAttempts::bill_and_record).
struct BilledUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool estimated = false;        // no usage from the upstream: estimated from bytes
  int64_t spend_nanos = 0;       // in `currency`; 0 for a route without pricing
  std::string currency;          // the route's pricing currency, empty without pricing
};

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
  // Issue 20 (metrics, traces, status page).
  StreamPace pace;                           // a stream's first content and gaps
  std::optional<BilledUsage> billed;         // set once the answer was billed
  std::string response_model;                // the upstream answer's "model", when read
  std::vector<std::string> finish_reasons;   // each choice's finish_reason, when read
  std::optional<std::string> receipt_id;     // the receipt the answer carries
  // The request's trace (tracing on, inference requests): the client's continued or new.
  std::optional<telemetry::RequestTrace> trace;

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
// upstream_ms, overhead_us, trace_id (tracing on), bytes_in, bytes_out. Never keys, bodies or secrets.
std::string access_log_json(const RequestRecord& r, providers::Clock::time_point now);

}  // namespace tresor::server
