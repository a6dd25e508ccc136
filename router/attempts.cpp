#include "router/attempts.h"

namespace tresor::router {

bool was_attempted(AttemptOutcome outcome) {
  return outcome != AttemptOutcome::skipped_breaker && outcome != AttemptOutcome::skipped_retry_after &&
         outcome != AttemptOutcome::recovery_skipped;
}

bool stream_broke_after_commit(AttemptOutcome outcome) {
  return outcome == AttemptOutcome::stream_cut || outcome == AttemptOutcome::stream_stalled;
}

bool stream_failed_after_commit(AttemptOutcome outcome) {
  return stream_broke_after_commit(outcome) || outcome == AttemptOutcome::recovery_diverged;
}

std::string_view outcome_name(AttemptOutcome outcome) {
  switch (outcome) {
    case AttemptOutcome::ok: return "ok";
    case AttemptOutcome::http_status: return "http_status";
    case AttemptOutcome::connect_failed: return "connect_failed";
    case AttemptOutcome::tls_failed: return "tls_failed";
    case AttemptOutcome::reset: return "reset";
    case AttemptOutcome::bad_response: return "bad_response";
    case AttemptOutcome::first_byte_timeout: return "first_byte_timeout";
    case AttemptOutcome::first_event_timeout: return "first_event_timeout";
    case AttemptOutcome::deadline: return "deadline";
    case AttemptOutcome::skipped_breaker: return "skipped_breaker";
    case AttemptOutcome::skipped_retry_after: return "skipped_retry_after";
    case AttemptOutcome::stream_cut: return "stream_cut";
    case AttemptOutcome::stream_stalled: return "stream_stalled";
    case AttemptOutcome::recovery_diverged: return "recovery_diverged";
    case AttemptOutcome::recovery_skipped: return "recovery_skipped";
    case AttemptOutcome::hedged_cancelled: return "hedged_cancelled";
  }
  return "unknown";
}

std::string format_attempts(const std::vector<AttemptRecord>& attempts) {
  std::string out;
  for (const auto& a : attempts) {
    if (!out.empty()) out += ", ";
    out += a.route;
    out += '=';
    if (a.outcome == AttemptOutcome::http_status) out += std::to_string(a.http_status);
    else out += outcome_name(a.outcome);
    out += ';';
    out += std::to_string(a.ms);
  }
  return out;
}

namespace {
bool transient_status(int s) { return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504; }
}  // namespace

Decision classify(AttemptOutcome outcome, int http_status, std::string_view upstream_error_code) {
  switch (outcome) {
    case AttemptOutcome::ok: return Decision::done;
    case AttemptOutcome::connect_failed:
    case AttemptOutcome::tls_failed:
    case AttemptOutcome::reset:
    // A stream that failed after its first event is continued on the same route's retry
    // budget first, then the next candidates (the recovery order of issue 18).
    case AttemptOutcome::stream_cut:
    case AttemptOutcome::stream_stalled: return Decision::retry_same_route;
    case AttemptOutcome::recovery_skipped:
    case AttemptOutcome::hedged_cancelled: return Decision::next_route;
    // The client's stream has ended with an in-band error: nothing more to try.
    case AttemptOutcome::recovery_diverged: return Decision::stop;
    case AttemptOutcome::bad_response:
    case AttemptOutcome::first_byte_timeout:
    case AttemptOutcome::first_event_timeout:
    case AttemptOutcome::skipped_breaker:
    case AttemptOutcome::skipped_retry_after: return Decision::next_route;
    case AttemptOutcome::deadline: return Decision::stop;
    case AttemptOutcome::http_status: break;
  }
  if (transient_status(http_status) || http_status >= 500) return Decision::retry_same_route;
  // Another route's model may have a larger context window.
  if (http_status == 400 && upstream_error_code == "context_length_exceeded") return Decision::next_route;
  // The provider refused the router's own credentials: a route problem, not the client's.
  if (http_status == 401 || http_status == 403) return Decision::next_route;
  if (http_status >= 400) return Decision::pass_through;
  return Decision::next_route;  // 1xx/3xx: nothing a client can use
}

bool is_route_failure(AttemptOutcome outcome, int http_status, std::string_view upstream_error_code) {
  const Decision d = classify(outcome, http_status, upstream_error_code);
  if (d == Decision::done || d == Decision::pass_through) return false;
  if (outcome == AttemptOutcome::skipped_breaker || outcome == AttemptOutcome::skipped_retry_after ||
      outcome == AttemptOutcome::recovery_skipped || outcome == AttemptOutcome::hedged_cancelled)
    return false;
  // A replay that differs is the model's nondeterminism, not a broken route.
  if (outcome == AttemptOutcome::recovery_diverged) return false;
  if (outcome == AttemptOutcome::http_status && http_status == 400) return false;  // context length: healthy route
  // The client's own budget ran out: with a short X-Tresor-Timeout-Seconds a healthy but
  // slow route would otherwise be tripped for everyone.
  if (outcome == AttemptOutcome::deadline) return false;
  return true;
}

}  // namespace tresor::router
