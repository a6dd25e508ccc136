#include "server/chat_endpoint.h"

#include <spdlog/spdlog.h>

#include "router/failover.h"
#include "server/chat_request.h"
#include "server/stream_relay.h"
#include "server/tresor_member.h"

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

// One exchange per attempt, driven by router::run_failover.
class ChatAttempts final : public EndpointAttempts {
 public:
  ChatAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head, const ChatRequest& req,
               std::string request_sha256, std::string requested_route, ResponseSink& sink)
      : EndpointAttempts(rt, services, head, std::move(requested_route), sink),
        req_(req),
        request_sha256_(std::move(request_sha256)) {}

  boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) override {
    if (!req_.stream) co_return co_await answer_json(plan);
    co_return co_await answer_stream(plan);
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
    co_return co_await deliver(plan, attempt_start, std::move(whole));
  }

  boost::asio::awaitable<router::AttemptResult> answer_stream(const router::AttemptPlan& plan) {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const providers::ExchangeTarget to = target(plan, rt_.config->server.max_upstream_body_bytes);
    // Always asked for usage, so that every stream is billed (the decoder keeps the usage
    // chunk from a client that did not ask for it, as OpenAI does).
    std::string body = providers::build_chat_body(req_.members, route.upstream_model, req_.upstream_stream_options);
    providers::ChatStreamDecoder::Options options;
    options.client_wants_usage = req_.include_usage;
    const auto asked = Clock::now();
    auto opened = co_await providers::open_chat_stream(to, std::move(body), std::move(options));
    if (auto* failure = std::get_if<providers::UpstreamFailure>(&opened)) {
      waited(asked);
      co_return failed(plan, *failure, true);
    }
    providers::ChatEventStream& upstream = *std::get<std::unique_ptr<providers::ChatEventStream>>(opened);
    std::vector<providers::ChatChunk> first;
    const auto failure = co_await upstream.first_chunks(plan.first_byte_deadline, first);
    waited(asked);
    if (failure) co_return failed(plan, *failure, true);

    // The receipt id is reserved now and travels on the finish chunk, which the relay holds
    // back until the receipt is stored, once the stream completes (then [DONE]).
    TresorInfo unreceipted = tresor_info(requested_route_, plan);
    TresorInfo info = unreceipted;
    unreceipted.receipt_unavailable = !head_.receipt_opt_out;  // said only when storing it failed
    if (!head_.receipt_opt_out) info.receipt_id = services_.grant.id();
    StreamRelay relay(tresor_object_json(info), tresor_object_json(unreceipted),
                      std::chrono::seconds(rt_.config->timeouts.stream_idle_seconds));
    relay.take(first);
    // Commit: from here on the client has a 200 and no failover is possible.
    sink_.commit();
    served_by_ = plan;
    const std::string attempts = attempts_with_success(plan, attempt_start);
    if (co_await sink_.begin_stream(sse_headers(attempts))) {
      // A relayed stream's time is the upstream's (it paces the events).
      const auto relaying = Clock::now();
      const auto ending = co_await relay.relay(upstream, sink_);
      waited(relaying);
      if (ending == StreamRelay::Ending::completed) {
        co_await complete_stream(route, info, relay, upstream);
        // The client has its whole stream; keep the upstream connection if its end is here.
        co_await upstream.finish_for_reuse();
      } else {
        // Cut (the upstream failed or the client left) after events reached the client:
        // billed for what was delivered, without a receipt.
        co_await bill_cut(chat_charge(route, upstream.usage(), prompt_bytes(req_), upstream.generated_bytes()));
      }
    } else {
      co_await bill_cut(chat_charge(route, upstream.usage(), prompt_bytes(req_), upstream.generated_bytes()));
    }
    if (upstream.dropped_events() > 0)
      spdlog::warn("route {}: dropped {} invalid JSON event(s)", route.id, upstream.dropped_events());
    co_return outcome_only(AttemptOutcome::ok);
  }

  // A whole answer was relayed: bill it and store its receipt, then send the held-back
  // finish chunk (with the receipt id only if stored, like a JSON answer) and [DONE].
  boost::asio::awaitable<void> complete_stream(const config::RouteConfig& route, const TresorInfo& info,
                                               StreamRelay& relay, const providers::ChatEventStream& upstream) {
    // The upstream's usage covers every choice it generated (n > 1 included), not only
    // the one the client saw.
    accounts::Charge charge = chat_charge(route, upstream.usage(), prompt_bytes(req_), upstream.generated_bytes());
    ClaimFigures figures = chat_figures(request_sha256_, charge);
    if (info.receipt_id) figures.response_sha256 = relay.response_sha256();
    const bool stored = co_await bill_and_record(route, info, std::move(charge), std::move(figures));
    const std::string tail = relay.release_held(stored) + "data: [DONE]\n\n";
    if (co_await sink_.write_stream(tail)) co_await sink_.end_stream();
  }

  const ChatRequest& req_;
  std::string request_sha256_;
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
  ChatAttempts attempts(rt, services, head, req, std::move(request_sha256), resolution.requested_route, sink);
  co_await serve_with_failover(rt, services, resolution, req.stream, started, head.budget, attempts, sink);
}

}  // namespace tresor::server
