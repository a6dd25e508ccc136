#include "router/failover.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <random>

namespace tresor::router {
namespace asio = boost::asio;

namespace {

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

asio::awaitable<void> sleep_until(Clock::time_point when) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_at(when);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

AttemptRecord record(const config::RouteConfig& route, AttemptOutcome outcome, int status, long long ms) {
  AttemptRecord r;
  r.route = route.id;
  r.outcome = outcome;
  r.http_status = status;
  r.ms = ms;
  return r;
}

// The per-attempt timer: streams must show a first event, non-stream answers a first
// byte, within it; the last candidate gets whatever budget is left.
common::Deadline first_byte_deadline(const FailoverPolicy& p, bool last, Clock::time_point now,
                                     common::Deadline deadline) {
  if (last) return deadline;
  const unsigned seconds =
      p.stream ? p.timeouts->attempt_first_event_seconds : p.timeouts->attempt_first_byte_seconds;
  if (seconds == 0) return deadline;
  return common::earlier_of(deadline, common::Deadline::after(std::chrono::seconds(seconds), now));
}

}  // namespace

AttemptResult attempt_result(const common::UpstreamFailure& failure, const AttemptPlan& plan, bool stream,
                             Clock::time_point now) {
  using Kind = common::UpstreamFailure::Kind;
  using common::TransportError;
  AttemptResult r;
  switch (failure.kind) {
    case Kind::http_status:
      r.outcome = AttemptOutcome::http_status;
      r.http_status = failure.http_status;
      r.upstream_error_code = failure.error_code;
      r.retry_after = failure.retry_after;
      return r;
    case Kind::bad_response:
      r.outcome = AttemptOutcome::bad_response;
      return r;
    case Kind::transport: break;
  }
  switch (failure.transport) {
    case TransportError::connect_failed: r.outcome = AttemptOutcome::connect_failed; break;
    case TransportError::tls_failed: r.outcome = AttemptOutcome::tls_failed; break;
    case TransportError::protocol:
    case TransportError::too_large: r.outcome = AttemptOutcome::bad_response; break;
    case TransportError::timeout:
      // The attempt's own timer fired when it was the earlier clock and the budget is not
      // yet spent; otherwise the request's budget ran out.
      r.outcome = failure.before_first_byte && plan.first_byte_deadline < plan.request_deadline &&
                          !plan.request_deadline.passed(now)
                      ? (stream ? AttemptOutcome::first_event_timeout : AttemptOutcome::first_byte_timeout)
                      : AttemptOutcome::deadline;
      break;
    case TransportError::reset:
    case TransportError::cut:
    case TransportError::none: r.outcome = AttemptOutcome::reset; break;
  }
  return r;
}

std::chrono::milliseconds retry_backoff(unsigned backoff_ms, unsigned retry_number) {
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  const double base = static_cast<double>(backoff_ms) * static_cast<double>(1u << std::min(retry_number - 1, 10u));
  return std::chrono::milliseconds(static_cast<long long>(base * jitter(rng)));
}

asio::awaitable<FailoverResult> run_failover(const std::vector<const config::RouteConfig*>& candidates,
                                             Clock::time_point started, common::Deadline deadline,
                                             const FailoverPolicy& policy, RouteHealth& health,
                                             AttemptRunner& runner) {
  FailoverResult result;
  bool attempted_any = false;
  bool last_was_deadline = false;
  std::optional<Clock::time_point> eligible;  // for a 503's Retry-After

  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& route = *candidates[i];
    const bool last = i + 1 == candidates.size();
    const auto now = Clock::now();
    if (deadline.passed(now)) {
      last_was_deadline = true;
      break;
    }
    const Admission admission = health.admit(route.id, now, *policy.breaker);
    // The last candidate gets one real attempt even with an open breaker: a request
    // never fails only because every breaker is open. A Retry-After hold is the
    // upstream's explicit wish, so it is honoured even then.
    if (admission == Admission::retry_after || (admission == Admission::breaker_open && !last)) {
      const auto outcome = admission == Admission::retry_after ? AttemptOutcome::skipped_retry_after
                                                               : AttemptOutcome::skipped_breaker;
      result.attempts.push_back(record(route, outcome, 0, 0));
      if (auto t = health.eligible_again(route.id); t && (!eligible || *t < *eligible)) eligible = t;
      continue;
    }
    // A half-open probe, or a last candidate let through an open breaker, gets one
    // attempt, not the route's retry budget.
    const unsigned attempts_here =
        admission == Admission::allowed ? policy.retry->attempts_per_route : 1u;

    for (unsigned attempt = 1; attempt <= attempts_here; ++attempt) {
      const auto attempt_start = Clock::now();
      if (deadline.passed(attempt_start)) {
        last_was_deadline = true;
        break;
      }
      AttemptPlan plan;
      plan.route = &route;
      plan.candidate_index = i;
      plan.last_candidate = last;
      plan.first_byte_deadline = first_byte_deadline(policy, last, attempt_start, deadline);
      plan.request_deadline = deadline;
      plan.started = started;
      plan.history = &result.attempts;
      attempted_any = true;
      AttemptResult r = co_await runner.attempt(plan);
      result.attempts.push_back(record(route, r.outcome, r.http_status, ms_since(attempt_start)));

      if (is_route_failure(r.outcome, r.http_status, r.upstream_error_code))
        health.record_failure(route.id, Clock::now(), *policy.breaker);
      else if (r.outcome == AttemptOutcome::ok || r.outcome == AttemptOutcome::http_status)
        health.record_success(route.id);  // it answered: the route is alive

      const Decision decision = classify(r.outcome, r.http_status, r.upstream_error_code);
      last_was_deadline = r.outcome == AttemptOutcome::deadline;
      if (decision == Decision::done) {
        result.kind = FailoverResult::Kind::served;
        co_return result;
      }
      if (decision == Decision::pass_through) {
        result.kind = FailoverResult::Kind::pass_through;
        co_return result;
      }
      if (decision == Decision::stop) break;
      if (decision == Decision::next_route) break;

      // Transient: wait (Retry-After if the upstream gave one we accept, else backoff)
      // and retry here while the route's attempt budget and the deadline allow.
      if (r.retry_after) {
        const auto max = std::chrono::seconds(policy.retry->max_retry_after_seconds);
        if (*r.retry_after > max) {
          // Parked for the upstream's wish, but never past max_route_hold_seconds: a
          // `Retry-After: 999999999` must not take the route away for years.
          const auto hold = std::min(*r.retry_after, std::chrono::seconds(policy.retry->max_route_hold_seconds));
          if (hold.count() > 0) health.hold_until(route.id, Clock::now() + hold);
          break;  // fail over at once
        }
      }
      if (attempt == attempts_here) break;
      // Our own failures may just have opened the breaker: then stop hammering the route.
      if (health.is_open(route.id, Clock::now())) {
        result.attempts.push_back(record(route, AttemptOutcome::skipped_breaker, 0, 0));
        break;
      }
      const auto wait = r.retry_after ? std::chrono::duration_cast<std::chrono::milliseconds>(*r.retry_after)
                                      : retry_backoff(policy.retry->backoff_ms, attempt);
      const auto resume = Clock::now() + wait;
      if (deadline.passed(resume)) break;  // no time to come back here; try the next route
      co_await sleep_until(resume);
    }
    if (last_was_deadline && deadline.passed()) break;
  }

  if (!attempted_any && (last_was_deadline || deadline.passed())) {
    result.kind = FailoverResult::Kind::timed_out;  // the budget was gone before any attempt
    co_return result;
  }
  if (!attempted_any) {
    result.kind = FailoverResult::Kind::no_route;
    if (eligible) {
      const auto wait = std::chrono::duration_cast<std::chrono::seconds>(*eligible - Clock::now()) +
                        std::chrono::seconds(1);
      result.retry_after = std::max(std::chrono::seconds(1), wait);
    }
    co_return result;
  }
  result.kind = last_was_deadline || deadline.passed() ? FailoverResult::Kind::timed_out
                                                             : FailoverResult::Kind::failed;
  // Failed over on a model-specific 4xx (context_length_exceeded) and nothing else
  // served: the client learns the upstream's reason, not a generic 502.
  const auto last_attempt = std::find_if(result.attempts.rbegin(), result.attempts.rend(), [](const auto& a) {
    return a.outcome != AttemptOutcome::skipped_breaker && a.outcome != AttemptOutcome::skipped_retry_after;
  });
  if (result.kind == FailoverResult::Kind::failed && last_attempt != result.attempts.rend() &&
      last_attempt->outcome == AttemptOutcome::http_status && last_attempt->http_status >= 400 &&
      last_attempt->http_status < 500 && last_attempt->http_status != 401 && last_attempt->http_status != 403 &&
      last_attempt->http_status != 408 && last_attempt->http_status != 429)
    result.kind = FailoverResult::Kind::pass_through;
  co_return result;
}

}  // namespace tresor::router
