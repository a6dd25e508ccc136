#include "server/tracer.h"

#include <spdlog/spdlog.h>


#include "common/ids.h"
#include "server/http_fetch.h"
#include "server/log_throttle.h"
#include "server/request_trace.h"

#ifndef TRESOR_VERSION
#define TRESOR_VERSION "dev"
#endif

namespace tresor::server {
namespace {

telemetry::ExportResource resource(const config::TracingConfig& cfg) {
  telemetry::ExportResource r;
  r.attributes.push_back({"service.name", cfg.service_name});
  r.attributes.push_back({"service.version", std::string(TRESOR_VERSION)});
  // One id per process: replicas (and restarts) are told apart.
  r.attributes.push_back({"service.instance.id", common::new_random_uuid()});
  r.scope_name = "tresor-router";
  r.scope_version = TRESOR_VERSION;
  return r;
}

// OTLP/HTTP §Failures: 429, 502, 503 and 504 (and no answer) may be retried; a 2xx is
// accepted (a partial_success body still means the request was read); anything else is not
// retried. Failures are logged at most once every 10 s: a collector that is down for an hour
// must not fill the log.
telemetry::Transport http_transport(const config::TracingConfig& cfg) {
  auto throttle = std::make_shared<LogThrottle>(std::chrono::seconds(10));
  // One kept-alive connection to the collector, used only by the exporter's thread.
  auto poster = std::make_shared<http_fetch::Poster>(cfg.otlp_endpoint);
  return [url = cfg.otlp_endpoint, throttle, poster](const std::string& body, std::chrono::milliseconds timeout) {
    try {
      const auto answer = poster->post(body, "application/x-protobuf", timeout);
      if (answer.status >= 200 && answer.status < 300) return telemetry::ExportOutcome::ok;
      const bool retryable = answer.status == 429 || answer.status == 502 || answer.status == 503 || answer.status == 504;
      if (const auto left_out = throttle->allow())
        spdlog::warn("tracing: {} answered HTTP {} ({} more export failures not logged)", url, answer.status,
                     *left_out);
      return retryable ? telemetry::ExportOutcome::retryable : telemetry::ExportOutcome::rejected;
    } catch (const std::exception& e) {
      if (const auto left_out = throttle->allow())
        spdlog::warn("tracing: export to {} failed: {} ({} more export failures not logged)", url, e.what(), *left_out);
      return telemetry::ExportOutcome::retryable;
    }
  };
}

telemetry::ExporterOptions options(const config::TracingConfig& cfg) {
  telemetry::ExporterOptions o;
  o.max_queue_spans = cfg.max_queue_spans;
  o.max_batch_spans = cfg.max_batch_spans;
  o.interval = std::chrono::milliseconds(cfg.export_interval_ms);
  o.export_timeout = std::chrono::milliseconds(cfg.export_timeout_ms);
  return o;
}

}  // namespace

Tracer::Tracer(const config::TracingConfig& cfg)
    : sample_ratio_(cfg.sample_ratio), exporter_(options(cfg), resource(cfg), http_transport(cfg)) {}

void Tracer::request_done(const RequestRecord& r, const config::Config& cfg, providers::Clock::time_point now) {
  if (!r.trace || !r.trace->sampled) return;
  // A collector that is down or hangs fills the queue: the spans are counted, not built.
  if (!exporter_.reserve_or_drop(request_span_count(r))) return;
  exporter_.submit(request_spans(r, cfg, now, std::chrono::system_clock::now()));
}

std::string Tracer::metrics_text() const {
  const auto c = exporter_.counts();
  std::string out;
  out += "# HELP tresor_trace_spans_total Spans by what became of them: exported (a collector accepted them), "
         "dropped_queue_full (the export queue was full), dropped_export_failed (the collector refused them or never "
         "answered).\n# TYPE tresor_trace_spans_total counter\n";
  out += "tresor_trace_spans_total{result=\"exported\"} " + std::to_string(c.exported) + "\n";
  out += "tresor_trace_spans_total{result=\"dropped_queue_full\"} " + std::to_string(c.dropped_queue_full) + "\n";
  out += "tresor_trace_spans_total{result=\"dropped_export_failed\"} " + std::to_string(c.dropped_export_failed) + "\n";
  out += "# HELP tresor_trace_export_failures_total OTLP export requests that failed after their retry.\n"
         "# TYPE tresor_trace_export_failures_total counter\n";
  out += "tresor_trace_export_failures_total " + std::to_string(c.export_failures) + "\n";
  out += "# HELP tresor_trace_queue_spans Spans waiting for export.\n# TYPE tresor_trace_queue_spans gauge\n";
  out += "tresor_trace_queue_spans " + std::to_string(c.queued) + "\n";
  return out;
}

std::unique_ptr<Tracer> make_tracer(const config::Config& cfg) {
  if (!cfg.tracing.enabled()) return nullptr;
  spdlog::info("tracing: OTLP/HTTP protobuf to {}", cfg.tracing.otlp_endpoint);
  return std::make_unique<Tracer>(cfg.tracing);
}

}  // namespace tresor::server
