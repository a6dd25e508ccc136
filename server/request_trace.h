// The spans of one finished inference request, built from its RequestRecord after the
// answer is out (nothing is timed twice, and the request path does no tracing work but
// keeping ids): a SERVER span for the request and a CLIENT span per upstream attempt, with
// the OpenTelemetry GenAI attributes (gen_ai.*, server.*, http.*, error.type) and the
// gateway's own under `tresor.` (README "Traces" lists them all).
#pragma once

#include <chrono>
#include <vector>

#include "config/config.h"
#include "server/request_record.h"
#include "telemetry/span.h"

namespace tresor::server {

// Why an attempt ran (tresor.attempt.reason): the first, a retry on the same route, a
// failover to the next, a hedge started beside a slow one, or a recovery of a stream that
// failed after its 200.
std::string_view attempt_reason(const std::vector<router::AttemptRecord>& attempts, size_t i);

// How many spans request_spans makes of the request: its own plus one per attempt that
// has a span. Counted before building them, so that a full export queue costs nothing.
size_t request_span_count(const RequestRecord& r);

// Empty when the request has no trace or it is not sampled.
std::vector<telemetry::Span> request_spans(const RequestRecord& r, const config::Config& cfg,
                                           providers::Clock::time_point now,
                                           std::chrono::system_clock::time_point wall_now);

}  // namespace tresor::server
