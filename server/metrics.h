// The process's Prometheus metrics (GET /metrics, text format 0.0.4), on prometheus-cpp's
// registry: request, route and attempt counters, failovers, duration histograms (total,
// upstream wait, the router's own overhead), live gauges, receipts, config reloads, plus
// the standard process_* metrics read from /proc at scrape time, and money: spend settled
// (exact integer nanos), reservation refusals, cut streams billed; per configured route
// (issue 20, from RequestRecord in request_done): time to first token, time per output
// token, gaps between stream writes, tokens, upstream call durations (OpenTelemetry GenAI
// names) and streams whose upstream failed after the 200. Names and labels are listed in
// deploy/README.md; label values are bounded (path templates, configured routes, providers
// and upstream models, outcome names, status codes, configured currencies).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "accounts/accounts.h"
#include "config/config.h"
#include "receipts/receipt_service.h"
#include "storage/store_breaker.h"
#include "router/failover.h"
#include "router/route_health.h"
#include "server/request_record.h"

namespace tresor::server {

// The upload spool at scrape time (SpoolBudget, server.spool_max_bytes).
struct SpoolCounts {
  uint64_t bytes_in_use = 0;  // reserved by the uploads in flight
  uint64_t refusals = 0;      // uploads refused 503 spool_full since the start
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // A request ended (a client that left before its answer has status 499).
  void request_done(const RequestRecord& r, providers::Clock::time_point now);
  void connection_opened();
  void connection_closed();
  // server.max_connections reached: an idle connection was closed to make room, or (none
  // idle) the new one was refused.
  void idle_connection_closed();
  void connection_refused();
  void stream_started();
  void stream_ended();
  void config_reload(bool ok);
  // tresor_signing_key_conflict: 1 while another replica on the shared store has recorded
  // a different key under one of this replica's kids (receipts/key_registry.h), else 0.
  void signing_key_conflict(bool conflict);

  // Money. `route` is a configured route id (RouteConfig::id, the one that served) and
  // `currency` its pricing's currency: /metrics shows only configured routes, so other
  // values are counted but never rendered.
  // A request's charge was settled: `nanos` (≤ 0 adds nothing) to
  // tresor_spend_nanos_total{route,currency}, and also to
  // tresor_spend_estimated_nanos_total when its usage was estimated (usage_estimated).
  void spend(std::string_view route, std::string_view currency, int64_t nanos, bool estimated);
  // A reservation (or admission) was refused: tresor_reservation_refusals_total{reason}.
  void reservation_refused(accounts::Refusal::Kind reason);
  // A stream cut before its end (client gone, upstream cut) was billed all the same:
  // tresor_cut_streams_billed_total{route}.
  void cut_stream_billed(std::string_view route);

  // Issue 18. A hedge was started and won / lost / failed: tresor_hedges_total{result}
  // (started = all three). A committed stream's upstream failed and it was recovered, or
  // its recovery diverged, or no attempt could continue it:
  // tresor_stream_recoveries_total{route,result} (route: the one whose stream failed).
  void hedge(router::FailoverResult::Hedge outcome);
  enum class Recovery { recovered, diverged, failed };
  void stream_recovery(std::string_view route, Recovery result);

  // The shared store (Redis): its breaker, rendered as tresor_store_up and
  // tresor_store_breaker_openings_total (not set for SQLite: no such series).
  void set_store_breaker(std::shared_ptr<const storage::StoreBreaker> breaker);
  // A request went on without `function` (rate_limits, credits, receipts) because the
  // store was unreachable and store.outage says open: tresor_store_outage_served_total.
  void store_outage_served(std::string_view function);

  // The exposition text. Breaker states are read for the routes of `cfg`.
  std::string render(const config::Config& cfg, const router::RouteHealth& health,
                     const receipts::ReceiptService::Counts& receipts, const SpoolCounts& spool = {},
                     const receipts::TransparencyLog* log = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::server
