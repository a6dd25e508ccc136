#include "server/endpoint_support.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>

#include "common/decimal.h"
#include "common/http_text.h"
#include "router/timeout_override.h"
#include "server/receipt_issuer.h"
#include "server/upstream_errors.h"

namespace tresor::server {

using providers::Clock;
using router::AttemptOutcome;

namespace {

bool receipt_opt_out(const RequestHead& head) {
  const auto v = head.value("X-Tresor-Receipt");
  return boost::beast::iequals(v, "false") || v == "0";
}

constexpr std::string_view kNonceHeader = "X-Tresor-Nonce";

// Printable UTF-8: valid UTF-8 without C0 controls (tab included), DEL or C1 controls
// (U+0080-U+009F, C2 80-C2 9F). The nonce goes into a signed JSON claim: a byte that is
// not UTF-8 makes the receipt unreadable by jose, Python's json and tresor-verify, and a
// control character is never part of a nonce a client meant.
bool printable_utf8(std::string_view v) {
  if (!simdjson::validate_utf8(v.data(), v.size())) return false;
  for (size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c == 0xC2 && i + 1 < v.size() && static_cast<unsigned char>(v[i + 1]) <= 0x9F) return false;
  }
  return true;
}

// The old docs' replay nonce, copied into the receipt. Bounded so a client cannot inflate
// every receipt; one header at most (two would leave the receipt's claim a guess). An
// unusable nonce is refused rather than dropped: the client relies on finding it signed.
std::variant<std::optional<std::string>, ApiError> nonce_of(const RequestHead& head) {
  constexpr size_t kMaxNonceBytes = 256;
  const auto values = head.values(kNonceHeader);
  if (values.empty()) return std::optional<std::string>();
  const auto refuse = [](std::string message) {
    return invalid_request("invalid_nonce", std::move(message), std::string(kNonceHeader));
  };
  if (values.size() > 1) return refuse("X-Tresor-Nonce must be sent at most once");
  const std::string_view nonce = values.front();
  if (nonce.empty()) return std::optional<std::string>();  // an empty header, as before: no nonce
  if (nonce.size() > kMaxNonceBytes)
    return refuse("X-Tresor-Nonce must be at most " + std::to_string(kMaxNonceBytes) + " bytes");
  if (!printable_utf8(nonce))
    return refuse("X-Tresor-Nonce must be printable UTF-8 text (no control characters)");
  return std::optional<std::string>(std::string(nonce));
}

constexpr std::string_view kHedgeHeader = "X-Tresor-Hedge-After-Ms";
constexpr unsigned kMaxHedgeAfterMs = 600000;  // the longest budget

// Milliseconds 0..600000 as plain digits, sent once; 0 turns hedging off for the request.
std::variant<std::optional<unsigned>, ApiError> hedge_after_of(const RequestHead& head) {
  const auto values = head.values(kHedgeHeader);
  if (values.empty()) return std::optional<unsigned>();
  const auto refuse = [] {
    return invalid_request("invalid_hedge_override",
                           "X-Tresor-Hedge-After-Ms must be sent once, as an integer from 0 to 600000 (milliseconds)",
                           std::string(kHedgeHeader));
  };
  if (values.size() > 1) return refuse();
  // At most six digits (no padded forms of a valid value), no surrounding whitespace.
  const std::string_view v = values.front();
  const auto ms = v.size() > 6 ? std::nullopt : common::decimal_digits(v);
  if (!ms || *ms > kMaxHedgeAfterMs) return refuse();
  return std::optional<unsigned>(static_cast<unsigned>(*ms));
}

}  // namespace

std::variant<ControlHeaders, ApiError> check_control_headers(const Runtime& rt, const RequestHead& head,
                                                             const config::ApiKeyConfig* key) {
  const auto& t = rt.config->timeouts;
  const auto budget = router::parse_timeout_override(head.values(router::kTimeoutHeader), t.default_seconds,
                                                     t.max_seconds);
  if (!budget)
    return invalid_request("invalid_timeout_override", "X-Tresor-Timeout-Seconds must be a positive integer",
                           std::string(router::kTimeoutHeader));
  ControlHeaders controls;
  controls.key = key;
  controls.budget = *budget;
  controls.receipt_opt_out = receipt_opt_out(head);
  auto nonce = nonce_of(head);
  if (auto* err = std::get_if<ApiError>(&nonce)) return std::move(*err);
  controls.nonce = std::get<std::optional<std::string>>(std::move(nonce));
  auto hedge = hedge_after_of(head);
  if (auto* err = std::get_if<ApiError>(&hedge)) return std::move(*err);
  controls.hedge_after_ms = std::get<std::optional<unsigned>>(hedge);
  return controls;
}

ApiError resolve_error(const router::ResolveResult& resolved) {
  switch (resolved.error) {
    case router::ResolveError::malformed:
      return invalid_request("invalid_parameter", resolved.message, std::string("model"));
    case router::ResolveError::wrong_type:
      return invalid_request("model_not_supported", resolved.message, std::string("model"));
    case router::ResolveError::not_found:
      break;
  }
  return ApiError{404, "invalid_request_error", "model_not_found", resolved.message, std::string("model")};
}

TresorInfo tresor_info(const std::string& requested_route, const router::AttemptPlan& plan) {
  TresorInfo info;
  info.requested_route = requested_route;
  info.routed_model = plan.route->id;
  info.failover = plan.candidate_index > 0;  // left the preferred route (spec §3.2)
  return info;
}

std::string attempts_with_success(const router::AttemptPlan& plan, Clock::time_point attempt_start) {
  auto attempts = *plan.history;
  const auto now = Clock::now();
  const auto ms = [&](Clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count();
  };
  router::AttemptRecord ok;
  ok.route = plan.route->id;
  ok.outcome = AttemptOutcome::ok;
  ok.ms = ms(attempt_start);
  // A hedged pair: the other attempt is being cancelled now; both in the order they began.
  std::optional<router::AttemptRecord> other;
  if (plan.race) {
    const auto& runner = plan.race->runners[1 - plan.race_slot];
    if (runner.started) {
      router::AttemptRecord r;
      r.route = runner.route;
      r.outcome = AttemptOutcome::hedged_cancelled;
      r.ms = ms(*runner.started);
      other = std::move(r);
    }
  }
  if (other && plan.race_slot == 1) attempts.push_back(*other);
  attempts.push_back(std::move(ok));
  if (other && plan.race_slot == 0) attempts.push_back(*other);
  return router::format_attempts(attempts);
}

router::AttemptResult outcome_only(AttemptOutcome outcome) {
  router::AttemptResult r;
  r.outcome = outcome;
  return r;
}

boost::asio::awaitable<router::AttemptResult> EndpointAttempts::attempt(const router::AttemptPlan& plan) {
  // The gap since the previous attempt is backoff (or Retry-After): time the upstream made
  // us wait, not the router's own.
  if (last_attempt_end_) waited(*last_attempt_end_);
  // A traced request: this attempt is a span of its own, named in the upstream's
  // traceparent and tagged on the attempt's record (server/request_trace.h). Keyed by the
  // plan: a hedge runs two attempts at once.
  uint64_t span = 0;
  if (services_.record.trace) {
    span = telemetry::span_id_value(telemetry::new_span_id());
    attempt_spans_[&plan] = span;
  }
  router::AttemptResult r = co_await run_attempt(plan);
  attempt_spans_.erase(&plan);
  r.runner_tag = span;
  last_attempt_end_ = Clock::now();
  co_return r;
}

providers::ExchangeTarget EndpointAttempts::target(const router::AttemptPlan& plan, size_t max_body_bytes) const {
  const config::RouteConfig& route = *plan.route;
  std::string traceparent;
  std::string tracestate;
  if (const auto& trace = services_.record.trace) {
    const auto span = attempt_spans_.find(&plan);
    if (span != attempt_spans_.end()) {
      traceparent = telemetry::format_traceparent(trace->trace_id, telemetry::span_id_from(span->second),
                                                  trace->sampled);
      tracestate = trace->tracestate;
    }
  }
  return providers::ExchangeTarget{services_.upstream,
                                   rt_.providers,
                                   rt_.config->providers.at(route.provider),
                                   route,
                                   plan.first_byte_deadline,
                                   plan.request_deadline,
                                   std::chrono::milliseconds(rt_.config->timeouts.connect_ms),
                                   max_body_bytes,
                                   std::move(traceparent),
                                   std::move(tracestate)};
}

router::AttemptResult EndpointAttempts::failed(const router::AttemptPlan& plan,
                                               const providers::UpstreamFailure& failure, bool stream) {
  using Kind = providers::UpstreamFailure::Kind;
  if (failure.kind == Kind::http_status) {
    spdlog::info("route {} answered {}", plan.route->id, failure.detail);
    if (failure.http_status >= 400 && failure.http_status < 500)
      pass_through_ = upstream_rejected(static_cast<unsigned>(failure.http_status), failure.message);
  } else {
    spdlog::warn("route {} attempt failed: {}", plan.route->id, failure.detail);
  }
  return router::attempt_result(failure, plan, stream, Clock::now());
}

namespace {

// X-Tresor-Attempts always; the route and receipt also as headers when the body may not
// carry the tresor object (transcriptions: text/plain answers have no JSON to put it in).
HeaderList answer_headers(const TresorInfo& info, const std::string& attempts, bool route_headers) {
  HeaderList h;
  h.emplace_back(std::string(kAttemptsHeader), attempts);
  if (!route_headers) return h;
  if (info.receipt_id) h.emplace_back("X-Tresor-Receipt-Id", *info.receipt_id);
  if (info.receipt_unavailable) h.emplace_back("X-Tresor-Receipt-Unavailable", "true");
  h.emplace_back("X-Tresor-Requested-Route", info.requested_route);
  h.emplace_back("X-Tresor-Routed-Model", info.routed_model);
  h.emplace_back("X-Tresor-Failover", info.failover ? "true" : "false");
  return h;
}

}  // namespace

static bool durable_settlement(const config::Config& cfg) {
  return cfg.receipts.durability == config::ReceiptsConfig::Durability::sync;
}

boost::asio::awaitable<bool> EndpointAttempts::bill_and_record(const config::RouteConfig& route, const TresorInfo& info,
                                                               accounts::Charge charge, ClaimFigures figures) {
  charge.route = &route;
  figures.usage_estimated = charge.estimated;
  const accounts::Nanos cost = charge.cost;
  // Settled (durable with durability: sync) before the receipt that states the cost.
  co_await services_.accounts.settle(services_.grant, std::move(charge), durable_settlement(*rt_.config));
  if (route.pricing) services_.metrics.spend(route.id, route.pricing->currency, cost, figures.usage_estimated);
  BilledUsage& billed = services_.record.billed.emplace();
  billed.prompt_tokens = figures.prompt_tokens;
  billed.completion_tokens = figures.completion_tokens;
  billed.estimated = figures.usage_estimated;
  if (route.pricing) {
    billed.spend_nanos = cost;
    billed.currency = route.pricing->currency;
  }
  if (!info.receipt_id) co_return false;
  // A store known to be down (its breaker open) is not waited for.
  if (services_.store_breaker && services_.store_breaker->down()) {
    services_.metrics.store_outage_served("receipts");
    co_return false;
  }
  figures.router_attestation = services_.attestation.receipt_block();
  receipts::Claims claims = make_claims(*info.receipt_id, info, std::move(figures), head_.nonce);
  if (route.pricing) {
    claims.cost = common::format_nanos(cost, 0);
    claims.currency = route.pricing->currency;
  }
  std::string customer = head_.customer();
  const bool stored = co_await issue_receipt(services_.receipts, rt_.config->receipts, std::move(customer),
                                             std::move(claims), head_.deadline);
  if (!stored) {
    spdlog::error("route {}: the receipt could not be stored; answering without receipt_id", route.id);
    services_.metrics.store_outage_served("receipts");
  } else {
    services_.record.receipt_id = info.receipt_id;
  }
  co_return stored;
}

boost::asio::awaitable<router::AttemptResult> EndpointAttempts::deliver(const router::AttemptPlan& plan,
                                                                        Clock::time_point attempt_start,
                                                                        WholeAnswer answer) {
  // A hedged pair: the first whole answer wins, the other attempt is cancelled.
  if (!plan.claim_commit()) co_return outcome_only(AttemptOutcome::hedged_cancelled);
  sink_.commit();
  served_by_ = plan;
  TresorInfo info = tresor_info(requested_route_, plan);
  if (!head_.receipt_opt_out) {
    info.receipt_id = services_.grant.id();
    // The body as it stands is exactly what the client gets minus `,"tresor":{…}`.
    answer.figures.response_sha256 = receipts::sha256_hex(answer.body);
  }
  if (!co_await bill_and_record(*plan.route, info, std::move(answer.charge), std::move(answer.figures)) &&
      info.receipt_id) {
    info.receipt_id.reset();
    info.receipt_unavailable = true;
  }
  const std::string attempts = attempts_with_success(plan, attempt_start);
  Response reply;
  if (answer.content_type == "application/json") append_tresor_member(answer.body, tresor_object_json(info));
  reply.body = std::move(answer.body);
  reply.content_type = std::move(answer.content_type);
  reply.headers = answer_headers(info, attempts, answer.route_headers);
  co_await sink_.send(std::move(reply));
  co_return outcome_only(AttemptOutcome::ok);
}

Response failure_response(const router::FailoverResult& result, const std::optional<ApiError>& pass_through) {
  ApiError e;
  switch (result.kind) {
    case router::FailoverResult::Kind::pass_through:
      e = pass_through.value_or(upstream_error("The upstream rejected the request"));
      break;
    case router::FailoverResult::Kind::timed_out: e = upstream_timeout(); break;
    case router::FailoverResult::Kind::no_route: e = no_route_available(); break;
    case router::FailoverResult::Kind::served:
    case router::FailoverResult::Kind::failed:
      e = upstream_error("Every route for this model failed");
      break;
  }
  Response r = error_response(e);
  r.headers.emplace_back(std::string(kAttemptsHeader), router::format_attempts(result.attempts));
  if (result.kind == router::FailoverResult::Kind::no_route)
    r.headers.emplace_back("Retry-After", std::to_string(result.retry_after.count()));
  return r;
}

router::FailoverPolicy failover_policy(const config::Config& cfg, bool stream) {
  router::FailoverPolicy p;
  p.stream = stream;
  p.timeouts = &cfg.timeouts;
  p.retry = &cfg.retry;
  p.breaker = &cfg.breaker;
  p.routing = &cfg.routing;
  return p;
}

receipts::Claims make_claims(const std::string& id, const TresorInfo& info, ClaimFigures figures,
                             const std::optional<std::string>& nonce) {
  receipts::Claims c;
  c.id = id;
  c.issued_at = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  c.requested_route = info.requested_route;
  c.routed_model = info.routed_model;
  c.failover = info.failover;
  c.endpoint = std::move(figures.endpoint);
  c.prompt_tokens = figures.prompt_tokens;
  c.usage_estimated = figures.usage_estimated;
  c.completion_tokens = figures.completion_tokens;
  c.audio_seconds = figures.audio_seconds;
  c.request_sha256 = std::move(figures.request_sha256);
  c.response_sha256 = std::move(figures.response_sha256);
  c.nonce = nonce;
  if (!figures.router_attestation.empty()) c.router_attestation_json = std::move(figures.router_attestation);
  c.recoveries = std::move(figures.recoveries);
  return c;
}

boost::asio::awaitable<void> EndpointAttempts::bill_cut(accounts::Charge charge) {
  const config::RouteConfig* route = charge.route;
  const accounts::Nanos cost = charge.cost;
  const bool estimated = charge.estimated;
  co_await services_.accounts.settle(services_.grant, std::move(charge), durable_settlement(*rt_.config));
  if (!route) co_return;
  if (route->pricing) services_.metrics.spend(route->id, route->pricing->currency, cost, estimated);
  services_.metrics.cut_stream_billed(route->id);
}

ApiError refusal_error(const accounts::Refusal& refusal) {
  using Kind = accounts::Refusal::Kind;
  switch (refusal.kind) {
    case Kind::balance_exceeded: break;
    case Kind::store_unavailable:
      return ApiError{503, "service_unavailable", "store_unavailable",
                      "The shared store is unreachable and store.outage refuses this request; retry shortly",
                      std::nullopt};
    case Kind::rate_limited:
      return ApiError{429, "rate_limit_error", "rate_limit_exceeded",
                      "Rate limit of " + std::to_string(refusal.limit) + " requests exceeded; retry in " +
                          std::to_string(refusal.retry_after) + " s",
                      std::nullopt};
    case Kind::tokens_limited:
      return ApiError{429, "rate_limit_error", "rate_limit_exceeded",
                      "Token limit of " + std::to_string(refusal.limit) + " tokens per window: this request may use " +
                          std::to_string(refusal.requested) + " (prompt bound and max output); retry in " +
                          std::to_string(refusal.retry_after) + " s",
                      std::nullopt};
  }
  return ApiError{402, "insufficient_funds", "balance_exceeded", "Insufficient credit balance", std::nullopt};
}

Response refusal_response(const accounts::Refusal& refusal) {
  Response r = error_response(refusal_error(refusal));
  if (refusal.kind != accounts::Refusal::Kind::balance_exceeded)
    r.headers.emplace_back("Retry-After", std::to_string(refusal.retry_after));
  return r;
}

boost::asio::awaitable<bool> reserve_or_refuse(EndpointServices services, accounts::CostBound bound,
                                               providers::Clock::time_point started, std::chrono::seconds budget,
                                               ResponseSink& sink) {
  // The hold outlives the budget by a margin: the answer's settlement comes after it.
  constexpr auto kHoldMargin = std::chrono::seconds(60);
  const auto refusal =
      co_await services.accounts.reserve(services.grant, bound, budget + kHoldMargin, started + budget);
  if (!refusal) co_return true;
  services.metrics.reservation_refused(refusal->kind);
  Response r = refusal_response(*refusal);
  co_await sink.send(std::move(r));
  co_return false;
}

accounts::Charge chat_charge(const config::RouteConfig& route, const std::optional<providers::TokenUsage>& usage,
                             uint64_t prompt_bytes, uint64_t generated_bytes) {
  accounts::Charge c;
  c.route = &route;
  if (usage) {
    c.prompt_tokens = usage->prompt_tokens;
    c.completion_tokens = usage->completion_tokens;
  } else {
    c.estimated = true;
    c.prompt_tokens = accounts::estimate_tokens(prompt_bytes);
    c.completion_tokens = accounts::estimate_tokens(generated_bytes);
  }
  c.cost = accounts::chat_cost(route, c.prompt_tokens, c.completion_tokens);
  return c;
}

boost::asio::awaitable<void> send_error(ResponseSink& sink, const ApiError& error) {
  Response r = error_response(error);
  co_await sink.send(std::move(r));
}

boost::asio::awaitable<void> serve_with_failover(const Runtime& rt,
                                                 EndpointServices services, const router::Resolution& resolution,
                                                 bool stream, Clock::time_point started, std::chrono::seconds budget,
                                                 EndpointAttempts& attempts, ResponseSink& sink) {
  auto policy = failover_policy(*rt.config, stream);
  policy.hedge_after_ms = attempts.control().hedge_after_ms;
  const common::Deadline deadline(started + budget);
  const auto result =
      co_await router::run_failover(resolution.candidates, started, deadline, policy, services.health, attempts);
  RequestRecord& record = services.record;
  record.stream = stream;
  record.requested_route = resolution.requested_route;
  if (const auto& served = attempts.served_by()) {
    record.routed_model = served->route->id;
    record.failover = served->candidate_index > 0;
  }
  record.attempts = result.attempts;
  services.metrics.hedge(result.hedge);
  if (result.kind == router::FailoverResult::Kind::served) co_return;
  // Every attempt after a stream's commit failed: the client has a 200 already.
  if (co_await attempts.abandon_stream()) co_return;
  Response r = failure_response(result, attempts.pass_through());
  // The retries and failover are done: an SDK retry (the OpenAI SDKs retry 5xx twice by
  // default) would replay the whole chain. They obey this header (retry.client_should_retry).
  if (result.kind != router::FailoverResult::Kind::pass_through && !rt.config->retry.client_should_retry)
    r.headers.emplace_back("x-should-retry", "false");
  co_await sink.send(std::move(r));
}

}  // namespace tresor::server
