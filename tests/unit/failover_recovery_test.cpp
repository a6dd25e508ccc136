// The failover loop's issue-18 paths, driven by a scripted AttemptRunner in a real
// io_context: a committed stream whose upstream failed is continued on the usual attempt
// order (committed results), and hedging races the next candidate to a first event.
//
// The runner simulates an upstream's time to a first event with an asio steady_timer, so
// a hedge's cancellation is observable: the loser's pending wait completes with
// operation_aborted (as a real attempt's pending upstream read does).
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <deque>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "router/attempts.h"
#include "router/failover.h"
#include "router/route_health.h"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using tresor::router::AttemptOutcome;
using tresor::router::AttemptPlan;
using tresor::router::AttemptResult;
using tresor::router::AttemptRunner;
using tresor::router::Clock;
using tresor::router::FailoverPolicy;
using tresor::router::FailoverResult;
using tresor::router::hedge_delay;
using tresor::router::outcome_name;
using tresor::router::RouteHealth;
using tresor::router::run_failover;
using Kind = FailoverResult::Kind;
using Hedge = FailoverResult::Hedge;

namespace {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::served: return "served";
    case Kind::pass_through: return "pass_through";
    case Kind::failed: return "failed";
    case Kind::timed_out: return "timed_out";
    case Kind::no_route: return "no_route";
  }
  return "?";
}

const char* hedge_name(Hedge h) {
  switch (h) {
    case Hedge::none: return "none";
    case Hedge::won: return "won";
    case Hedge::lost: return "lost";
    case Hedge::failed: return "failed";
  }
  return "?";
}

}  // namespace

namespace Catch {
template <>
struct StringMaker<Kind> {
  static std::string convert(Kind k) { return kind_name(k); }
};
template <>
struct StringMaker<Hedge> {
  static std::string convert(Hedge h) { return hedge_name(h); }
};
}  // namespace Catch

namespace {

// One scripted attempt: after `wait` (the upstream's time to a first event), either
// claim the commit and answer (`answers`), or end with `result` without committing.
struct Step {
  std::chrono::milliseconds wait{0};
  bool answers = false;
  AttemptResult result;
  bool then_fails = false;  // with `answers`: commits, then its stream fails with `result`
};

Step answers_after(std::chrono::milliseconds wait) {
  Step s;
  s.wait = wait;
  s.answers = true;
  return s;
}
Step fails_after(std::chrono::milliseconds wait, AttemptOutcome outcome, int status = 0) {
  Step s;
  s.wait = wait;
  s.result.outcome = outcome;
  s.result.http_status = status;
  return s;
}
// Commits the client's stream after `wait`, then its upstream cuts it.
Step answers_then_cut(std::chrono::milliseconds wait) {
  Step s = answers_after(wait);
  s.then_fails = true;
  s.result.outcome = AttemptOutcome::stream_cut;
  s.result.committed = true;
  return s;
}
// A stream committed to the client earlier (or by this attempt) failed after events.
Step committed(AttemptOutcome outcome, int status = 0, bool ended = false) {
  Step s = fails_after(0ms, outcome, status);
  s.result.committed = true;
  s.result.ended = ended;
  return s;
}

struct Call {
  std::string route;
  size_t candidate_index = 0;
  Clock::time_point began{};
  Clock::time_point ended{};
  bool raced = false;  // part of a hedged pair
  int slot = -1;
  boost::system::error_code wait_ec;  // how its wait for a first event ended
  bool claimed = false;               // claim_commit() said yes
  size_t history_size = 0;
};

class TimedRunner : public AttemptRunner {
 public:
  std::map<std::string, std::deque<Step>> script;
  std::vector<Call> calls;

  asio::awaitable<AttemptResult> attempt(const AttemptPlan& plan) override {
    const size_t me = calls.size();
    calls.push_back(Call{});
    calls[me].route = plan.route->id;
    calls[me].candidate_index = plan.candidate_index;
    calls[me].began = Clock::now();
    calls[me].raced = plan.race != nullptr;
    calls[me].slot = plan.race ? plan.race_slot : -1;
    calls[me].history_size = plan.history ? plan.history->size() : size_t(-1);
    auto& q = script[plan.route->id];
    Step s;
    if (q.empty()) {
      s = fails_after(0ms, AttemptOutcome::reset);  // unscripted: a visible failure
    } else {
      s = q.front();
      q.pop_front();
    }
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(s.wait);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    calls[me].wait_ec = ec;
    calls[me].ended = Clock::now();
    if (ec == asio::error::operation_aborted) {
      // Cancelled (a hedge lost): the exchange fails like a closed connection would.
      AttemptResult r;
      r.outcome = AttemptOutcome::reset;
      co_return r;
    }
    if (!s.answers) co_return s.result;
    if (!plan.claim_commit()) {
      AttemptResult r;
      r.outcome = AttemptOutcome::hedged_cancelled;
      co_return r;
    }
    calls[me].claimed = true;
    if (s.then_fails) co_return s.result;
    co_return AttemptResult{};
  }

  std::string sequence() const {
    std::string out;
    for (const auto& c : calls) out += (out.empty() ? "" : ",") + c.route;
    return out;
  }
  const Call* call_of(const std::string& route) const {
    for (const auto& c : calls)
      if (c.route == route) return &c;
    return nullptr;
  }
};

struct Env {
  tresor::config::TimeoutsConfig timeouts;
  tresor::config::RetryConfig retry;
  tresor::config::BreakerConfig breaker;
  tresor::config::RoutingConfig routing;
  std::optional<unsigned> header;  // X-Tresor-Hedge-After-Ms
  std::deque<tresor::config::RouteConfig> routes;
  std::vector<const tresor::config::RouteConfig*> candidates;
  RouteHealth health;
  std::chrono::milliseconds took{0};

  explicit Env(std::initializer_list<const char*> ids) {
    retry.attempts_per_route = 2;
    retry.backoff_ms = 2;
    retry.max_retry_after_seconds = 5;
    breaker.consecutive_failures = 5;
    breaker.cooldown_seconds = 10;
    timeouts.attempt_first_event_seconds = 10;
    for (const char* id : ids) {
      tresor::config::RouteConfig r;
      r.id = id;
      routes.push_back(r);
      candidates.push_back(&routes.back());
    }
  }

  FailoverPolicy policy() const {
    FailoverPolicy p;
    p.stream = true;
    p.timeouts = &timeouts;
    p.retry = &retry;
    p.breaker = &breaker;
    p.routing = &routing;
    p.hedge_after_ms = header;
    return p;
  }

  FailoverResult run(TimedRunner& runner, std::chrono::milliseconds budget = 20s) {
    const auto policy_value = policy();
    const auto started = Clock::now();
    asio::io_context ioc;
    std::optional<FailoverResult> out;
    std::exception_ptr error;
    asio::co_spawn(ioc,
                   run_failover(candidates, started, tresor::common::Deadline(started + budget), policy_value, health,
                                runner),
                   [&](std::exception_ptr e, FailoverResult r) {
                     error = e;
                     out = std::move(r);
                   });
    ioc.run();
    took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    if (error) std::rethrow_exception(error);
    REQUIRE(out.has_value());
    return std::move(*out);
  }
};

std::string summary(const FailoverResult& r) {
  std::string out;
  for (const auto& a : r.attempts) {
    if (!out.empty()) out += ", ";
    out += a.route + "=";
    out += a.outcome == AttemptOutcome::http_status ? std::to_string(a.http_status)
                                                    : std::string(outcome_name(a.outcome));
  }
  return out;
}

}  // namespace

// ---- recovery: a committed stream continues on the usual attempt order --------------

TEST_CASE("recovery loop: a cut committed stream is continued on the same route's retries, then the next route",
          "[router][failover][stream_recovery]") {
  Env env{"a", "b", "c"};
  TimedRunner runner;
  runner.script["a"] = {committed(AttemptOutcome::stream_cut), committed(AttemptOutcome::stream_stalled)};
  runner.script["b"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(runner.sequence() == "a,a,b");
  CHECK(summary(r) == "a=stream_cut, a=stream_stalled, b=ok");
  REQUIRE(runner.calls.size() == 3);
  CHECK(runner.calls[1].history_size == 1);  // the recovery sees the trail
  CHECK(runner.calls[2].history_size == 2);
  CHECK(runner.calls[2].candidate_index == 1);
  CHECK(r.hedge == Hedge::none);
}

TEST_CASE("recovery loop: a 4xx after the commit moves on to the next route instead of passing through",
          "[router][failover][stream_recovery]") {
  SECTION("committed: 400 is no answer for a client that has its 200 → next route") {
    Env env{"a", "b"};
    TimedRunner runner;
    runner.script["a"] = {committed(AttemptOutcome::stream_cut), committed(AttemptOutcome::http_status, 400)};
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=stream_cut, a=400, b=ok");
  }
  SECTION("committed: 404 and 422 too") {
    for (const int status : {404, 422}) {
      INFO(status);
      Env env{"a", "b"};
      TimedRunner runner;
      runner.script["a"] = {committed(AttemptOutcome::stream_cut), committed(AttemptOutcome::http_status, status)};
      runner.script["b"] = {answers_after(0ms)};
      const auto r = env.run(runner);
      CHECK(r.kind == Kind::served);
      CHECK(runner.sequence() == "a,a,b");
    }
  }
  SECTION("not committed: the same 400 passes through (unchanged behaviour)") {
    Env env{"a", "b"};
    TimedRunner runner;
    runner.script["a"] = {fails_after(0ms, AttemptOutcome::http_status, 400)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::pass_through);
    CHECK(runner.sequence() == "a");
  }
}

TEST_CASE("recovery loop: `ended` (the runner closed the client's stream) stops the loop as served",
          "[router][failover][stream_recovery]") {
  SECTION("a failure with no recovery left") {
    Env env{"a", "b"};
    TimedRunner runner;
    runner.script["a"] = {committed(AttemptOutcome::stream_cut, 0, true)};
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(runner.sequence() == "a");
    CHECK(summary(r) == "a=stream_cut");
  }
  SECTION("a diverged replay") {
    Env env{"a", "b", "c"};
    TimedRunner runner;
    runner.script["a"] = {committed(AttemptOutcome::stream_cut)};
    runner.script["b"] = {committed(AttemptOutcome::recovery_diverged, 0, true)};
    runner.script["c"] = {answers_after(0ms)};
    env.retry.attempts_per_route = 1;
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(runner.sequence() == "a,b");
    CHECK(summary(r) == "a=stream_cut, b=recovery_diverged");
  }
  SECTION("even on a 4xx") {
    Env env{"a", "b"};
    TimedRunner runner;
    runner.script["a"] = {committed(AttemptOutcome::stream_cut), committed(AttemptOutcome::http_status, 400, true)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(runner.sequence() == "a,a");
  }
}

TEST_CASE("recovery loop: a route that may not continue the stream is skipped without its retries",
          "[router][failover][stream_recovery]") {
  Env env{"a", "b", "c"};
  env.retry.attempts_per_route = 3;
  TimedRunner runner;
  runner.script["a"] = {committed(AttemptOutcome::stream_cut), committed(AttemptOutcome::recovery_skipped)};
  runner.script["b"] = {committed(AttemptOutcome::recovery_skipped)};
  runner.script["c"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(runner.sequence() == "a,a,b,c");
  CHECK(summary(r) == "a=stream_cut, a=recovery_skipped, b=recovery_skipped, c=ok");
  // Skips say nothing about the routes' health.
  CHECK(env.health.admit("b", Clock::now(), env.breaker) == tresor::router::Admission::allowed);
}

TEST_CASE("recovery loop: a recovery is never hedged (the client's stream is committed)",
          "[router][failover][stream_recovery][hedge]") {
  Env env{"a", "b", "c"};
  env.retry.attempts_per_route = 1;
  env.routing.hedge_after_ms = 20;
  TimedRunner runner;
  runner.script["a"] = {committed(AttemptOutcome::stream_cut)};
  runner.script["b"] = {answers_after(150ms)};  // slow, well past the hedge delay
  runner.script["c"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(runner.sequence() == "a,b");
  CHECK(summary(r) == "a=stream_cut, b=ok");
  CHECK(r.hedge == Hedge::none);
}

// ---- hedging ----------------------------------------------------------------------

TEST_CASE("hedge: hedge_delay() is the header, else the route's, else routing's; 0 = off",
          "[router][failover][hedge]") {
  tresor::config::RoutingConfig routing;
  tresor::config::RouteConfig route;
  FailoverPolicy p;
  CHECK_FALSE(hedge_delay(p, route).has_value());  // no routing section at all
  p.routing = &routing;
  CHECK_FALSE(hedge_delay(p, route).has_value());
  routing.hedge_after_ms = 300;
  CHECK(hedge_delay(p, route) == std::optional<std::chrono::milliseconds>(300ms));
  route.hedge_after_ms = 40;
  CHECK(hedge_delay(p, route) == std::optional<std::chrono::milliseconds>(40ms));
  p.hedge_after_ms = 7;
  CHECK(hedge_delay(p, route) == std::optional<std::chrono::milliseconds>(7ms));
  p.hedge_after_ms = 0;  // the header turns hedging off for the request
  CHECK_FALSE(hedge_delay(p, route).has_value());
  route.hedge_after_ms.reset();
  p.hedge_after_ms.reset();
  CHECK(hedge_delay(p, route) == std::optional<std::chrono::milliseconds>(300ms));
  routing.hedge_after_ms.reset();
  p.hedge_after_ms = 600000;
  CHECK(hedge_delay(p, route) == std::optional<std::chrono::milliseconds>(600000ms));
}

TEST_CASE("hedge: none configured → only one attempt ever runs, however slow", "[router][failover][hedge]") {
  SECTION("nothing configured") {
    Env env{"a", "b"};
    TimedRunner runner;
    runner.script["a"] = {answers_after(120ms)};
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(runner.sequence() == "a");
    CHECK_FALSE(runner.calls[0].raced);
    CHECK(r.hedge == Hedge::none);
  }
  SECTION("the header's 0 overrides the route's and the global delay") {
    Env env{"a", "b"};
    env.routing.hedge_after_ms = 10;
    env.routes[0].hedge_after_ms = 10;
    env.header = 0;
    TimedRunner runner;
    runner.script["a"] = {answers_after(120ms)};
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(runner.sequence() == "a");
    CHECK(r.hedge == Hedge::none);
  }
  SECTION("the last candidate has nothing to hedge with") {
    Env env{"a"};
    env.routing.hedge_after_ms = 10;
    TimedRunner runner;
    runner.script["a"] = {answers_after(80ms)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(runner.sequence() == "a");
    CHECK(r.hedge == Hedge::none);
  }
}

TEST_CASE("hedge: the next candidate starts after the delay; the first to a first event wins, the other is cancelled",
          "[router][failover][hedge]") {
  SECTION("the hedge wins: the primary's pending wait is cancelled at once") {
    Env env{"a", "b", "c"};
    env.routing.hedge_after_ms = 60;
    TimedRunner runner;
    runner.script["a"] = {answers_after(10s)};  // would hold the test 10 s if not cancelled
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(r.hedge == Hedge::won);
    CHECK(summary(r) == "a=hedged_cancelled, b=ok");
    REQUIRE(runner.calls.size() == 2);
    const Call& a = *runner.call_of("a");
    const Call& b = *runner.call_of("b");
    CHECK(a.raced);
    CHECK(a.slot == 0);
    CHECK(b.raced);
    CHECK(b.slot == 1);
    CHECK(b.began - a.began >= 60ms);  // not before the delay
    CHECK(b.began - a.began < 5s);     // and not long after (2 loaded cores)
    CHECK(b.claimed);
    CHECK_FALSE(a.claimed);
    CHECK(a.wait_ec == asio::error::operation_aborted);
    CHECK(a.ended - b.began < 5s);
    CHECK(env.took < 5s);
    CHECK(runner.call_of("c") == nullptr);
  }
  SECTION("the primary wins: the hedge's pending wait is cancelled, recorded hedged_cancelled") {
    Env env{"a", "b"};
    env.routes[0].hedge_after_ms = 30;
    TimedRunner runner;
    runner.script["a"] = {answers_after(200ms)};
    runner.script["b"] = {answers_after(10s)};
    const auto r = env.run(runner);
    CHECK(r.kind == Kind::served);
    CHECK(r.hedge == Hedge::lost);
    CHECK(summary(r) == "a=ok, b=hedged_cancelled");
    const Call& a = *runner.call_of("a");
    const Call& b = *runner.call_of("b");
    CHECK(a.claimed);
    CHECK(b.began - a.began >= 30ms);
    CHECK(b.wait_ec == asio::error::operation_aborted);
    CHECK(env.took < 5s);
    // A lost race is no news about the route's health.
    CHECK(env.health.admit("b", Clock::now(), env.breaker) == tresor::router::Admission::allowed);
  }
  SECTION("the delay is the primary route's: a route without one is not hedged") {
    Env env{"a", "b", "c"};
    env.routes[1].hedge_after_ms = 10;  // b's, not a's
    TimedRunner runner;
    runner.script["a"] = {answers_after(100ms)};
    const auto r = env.run(runner);
    CHECK(runner.sequence() == "a");
    CHECK(r.hedge == Hedge::none);
  }
  SECTION("the header's delay is used over the route's") {
    Env env{"a", "b"};
    env.routes[0].hedge_after_ms = 600000;
    env.header = 40;
    TimedRunner runner;
    runner.script["a"] = {answers_after(10s)};
    runner.script["b"] = {answers_after(0ms)};
    const auto r = env.run(runner);
    CHECK(r.hedge == Hedge::won);
    CHECK(summary(r) == "a=hedged_cancelled, b=ok");
    CHECK(env.took < 5s);
  }
}

TEST_CASE("hedge: a primary that fails before the delay → plain failover, no hedge", "[router][failover][hedge]") {
  Env env{"a", "b"};
  env.routing.hedge_after_ms = 3000;
  TimedRunner runner;
  runner.script["a"] = {fails_after(5ms, AttemptOutcome::reset), fails_after(0ms, AttemptOutcome::http_status, 500)};
  runner.script["b"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(runner.sequence() == "a,a,b");
  CHECK(summary(r) == "a=reset, a=500, b=ok");
  CHECK(r.hedge == Hedge::none);
  // The hedge never started, and its pending delay was cancelled when the primary ended:
  // the request did not wait out the 3 s (b ran once, as the plain next candidate).
  REQUIRE(runner.calls.size() == 3);
  CHECK_FALSE(runner.calls[1].raced);  // a same-route retry is not hedged
  CHECK(env.took < 3000ms);
}

TEST_CASE("hedge: a hedge that fails leaves the primary to answer", "[router][failover][hedge]") {
  Env env{"a", "b", "c"};
  env.routing.hedge_after_ms = 20;
  TimedRunner runner;
  runner.script["a"] = {answers_after(1500ms)};  // far after b's start and failure
  runner.script["b"] = {fails_after(0ms, AttemptOutcome::connect_failed)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(r.hedge == Hedge::failed);
  CHECK(summary(r) == "a=ok, b=connect_failed");
  CHECK(runner.sequence() == "a,b");
}

// The primary fails after the hedge has started but before either commits; the hedge
// then answers the client. Expected: served, two attempts, nothing more run.
// Regression (found by this test in 508440f, fixed since): run_failover takes the "hedge won" path only
// when the primary's outcome is hedged_cancelled; here the primary ended (reset) before
// the hedge claimed, so the hedge's `ok` is booked as a failed hedge (Hedge::failed,
// hedged_index = b) and the loop goes on with the primary's decision (retry_same_route):
// got sequence "a,b,a", trail "a=reset, b=ok, a=ok" — a second attempt runs after the
// client was answered (in the endpoint: a second commit/answer on the same response); had
// a's retry failed, the request would end `failed` (a 502 after a committed answer).
TEST_CASE("hedge: the primary fails after the hedge started, then the hedge answers → served, nothing more",
          "[router][failover][hedge]") {
  Env env{"a", "b", "c"};
  env.routing.hedge_after_ms = 20;
  TimedRunner runner;
  runner.script["a"] = {fails_after(120ms, AttemptOutcome::reset), answers_after(0ms)};
  runner.script["b"] = {answers_after(300ms)};
  runner.script["c"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  INFO("sequence " << runner.sequence() << ", trail " << summary(r) << ", hedge " << hedge_name(r.hedge));
  CHECK(r.kind == Kind::served);
  CHECK(runner.sequence() == "a,b");
  CHECK(summary(r) == "a=reset, b=ok");
  CHECK(r.hedge == Hedge::won);
}

TEST_CASE("hedge: the primary wins, then its stream is cut → recovered on its retries, then on the hedge's route",
          "[router][failover][hedge][stream_recovery]") {
  Env env{"a", "b"};
  env.routing.hedge_after_ms = 20;
  TimedRunner runner;
  runner.script["a"] = {answers_then_cut(100ms), committed(AttemptOutcome::stream_cut)};
  runner.script["b"] = {answers_after(10s), answers_after(0ms)};
  const auto r = env.run(runner);
  CHECK(r.kind == Kind::served);
  CHECK(r.hedge == Hedge::lost);
  CHECK(runner.sequence() == "a,b,a,b");
  CHECK(summary(r) == "a=stream_cut, b=hedged_cancelled, a=stream_cut, b=ok");
  REQUIRE(runner.calls.size() == 4);
  CHECK(runner.calls[1].wait_ec == asio::error::operation_aborted);
  CHECK_FALSE(runner.calls[3].raced);  // the recovery is not hedged
  CHECK(env.took < 5s);
}

// The hedge wins and its stream is cut later: the recoveries run on the hedge's route
// first. Spec 18: "the same route's REMAINING retry.attempts_per_route first" — the hedge
// was b's first attempt, so with attempts_per_route 2 one recovery on b, then c.
// Regression (found by this test in 508440f, fixed since): after a won hedge, run_failover
// `break`s to the outer loop, which gives candidate b a fresh attempts_per_route budget:
// got "a,b,b,b,c" (b attempted attempts_per_route + 1 times).
TEST_CASE("hedge: the hedge wins, then its stream is cut → the hedge route's remaining retries, then the next",
          "[router][failover][hedge][stream_recovery]") {
  Env env{"a", "b", "c"};
  env.routing.hedge_after_ms = 20;
  TimedRunner runner;
  runner.script["a"] = {answers_after(10s)};
  runner.script["b"] = {answers_then_cut(0ms), committed(AttemptOutcome::stream_cut),
                        committed(AttemptOutcome::stream_cut)};
  runner.script["c"] = {answers_after(0ms)};
  const auto r = env.run(runner);
  INFO("sequence " << runner.sequence() << ", trail " << summary(r));
  CHECK(r.kind == Kind::served);
  CHECK(r.hedge == Hedge::won);
  CHECK(runner.call_of("a")->wait_ec == asio::error::operation_aborted);
  CHECK(runner.sequence() == "a,b,b,c");
  CHECK(summary(r) == "a=hedged_cancelled, b=stream_cut, b=stream_cut, c=ok");
}
