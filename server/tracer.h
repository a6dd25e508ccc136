// Traces (issue 20), as the server uses them: the span exporter (telemetry/) sending OTLP/HTTP
// protobuf to tracing.otlp_endpoint through http_fetch on the exporter's own thread, the
// hand-off of each finished inference request's spans (request_trace.h), and the exporter's
// counters for /metrics. Made only when tracing.otlp_endpoint is set.
#pragma once

#include <memory>
#include <string>

#include "config/config.h"
#include "server/request_record.h"
#include "telemetry/span_exporter.h"

namespace tresor::server {

class Tracer {
 public:
  explicit Tracer(const config::TracingConfig& cfg);

  double sample_ratio() const { return sample_ratio_; }
  // The request is over: its spans go to the exporter's queue (never waits on the network).
  void request_done(const RequestRecord& r, const config::Config& cfg, providers::Clock::time_point now);
  // tresor_trace_spans_total{result}, tresor_trace_export_failures_total,
  // tresor_trace_queue_spans: Prometheus text to append to /metrics.
  std::string metrics_text() const;

 private:
  double sample_ratio_;
  telemetry::SpanExporter exporter_;
};

// Null when tracing is off (no tracing.otlp_endpoint).
std::unique_ptr<Tracer> make_tracer(const config::Config& cfg);

}  // namespace tresor::server
