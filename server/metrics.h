// The process's Prometheus metrics (GET /metrics, text format 0.0.4), on prometheus-cpp's
// registry: request, route and attempt counters, failovers, duration histograms (total,
// upstream wait, the router's own overhead), live gauges, receipts, config reloads, plus
// the standard process_* metrics read from /proc at scrape time. Names and labels are
// listed in deploy/README.md; label values are bounded (path templates, configured routes,
// outcome names, status codes).
#pragma once

#include <memory>
#include <string>

#include "config/config.h"
#include "receipts/receipt_service.h"
#include "router/route_health.h"
#include "server/request_record.h"

namespace tresor::server {

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

  // The exposition text. Breaker states are read for the routes of `cfg`.
  std::string render(const config::Config& cfg, const router::RouteHealth& health,
                     const receipts::ReceiptService::Counts& receipts) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::server
