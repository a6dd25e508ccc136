// RouteHealth: the per-route circuit breaker and Retry-After holds, driven with explicit
// time points (no sleeping).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "router/route_health.h"

using tresor::router::Admission;
using tresor::router::Clock;
using tresor::router::RouteHealth;
using namespace std::chrono_literals;

namespace {

// An arbitrary, fixed origin far from the clock's epoch.
const Clock::time_point T0 = Clock::time_point{} + 1000h;

tresor::config::BreakerConfig breaker(unsigned failures, unsigned cooldown) {
  tresor::config::BreakerConfig b;
  b.consecutive_failures = failures;
  b.cooldown_seconds = cooldown;
  return b;
}

const char* name(Admission a) {
  switch (a) {
    case Admission::allowed: return "allowed";
    case Admission::probe: return "probe";
    case Admission::breaker_open: return "breaker_open";
    case Admission::retry_after: return "retry_after";
  }
  return "?";
}

}  // namespace

namespace Catch {
template <>
struct StringMaker<Admission> {
  static std::string convert(Admission a) { return name(a); }
};
}  // namespace Catch

TEST_CASE("route health: a route never seen is allowed and has no eligibility time", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(3, 10);
  CHECK_FALSE(h.eligible_again("a").has_value());
  CHECK(h.admit("a", T0, cfg) == Admission::allowed);
  // Known but healthy: eligible now (no time, or one not in the future).
  const auto t = h.eligible_again("a");
  CHECK((!t || *t <= T0));
}

TEST_CASE("route health: N consecutive failures open the breaker", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(3, 10);
  h.record_failure("a", T0, cfg);
  h.record_failure("a", T0 + 1s, cfg);
  CHECK(h.admit("a", T0 + 2s, cfg) == Admission::allowed);  // 2 < 3: still closed
  h.record_failure("a", T0 + 3s, cfg);                      // third: opens until T0+13s
  CHECK(h.admit("a", T0 + 3s, cfg) == Admission::breaker_open);
  CHECK(h.admit("a", T0 + 12s, cfg) == Admission::breaker_open);
  CHECK(h.admit("a", T0 + 13s - 1ms, cfg) == Admission::breaker_open);
  REQUIRE(h.eligible_again("a").has_value());
  CHECK(*h.eligible_again("a") == T0 + 13s);
}

TEST_CASE("route health: after the cool-down one probe goes, the others stay out", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(2, 10);
  h.record_failure("a", T0, cfg);
  h.record_failure("a", T0, cfg);  // open until T0+10s
  const auto p = T0 + 10s;
  CHECK(h.admit("a", p, cfg) == Admission::probe);

  SECTION("probe in flight: everyone else is refused for another cool-down") {
    CHECK(h.admit("a", p, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", p + 5s, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", p + 10s - 1ms, cfg) == Admission::breaker_open);
    REQUIRE(h.eligible_again("a").has_value());
    CHECK(*h.eligible_again("a") == p + 10s);
    // The probe never reported back: a new probe after that cool-down, and one only.
    CHECK(h.admit("a", p + 10s, cfg) == Admission::probe);
    CHECK(h.admit("a", p + 10s, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", p + 15s, cfg) == Admission::breaker_open);
  }

  SECTION("probe fails: re-opens at once (one failure suffices) for a full cool-down from the failure") {
    h.record_failure("a", p + 2s, cfg);
    CHECK(h.admit("a", p + 2s, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", p + 10s, cfg) == Admission::breaker_open);  // the probe's window would have ended here
    CHECK(h.admit("a", p + 12s - 1ms, cfg) == Admission::breaker_open);
    REQUIRE(h.eligible_again("a").has_value());
    CHECK(*h.eligible_again("a") == p + 12s);
    CHECK(h.admit("a", p + 12s, cfg) == Admission::probe);
    CHECK(h.admit("a", p + 12s, cfg) == Admission::breaker_open);
  }

  SECTION("probe succeeds: closed; everyone is allowed and it takes N new failures to open again") {
    h.record_success("a");
    CHECK(h.admit("a", p, cfg) == Admission::allowed);
    CHECK(h.admit("a", p + 1s, cfg) == Admission::allowed);
    const auto t = h.eligible_again("a");
    CHECK((!t || *t <= p));
    h.record_failure("a", p + 2s, cfg);
    CHECK(h.admit("a", p + 2s, cfg) == Admission::allowed);
    h.record_failure("a", p + 3s, cfg);
    CHECK(h.admit("a", p + 3s, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", p + 13s, cfg) == Admission::probe);
  }
}

TEST_CASE("route health: a success in between resets the failure count", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(3, 10);
  h.record_failure("a", T0, cfg);
  h.record_failure("a", T0 + 1s, cfg);
  h.record_success("a");
  h.record_failure("a", T0 + 2s, cfg);
  h.record_failure("a", T0 + 3s, cfg);
  CHECK(h.admit("a", T0 + 3s, cfg) == Admission::allowed);  // 2 consecutive, not 4
  h.record_failure("a", T0 + 4s, cfg);
  CHECK(h.admit("a", T0 + 4s, cfg) == Admission::breaker_open);
  CHECK(h.admit("a", T0 + 14s, cfg) == Admission::probe);
}

TEST_CASE("route health: a threshold of one opens on the first failure", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(1, 5);
  h.record_failure("a", T0, cfg);
  CHECK(h.admit("a", T0, cfg) == Admission::breaker_open);
  CHECK(h.admit("a", T0 + 5s, cfg) == Admission::probe);
}

TEST_CASE("route health: routes are independent", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(2, 10);
  h.record_failure("a", T0, cfg);
  h.record_failure("b", T0, cfg);
  h.record_failure("a", T0, cfg);  // a opens; b has one failure
  CHECK(h.admit("a", T0 + 1s, cfg) == Admission::breaker_open);
  CHECK(h.admit("b", T0 + 1s, cfg) == Admission::allowed);
  CHECK(h.admit("c", T0 + 1s, cfg) == Admission::allowed);

  h.record_success("b");
  CHECK(h.admit("a", T0 + 1s, cfg) == Admission::breaker_open);  // b's success does not close a

  h.hold_until("c", T0 + 30s);
  CHECK(h.admit("c", T0 + 2s, cfg) == Admission::retry_after);
  CHECK(h.admit("b", T0 + 2s, cfg) == Admission::allowed);
  CHECK(h.admit("a", T0 + 10s, cfg) == Admission::probe);  // c's hold does not affect a

  REQUIRE(h.eligible_again("c").has_value());
  CHECK(*h.eligible_again("c") == T0 + 30s);
  CHECK_FALSE(h.eligible_again("d").has_value());
}

TEST_CASE("route health: hold_until keeps a route away until the given time", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(3, 10);
  h.hold_until("a", T0 + 20s);
  CHECK(h.admit("a", T0, cfg) == Admission::retry_after);
  CHECK(h.admit("a", T0 + 20s - 1ms, cfg) == Admission::retry_after);
  REQUIRE(h.eligible_again("a").has_value());
  CHECK(*h.eligible_again("a") == T0 + 20s);
  CHECK(h.admit("a", T0 + 20s, cfg) == Admission::allowed);

  SECTION("a shorter hold does not shorten a longer one; a longer one extends it") {
    h.hold_until("a", T0 + 5s);
    CHECK(*h.eligible_again("a") == T0 + 20s);
    CHECK(h.admit("a", T0 + 10s, cfg) == Admission::retry_after);
    h.hold_until("a", T0 + 40s);
    CHECK(*h.eligible_again("a") == T0 + 40s);
    CHECK(h.admit("a", T0 + 30s, cfg) == Admission::retry_after);
    CHECK(h.admit("a", T0 + 40s, cfg) == Admission::allowed);
  }

  SECTION("a hold is not a failure: it does not open the breaker") {
    CHECK(h.admit("a", T0 + 25s, cfg) == Admission::allowed);
  }
}

TEST_CASE("route health: a hold and an open breaker together", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(1, 10);
  h.record_failure("a", T0, cfg);  // open until T0+10s

  SECTION("hold longer than the breaker: Retry-After wins, no probe is spent while held") {
    h.hold_until("a", T0 + 30s);
    CHECK(h.admit("a", T0 + 1s, cfg) == Admission::retry_after);
    CHECK(h.admit("a", T0 + 15s, cfg) == Admission::retry_after);  // cool-down over but still held
    REQUIRE(h.eligible_again("a").has_value());
    CHECK(*h.eligible_again("a") == T0 + 30s);  // the later of the two
    CHECK(h.admit("a", T0 + 30s, cfg) == Admission::probe);
  }

  SECTION("hold shorter than the breaker: eligible when the breaker's cool-down ends") {
    h.hold_until("a", T0 + 4s);
    CHECK(h.admit("a", T0 + 1s, cfg) == Admission::retry_after);
    REQUIRE(h.eligible_again("a").has_value());
    CHECK(*h.eligible_again("a") == T0 + 10s);
    CHECK(h.admit("a", T0 + 5s, cfg) == Admission::breaker_open);
    CHECK(h.admit("a", T0 + 10s, cfg) == Admission::probe);
  }
}

TEST_CASE("route health: reset forgets a route's hold and breaker, and nothing else", "[router][health]") {
  RouteHealth h;
  const auto cfg = breaker(1, 10);
  h.hold_until("a", T0 + 1000h);
  h.record_failure("a", T0, cfg);
  h.record_failure("b", T0, cfg);
  REQUIRE(h.admit("a", T0 + 1s, cfg) == Admission::retry_after);
  REQUIRE(h.is_open("a", T0 + 1s));

  h.reset("a");
  CHECK_FALSE(h.eligible_again("a").has_value());
  CHECK_FALSE(h.is_open("a", T0 + 1s));
  CHECK(h.admit("a", T0 + 1s, cfg) == Admission::allowed);
  CHECK(h.admit("b", T0 + 1s, cfg) == Admission::breaker_open);  // other routes keep theirs
  h.reset("never-seen");  // harmless
}

namespace {

std::shared_ptr<const tresor::config::Config> reload_config(const std::string& routes, const std::string& providers) {
  return tresor::config::load_config_text("providers:\n" + providers + "routes:\n" + routes, "reload.yaml");
}

const std::string kProviders =
    "  p:\n    base_url: http://127.0.0.1:1/v1\n    api_key: k1\n"
    "  q:\n    base_url: http://127.0.0.1:2/v1\n    api_key: k2\n";
const std::string kRoutes =
    "  - {id: eu/p/a, provider: p, upstream_model: ma, type: chat}\n"
    "  - {id: eu/p/b, provider: p, upstream_model: mb, type: chat}\n"
    "  - {id: eu/q/c, provider: q, upstream_model: mc, type: chat}\n";

std::vector<std::string> changed(const std::string& routes, const std::string& providers) {
  auto v = tresor::router::routes_changed_by_reload(*reload_config(kRoutes, kProviders), *reload_config(routes, providers));
  std::sort(v.begin(), v.end());
  return v;
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("routes_changed_by_reload: the routes whose route entry or provider entry changed",
          "[router][health]") {
  using V = std::vector<std::string>;
  CHECK(changed(kRoutes, kProviders).empty());
  // A route field.
  CHECK(changed(replaced(kRoutes, "upstream_model: ma", "upstream_model: ma2"), kProviders) == V{"eu/p/a"});
  CHECK(changed(replaced(kRoutes, "id: eu/q/c, provider: q", "id: eu/q/c, provider: p"), kProviders) == V{"eu/q/c"});
  // The provider's connection fields: every route on it.
  CHECK(changed(kRoutes, replaced(kProviders, "127.0.0.1:1/v1", "127.0.0.1:9/v1")) == V{"eu/p/a", "eu/p/b"});
  CHECK(changed(kRoutes, replaced(kProviders, "api_key: k2", "api_key: k3")) == V{"eu/q/c"});
  CHECK(changed(kRoutes, kProviders + "    max_connections: 7\n") == V{"eu/q/c"});
  // Added and removed routes (a removed one's state must not greet it when it comes back).
  CHECK(changed(kRoutes + "  - {id: eu/q/d, provider: q, upstream_model: md, type: chat}\n", kProviders) ==
        V{"eu/q/d"});
  CHECK(changed(replaced(kRoutes, "  - {id: eu/p/b, provider: p, upstream_model: mb, type: chat}\n", ""),
                kProviders) == V{"eu/p/b"});
  // Another provider that no route uses changes nothing.
  CHECK(changed(kRoutes, kProviders + "  r:\n    base_url: http://127.0.0.1:3/v1\n    api_key: k3\n").empty());
}
