#include "router/route_health.h"

namespace tresor::router {
namespace {

const config::RouteConfig* find_route(const config::Config& c, const std::string& id) {
  for (const auto& r : c.routes)
    if (r.id == id) return &r;
  return nullptr;
}

// The provider fields that decide which upstream a route reaches and how.
bool same_upstream(const config::Config& before, const config::Config& after, const std::string& provider) {
  const auto b = before.providers.find(provider);
  const auto a = after.providers.find(provider);
  if (b == before.providers.end() || a == after.providers.end()) return false;
  return b->second.base_url == a->second.base_url && b->second.api_key == a->second.api_key &&
         b->second.ca_file == a->second.ca_file && b->second.max_connections == a->second.max_connections;
}

}  // namespace

std::vector<std::string> routes_changed_by_reload(const config::Config& before, const config::Config& after) {
  std::vector<std::string> changed;
  for (const auto& r : after.routes) {
    const auto* old = find_route(before, r.id);
    if (!old || !(*old == r) || !same_upstream(before, after, r.provider)) changed.push_back(r.id);
  }
  for (const auto& r : before.routes)
    if (!find_route(after, r.id)) changed.push_back(r.id);
  return changed;
}

Admission RouteHealth::admit(const std::string& route, Clock::time_point now, const config::BreakerConfig& cfg) {
  std::lock_guard lock(mutex_);
  auto& s = routes_[route];
  if (now < s.hold_until) return Admission::retry_after;
  if (!s.open) return Admission::allowed;
  if (now < s.open_until) return Admission::breaker_open;
  // Cool-down over: this request probes; others stay away for another cool-down unless
  // the probe reports first.
  s.open_until = now + std::chrono::seconds(cfg.cooldown_seconds);
  return Admission::probe;
}

void RouteHealth::record_success(const std::string& route) {
  std::lock_guard lock(mutex_);
  auto& s = routes_[route];
  s.consecutive_failures = 0;
  s.open = false;
}

void RouteHealth::record_failure(const std::string& route, Clock::time_point now,
                                 const config::BreakerConfig& cfg) {
  std::lock_guard lock(mutex_);
  auto& s = routes_[route];
  ++s.consecutive_failures;
  if (s.open || s.consecutive_failures >= cfg.consecutive_failures) {
    s.open = true;  // opens, or a failed probe re-opens
    s.open_until = now + std::chrono::seconds(cfg.cooldown_seconds);
  }
}

void RouteHealth::hold_until(const std::string& route, Clock::time_point until) {
  std::lock_guard lock(mutex_);
  auto& s = routes_[route];
  if (until > s.hold_until) s.hold_until = until;
}

void RouteHealth::reset(const std::string& route) {
  std::lock_guard lock(mutex_);
  routes_.erase(route);
}

bool RouteHealth::is_open(const std::string& route, Clock::time_point now) const {
  return breaker_state(route, now) == BreakerState::open;
}

RouteHealth::BreakerState RouteHealth::breaker_state(const std::string& route, Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  const auto it = routes_.find(route);
  if (it == routes_.end() || !it->second.open) return BreakerState::closed;
  return now < it->second.open_until ? BreakerState::open : BreakerState::half_open;
}

std::optional<Clock::time_point> RouteHealth::eligible_again(const std::string& route) const {
  std::lock_guard lock(mutex_);
  const auto it = routes_.find(route);
  if (it == routes_.end()) return std::nullopt;
  auto t = it->second.hold_until;
  if (it->second.open && it->second.open_until > t) t = it->second.open_until;
  return t;
}

}  // namespace tresor::router
