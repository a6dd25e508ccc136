#include "server/request_trace.h"

#include <algorithm>

#include "common/decimal.h"

namespace tresor::server {
namespace {

using router::AttemptOutcome;
using router::AttemptRecord;
using telemetry::Span;

bool attempted(const AttemptRecord& a) {
  return router::was_attempted(a.outcome) && a.started != providers::Clock::time_point{};
}

// An attempt with a CLIENT span of its own: tried, and given a span id by its runner.
bool has_span(const AttemptRecord& a) { return attempted(a) && a.runner_tag != 0; }

bool attempt_failed(AttemptOutcome o) { return o != AttemptOutcome::ok && o != AttemptOutcome::hedged_cancelled; }

// Steady-clock instants as Unix nanoseconds, against one reading of both clocks.
struct WallClock {
  providers::Clock::time_point now;
  std::chrono::system_clock::time_point wall_now;
  uint64_t unix_nano(providers::Clock::time_point t) const {
    const auto wall = wall_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(now - t);
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(wall.time_since_epoch()).count());
  }
};

const config::RouteConfig* find_route(const config::Config& cfg, const std::string& id) {
  for (const auto& route : cfg.routes)
    if (route.id == id) return &route;
  return nullptr;
}

// server.address and server.port of a provider's base URL ("https://host:port/path").
void set_server(Span& span, const std::string& base_url) {
  const auto scheme_end = base_url.find("://");
  if (scheme_end == std::string::npos) return;
  const std::string scheme = base_url.substr(0, scheme_end);
  std::string authority = base_url.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find('/'));
  int64_t port = scheme == "https" ? 443 : 80;
  std::string host = authority;
  const auto colon = authority.rfind(':');
  const auto bracket = authority.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    host = authority.substr(0, colon);
    port = std::strtoll(authority.c_str() + colon + 1, nullptr, 10);
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  span.set("server.address", host);
  span.set("server.port", port);
}

std::string_view operation(const RequestRecord& r) {
  return r.endpoint == "/v1/audio/transcriptions" ? "transcription" : "chat";
}

Span attempt_span(const RequestRecord& r, const config::Config& cfg, size_t i, const WallClock& clock) {
  const AttemptRecord& a = r.attempts[i];
  Span s;
  s.trace_id = r.trace->trace_id;
  s.span_id = telemetry::span_id_from(a.runner_tag);
  s.parent_id = r.trace->span_id;
  s.kind = telemetry::SpanKind::client;
  s.start_unix_nano = clock.unix_nano(a.started);
  s.end_unix_nano = clock.unix_nano(a.started + std::chrono::milliseconds(a.ms));
  const config::RouteConfig* route = find_route(cfg, a.route);
  const std::string model = route ? route->upstream_model : std::string();
  s.name = std::string(operation(r)) + (model.empty() ? "" : " " + model);
  s.set("gen_ai.operation.name", std::string(operation(r)));
  // Every upstream speaks OpenAI's API: that is the telemetry flavour (gen_ai.provider.name
  // note 2); the configured provider is tresor.provider.
  s.set("gen_ai.provider.name", std::string("openai"));
  if (!model.empty()) s.set("gen_ai.request.model", model);
  if (route) {
    s.set("tresor.provider", route->provider);
    const auto provider = cfg.providers.find(route->provider);
    if (provider != cfg.providers.end()) set_server(s, provider->second.base_url);
  }
  s.set("tresor.route", a.route);
  s.set("tresor.attempt.outcome", std::string(router::outcome_name(a.outcome)));
  s.set("tresor.attempt.reason", std::string(attempt_reason(r.attempts, i)));
  if (a.http_status != 0) s.set("http.response.status_code", int64_t{a.http_status});
  if (attempt_failed(a.outcome)) {
    const std::string type = a.outcome == AttemptOutcome::http_status ? std::to_string(a.http_status)
                                                                       : std::string(router::outcome_name(a.outcome));
    s.set("error.type", type);
    s.status = telemetry::SpanStatus::error;
    s.status_message = type;
  }
  return s;
}

void set_request_attributes(Span& s, const RequestRecord& r, int64_t attempts) {
  const std::string op(operation(r));
  s.set("gen_ai.operation.name", op);
  s.set("gen_ai.provider.name", std::string("openai"));
  if (!r.requested_route.empty()) s.set("gen_ai.request.model", r.requested_route);
  if (op == "chat") s.set("gen_ai.request.stream", r.stream);
  if (!r.response_model.empty()) s.set("gen_ai.response.model", r.response_model);
  if (!r.finish_reasons.empty()) s.set("gen_ai.response.finish_reasons", r.finish_reasons);
  if (r.billed) {
    s.set("gen_ai.usage.input_tokens", r.billed->prompt_tokens);
    s.set("gen_ai.usage.output_tokens", r.billed->completion_tokens);
    s.set("tresor.usage_estimated", r.billed->estimated);
    if (!r.billed->currency.empty()) {
      s.set("tresor.spend", common::format_nanos(r.billed->spend_nanos, 0));
      s.set("tresor.currency", r.billed->currency);
    }
  }
  if (r.pace.first_write)
    s.set("gen_ai.response.time_to_first_chunk", std::chrono::duration<double>(*r.pace.first_write - r.started).count());
  s.set("http.request.method", r.method);
  s.set("http.route", std::string(r.endpoint));
  s.set("http.response.status_code", int64_t{r.status});
  s.set("tresor.request_id", r.request_id);
  if (!r.customer.empty()) s.set("tresor.customer", r.customer);
  if (!r.requested_route.empty()) s.set("tresor.requested_route", r.requested_route);
  if (!r.routed_model.empty()) s.set("tresor.routed_model", r.routed_model);
  s.set("tresor.attempts", attempts);
  s.set("tresor.failover", r.failover);
  if (r.receipt_id) s.set("tresor.receipt_id", *r.receipt_id);
  if (r.status >= 500) {
    s.set("error.type", std::to_string(r.status));
    s.status = telemetry::SpanStatus::error;
    s.status_message = "HTTP " + std::to_string(r.status);
  }
}

}  // namespace

std::string_view attempt_reason(const std::vector<AttemptRecord>& attempts, size_t i) {
  const AttemptRecord* previous = nullptr;
  bool committed_failure = false;
  for (size_t j = 0; j < i; ++j) {
    if (!attempted(attempts[j])) continue;
    previous = &attempts[j];
    committed_failure = committed_failure || router::stream_failed_after_commit(attempts[j].outcome);
  }
  if (!previous) return "initial";
  const AttemptRecord& a = attempts[i];
  // Started while the one before it still ran: a hedge beside it.
  if (a.started < previous->started + std::chrono::milliseconds(previous->ms)) return "hedge";
  if (committed_failure) return "recovery";
  return a.route == previous->route ? "retry" : "failover";
}

size_t request_span_count(const RequestRecord& r) {
  return 1 + static_cast<size_t>(std::count_if(r.attempts.begin(), r.attempts.end(), has_span));
}

std::vector<Span> request_spans(const RequestRecord& r, const config::Config& cfg, providers::Clock::time_point now,
                                std::chrono::system_clock::time_point wall_now) {
  std::vector<Span> spans;
  if (!r.trace || !r.trace->sampled) return spans;
  const WallClock clock{now, wall_now};
  Span request;
  request.trace_id = r.trace->trace_id;
  request.span_id = r.trace->span_id;
  request.parent_id = r.trace->parent_id;
  request.trace_state = r.trace->tracestate;
  request.kind = telemetry::SpanKind::server;
  request.start_unix_nano = clock.unix_nano(r.started);
  request.end_unix_nano = clock.unix_nano(now);
  request.name = std::string(operation(r)) + (r.requested_route.empty() ? "" : " " + r.requested_route);
  spans.push_back(Span());  // the request's own, filled below once the attempts are counted
  int64_t attempts = 0;
  for (size_t i = 0; i < r.attempts.size(); ++i) {
    const AttemptRecord& a = r.attempts[i];
    if (has_span(a)) {
      spans.push_back(attempt_span(r, cfg, i, clock));
      ++attempts;
      continue;
    }
    // Not attempted (a breaker open, Retry-After, a route that may not recover): an event.
    telemetry::SpanEvent skipped;
    skipped.time_unix_nano = request.start_unix_nano;
    skipped.name = "tresor.route_skipped";
    skipped.attributes.push_back({"tresor.route", a.route});
    skipped.attributes.push_back({"tresor.attempt.outcome", std::string(router::outcome_name(a.outcome))});
    request.events.push_back(std::move(skipped));
  }
  set_request_attributes(request, r, attempts);
  spans.front() = std::move(request);
  return spans;
}

}  // namespace tresor::server
