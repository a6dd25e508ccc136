// Attempt outcomes (spec §3.2, issue #4): what the failover loop does with each outcome,
// which outcomes count against a route's circuit breaker, and the X-Tresor-Attempts text.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "router/attempts.h"

using tresor::router::AttemptOutcome;
using tresor::router::AttemptRecord;
using tresor::router::classify;
using tresor::router::Decision;
using tresor::router::format_attempts;
using tresor::router::is_route_failure;
using tresor::router::outcome_name;

namespace {

struct Row {
  AttemptOutcome outcome;
  int status;
  std::string_view code;
  Decision decision;
  bool route_failure;
};

const char* decision_name(Decision d) {
  switch (d) {
    case Decision::done: return "done";
    case Decision::retry_same_route: return "retry_same_route";
    case Decision::next_route: return "next_route";
    case Decision::pass_through: return "pass_through";
    case Decision::stop: return "stop";
  }
  return "?";
}

constexpr std::string_view kCtx = "context_length_exceeded";

// One row per outcome, and one per upstream status (spec §3.2: fail over on connection
// and TLS errors, 5xx, 429 and timeouts before the first byte; pass other 4xx through,
// except 408 and 429; 400 context_length_exceeded fails over; the router's own
// credentials refused (401/403) is a route problem).
const std::vector<Row> kTable = {
    // outcome                              status code   decision                    route failure
    {AttemptOutcome::ok, 0, "", Decision::done, false},
    {AttemptOutcome::connect_failed, 0, "", Decision::retry_same_route, true},
    {AttemptOutcome::tls_failed, 0, "", Decision::retry_same_route, true},
    {AttemptOutcome::reset, 0, "", Decision::retry_same_route, true},
    {AttemptOutcome::bad_response, 0, "", Decision::next_route, true},
    {AttemptOutcome::first_byte_timeout, 0, "", Decision::next_route, true},
    {AttemptOutcome::first_event_timeout, 0, "", Decision::next_route, true},
    // The client's budget ran out: nothing more to try, and not the route's fault.
    {AttemptOutcome::deadline, 0, "", Decision::stop, false},
    // Not attempted at all: the loop moves on; a skip says nothing new about the route.
    {AttemptOutcome::skipped_breaker, 0, "", Decision::next_route, false},
    {AttemptOutcome::skipped_retry_after, 0, "", Decision::next_route, false},
    // Issue 18: a committed stream that failed is continued on the same route's retries
    // first, and the failure counts against the route; a route that may not continue it
    // (recovery_skipped) and a hedge that lost are no news about the route's health; a
    // diverged replay ended the client's stream (the model's nondeterminism, not the route).
    {AttemptOutcome::stream_cut, 0, "", Decision::retry_same_route, true},
    {AttemptOutcome::stream_stalled, 0, "", Decision::retry_same_route, true},
    {AttemptOutcome::recovery_diverged, 0, "", Decision::stop, false},
    {AttemptOutcome::recovery_skipped, 0, "", Decision::next_route, false},
    {AttemptOutcome::hedged_cancelled, 0, "", Decision::next_route, false},

    {AttemptOutcome::http_status, 400, "", Decision::pass_through, false},
    {AttemptOutcome::http_status, 400, "invalid_request_error", Decision::pass_through, false},
    {AttemptOutcome::http_status, 400, kCtx, Decision::next_route, false},
    {AttemptOutcome::http_status, 401, "", Decision::next_route, true},
    {AttemptOutcome::http_status, 403, "", Decision::next_route, true},
    {AttemptOutcome::http_status, 404, "", Decision::pass_through, false},
    {AttemptOutcome::http_status, 408, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 409, "", Decision::pass_through, false},
    {AttemptOutcome::http_status, 422, "", Decision::pass_through, false},
    {AttemptOutcome::http_status, 429, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 500, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 501, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 502, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 503, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 504, "", Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 599, "", Decision::retry_same_route, true},
    // The error code only matters for a 400.
    {AttemptOutcome::http_status, 500, kCtx, Decision::retry_same_route, true},
    {AttemptOutcome::http_status, 401, kCtx, Decision::next_route, true},
    {AttemptOutcome::http_status, 404, kCtx, Decision::pass_through, false},
    // 3xx: nothing a client can use.
    {AttemptOutcome::http_status, 302, "", Decision::next_route, true},
};

}  // namespace

TEST_CASE("attempts: classify() decides per outcome and per upstream status", "[router][attempts]") {
  for (const auto& row : kTable) {
    INFO("outcome " << outcome_name(row.outcome) << ", status " << row.status << ", code '" << row.code
                    << "', expected " << decision_name(row.decision));
    const Decision got = classify(row.outcome, row.status, row.code);
    INFO("got " << decision_name(got));
    CHECK(got == row.decision);
  }
}

TEST_CASE("attempts: is_route_failure() feeds the breaker only with route problems", "[router][attempts]") {
  for (const auto& row : kTable) {
    INFO("outcome " << outcome_name(row.outcome) << ", status " << row.status << ", code '" << row.code << "'");
    CHECK(is_route_failure(row.outcome, row.status, row.code) == row.route_failure);
  }
}

TEST_CASE("attempts: the decision of a non-HTTP outcome ignores status and error code", "[router][attempts]") {
  CHECK(classify(AttemptOutcome::connect_failed, 400, kCtx) == Decision::retry_same_route);
  CHECK(classify(AttemptOutcome::deadline, 500, "") == Decision::stop);
  CHECK(classify(AttemptOutcome::ok, 503, "") == Decision::done);
  CHECK(classify(AttemptOutcome::first_event_timeout, 400, "") == Decision::next_route);
  CHECK_FALSE(is_route_failure(AttemptOutcome::deadline, 503, ""));
  CHECK_FALSE(is_route_failure(AttemptOutcome::skipped_breaker, 503, ""));
}

TEST_CASE("attempts: outcome_name() spells every outcome", "[router][attempts]") {
  CHECK(outcome_name(AttemptOutcome::ok) == "ok");
  CHECK(outcome_name(AttemptOutcome::http_status) == "http_status");
  CHECK(outcome_name(AttemptOutcome::connect_failed) == "connect_failed");
  CHECK(outcome_name(AttemptOutcome::tls_failed) == "tls_failed");
  CHECK(outcome_name(AttemptOutcome::reset) == "reset");
  CHECK(outcome_name(AttemptOutcome::bad_response) == "bad_response");
  CHECK(outcome_name(AttemptOutcome::first_byte_timeout) == "first_byte_timeout");
  CHECK(outcome_name(AttemptOutcome::first_event_timeout) == "first_event_timeout");
  CHECK(outcome_name(AttemptOutcome::deadline) == "deadline");
  CHECK(outcome_name(AttemptOutcome::skipped_breaker) == "skipped_breaker");
  CHECK(outcome_name(AttemptOutcome::skipped_retry_after) == "skipped_retry_after");
  CHECK(outcome_name(AttemptOutcome::stream_cut) == "stream_cut");
  CHECK(outcome_name(AttemptOutcome::stream_stalled) == "stream_stalled");
  CHECK(outcome_name(AttemptOutcome::recovery_diverged) == "recovery_diverged");
  CHECK(outcome_name(AttemptOutcome::recovery_skipped) == "recovery_skipped");
  CHECK(outcome_name(AttemptOutcome::hedged_cancelled) == "hedged_cancelled");
}

namespace {
AttemptRecord rec(std::string route, AttemptOutcome outcome, int status, long long ms) {
  AttemptRecord r;
  r.route = std::move(route);
  r.outcome = outcome;
  r.http_status = status;
  r.ms = ms;
  return r;
}
}  // namespace

TEST_CASE("attempts: format_attempts() writes route=outcome;ms joined by ', '", "[router][attempts]") {
  SECTION("no attempts: empty") { CHECK(format_attempts({}) == ""); }
  SECTION("one success") { CHECK(format_attempts({rec("a", AttemptOutcome::ok, 0, 41)}) == "a=ok;41"); }
  SECTION("an HTTP status is written as the number, then the retry's success") {
    CHECK(format_attempts({rec("a", AttemptOutcome::http_status, 503, 12), rec("a", AttemptOutcome::ok, 0, 41)}) ==
          "a=503;12, a=ok;41");
  }
  SECTION("compound route ids and skips") {
    CHECK(format_attempts({rec("eu/p1/k", AttemptOutcome::skipped_breaker, 0, 0),
                           rec("us/p2/k", AttemptOutcome::http_status, 400, 7),
                           rec("eu/p3/k", AttemptOutcome::skipped_retry_after, 0, 0)}) ==
          "eu/p1/k=skipped_breaker;0, us/p2/k=400;7, eu/p3/k=skipped_retry_after;0");
  }
  SECTION("every non-HTTP outcome by name") {
    const std::vector<AttemptRecord> all = {
        rec("r", AttemptOutcome::connect_failed, 0, 1),     rec("r", AttemptOutcome::tls_failed, 0, 2),
        rec("r", AttemptOutcome::reset, 0, 3),              rec("r", AttemptOutcome::bad_response, 0, 4),
        rec("r", AttemptOutcome::first_byte_timeout, 0, 5), rec("r", AttemptOutcome::first_event_timeout, 0, 6),
        rec("r", AttemptOutcome::deadline, 0, 7),           rec("r", AttemptOutcome::skipped_breaker, 0, 0),
        rec("r", AttemptOutcome::skipped_retry_after, 0, 0), rec("r", AttemptOutcome::ok, 0, 180000),
    };
    CHECK(format_attempts(all) ==
          "r=connect_failed;1, r=tls_failed;2, r=reset;3, r=bad_response;4, r=first_byte_timeout;5, "
          "r=first_event_timeout;6, r=deadline;7, r=skipped_breaker;0, r=skipped_retry_after;0, r=ok;180000");
  }
  SECTION("a non-HTTP outcome ignores a stray status") {
    CHECK(format_attempts({rec("a", AttemptOutcome::reset, 502, 9)}) == "a=reset;9");
  }
  SECTION("a recovered stream's trail (spec 18: eu/a/m=ok;120, eu/a/m=stream_cut;300, eu/b/m=ok;80)") {
    CHECK(format_attempts({rec("eu/a/m", AttemptOutcome::stream_cut, 0, 300), rec("eu/b/m", AttemptOutcome::ok, 0, 80),
                           rec("eu/a/m", AttemptOutcome::stream_stalled, 0, 5),
                           rec("eu/b/m", AttemptOutcome::recovery_diverged, 0, 6),
                           rec("eu/c/m", AttemptOutcome::recovery_skipped, 0, 0),
                           rec("eu/d/m", AttemptOutcome::hedged_cancelled, 0, 40)}) ==
          "eu/a/m=stream_cut;300, eu/b/m=ok;80, eu/a/m=stream_stalled;5, eu/b/m=recovery_diverged;6, "
          "eu/c/m=recovery_skipped;0, eu/d/m=hedged_cancelled;40");
  }
}
