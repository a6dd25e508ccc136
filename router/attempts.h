// Attempt outcomes and what the failover loop does with each (spec §3, issue #4).
//
// As in Envoy's retry policy: the decision is a pure function of the outcome
// (`classify`), table-tested; the loop that acts on it (failover.h) is separate.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"

namespace tresor::router {

// One enum feeds the X-Tresor-Attempts header, the access log and metrics labels.
enum class AttemptOutcome {
  ok,
  http_status,          // the upstream answered with a non-success status (see http_status)
  connect_failed,       // DNS, refused, unreachable, connect timeout
  tls_failed,           // handshake or certificate verification
  reset,                // connection reset/closed before a complete answer
  bad_response,         // unparseable HTTP, a 200 that is not a JSON object / event stream
  first_byte_timeout,   // non-stream attempt timer (attempt_first_byte_seconds)
  first_event_timeout,  // stream attempt timer (attempt_first_event_seconds)
  deadline,             // the request's budget ran out during this attempt
  skipped_breaker,      // not attempted: circuit breaker open
  skipped_retry_after,  // not attempted: the upstream asked us to stay away (Retry-After)
  // A stream already committed to the client (events reached it) then failed: the
  // following attempts are recoveries of that same client stream (issue 18).
  stream_cut,           // cut, reset, error event or bad event after the first event
  stream_stalled,       // silence longer than timeouts.stream_idle_seconds mid-stream
  recovery_diverged,    // a replay's text differed from what the client had: in-band error
  recovery_skipped,     // not attempted: this route may not continue the stream (its stream_recovery mode)
  hedged_cancelled,     // a hedged attempt that lost the race to a first event, cancelled
};

struct AttemptRecord {
  std::string route;
  AttemptOutcome outcome = AttemptOutcome::ok;
  int http_status = 0;
  long long ms = 0;
  common::Clock::time_point started{};  // unset for an attempt that was skipped
  uint64_t runner_tag = 0;              // AttemptResult::runner_tag (the trace span id)
};

// Whether the upstream was tried at all: false for an attempt skipped because of a breaker,
// a Retry-After or the route's stream_recovery mode (such a record has no timings).
bool was_attempted(AttemptOutcome outcome);
// A stream already committed to the client broke in this attempt (cut or stalled): what a
// recovery follows.
bool stream_broke_after_commit(AttemptOutcome outcome);
// An attempt that failed a client's committed stream: it broke, or, as a recovery, its
// replay diverged from what the client already had.
bool stream_failed_after_commit(AttemptOutcome outcome);

// "route=outcome;ms, …" — outcome is `ok`, the HTTP status, or the enum's name.
std::string format_attempts(const std::vector<AttemptRecord>& attempts);
std::string_view outcome_name(AttemptOutcome outcome);

enum class Decision {
  done,              // served (or the stream was committed to the client)
  retry_same_route,  // transient: retry here while the route's attempt budget lasts
  next_route,        // fail over at once
  pass_through,      // the request itself is wrong: hand the upstream's 4xx to the client
  stop,              // the deadline is gone: nothing more can be tried
};

// Pure: what the loop should do after an attempt ended with `outcome`.
Decision classify(AttemptOutcome outcome, int http_status, std::string_view upstream_error_code);

// Whether the outcome says the route is unhealthy (feeds the circuit breaker).
bool is_route_failure(AttemptOutcome outcome, int http_status, std::string_view upstream_error_code);

}  // namespace tresor::router
