// The failover loop (spec §3, §4; issue #4) driven by a scripted AttemptRunner inside a
// real io_context: short real durations (a few ms of backoff, deadlines of tens to a few
// hundred ms) keep it fast; per-attempt timers are checked on the plans, not waited for.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
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
using tresor::router::Admission;
using tresor::router::AttemptOutcome;
using tresor::router::AttemptPlan;
using tresor::router::AttemptResult;
using tresor::router::AttemptRunner;
using tresor::router::Clock;
using tresor::router::FailoverPolicy;
using tresor::router::FailoverResult;
using tresor::router::RouteHealth;
using tresor::router::outcome_name;
using tresor::router::retry_backoff;
using tresor::router::run_failover;
using Kind = FailoverResult::Kind;

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

// ---- scripted runner -------------------------------------------------------------

struct Step {
  AttemptResult result;
  std::chrono::milliseconds delay{0};
  bool until_deadline = false;  // like a real runner whose request budget runs out
};

Step ok() { return {}; }
Step status(int s, std::string code = "", std::optional<std::chrono::seconds> retry_after = std::nullopt) {
  Step st;
  st.result.outcome = AttemptOutcome::http_status;
  st.result.http_status = s;
  st.result.upstream_error_code = std::move(code);
  st.result.retry_after = retry_after;
  return st;
}
Step fail(AttemptOutcome o) {
  Step st;
  st.result.outcome = o;
  return st;
}
Step runs_out_of_time() {
  Step st = fail(AttemptOutcome::deadline);
  st.until_deadline = true;
  return st;
}

struct Call {
  std::string route;
  size_t candidate_index = 0;
  bool last = false;
  Clock::time_point first_byte_deadline{};
  Clock::time_point request_deadline{};
  Clock::time_point started{};
  Clock::time_point when{};
  size_t history_size = 0;
};

class ScriptedRunner : public AttemptRunner {
 public:
  std::map<std::string, std::deque<Step>> script;
  std::vector<Call> calls;
  int unscripted = 0;

  asio::awaitable<AttemptResult> attempt(const AttemptPlan& plan) override {
    Call c;
    c.route = plan.route->id;
    c.candidate_index = plan.candidate_index;
    c.last = plan.last_candidate;
    c.first_byte_deadline = plan.first_byte_deadline.at();
    c.request_deadline = plan.request_deadline.at();
    c.started = plan.started;
    c.when = Clock::now();
    c.history_size = plan.history ? plan.history->size() : size_t(-1);
    calls.push_back(c);

    auto& q = script[plan.route->id];
    if (q.empty()) {
      ++unscripted;
      AttemptResult r;
      r.outcome = AttemptOutcome::reset;
      co_return r;
    }
    Step s = q.front();
    q.pop_front();
    if (s.until_deadline || s.delay.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor);
      if (s.until_deadline) timer.expires_at(plan.request_deadline.at());
      else timer.expires_after(s.delay);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return s.result;
  }

  std::string sequence() const {
    std::string out;
    for (const auto& c : calls) out += (out.empty() ? "" : ",") + c.route;
    return out;
  }
};

// ---- environment -----------------------------------------------------------------

struct Env {
  tresor::config::TimeoutsConfig timeouts;
  tresor::config::RetryConfig retry;
  tresor::config::BreakerConfig breaker;
  bool stream = false;
  std::deque<tresor::config::RouteConfig> routes;  // stable addresses
  std::vector<const tresor::config::RouteConfig*> candidates;
  RouteHealth health;

  explicit Env(std::initializer_list<const char*> ids) {
    retry.attempts_per_route = 2;
    retry.backoff_ms = 2;
    retry.max_retry_after_seconds = 5;
    breaker.consecutive_failures = 5;
    breaker.cooldown_seconds = 10;
    timeouts.attempt_first_event_seconds = 10;
    timeouts.attempt_first_byte_seconds = 0;
    for (const char* id : ids) {
      tresor::config::RouteConfig r;
      r.id = id;
      routes.push_back(r);
      candidates.push_back(&routes.back());
    }
  }

  void open_breaker(const std::string& route, Clock::time_point at) {
    for (unsigned i = 0; i < breaker.consecutive_failures; ++i) health.record_failure(route, at, breaker);
  }

  FailoverResult run(ScriptedRunner& runner, Clock::time_point deadline,
                     std::optional<Clock::time_point> started_at = std::nullopt) {
    FailoverPolicy policy;
    policy.stream = stream;
    policy.timeouts = &timeouts;
    policy.retry = &retry;
    policy.breaker = &breaker;
    const auto started = started_at.value_or(Clock::now());
    asio::io_context ioc;
    std::optional<FailoverResult> out;
    std::exception_ptr error;
    asio::co_spawn(ioc, run_failover(candidates, started, tresor::common::Deadline(deadline), policy, health, runner),
                   [&](std::exception_ptr e, FailoverResult r) {
                     error = e;
                     out = std::move(r);
                   });
    ioc.run();
    if (error) std::rethrow_exception(error);
    REQUIRE(out.has_value());
    return std::move(*out);
  }
};

// "route=outcome" per attempt (format_attempts without the ms, which vary).
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

namespace Catch {
template <>
struct StringMaker<Kind> {
  static std::string convert(Kind k) { return kind_name(k); }
};
template <>
struct StringMaker<Admission> {
  static std::string convert(Admission a) {
    switch (a) {
      case Admission::allowed: return "allowed";
      case Admission::probe: return "probe";
      case Admission::breaker_open: return "breaker_open";
      case Admission::retry_after: return "retry_after";
    }
    return "?";
  }
};
}  // namespace Catch

// ---- served / retried / failed over ----------------------------------------------

TEST_CASE("failover: the first route answers", "[router][failover]") {
  Env env{"a", "b"};
  ScriptedRunner runner;
  runner.script["a"] = {ok()};
  const auto started = Clock::now() - 5ms;
  const auto deadline = Clock::now() + 60s;
  const auto r = env.run(runner, deadline, started);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=ok");
  REQUIRE(runner.calls.size() == 1);
  CHECK(runner.calls[0].candidate_index == 0);
  CHECK_FALSE(runner.calls[0].last);
  CHECK(runner.calls[0].history_size == 0);
  CHECK(runner.calls[0].started == started);
  CHECK(runner.calls[0].request_deadline == deadline);
  CHECK(r.attempts[0].ms >= 0);
  CHECK(r.attempts[0].ms < 1000);
}

TEST_CASE("failover: a 500 is retried on the same route after a backoff", "[router][failover]") {
  Env env{"a", "b"};
  env.retry.backoff_ms = 8;  // first retry waits [6, 10) ms
  ScriptedRunner runner;
  runner.script["a"] = {status(500), ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=500, a=ok");
  CHECK(runner.sequence() == "a,a");
  REQUIRE(runner.calls.size() == 2);
  CHECK(runner.calls[1].candidate_index == 0);
  CHECK(runner.calls[1].history_size == 1);
  CHECK(runner.calls[1].when - runner.calls[0].when >= 6ms);
  CHECK(r.attempts[0].http_status == 500);
}

TEST_CASE("failover: a route that fails its whole retry budget is left for the next", "[router][failover]") {
  Env env{"a", "b"};
  ScriptedRunner runner;

  SECTION("500 twice, then the next route") {
    runner.script["a"] = {status(500), status(500)};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=500, a=500, b=ok");
    REQUIRE(runner.calls.size() == 3);
    CHECK(runner.calls[2].candidate_index == 1);
    CHECK(runner.calls[2].last);
    CHECK(runner.calls[2].history_size == 2);
  }
  SECTION("connect_failed: retried, then failed over") {
    runner.script["a"] = {fail(AttemptOutcome::connect_failed), fail(AttemptOutcome::connect_failed)};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=connect_failed, a=connect_failed, b=ok");
    CHECK(runner.sequence() == "a,a,b");
  }
  SECTION("a budget of three attempts per route") {
    env.retry.attempts_per_route = 3;
    runner.script["a"] = {fail(AttemptOutcome::tls_failed), fail(AttemptOutcome::reset), status(503)};
    runner.script["b"] = {status(502), ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=tls_failed, a=reset, a=503, b=502, b=ok");
  }
  CHECK(runner.unscripted == 0);
}

TEST_CASE("failover: every route fails with 5xx → failed, and the breaker counts the failures",
          "[router][failover]") {
  Env env{"a", "b"};
  env.breaker.consecutive_failures = 2;
  ScriptedRunner runner;
  runner.script["a"] = {status(502), status(502)};
  runner.script["b"] = {status(503), fail(AttemptOutcome::connect_failed)};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::failed);
  CHECK(summary(r) == "a=502, a=502, b=503, b=connect_failed");
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::breaker_open);
  CHECK(env.health.admit("b", Clock::now(), env.breaker) == Admission::breaker_open);
}

// ---- 4xx -------------------------------------------------------------------------

TEST_CASE("failover: a plain 400 is the client's answer after one attempt", "[router][failover]") {
  Env env{"a", "b"};
  env.breaker.consecutive_failures = 1;
  ScriptedRunner runner;
  runner.script["a"] = {status(400, "invalid_request_error")};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::pass_through);
  CHECK(summary(r) == "a=400");
  CHECK(runner.sequence() == "a");
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);  // not a route failure
}

TEST_CASE("failover: other client 4xx pass through too (404, 422)", "[router][failover]") {
  const int s = GENERATE(404, 409, 422);
  Env env{"a", "b"};
  ScriptedRunner runner;
  runner.script["a"] = {status(s)};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  INFO("status " << s);
  CHECK(r.kind == Kind::pass_through);
  CHECK(runner.sequence() == "a");
}

TEST_CASE("failover: 400 context_length_exceeded moves on to the next route", "[router][failover]") {
  Env env{"a", "b"};
  env.breaker.consecutive_failures = 1;
  ScriptedRunner runner;

  SECTION("the next route serves") {
    runner.script["a"] = {status(400, "context_length_exceeded")};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=400, b=ok");  // no same-route retry
    CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);
  }
  SECTION("every route's window is too small: the failover ends on the model's 4xx → pass_through") {
    runner.script["a"] = {status(400, "context_length_exceeded")};
    runner.script["b"] = {status(400, "context_length_exceeded")};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::pass_through);
    CHECK(summary(r) == "a=400, b=400");
  }
  SECTION("the next route fails with 5xx: the last failure decides → failed") {
    runner.script["a"] = {status(400, "context_length_exceeded")};
    runner.script["b"] = {status(500)};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::failed);
    // consecutive_failures is 1 here: b's first 500 opens its breaker, so its retry is
    // skipped (and says so).
    CHECK(summary(r) == "a=400, b=500, b=skipped_breaker");
  }
  CHECK(runner.unscripted == 0);
}

TEST_CASE("failover: context_length_exceeded on the only route → pass_through", "[router][failover]") {
  Env env{"a"};
  ScriptedRunner runner;
  runner.script["a"] = {status(400, "context_length_exceeded")};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::pass_through);
  CHECK(summary(r) == "a=400");
  CHECK(runner.sequence() == "a");
}

TEST_CASE("failover: 401/403 (the router's credentials) move on without a retry", "[router][failover]") {
  Env env{"a", "b"};
  ScriptedRunner runner;
  SECTION("401 then served") {
    runner.script["a"] = {status(401)};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=401, b=ok");
  }
  SECTION("refused everywhere: 502, not the upstream's 4xx") {
    runner.script["a"] = {status(401)};
    runner.script["b"] = {status(403)};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::failed);
    CHECK(summary(r) == "a=401, b=403");
  }
  CHECK(runner.unscripted == 0);
}

// ---- timers and the deadline -----------------------------------------------------

TEST_CASE("failover: a stream with no first event moves on without a retry", "[router][failover]") {
  Env env{"a", "b"};
  env.stream = true;
  ScriptedRunner runner;
  runner.script["a"] = {fail(AttemptOutcome::first_event_timeout)};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=first_event_timeout, b=ok");
  CHECK(runner.unscripted == 0);
}

TEST_CASE("failover: a non-stream attempt with no first byte moves on without a retry", "[router][failover]") {
  Env env{"a", "b"};
  env.timeouts.attempt_first_byte_seconds = 5;
  ScriptedRunner runner;
  runner.script["a"] = {fail(AttemptOutcome::first_byte_timeout)};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=first_byte_timeout, b=ok");
}

TEST_CASE("failover: the deadline runs out during an attempt → timed_out, nothing more is tried",
          "[router][failover]") {
  Env env{"a", "b"};
  env.breaker.consecutive_failures = 1;
  ScriptedRunner runner;
  runner.script["a"] = {runs_out_of_time(), ok()};
  runner.script["b"] = {ok()};
  const auto before = Clock::now();
  const auto r = env.run(runner, before + 60ms);
  CHECK(r.kind == Kind::timed_out);
  CHECK(summary(r) == "a=deadline");
  CHECK(runner.sequence() == "a");
  REQUIRE(r.attempts.size() == 1);
  CHECK(r.attempts[0].ms >= 50);
  // The client's short budget is not the route's fault.
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);
}

TEST_CASE("failover: a deadline already gone before the first attempt → timed_out (504), not no_route",
          "[router][failover]") {
  Env env{"a", "b"};
  ScriptedRunner runner;
  runner.script["a"] = {ok()};
  const auto r = env.run(runner, Clock::now() - 1ms);
  CHECK(runner.calls.empty());
  CHECK(r.kind == Kind::timed_out);
}

TEST_CASE("failover: a backoff that would pass the deadline is not waited for; the next route is tried",
          "[router][failover]") {
  Env env{"a", "b"};
  env.retry.backoff_ms = 400;  // first retry would wait ≥ 300 ms
  ScriptedRunner runner;
  const auto before = Clock::now();
  const auto deadline = before + 200ms;

  SECTION("next route serves at once") {
    runner.script["a"] = {status(500), ok()};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, deadline);
    CHECK(Clock::now() - before < 150ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=500, b=ok");
    REQUIRE(runner.calls.size() == 2);
    CHECK(runner.calls[1].last);
    CHECK(runner.calls[1].first_byte_deadline == deadline);
  }
  SECTION("the only route: failed at once (502), not a wait into a timeout") {
    env.candidates.pop_back();
    runner.script["a"] = {status(500), ok()};
    const auto r = env.run(runner, deadline);
    CHECK(Clock::now() - before < 150ms);
    CHECK(r.kind == Kind::failed);
    CHECK(summary(r) == "a=500");
  }
}

// ---- Retry-After -----------------------------------------------------------------

TEST_CASE("failover: a Retry-After within the maximum is the wait before the same-route retry",
          "[router][failover]") {
  Env env{"a", "b"};
  env.retry.backoff_ms = 400;  // a backoff would be ≥ 300 ms: the 0 s Retry-After must win
  env.retry.max_retry_after_seconds = 0;
  ScriptedRunner runner;
  runner.script["a"] = {status(429, "", 0s), ok()};
  runner.script["b"] = {ok()};
  const auto before = Clock::now();
  const auto r = env.run(runner, before + 2s);
  CHECK(Clock::now() - before < 150ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=429, a=ok");
  // Honouring a wait is not a hold: the route stays admissible.
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);
}

TEST_CASE("failover: a Retry-After within the maximum but past the deadline → the next route at once",
          "[router][failover]") {
  Env env{"a", "b"};
  env.retry.max_retry_after_seconds = 5;
  ScriptedRunner runner;
  runner.script["a"] = {status(503, "", 1s), ok()};
  runner.script["b"] = {ok()};
  const auto before = Clock::now();
  const auto r = env.run(runner, before + 300ms);
  CHECK(Clock::now() - before < 200ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=503, b=ok");
}

TEST_CASE("failover: a Retry-After above the maximum holds the route and fails over at once",
          "[router][failover]") {
  Env env{"a", "b"};
  env.retry.max_retry_after_seconds = 1;
  ScriptedRunner runner;
  runner.script["a"] = {status(503, "", 30s), ok()};
  runner.script["b"] = {ok()};
  const auto before = Clock::now();
  const auto r = env.run(runner, before + 500ms);
  CHECK(Clock::now() - before < 200ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=503, b=ok");  // no same-route retry despite attempts_per_route = 2

  const auto held = env.health.eligible_again("a");
  REQUIRE(held.has_value());
  CHECK(*held >= before + 30s);
  CHECK(*held <= Clock::now() + 30s);

  // The next request stays away from a.
  ScriptedRunner second;
  second.script["a"] = {ok()};
  second.script["b"] = {ok()};
  const auto r2 = env.run(second, Clock::now() + 500ms);
  CHECK(r2.kind == Kind::served);
  CHECK(summary(r2) == "a=skipped_retry_after, b=ok");
  REQUIRE(r2.attempts.size() == 2);
  CHECK(r2.attempts[0].ms == 0);
  CHECK(second.sequence() == "b");
  REQUIRE(second.calls.size() == 1);
  CHECK(second.calls[0].candidate_index == 1);
  CHECK(second.calls[0].history_size == 1);
}

TEST_CASE("failover: a huge Retry-After holds the route for at most retry.max_route_hold_seconds",
          "[router][failover]") {
  Env env{"a", "b"};
  env.retry.max_retry_after_seconds = 1;
  env.retry.max_route_hold_seconds = 2;
  ScriptedRunner runner;
  runner.script["a"] = {status(503, "", 999999999s)};
  runner.script["b"] = {ok()};
  const auto before = Clock::now();
  const auto r = env.run(runner, before + 5s);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=503, b=ok");
  const auto held = env.health.eligible_again("a");
  REQUIRE(held.has_value());
  CHECK(*held >= before + 2s);
  CHECK(*held <= Clock::now() + 2s);  // not 31 years
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::retry_after);
  CHECK(env.health.admit("a", *held, env.breaker) == Admission::allowed);
}

TEST_CASE("failover: max_route_hold_seconds 0 fails over without parking the route", "[router][failover]") {
  Env env{"a", "b"};
  env.retry.max_retry_after_seconds = 1;
  env.retry.max_route_hold_seconds = 0;
  ScriptedRunner runner;
  runner.script["a"] = {status(503, "", 60s)};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 5s);
  CHECK(summary(r) == "a=503, b=ok");
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);
}

TEST_CASE("failover: every candidate held by Retry-After → no_route with a Retry-After", "[router][failover]") {
  Env env{"a", "b"};
  ScriptedRunner runner;
  runner.script["a"] = {ok()};
  runner.script["b"] = {ok()};

  SECTION("the earliest hold decides, rounded up") {
    const auto now = Clock::now();
    env.health.hold_until("a", now + 7s);
    env.health.hold_until("b", now + 3s);
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::no_route);
    CHECK(summary(r) == "a=skipped_retry_after, b=skipped_retry_after");
    CHECK(runner.calls.empty());
    CHECK(r.retry_after >= 1s);
    CHECK(r.retry_after == 3s);
  }
  SECTION("a hold shorter than a second: Retry-After 1") {
    const auto now = Clock::now();
    env.health.hold_until("a", now + 200ms);
    env.health.hold_until("b", now + 300ms);
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::no_route);
    CHECK(runner.calls.empty());
    CHECK(r.retry_after == 1s);
  }
  SECTION("the last candidate held, the first behind an open breaker: nothing is attempted") {
    env.open_breaker("a", Clock::now());
    env.health.hold_until("b", Clock::now() + 2s);
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::no_route);
    CHECK(summary(r) == "a=skipped_breaker, b=skipped_retry_after");
    CHECK(runner.calls.empty());
    CHECK(r.retry_after >= 1s);
    CHECK(r.retry_after <= 3s);
  }
}

TEST_CASE("failover: no candidates at all → no_route, Retry-After 1", "[router][failover]") {
  Env env{};
  ScriptedRunner runner;
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::no_route);
  CHECK(r.attempts.empty());
  CHECK(r.retry_after == 1s);
}

// ---- breakers --------------------------------------------------------------------

TEST_CASE("failover: an open breaker skips a candidate that is not the last", "[router][failover]") {
  Env env{"a", "b", "c"};
  env.open_breaker("a", Clock::now());
  ScriptedRunner runner;
  runner.script["a"] = {ok()};
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=skipped_breaker, b=ok");
  CHECK(r.attempts[0].ms == 0);
  REQUIRE(runner.calls.size() == 1);
  CHECK(runner.calls[0].route == "b");
  CHECK(runner.calls[0].candidate_index == 1);
  CHECK_FALSE(runner.calls[0].last);
}

TEST_CASE("failover: the first candidate's breaker open → served by the second", "[router][failover]") {
  Env env{"a", "b"};
  env.open_breaker("a", Clock::now());
  ScriptedRunner runner;
  runner.script["b"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=skipped_breaker, b=ok");
  REQUIRE(runner.calls.size() == 1);
  CHECK(runner.calls[0].last);
}

TEST_CASE("failover: the last candidate is attempted even with an open breaker", "[router][failover]") {
  ScriptedRunner runner;
  SECTION("the only candidate") {
    Env env{"a"};
    env.open_breaker("a", Clock::now());
    runner.script["a"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=ok");
    CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);  // success closed it
  }
  SECTION("every breaker open") {
    Env env{"a", "b"};
    env.open_breaker("a", Clock::now());
    env.open_breaker("b", Clock::now());
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=skipped_breaker, b=ok");
    CHECK(runner.sequence() == "b");
  }
}

TEST_CASE("failover: a cooled-down breaker lets this request probe the route", "[router][failover]") {
  Env env{"a", "b"};
  env.open_breaker("a", Clock::now() - 20s);  // opened long ago: cool-down over
  ScriptedRunner runner;
  runner.script["a"] = {ok()};
  const auto r = env.run(runner, Clock::now() + 500ms);
  CHECK(r.kind == Kind::served);
  CHECK(summary(r) == "a=ok");
  CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::allowed);
}

TEST_CASE("failover: a route whose breaker is open is not retried (one probe, one last-candidate attempt)",
          "[router][failover]") {
  ScriptedRunner runner;
  SECTION("the probe fails: the breaker re-opens, so no same-route retry; the next route serves") {
    Env env{"a", "b"};
    env.open_breaker("a", Clock::now() - 20s);  // cool-down over: this request is a's one probe
    runner.script["a"] = {status(500), ok()};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::served);
    CHECK(summary(r) == "a=500, b=ok");
    CHECK(env.health.admit("a", Clock::now(), env.breaker) == Admission::breaker_open);
  }
  SECTION("the last candidate behind an open breaker gets one real attempt, not a retry budget") {
    Env env{"a"};
    env.open_breaker("a", Clock::now());
    runner.script["a"] = {status(500), ok()};
    const auto r = env.run(runner, Clock::now() + 500ms);
    CHECK(r.kind == Kind::failed);
    CHECK(summary(r) == "a=500");
  }
}

// ---- the plan's timers -----------------------------------------------------------

TEST_CASE("failover: per-attempt first-byte / first-event deadlines", "[router][failover]") {
  Env env{"a", "b", "c"};
  env.timeouts.attempt_first_event_seconds = 2;
  env.timeouts.attempt_first_byte_seconds = 7;
  ScriptedRunner runner;
  const auto before = Clock::now();
  const auto deadline = before + 60s;

  SECTION("stream: attempt_first_event_seconds for all but the last, which gets the whole deadline") {
    env.stream = true;
    runner.script["a"] = {fail(AttemptOutcome::first_event_timeout)};
    runner.script["b"] = {fail(AttemptOutcome::first_event_timeout)};
    runner.script["c"] = {ok()};
    const auto r = env.run(runner, deadline);
    CHECK(r.kind == Kind::served);
    REQUIRE(runner.calls.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      INFO("call " << i);
      CHECK(runner.calls[i].candidate_index == i);
      CHECK(runner.calls[i].last == (i == 2));
      CHECK(runner.calls[i].request_deadline == deadline);
      CHECK(runner.calls[i].history_size == i);
    }
    for (size_t i = 0; i < 2; ++i) {
      INFO("call " << i);
      CHECK(runner.calls[i].first_byte_deadline >= before + 2s);
      CHECK(runner.calls[i].first_byte_deadline <= runner.calls[i].when + 2s);
    }
    CHECK(runner.calls[2].first_byte_deadline == deadline);
  }
  SECTION("non-stream: attempt_first_byte_seconds") {
    runner.script["a"] = {fail(AttemptOutcome::first_byte_timeout)};
    runner.script["b"] = {ok()};
    const auto r = env.run(runner, deadline);
    CHECK(r.kind == Kind::served);
    REQUIRE(runner.calls.size() == 2);
    CHECK(runner.calls[0].first_byte_deadline >= before + 7s);
    CHECK(runner.calls[0].first_byte_deadline <= runner.calls[0].when + 7s);
    CHECK(runner.calls[1].first_byte_deadline >= before + 7s);
    CHECK(runner.calls[1].first_byte_deadline <= runner.calls[1].when + 7s);
  }
  SECTION("non-stream with attempt_first_byte_seconds = 0: no per-attempt timer") {
    env.timeouts.attempt_first_byte_seconds = 0;
    runner.script["a"] = {ok()};
    env.run(runner, deadline);
    REQUIRE(runner.calls.size() == 1);
    CHECK_FALSE(runner.calls[0].last);
    CHECK(runner.calls[0].first_byte_deadline == deadline);
  }
  SECTION("a per-attempt timer never reaches past the request deadline") {
    env.stream = true;
    const auto near = Clock::now() + 500ms;
    runner.script["a"] = {ok()};
    env.run(runner, near);
    REQUIRE(runner.calls.size() == 1);
    CHECK_FALSE(runner.calls[0].last);
    CHECK(runner.calls[0].first_byte_deadline == near);
  }
  SECTION("a same-route retry gets a fresh per-attempt timer") {
    env.stream = true;
    env.retry.backoff_ms = 8;
    runner.script["a"] = {fail(AttemptOutcome::reset), ok()};
    const auto r = env.run(runner, deadline);
    CHECK(summary(r) == "a=reset, a=ok");
    REQUIRE(runner.calls.size() == 2);
    CHECK(runner.calls[1].first_byte_deadline >= runner.calls[0].when + 2s + 6ms);
    CHECK(runner.calls[1].first_byte_deadline <= runner.calls[1].when + 2s);
    CHECK_FALSE(runner.calls[1].last);
  }
}

// ---- backoff ---------------------------------------------------------------------

TEST_CASE("failover: retry_backoff() is backoff·2^(n-1) with jitter in [0.75, 1.25)", "[router][failover]") {
  for (unsigned n = 1; n <= 5; ++n) {
    const long long base = 100LL << (n - 1);
    const long long lo = base * 3 / 4;
    const long long hi = base * 5 / 4;
    long long seen_min = hi, seen_max = 0;
    bool in_bounds = true;
    for (int i = 0; i < 2000; ++i) {
      const long long d = retry_backoff(100, n).count();
      if (d < lo || d >= hi) in_bounds = false;
      seen_min = std::min(seen_min, d);
      seen_max = std::max(seen_max, d);
    }
    INFO("retry " << n << ": [" << seen_min << ", " << seen_max << "] vs [" << lo << ", " << hi << ")");
    CHECK(in_bounds);
    // Jittered, across (nearly) the whole range.
    CHECK(seen_min < lo + base / 20);
    CHECK(seen_max >= hi - base / 20);
  }
  CHECK(retry_backoff(0, 1).count() == 0);
}
