#include "router/failover.h"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
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

// Notes one finished attempt: the trail, and the route's health.
void note_attempt(FailoverResult& result, const config::RouteConfig& route, const AttemptResult& r,
                  Clock::time_point attempt_start, const FailoverPolicy& policy, RouteHealth& health) {
  result.attempts.push_back(record(route, r.outcome, r.http_status, ms_since(attempt_start)));
  result.attempts.back().started = attempt_start;
  result.attempts.back().runner_tag = r.runner_tag;
  if (is_route_failure(r.outcome, r.http_status, r.upstream_error_code))
    health.record_failure(route.id, Clock::now(), *policy.breaker);
  else if (r.outcome == AttemptOutcome::ok || r.outcome == AttemptOutcome::http_status)
    health.record_success(route.id);  // it answered: the route is alive
}

AttemptPlan plan_for(const std::vector<const config::RouteConfig*>& candidates, size_t i, Clock::time_point started,
                     common::Deadline deadline, const FailoverPolicy& policy, const FailoverResult& result) {
  AttemptPlan plan;
  plan.route = candidates[i];
  plan.candidate_index = i;
  plan.last_candidate = i + 1 == candidates.size();
  plan.first_byte_deadline = first_byte_deadline(policy, plan.last_candidate, Clock::now(), deadline);
  plan.request_deadline = deadline;
  plan.started = started;
  plan.history = &result.attempts;
  return plan;
}

// What a hedged pair did: the primary's result, and the hedge's if it was started.
struct HedgedPair {
  int winner = -1;  // the slot that committed (0 primary, 1 hedge), -1: neither
  AttemptResult primary;
  std::optional<AttemptResult> hedge;
  Clock::time_point hedge_start{};  // with `hedge`
};

struct HedgeState {
  HedgeRace race;
  bool primary_done = false;
  asio::steady_timer* hedge_wait = nullptr;
};

// A cancelled attempt must finish through its own error paths (which close its upstream
// connection and give its pool slot back), not by an exception from its next co_await.
asio::awaitable<AttemptResult> primary_branch(AttemptRunner& runner, const AttemptPlan& plan, HedgeState& state) {
  co_await asio::this_coro::throw_if_cancelled(false);
  AttemptResult r = co_await runner.attempt(plan);
  state.primary_done = true;
  if (state.hedge_wait) state.hedge_wait->cancel();  // the hedge need not start any more
  if (plan.lost_race()) r.outcome = AttemptOutcome::hedged_cancelled;
  co_return r;
}

asio::awaitable<std::optional<AttemptResult>> hedge_branch(AttemptRunner& runner, AttemptPlan& plan,
                                                           const FailoverPolicy& policy,
                                                           std::chrono::milliseconds delay, HedgeState& state) {
  co_await asio::this_coro::throw_if_cancelled(false);
  asio::steady_timer wait(co_await asio::this_coro::executor);
  wait.expires_after(delay);
  state.hedge_wait = &wait;
  boost::system::error_code ec;
  co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  state.hedge_wait = nullptr;
  if (state.primary_done || state.race.winner() >= 0 || plan.request_deadline.passed())
    co_return std::nullopt;  // the primary ended (or committed) first: no hedge
  const auto start = Clock::now();
  state.race.runners[1].started = start;
  // Its own first-event timer runs from its own start.
  plan.first_byte_deadline = first_byte_deadline(policy, plan.last_candidate, start, plan.request_deadline);
  AttemptResult r = co_await runner.attempt(plan);
  if (plan.lost_race()) r.outcome = AttemptOutcome::hedged_cancelled;
  co_return r;
}

// Runs `primary`, and `hedge` beside it once `delay` has passed without the primary
// ending or committing. Both run on this coroutine's executor (no threads).
asio::awaitable<HedgedPair> run_hedged(AttemptRunner& runner, AttemptPlan& primary, AttemptPlan& hedge,
                                       const FailoverPolicy& policy, std::chrono::milliseconds delay) {
  HedgeState state;
  primary.race = &state.race;
  primary.race_slot = 0;
  hedge.race = &state.race;
  hedge.race_slot = 1;
  state.race.runners[0] = HedgeRace::Runner{primary.route->id, Clock::now()};
  state.race.runners[1].route = hedge.route->id;
  HedgedPair pair;
  const auto ex = co_await asio::this_coro::executor;
  // Both branches report here; this coroutine waits on `both_done` until they have. Each
  // branch's completion handler carries its slot of the race, so the race can cancel it.
  asio::steady_timer both_done(ex, Clock::time_point::max());
  int running = 2;
  bool primary_threw = false;
  bool hedge_threw = false;
  const auto finished = [&] {
    if (--running == 0) both_done.cancel();
  };
  asio::co_spawn(ex, primary_branch(runner, primary, state),
                 asio::bind_cancellation_slot(state.race.signal(0).slot(),
                                              [&](std::exception_ptr e, AttemptResult r) {
                                                primary_threw = e != nullptr;
                                                pair.primary = r;
                                                finished();
                                              }));
  asio::co_spawn(ex, hedge_branch(runner, hedge, policy, delay, state),
                 asio::bind_cancellation_slot(state.race.signal(1).slot(),
                                              [&](std::exception_ptr e, std::optional<AttemptResult> r) {
                                                hedge_threw = e != nullptr;
                                                pair.hedge = r;
                                                finished();
                                              }));
  while (running > 0) {
    boost::system::error_code ec;
    co_await both_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (primary_threw) pair.primary.outcome = AttemptOutcome::hedged_cancelled;
  if (const auto& started = state.race.runners[1].started) {
    pair.hedge_start = *started;
    if (hedge_threw) {
      AttemptResult lost;
      lost.outcome = AttemptOutcome::hedged_cancelled;
      pair.hedge = lost;
    }
  }
  pair.winner = state.race.winner();
  primary.race = nullptr;
  hedge.race = nullptr;
  co_return pair;
}

}  // namespace

bool HedgeRace::claim(int slot) {
  if (winner_ >= 0) return winner_ == slot;
  winner_ = slot;
  cancel_[1 - slot].emit(boost::asio::cancellation_type::terminal);
  return true;
}

std::optional<std::chrono::milliseconds> hedge_delay(const FailoverPolicy& policy, const config::RouteConfig& route) {
  std::optional<unsigned> ms = policy.hedge_after_ms;
  if (!ms) ms = route.hedge_after_ms;
  if (!ms && policy.routing) ms = policy.routing->hedge_after_ms;
  if (!ms || *ms == 0) return std::nullopt;
  return std::chrono::milliseconds(*ms);
}

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

  bool committed = false;                // a stream reached the client: later attempts recover it
  std::optional<size_t> hedged_index;    // a candidate already tried as a hedge (and failed)
  std::optional<size_t> hedge_winner;    // a candidate whose first attempt was a winning hedge

  for (size_t i = 0; i < candidates.size(); ++i) {
    if (hedged_index == i) continue;
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

    // A winning hedge was this route's first attempt: its recoveries get the rest.
    const unsigned first_attempt = hedge_winner == i ? 2u : 1u;
    for (unsigned attempt = first_attempt; attempt <= attempts_here; ++attempt) {
      auto attempt_start = Clock::now();
      if (deadline.passed(attempt_start)) {
        last_was_deadline = true;
        break;
      }
      AttemptPlan plan = plan_for(candidates, i, started, deadline, policy, result);
      attempted_any = true;
      AttemptResult r;
      // Hedging: the route's first attempt, before anything is committed, when a next
      // candidate exists and may be tried now.
      const auto delay = hedge_delay(policy, route);
      const bool hedge = delay && attempt == 1 && !committed && !last &&
                         health.admit(candidates[i + 1]->id, attempt_start, *policy.breaker) == Admission::allowed;
      HedgedPair pair;  // pair.hedge: the hedge's result when it was started (and did not win)
      if (hedge) {
        AttemptPlan second = plan_for(candidates, i + 1, started, deadline, policy, result);
        pair = co_await run_hedged(runner, plan, second, policy, *delay);
        r = pair.primary;
        if (pair.hedge) {
          const AttemptResult& h = *pair.hedge;
          // The hedge committed: it won, whether the primary was cancelled or had
          // already failed on its own.
          if (pair.winner == 1) {
            // The hedge won: its route carries on from here (recoveries included).
            result.hedge = FailoverResult::Hedge::won;
            note_attempt(result, route, r, attempt_start, policy, health);
            note_attempt(result, *candidates[i + 1], h, pair.hedge_start, policy, health);
            committed = committed || h.committed;
            if (classify(h.outcome, h.http_status, h.upstream_error_code) == Decision::done || h.ended) {
              result.kind = FailoverResult::Kind::served;
              co_return result;
            }
            hedge_winner = i + 1;
            break;  // the next outer step is candidate i + 1: the recoveries of its stream
          }
          result.hedge = h.outcome == AttemptOutcome::hedged_cancelled ? FailoverResult::Hedge::lost
                                                                        : FailoverResult::Hedge::failed;
          if (h.outcome != AttemptOutcome::hedged_cancelled) hedged_index = i + 1;  // tried already
        }
      } else {
        r = co_await runner.attempt(plan);
      }
      note_attempt(result, route, r, attempt_start, policy, health);
      if (pair.hedge) note_attempt(result, *candidates[i + 1], *pair.hedge, pair.hedge_start, policy, health);
      committed = committed || r.committed;
      if (r.ended) {
        result.kind = FailoverResult::Kind::served;
        co_return result;
      }

      Decision decision = classify(r.outcome, r.http_status, r.upstream_error_code);
      // The client has its 200 already: an upstream's 4xx is no answer for it any more.
      if (committed && decision == Decision::pass_through) decision = Decision::next_route;
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
