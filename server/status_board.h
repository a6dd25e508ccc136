// What the operator status page (GET /status) shows besides the breakers: a rolling
// window per configured route, fed once per request from its RequestRecord, and the last
// failovers and stream recoveries with their reasons.
//
// Bounded: one ring of kWindowSeconds one-second buckets per configured route (a fixed
// latency histogram in each), kMaxEvents events. Only route ids of the config the request
// ran on become keys (a client's model string never does); routes a reload removed are
// dropped at the next snapshot. The request path pays one mutex and a few increments.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

#include "config/config.h"
#include "router/route_health.h"
#include "server/request_record.h"

namespace tresor::receipts {
class TransparencyLog;
}  // namespace tresor::receipts

namespace tresor::server {

class StatusBoard {
 public:
  static constexpr int kWindowSeconds = 300;  // p50/p95, error rate, sparklines
  static constexpr int kRateSeconds = 10;     // the "live" request rate
  static constexpr int kSparkStep = 5;        // seconds per sparkline point (60 points)
  static constexpr size_t kMaxEvents = 20;
  // Latency histogram upper bounds in milliseconds (last bucket: above the last bound).
  static constexpr std::array<uint32_t, 15> kBoundsMs = {5,   10,   25,   50,    100,   250,   500,  1000,
                                                         2500, 5000, 10000, 20000, 30000, 60000, 120000};
  static constexpr size_t kBuckets = kBoundsMs.size() + 1;

  // A request ended (called next to Metrics::request_done); `cfg` is the config it ran on.
  void request_done(const RequestRecord& r, providers::Clock::time_point now, const config::Config& cfg);
  void stream_started();
  void stream_ended();

  // The JSON document of GET /status/data for the routes of `cfg` at `now`.
  std::string snapshot_json(const config::Config& cfg, const router::RouteHealth& health,
                            const receipts::TransparencyLog* log, providers::Clock::time_point now);

  // The histogram's estimate of quantile q (0..1) in ms; -1 when `counts` is empty.
  static double quantile_ms(const std::array<uint32_t, kBuckets>& counts, double q);

 private:
  struct Second {
    int64_t second = -1;  // steady-clock second this bucket holds; -1: never used
    uint32_t attempts = 0;  // attempts made on the route (skipped ones excluded)
    uint32_t errors = 0;    // attempts that failed
    uint32_t served = 0;    // requests this route answered
    std::array<uint32_t, kBuckets> latency{};  // served requests: head to end
    std::array<uint32_t, kBuckets> ttft{};     // served streams: head to first content
  };
  struct Window {
    std::array<Second, kWindowSeconds> ring{};
    Second& at(int64_t second);
  };
  struct Event {
    int64_t unix_ms = 0;
    std::string kind;     // failover, recovered, recovery_diverged, recovery_failed
    std::string route;    // the route that failed
    std::string to;       // the route that answered instead (empty: none)
    std::string reason;   // its attempt outcome (an HTTP status as a number)
    std::string request_id;  // the latest one's
    uint64_t count = 1;      // the same event repeated back to back (a breaker skipping a route)
  };
  struct SeenCheckpoint {
    uint64_t size = 0;
    int64_t unix_ms = 0;
  };

  void add_events(const RequestRecord& r, const config::Config& cfg, int64_t unix_ms);
  void push_event(Event e);

  std::mutex mutex_;
  std::unordered_map<std::string, Window> routes_;
  std::deque<Event> events_;
  int64_t streams_ = 0;
  SeenCheckpoint checkpoint_;
};

}  // namespace tresor::server
