// Per-route health shared by all workers: the circuit breaker and Retry-After holds.
//
// Lives for the whole process (across config reloads), keyed by route id; a reload
// resets the routes it changed (see routes_changed_by_reload in server.cpp). A mutex
// guards it: it is touched once per attempt, far from the per-byte hot path.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "config/config.h"

namespace tresor::router {

using Clock = common::Clock;

enum class Admission {
  allowed,      // breaker closed
  probe,        // breaker half-open: this request is the one probe
  breaker_open, // skip (unless it is the request's last candidate)
  retry_after,  // the upstream asked us to stay away until later
};

class RouteHealth {
 public:
  // Decides whether `route` may be attempted now; a half-open breaker admits one probe
  // at a time (another after `cooldown` if the probe never reports back).
  Admission admit(const std::string& route, Clock::time_point now, const config::BreakerConfig& cfg);
  void record_success(const std::string& route);
  void record_failure(const std::string& route, Clock::time_point now, const config::BreakerConfig& cfg);
  // Keep away from `route` until `until` (a Retry-After above max_retry_after_seconds,
  // capped at max_route_hold_seconds by the failover loop).
  void hold_until(const std::string& route, Clock::time_point until);
  // Forgets everything about `route`: its hold and its breaker (a config reload that
  // changed the route or its provider: the old state was about another upstream).
  void reset(const std::string& route);
  // Whether the breaker is open at `now` (no side effect: does not start a probe).
  bool is_open(const std::string& route, Clock::time_point now) const;
  // For /metrics: closed, open (cooling down), or half-open (the cooldown is over; the next
  // request is a probe).
  enum class BreakerState { closed = 0, open = 1, half_open = 2 };
  BreakerState breaker_state(const std::string& route, Clock::time_point now) const;
  // The earliest time one of the routes becomes eligible again (for 503 Retry-After).
  std::optional<Clock::time_point> eligible_again(const std::string& route) const;

 private:
  struct State {
    unsigned consecutive_failures = 0;
    bool open = false;
    Clock::time_point open_until{};   // when open: the next probe may start then
    Clock::time_point hold_until{};   // Retry-After
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, State> routes_;
};

// The route ids whose health state no longer describes their upstream after a reload
// from `before` to `after`: a route added, removed or changed in any field, or whose
// provider's base_url, api_key, ca_file or max_connections changed. The reload resets
// them (RouteHealth::reset): a hold or an open breaker earned by the old upstream must
// not keep the new one away.
std::vector<std::string> routes_changed_by_reload(const config::Config& before, const config::Config& after);

}  // namespace tresor::router
