#include "server/chat_endpoint.h"

#include <spdlog/spdlog.h>

#include "router/failover.h"
#include "providers/openai_adapter.h"
#include "providers/stream_seam.h"
#include "server/chat_request.h"
#include "server/stream_relay.h"
#include "server/tresor_member.h"
#include "server/upstream_errors.h"

namespace tresor::server {
namespace {

using providers::Clock;
using router::AttemptOutcome;

// Helpers below are plain functions on purpose: g++ 12 miscompiles braced temporaries
// inside coroutines (double destruction), so coroutine bodies only use named values.

HeaderList sse_headers(const std::string& attempts) {
  HeaderList h;
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");
  h.emplace_back(std::string(kAttemptsHeader), attempts);
  return h;
}

router::ResolveResult resolve(const Runtime& rt, const ChatRequest& req) {
  router::RouteHints hints;
  if (req.region) hints.region = *req.region;
  if (req.provider) hints.provider = *req.provider;
  return router::resolve_routes(*rt.config, req.model, hints, config::RouteType::chat, req.failover);
}

ClaimFigures chat_figures(const std::string& request_sha256, const accounts::Charge& charge) {
  ClaimFigures f;
  f.endpoint = "/v1/chat/completions";
  f.request_sha256 = request_sha256;
  f.prompt_tokens = charge.prompt_tokens;
  f.completion_tokens = charge.completion_tokens;
  return f;
}

// What the prompt's token estimate counts: the members that become prompt tokens, as sent
// (their JSON punctuation stands in for the chat template's tokens around each message).
uint64_t prompt_bytes(const ChatRequest& req) {
  uint64_t bytes = 0;
  for (const auto& m : req.members)
    if (m.key == "messages" || m.key == "tools" || m.key == "functions") bytes += m.raw_value.size();
  return bytes;
}

std::optional<providers::TokenUsage> reported_usage(const providers::ChatAnswer& answer) {
  if (!answer.usage_reported) return std::nullopt;
  return answer.usage;
}

// What a stream that failed after its first event is continued by on `route`, if anything
// (issue 18): prefill when the route declares it and the client's text can be said as an
// assistant message; else replay, unless the mode forbids it.
std::optional<providers::StreamSeam::Mode> recovery_mode(const config::Config& cfg, const config::RouteConfig& route,
                                                         const ChatRequest& req,
                                                         const providers::DeliveredAnswer& delivered) {
  const config::StreamRecovery mode = route.stream_recovery.value_or(cfg.routing.stream_recovery);
  if (mode == config::StreamRecovery::off) return std::nullopt;
  // After the client's finish there is nothing to continue: a replay checks and drops.
  if (route.supports_prefill && req.choices == 1 && delivered.plain_content() && !delivered.finished())
    return providers::StreamSeam::Mode::prefill;
  if (mode == config::StreamRecovery::prefill_only) return std::nullopt;
  return providers::StreamSeam::Mode::replay;
}

// Whether any stream of this request could be recovered at all (else the relay need not
// keep the delivered text).
bool recovery_possible(const config::Config& cfg, const router::Resolution& resolution) {
  if (cfg.retry.max_stream_recoveries == 0) return false;
  for (const auto* route : resolution.candidates)
    if (route->stream_recovery.value_or(cfg.routing.stream_recovery) != config::StreamRecovery::off) return true;
  return false;
}

ApiError recovery_diverged() {
  return ApiError{502, "server_error", "stream_recovery_diverged",
                  "The upstream stream failed, and the attempt that was to continue it produced a different "
                  "answer; it was not spliced in",
                  std::nullopt};
}

// One exchange per attempt, driven by router::run_failover. A stream, once committed to
// the client, lives in relay_ across attempts: when its upstream fails, the loop's next
// attempts continue it (recover_stream) until one finishes it or none is left.
class ChatAttempts final : public EndpointAttempts {
 public:
  ChatAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head, const ChatRequest& req,
               std::string request_sha256, std::string requested_route, ResponseSink& sink, accounts::Nanos hold,
               bool recoverable)
      : EndpointAttempts(rt, services, head, std::move(requested_route), sink),
        req_(req),
        request_sha256_(std::move(request_sha256)),
        hold_(hold),
        recoverable_(recoverable) {}

  boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) override {
    if (!req_.stream) co_return co_await answer_json(plan);
    if (relay_) co_return co_await recover_stream(plan);
    co_return co_await answer_stream(plan);
  }

  boost::asio::awaitable<bool> abandon_stream() override {
    if (!relay_ || !pending_error_) co_return false;
    co_await end_failed_stream();
    co_return true;
  }

 private:
  boost::asio::awaitable<router::AttemptResult> answer_json(const router::AttemptPlan& plan) {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    // server.max_upstream_body_bytes bounds what one request can make us buffer; no chat
    // completion comes near the 64 MiB default.
    const providers::ExchangeTarget to = target(plan, rt_.config->server.max_upstream_body_bytes);
    std::string body = providers::build_chat_body(req_.members, route.upstream_model);
    const auto asked = Clock::now();
    auto got = co_await providers::exchange_chat(to, std::move(body));
    waited(asked);
    if (auto* failure = std::get_if<providers::UpstreamFailure>(&got)) co_return failed(plan, *failure, false);
    auto& answer = std::get<providers::ChatAnswer>(got);
    WholeAnswer whole;
    whole.charge = chat_charge(route, reported_usage(answer), prompt_bytes(req_), answer.generated_bytes);
    whole.figures = chat_figures(request_sha256_, whole.charge);
    whole.body = std::move(answer.body);
    std::string model = std::move(answer.model);
    std::vector<std::string> finish_reasons = std::move(answer.finish_reasons);
    router::AttemptResult result = co_await deliver(plan, attempt_start, std::move(whole));
    if (result.outcome == AttemptOutcome::ok) {  // the answer the client got (a hedge's loser is not)
      services_.record.response_model = std::move(model);
      services_.record.finish_reasons = std::move(finish_reasons);
    }
    co_return result;
  }

  boost::asio::awaitable<router::AttemptResult> answer_stream(const router::AttemptPlan& plan) {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const providers::ExchangeTarget to = target(plan, rt_.config->server.max_upstream_body_bytes);
    // Always asked for usage, so that every stream is billed (the decoder keeps the usage
    // chunk from a client that did not ask for it, as OpenAI does).
    std::string body = providers::build_chat_body(req_.members, route.upstream_model, req_.upstream_stream_options);
    std::vector<providers::ChatChunk> first;
    OpenedStream opened = co_await open_stream(to, std::move(body), plan.first_byte_deadline, first);
    if (opened.failure) co_return failed(plan, *opened.failure, true);
    auto upstream = std::move(opened.stream);
    // A hedged pair: the first attempt with a first event commits; the other is cancelled.
    if (!plan.claim_commit()) co_return outcome_only(AttemptOutcome::hedged_cancelled);

    // The receipt id is reserved now and travels on the finish chunk, which the relay holds
    // back until the receipt is stored, once the stream completes (then [DONE]).
    info_ = tresor_info(requested_route_, plan);
    if (!head_.receipt_opt_out) info_.receipt_id = services_.grant.id();
    relay_ = std::make_unique<StreamRelay>(tresor_object_json(info_), unreceipted_tresor(),
                                           std::chrono::seconds(rt_.config->timeouts.stream_idle_seconds));
    if (recoverable_) relay_->track_delivered();
    relay_->note_pace_in(&services_.record.pace);
    relay_->take(first);
    // Commit: from here on the client has a 200 and no failover is possible.
    sink_.commit();
    served_by_ = plan;
    const std::string attempts = attempts_with_success(plan, attempt_start);
    if (!co_await sink_.begin_stream(sse_headers(attempts))) {
      spent_.push_back(charge_of(route, *upstream));
      co_await bill_cut(combined_charge(route));
      co_return outcome_only(AttemptOutcome::ok);
    }
    co_return co_await relay_attempt(plan, *upstream, attempt_start, std::nullopt);
  }

  // A stream attempt up to its first chunks (in `first`); nothing reaches the client.
  struct OpenedStream {
    std::unique_ptr<providers::ChatEventStream> stream;
    std::optional<providers::UpstreamFailure> failure;
  };
  boost::asio::awaitable<OpenedStream> open_stream(const providers::ExchangeTarget& to, std::string body,
                                                   common::Deadline first_by, std::vector<providers::ChatChunk>& first) {
    providers::ChatStreamDecoder::Options options;
    options.client_wants_usage = req_.include_usage;
    const auto asked = Clock::now();
    auto opened = co_await providers::open_chat_stream(to, std::move(body), std::move(options));
    OpenedStream out;
    if (auto* failure = std::get_if<providers::UpstreamFailure>(&opened)) {
      waited(asked);
      out.failure = std::move(*failure);
      co_return out;
    }
    out.stream = std::move(std::get<std::unique_ptr<providers::ChatEventStream>>(opened));
    out.failure = co_await out.stream->first_chunks(first_by, first);
    waited(asked);
    co_return out;
  }

  // The client's stream is open and its upstream failed: continue it from this attempt.
  boost::asio::awaitable<router::AttemptResult> recover_stream(const router::AttemptPlan& plan) {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    if (sink_.client_left()) {  // it left during the backoff: nobody to recover for
      co_await end_failed_stream();
      router::AttemptResult r = committed_result(AttemptOutcome::recovery_skipped);
      r.ended = true;
      co_return r;
    }
    const auto mode = recovery_mode(*rt_.config, route, req_, relay_->delivered());
    if (!mode) co_return committed_result(AttemptOutcome::recovery_skipped);
    ++recoveries_made_;
    // The recovery's first forwarded event is due like any attempt's first event.
    common::Deadline first_forward = plan.request_deadline;
    if (const unsigned s = rt_.config->timeouts.attempt_first_event_seconds; s > 0)
      first_forward = common::earlier_of(first_forward, common::Deadline::after(std::chrono::seconds(s)));
    providers::ExchangeTarget to = target(plan, rt_.config->server.max_upstream_body_bytes);
    to.first_byte_deadline = first_forward;
    const bool prefill = *mode == providers::StreamSeam::Mode::prefill;
    std::string body =
        prefill ? providers::build_prefill_body(req_.members, route.upstream_model, req_.upstream_stream_options,
                                                relay_->delivered().content(),
                                                route.prefill_style == config::PrefillStyle::continue_final_message)
                : providers::build_chat_body(req_.members, route.upstream_model, req_.upstream_stream_options);
    std::vector<providers::ChatChunk> first;
    OpenedStream opened = co_await open_stream(to, std::move(body), first_forward, first);
    if (opened.failure) co_return co_await recovery_failed(plan, *opened.failure);
    auto upstream = std::move(opened.stream);

    receipts::Claims::Recovery step;
    step.from = failed_route_;
    step.to = route.id;
    step.offset = relay_->delivered().text_bytes();
    step.mode = prefill ? "prefill" : "replay";
    recoveries_.push_back(std::move(step));
    relay_->continue_with(*mode);
    relay_->take(first);
    co_return co_await relay_attempt(plan, *upstream, attempt_start, first_forward);
  }

  // Relays `upstream` into the client's open stream, to its end or its failure.
  boost::asio::awaitable<router::AttemptResult> relay_attempt(const router::AttemptPlan& plan,
                                                              providers::ChatEventStream& upstream,
                                                              Clock::time_point attempt_start,
                                                              std::optional<common::Deadline> first_forward) {
    const config::RouteConfig& route = *plan.route;
    last_route_ = &route;
    // A relayed stream's time is the upstream's (it paces the events).
    const auto relaying = Clock::now();
    const auto ending = co_await relay_->relay(upstream, sink_, first_forward);
    waited(relaying);
    if (upstream.dropped_events() > 0)
      spdlog::warn("route {}: dropped {} invalid JSON event(s)", route.id, upstream.dropped_events());
    spent_.push_back(charge_of(route, upstream));
    // For the trace: the model and finish reasons of the attempt that ended the stream.
    services_.record.response_model = upstream.response_model();
    services_.record.finish_reasons = upstream.finish_reasons();
    switch (ending) {
      case StreamRelay::Ending::completed:
        co_await complete_stream(plan, attempt_start);
        // The client has its whole stream; keep the upstream connection if its end is here.
        co_await upstream.finish_for_reuse();
        co_return outcome_only(AttemptOutcome::ok);
      case StreamRelay::Ending::client_gone:
        // Billed for what was delivered, without a receipt; never recovered for.
        co_await bill_cut(combined_charge(route));
        co_return outcome_only(AttemptOutcome::ok);
      case StreamRelay::Ending::diverged: {
        services_.metrics.stream_recovery(failed_route_, Metrics::Recovery::diverged);
        spdlog::warn("route {}: the recovery of a stream from {} produced a different answer", route.id,
                     failed_route_);
        const ApiError e = recovery_diverged();
        co_await relay_->fail(sink_, e);
        pending_error_.reset();
        co_await bill_cut(combined_charge(route));
        router::AttemptResult r = committed_result(AttemptOutcome::recovery_diverged);
        r.ended = true;
        co_return r;
      }
      case StreamRelay::Ending::upstream_failed: break;
    }
    // The upstream failed with the client's stream open. A recovery that forwarded
    // nothing failed like an attempt before its first event; otherwise this route's
    // stream is now the one to recover from.
    const bool before_first = recovering() && relay_->forwarded_since_seam() == 0;
    AttemptOutcome outcome = relay_->stalled() ? AttemptOutcome::stream_stalled : AttemptOutcome::stream_cut;
    if (before_first) outcome = relay_->stalled() ? AttemptOutcome::first_event_timeout : AttemptOutcome::reset;
    else failed_route_ = route.id;
    spdlog::warn("route {}: the stream failed after events reached the client: {}", route.id,
                 relay_->failure().message);
    pending_error_ = relay_->failure();
    co_return co_await after_failure(committed_result(outcome));
  }

  // A recovery attempt failed before its first event (connect, status, first event).
  boost::asio::awaitable<router::AttemptResult> recovery_failed(const router::AttemptPlan& plan,
                                                                const providers::UpstreamFailure& failure) {
    router::AttemptResult r = failed(plan, failure, true);
    r.committed = true;
    co_return co_await after_failure(r);
  }

  // Whether the loop may try another recovery; if not, the client's stream ends here. (The
  // deadline is the loop's: when it has passed, no attempt follows and abandon_stream ends it.)
  boost::asio::awaitable<router::AttemptResult> after_failure(router::AttemptResult r) {
    if (recoverable_ && recoveries_made_ < rt_.config->retry.max_stream_recoveries && !sink_.client_left())
      co_return r;
    co_await end_failed_stream();
    r.ended = true;
    co_return r;
  }

  // No attempt continued the stream: the in-band error of the last failure, and the bill.
  boost::asio::awaitable<void> end_failed_stream() {
    const ApiError error = pending_error_.value_or(upstream_error("The upstream stream ended before completion"));
    pending_error_.reset();
    // A client that left is no failed recovery: nobody was waiting for one.
    if (recoverable_ && !sink_.client_left()) services_.metrics.stream_recovery(failed_route_, Metrics::Recovery::failed);
    co_await relay_->fail(sink_, error);
    co_await bill_cut(combined_charge(*last_route_));
  }

  // A whole answer was relayed: bill it and store its receipt, then send the held-back
  // finish chunk (with the receipt id only if stored, like a JSON answer) and [DONE].
  boost::asio::awaitable<void> complete_stream(const router::AttemptPlan& plan, Clock::time_point attempt_start) {
    const config::RouteConfig& route = *plan.route;
    if (recovering()) {
      // Another route finished the answer: the finish chunk says which, and the trail the
      // already-sent X-Tresor-Attempts header could not show.
      info_.routed_model = route.id;
      info_.failover = true;
      info_.recovered_from = failed_route_;
      info_.attempts = attempts_with_success(plan, attempt_start);
      served_by_ = plan;  // the access log and metrics name the route that finished the answer
      relay_->set_tresor(tresor_object_json(info_), unreceipted_tresor());
      services_.metrics.stream_recovery(failed_route_, Metrics::Recovery::recovered);
    }
    // The upstream's usage covers every choice it generated (n > 1 included), not only
    // the one the client saw; a recovered stream pays for every attempt's.
    accounts::Charge charge = combined_charge(route);
    ClaimFigures figures = chat_figures(request_sha256_, charge);
    figures.recoveries = recoveries_;
    if (info_.receipt_id) figures.response_sha256 = relay_->response_sha256();
    const bool stored = co_await bill_and_record(route, info_, std::move(charge), std::move(figures));
    const std::string tail = relay_->release_held(stored) + "data: [DONE]\n\n";
    if (co_await sink_.write_stream(tail)) co_await sink_.end_stream();
  }

  accounts::Charge charge_of(const config::RouteConfig& route, const providers::ChatEventStream& upstream) const {
    return chat_charge(route, upstream.usage(), prompt_bytes(req_), upstream.generated_bytes());
  }

  // Every attempt's charge that reached the client's stream, as one settlement on the
  // route that ended it. Capped at the request's hold (what was reserved before the first
  // attempt), so spent never exceeds credit; never below the last attempt's own cost.
  accounts::Charge combined_charge(const config::RouteConfig& route) const {
    accounts::Charge total;
    total.route = &route;
    for (const auto& c : spent_) {
      total.cost += c.cost;
      total.prompt_tokens += c.prompt_tokens;
      total.completion_tokens += c.completion_tokens;
      total.estimated = total.estimated || c.estimated;
    }
    if (spent_.size() > 1) total.cost = std::max(std::min(total.cost, hold_), spent_.back().cost);
    return total;
  }

  router::AttemptResult committed_result(AttemptOutcome outcome) const {
    router::AttemptResult r = outcome_only(outcome);
    r.committed = true;
    return r;
  }

  std::string unreceipted_tresor() const {
    TresorInfo unreceipted = info_;
    unreceipted.receipt_id.reset();
    unreceipted.receipt_unavailable = !head_.receipt_opt_out;  // said only when storing it failed
    return tresor_object_json(unreceipted);
  }

  bool recovering() const { return !recoveries_.empty(); }

  const ChatRequest& req_;
  std::string request_sha256_;
  accounts::Nanos hold_;
  bool recoverable_;
  // The client's stream, from its commit on (issue 18: it outlives a failed attempt).
  std::unique_ptr<StreamRelay> relay_;
  const config::RouteConfig* last_route_ = nullptr;  // the route whose stream the client got last
  TresorInfo info_;
  std::vector<accounts::Charge> spent_;  // each attempt's that streamed to the client
  std::optional<ApiError> pending_error_;  // the failed stream's in-band error, until recovered
  std::string failed_route_;               // the route whose stream failed last
  unsigned recoveries_made_ = 0;
  std::vector<receipts::Claims::Recovery> recoveries_;
};

}  // namespace

boost::asio::awaitable<void> handle_chat(const Runtime& rt, EndpointServices services, const ControlHeaders& head,
                                         std::string body, Clock::time_point started, ResponseSink& sink) {
  // The exact bytes received, before anything looks at them (the receipt's request_sha256).
  std::string request_sha256 = head.receipt_opt_out ? std::string() : receipts::sha256_hex(body);
  auto parsed = parse_chat_request(body);
  if (auto* err = std::get_if<ApiError>(&parsed)) co_return co_await send_error(sink, *err);
  const auto& req = std::get<ChatRequest>(parsed);
  auto resolved = resolve(rt, req);
  if (!resolved.resolution) {
    const ApiError e = resolve_error(resolved);
    co_return co_await send_error(sink, e);
  }
  const auto& resolution = *resolved.resolution;
  std::optional<int64_t> max_output = req.max_output_tokens;
  // n answers, each up to max (capped: a client may send absurd values, both up to int64).
  if (max_output && req.choices > 1)
    *max_output = *max_output > INT64_MAX / req.choices ? INT64_MAX : *max_output * req.choices;
  const auto bound = accounts::chat_bound(resolution.candidates, body.size(), max_output);
  if (!co_await reserve_or_refuse(services, bound, started, head.budget, sink)) co_return;
  ChatAttempts attempts(rt, services, head, req, std::move(request_sha256), resolution.requested_route, sink,
                        bound.money, req.stream && recovery_possible(*rt.config, resolution));
  co_await serve_with_failover(rt, services, resolution, req.stream, started, head.budget, attempts, sink);
}

}  // namespace tresor::server
