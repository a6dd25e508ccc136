#include "server/status_board.h"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>

#include "receipts/transparency_log.h"

namespace tresor::server {
namespace json = boost::json;
using router::AttemptOutcome;

namespace {

int64_t steady_second(providers::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool configured(const config::Config& cfg, std::string_view route) {
  return std::any_of(cfg.routes.begin(), cfg.routes.end(), [&](const auto& r) { return r.id == route; });
}

// Not attempted, or given up by the gateway itself: says nothing about the upstream.
bool not_an_attempt(AttemptOutcome o) {
  return !router::was_attempted(o) || o == AttemptOutcome::hedged_cancelled;
}

// An attempt the route is to blame for; a 4xx handed through (the request was wrong) is not.
bool failed(const router::AttemptRecord& a) {
  if (a.outcome == AttemptOutcome::ok || not_an_attempt(a.outcome)) return false;
  if (a.outcome == AttemptOutcome::http_status && a.http_status >= 400 && a.http_status < 500)
    return a.http_status == 408 || a.http_status == 429;
  return true;
}

std::string reason(const router::AttemptRecord& a) {
  if (a.outcome == AttemptOutcome::http_status) return std::to_string(a.http_status);
  return std::string(router::outcome_name(a.outcome));
}

void observe(std::array<uint32_t, StatusBoard::kBuckets>& h, providers::Clock::duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  size_t b = 0;
  while (b < StatusBoard::kBoundsMs.size() && ms > static_cast<int64_t>(StatusBoard::kBoundsMs[b])) ++b;
  ++h[b];
}

json::value quantiles(const std::array<uint32_t, StatusBoard::kBuckets>& h) {
  const double p50 = StatusBoard::quantile_ms(h, 0.5);
  if (p50 < 0) return nullptr;
  json::object o;
  o["p50"] = std::round(p50);
  o["p95"] = std::round(StatusBoard::quantile_ms(h, 0.95));
  return o;
}

const char* breaker_name(router::RouteHealth::BreakerState s) {
  switch (s) {
    case router::RouteHealth::BreakerState::open: return "open";
    case router::RouteHealth::BreakerState::half_open: return "half_open";
    default: return "closed";
  }
}

}  // namespace

StatusBoard::Second& StatusBoard::Window::at(int64_t second) {
  auto& s = ring[static_cast<size_t>(second % kWindowSeconds)];
  if (s.second != second) s = Second{second};
  return s;
}

double StatusBoard::quantile_ms(const std::array<uint32_t, kBuckets>& counts, double q) {
  uint64_t total = 0;
  for (const auto c : counts) total += c;
  if (total == 0) return -1;
  // Linear inside the bucket that holds the rank (Prometheus' histogram_quantile); the
  // open last bucket reports its lower bound.
  const double rank = q * static_cast<double>(total);
  double below = 0;
  for (size_t b = 0; b < kBuckets; ++b) {
    const double here = counts[b];
    if (here > 0 && below + here >= rank) {
      const double lo = b == 0 ? 0 : kBoundsMs[b - 1];
      if (b == kBoundsMs.size()) return lo;
      return lo + (kBoundsMs[b] - lo) * std::clamp((rank - below) / here, 0.0, 1.0);
    }
    below += here;
  }
  return kBoundsMs.back();
}

void StatusBoard::request_done(const RequestRecord& r, providers::Clock::time_point now, const config::Config& cfg) {
  if (!r.inference || r.attempts.empty()) return;
  const int64_t sec = steady_second(now);
  std::lock_guard lock(mutex_);
  for (const auto& a : r.attempts) {
    if (not_an_attempt(a.outcome) || !configured(cfg, a.route)) continue;
    auto& s = routes_[a.route].at(sec);
    ++s.attempts;
    if (failed(a)) ++s.errors;
  }
  if (!r.routed_model.empty() && configured(cfg, r.routed_model) && r.status < 500) {
    auto& s = routes_[r.routed_model].at(sec);
    ++s.served;
    observe(s.latency, now - r.started);
    if (r.stream && r.pace.first_write) observe(s.ttft, *r.pace.first_write - r.started);
  }
  add_events(r, cfg, unix_ms_now());
}

// Failovers, requests no route could answer, and each stream that failed after its 200
// with what became of its recovery.
void StatusBoard::add_events(const RequestRecord& r, const config::Config& cfg, int64_t unix_ms) {
  const auto& at = r.attempts;
  const auto& first = at.front();
  if (!configured(cfg, first.route)) return;
  const bool served = !r.routed_model.empty() && r.status < 500;
  // The last thing that went wrong on the first route: why the request left it.
  auto why = std::find_if(at.rbegin(), at.rend(), [&](const auto& a) {
    return a.route == first.route && a.outcome != AttemptOutcome::ok;
  });
  if (served && r.failover && r.routed_model != first.route && why != at.rend())
    push_event({unix_ms, "failover", first.route, r.routed_model, reason(*why), r.request_id});
  if (!served && r.status >= 500 && at.back().outcome != AttemptOutcome::ok)
    push_event({unix_ms, "unavailable", first.route, "", reason(at.back()), r.request_id});
  for (size_t i = 0; i < at.size(); ++i) {
    if (!router::stream_broke_after_commit(at[i].outcome)) continue;
    const auto rest = at.begin() + static_cast<std::ptrdiff_t>(i) + 1;
    const auto ok = std::find_if(rest, at.end(), [](const auto& a) { return a.outcome == AttemptOutcome::ok; });
    const bool diverged = std::any_of(rest, at.end(), [](const auto& a) {
      return a.outcome == AttemptOutcome::recovery_diverged;
    });
    const char* kind = ok != at.end() ? "recovered" : diverged ? "recovery_diverged" : "recovery_failed";
    push_event({unix_ms, kind, at[i].route, ok != at.end() ? ok->route : "", reason(at[i]), r.request_id});
  }
}

// The same failover again and again (every request while a breaker is open) is one line
// with a count, so it does not push everything else out of the list.
void StatusBoard::push_event(Event e) {
  if (!events_.empty()) {
    auto& last = events_.back();
    if (last.kind == e.kind && last.route == e.route && last.to == e.to && last.reason == e.reason) {
      last.unix_ms = e.unix_ms;
      last.request_id = std::move(e.request_id);
      ++last.count;
      return;
    }
  }
  events_.push_back(std::move(e));
  while (events_.size() > kMaxEvents) events_.pop_front();
}

void StatusBoard::stream_started() {
  std::lock_guard lock(mutex_);
  ++streams_;
}

void StatusBoard::stream_ended() {
  std::lock_guard lock(mutex_);
  --streams_;
}

std::string StatusBoard::snapshot_json(const config::Config& cfg, const router::RouteHealth& health,
                                       const receipts::TransparencyLog* log, providers::Clock::time_point now) {
  const int64_t sec = steady_second(now);
  const int64_t unix_ms = unix_ms_now();
  json::object doc;
  doc["now_unix_ms"] = unix_ms;
  doc["window_seconds"] = kWindowSeconds;
  doc["rate_seconds"] = kRateSeconds;
  doc["spark_step_seconds"] = kSparkStep;
  json::array routes;
  std::lock_guard lock(mutex_);
  std::erase_if(routes_, [&](const auto& kv) { return !configured(cfg, kv.first); });
  for (const auto& rc : cfg.routes) {
    json::object o;
    o["id"] = rc.id;
    o["provider"] = rc.provider;
    o["type"] = rc.type == config::RouteType::transcription ? "transcription" : "chat";
    const auto state = health.breaker_state(rc.id, now);
    o["breaker"] = breaker_name(state);
    double hold = 0;
    if (const auto until = health.eligible_again(rc.id); until && *until > now)
      hold = std::chrono::duration<double>(*until - now).count();
    o["hold_seconds"] = std::round(hold * 10) / 10;
    uint64_t attempts = 0, errors = 0, served = 0, recent = 0;
    std::array<uint32_t, kBuckets> latency{}, ttft{};
    json::array spark_attempts, spark_errors;
    std::vector<uint32_t> pa(kWindowSeconds / kSparkStep), pe(kWindowSeconds / kSparkStep);
    if (const auto it = routes_.find(rc.id); it != routes_.end()) {
      for (const auto& s : it->second.ring) {
        const int64_t age = sec - s.second;
        if (s.second < 0 || age < 0 || age >= kWindowSeconds) continue;
        attempts += s.attempts;
        errors += s.errors;
        served += s.served;
        if (age < kRateSeconds) recent += s.attempts;
        for (size_t b = 0; b < kBuckets; ++b) {
          latency[b] += s.latency[b];
          ttft[b] += s.ttft[b];
        }
        const size_t point = pa.size() - 1 - static_cast<size_t>(age / kSparkStep);
        pa[point] += s.attempts;
        pe[point] += s.errors;
      }
    }
    for (size_t p = 0; p < pa.size(); ++p) {
      spark_attempts.push_back(pa[p]);
      spark_errors.push_back(pe[p]);
    }
    o["requests_per_second"] = std::round(static_cast<double>(recent) / kRateSeconds * 100) / 100;
    o["attempts"] = attempts;
    o["errors"] = errors;
    o["served"] = served;
    o["error_rate"] = attempts ? std::round(static_cast<double>(errors) / attempts * 1000) / 1000 : 0.0;
    o["latency_ms"] = quantiles(latency);
    o["ttft_ms"] = quantiles(ttft);
    o["spark_attempts"] = std::move(spark_attempts);
    o["spark_errors"] = std::move(spark_errors);
    routes.push_back(std::move(o));
  }
  doc["routes"] = std::move(routes);
  doc["in_flight_streams"] = streams_;
  json::array events;
  for (auto e = events_.rbegin(); e != events_.rend(); ++e) {  // newest first
    json::object o;
    o["unix_ms"] = e->unix_ms;
    o["kind"] = e->kind;
    o["route"] = e->route;
    o["to"] = e->to;
    o["reason"] = e->reason;
    o["request_id"] = e->request_id;
    o["count"] = e->count;
    events.push_back(std::move(o));
  }
  doc["events"] = std::move(events);
  json::value log_doc = nullptr;
  if (log) {
    json::object l;
    l["origin"] = cfg.log.origin;
    if (const auto cp = log->checkpoint()) {
      // A checkpoint note carries no time: this is when the status page first saw it.
      if (cp->size != checkpoint_.size || checkpoint_.unix_ms == 0) checkpoint_ = {cp->size, unix_ms};
      l["size"] = cp->size;
      l["seen_unix_ms"] = checkpoint_.unix_ms;
      l["cosignatures"] = cp->cosignatures();
    } else {
      l["size"] = nullptr;
    }
    l["consistent"] = log->consistent();
    log_doc = std::move(l);
  }
  doc["log"] = std::move(log_doc);
  return json::serialize(doc);
}

}  // namespace tresor::server
