#include "server/chat_endpoint.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "router/failover.h"
#include "server/chat_request.h"
#include "server/json_parser.h"
#include "server/receipt_issuer.h"
#include "server/stream_relay.h"
#include "server/tresor_member.h"

namespace tresor::server {
namespace {

using providers::Clock;
using providers::TransportError;
using router::AttemptOutcome;

// After [DONE]: how much of an upstream stream's tail (normally just the zero-length chunk)
// is read, and how long for, to keep its connection for the next request.
constexpr size_t kStreamTailBytes = 64 * 1024;
constexpr auto kStreamTailWait = std::chrono::milliseconds(20);

// Helpers below are plain functions on purpose: g++ 12 miscompiles braced temporaries
// inside coroutines (double destruction), so coroutine bodies only use named values.

HeaderList sse_headers(const std::string& attempts) {
  HeaderList h;
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");
  h.emplace_back(std::string(kAttemptsHeader), attempts);
  return h;
}

bool is_event_stream(const providers::UpstreamResponse& response) {
  return response.header("Content-Type").value_or("").find("text/event-stream") != std::string::npos;
}

router::ResolveResult resolve(const Runtime& rt, const ChatRequest& req) {
  router::RouteHints hints;
  if (req.region) hints.region = *req.region;
  if (req.provider) hints.provider = *req.provider;
  return router::resolve_routes(*rt.config, req.model, hints, config::RouteType::chat, req.failover);
}

providers::UpstreamRequest chat_upstream_request(const ChatRequest& req, const config::RouteConfig& route) {
  providers::UpstreamRequest up;
  up.path = providers::kChatCompletionsPath;
  up.content_type = "application/json";
  up.accept = req.stream ? "text/event-stream" : "application/json";
  up.body = providers::build_chat_body(req.members, route.upstream_model);
  return up;
}

// What a non-stream upstream 200 body holds, or nullopt when it is not a JSON object
// (then the attempt failed with bad_response).
struct JsonAnswer {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

std::optional<JsonAnswer> inspect_answer(const std::string& body) {
  simdjson::dom::element root;
  if (upstream_json_parser().parse(body).get(root) || !root.is_object()) return std::nullopt;
  JsonAnswer a;
  int64_t n = 0;
  if (!root["usage"]["prompt_tokens"].get(n)) a.prompt_tokens = n;
  if (!root["usage"]["completion_tokens"].get(n)) a.completion_tokens = n;
  return a;
}

Response json_response(std::string body, const TresorInfo& info, const std::string& attempts) {
  append_tresor_member(body, tresor_object_json(info));
  Response r;
  r.body = std::move(body);
  r.headers.emplace_back(std::string(kAttemptsHeader), attempts);
  return r;
}

// One exchange per attempt, driven by router::run_failover.
class ChatAttempts final : public EndpointAttempts {
 public:
  ChatAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head, const ChatRequest& req,
               std::string request_sha256, std::string requested_route, ResponseSink& sink)
      : EndpointAttempts(services.record),
        rt_(rt),
        services_(services),
        head_(head),
        req_(req),
        request_sha256_(std::move(request_sha256)),
        requested_route_(std::move(requested_route)),
        sink_(sink) {}

  boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) override {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const config::ProviderConfig& provider = rt_.config->providers.at(route.provider);
    providers::UpstreamRequest up = chat_upstream_request(req_, route);
    const auto connect_timeout = std::chrono::milliseconds(rt_.config->timeouts.connect_ms);
    const auto asked = Clock::now();
    auto sent = co_await services_.upstream.send(rt_.providers, provider, std::move(up), plan.first_byte_deadline,
                                                 connect_timeout);
    waited(asked);
    if (!sent.response) {
      spdlog::warn("route {} attempt failed: {}", route.id, sent.detail);
      co_return outcome_only(transport_outcome(sent.error, plan, req_.stream, true));
    }
    providers::UpstreamResponse& response = *sent.response;
    if (response.status() != 200) co_return co_await refused(plan, provider, response);
    if (!req_.stream) co_return co_await answer_json(plan, response, attempt_start);
    co_return co_await answer_stream(plan, response, attempt_start);
  }


 private:
  boost::asio::awaitable<router::AttemptResult> answer_json(const router::AttemptPlan& plan,
                                                            providers::UpstreamResponse& response,
                                                            Clock::time_point attempt_start) {
    TransportError error = TransportError::none;
    const auto reading = Clock::now();
    // server.max_upstream_body_bytes bounds what one request can make us buffer; no
    // chat completion comes near the 64 MiB default.
    const size_t cap = rt_.config->server.max_upstream_body_bytes;
    std::string body = co_await response.read_all(cap, plan.request_deadline, error);
    waited(reading);
    if (error != TransportError::none) {
      spdlog::warn("route {} failed while sending its answer: {}", plan.route->id, providers::to_string(error));
      co_return outcome_only(transport_outcome(error, plan, false, false));
    }
    const std::optional<JsonAnswer> answer = inspect_answer(body);
    if (!answer) {
      spdlog::warn("route {} answered 200 with a body that is not a JSON object", plan.route->id);
      co_return outcome_only(AttemptOutcome::bad_response);
    }
    served_by_ = plan;
    bill(*plan.route, answer->prompt_tokens, answer->completion_tokens);
    TresorInfo info = tresor_info(requested_route_, plan);
    if (!head_.receipt_opt_out) {
      // The body as it stands is exactly what the client gets minus `,"tresor":{…}`.
      const std::string id = receipts::new_receipt_id();
      receipts::Claims claims = make_claims(id, info, claim_figures(receipts::sha256_hex(body), answer->prompt_tokens,
                                                                    answer->completion_tokens),
                                            head_.nonce);
      // Durable before the id leaves the router (receipts.durability: sync).
      std::string customer = head_.customer();
      if (co_await issue_receipt(services_.receipts, rt_.config->receipts, std::move(customer), std::move(claims)))
        info.receipt_id = id;
      else
        spdlog::error("route {}: the receipt could not be stored; answering without receipt_id", plan.route->id);
    }
    const std::string attempts = attempts_with_success(plan, attempt_start);
    Response reply = json_response(std::move(body), info, attempts);
    co_await sink_.send(std::move(reply));
    co_return outcome_only(AttemptOutcome::ok);
  }

  boost::asio::awaitable<router::AttemptResult> answer_stream(const router::AttemptPlan& plan,
                                                              providers::UpstreamResponse& response,
                                                              Clock::time_point attempt_start) {
    if (!is_event_stream(response)) {
      spdlog::warn("route {} did not answer with an event stream", plan.route->id);
      co_return outcome_only(AttemptOutcome::bad_response);
    }
    // The receipt id is reserved now and travels on the finish chunk, which the relay holds
    // back until the receipt is stored, once the stream completes (then [DONE]).
    const TresorInfo unreceipted = tresor_info(requested_route_, plan);
    TresorInfo info = unreceipted;
    if (!head_.receipt_opt_out) info.receipt_id = receipts::new_receipt_id();
    const std::string& secret = rt_.config->providers.at(plan.route->provider).api_key;
    StreamRelay relay(tresor_object_json(info), tresor_object_json(unreceipted), req_.include_usage,
                      std::chrono::seconds(rt_.config->timeouts.stream_idle_seconds), secret);
    const auto waiting = Clock::now();
    const auto first = co_await relay.await_first_event(response, plan.first_byte_deadline);
    waited(waiting);
    switch (first) {
      case StreamRelay::FirstEvent::ready: break;
      case StreamRelay::FirstEvent::timeout:
        co_return outcome_only(transport_outcome(TransportError::timeout, plan, true, true));
      case StreamRelay::FirstEvent::failed:
        co_return outcome_only(AttemptOutcome::reset);
      case StreamRelay::FirstEvent::unusable:
      case StreamRelay::FirstEvent::error_event:
        co_return outcome_only(AttemptOutcome::bad_response);
    }
    // Commit: from here on the client has a 200 and no failover is possible.
    served_by_ = plan;
    const std::string attempts = attempts_with_success(plan, attempt_start);
    if (co_await sink_.begin_stream(sse_headers(attempts))) {
      // A relayed stream's time is the upstream's (it paces the events).
      const auto relaying = Clock::now();
      const auto ending = co_await relay.relay(response, sink_);
      waited(relaying);
      if (ending == StreamRelay::Ending::completed) {
        co_await complete_stream(*plan.route, info, relay);
        // The client has its whole stream; keep the upstream connection if its end is here.
        co_await response.finish_for_reuse(kStreamTailBytes, Clock::now() + kStreamTailWait);
      }
    }
    if (relay.dropped_events() > 0)
      spdlog::warn("route {}: dropped {} invalid JSON event(s)", plan.route->id, relay.dropped_events());
    co_return outcome_only(AttemptOutcome::ok);
  }

  void bill(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens) {
    charge_customer(services_, head_.customer(), route, chat_price(route, prompt_tokens, completion_tokens));
  }

  ClaimFigures claim_figures(std::string response_sha256, int64_t prompt_tokens, int64_t completion_tokens) const {
    ClaimFigures f;
    f.endpoint = "/v1/chat/completions";
    f.request_sha256 = request_sha256_;
    f.response_sha256 = std::move(response_sha256);
    f.prompt_tokens = prompt_tokens;
    f.completion_tokens = completion_tokens;
    f.router_attestation = services_.attestation.receipt_block();
    return f;
  }

  // A whole answer was relayed: store its receipt, then send the held-back finish chunk
  // (with the receipt id only if stored, like a JSON answer) and [DONE].
  boost::asio::awaitable<void> complete_stream(const config::RouteConfig& route, const TresorInfo& info,
                                               StreamRelay& relay) {
    bill(route, relay.prompt_tokens(), relay.completion_tokens());
    bool stored = false;
    if (info.receipt_id) {
      receipts::Claims claims = make_claims(
          *info.receipt_id, info,
          claim_figures(relay.response_sha256(), relay.prompt_tokens(), relay.completion_tokens()), head_.nonce);
      std::string customer = head_.customer();
      stored = co_await issue_receipt(services_.receipts, rt_.config->receipts, std::move(customer), std::move(claims));
      if (!stored)
        spdlog::error("route {}: the stream's receipt could not be stored; finishing without receipt_id",
                      info.routed_model);
    }
    const std::string tail = relay.release_held(stored) + "data: [DONE]\n\n";
    if (co_await sink_.write_stream(tail)) co_await sink_.end_stream();
  }

  const Runtime& rt_;
  EndpointServices services_;
  const ControlHeaders& head_;
  const ChatRequest& req_;
  std::string request_sha256_;
  std::string requested_route_;
  ResponseSink& sink_;
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
  ChatAttempts attempts(rt, services, head, req, std::move(request_sha256), resolution.requested_route, sink);
  co_await serve_with_failover(rt, services, resolution, req.stream, started, head.budget, attempts, sink);
}

}  // namespace tresor::server
