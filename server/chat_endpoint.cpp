#include "server/chat_endpoint.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>

#include "router/failover.h"
#include "router/timeout_override.h"
#include "server/chat_request.h"
#include "server/json_parser.h"
#include "server/receipt_issuer.h"
#include "server/stream_relay.h"
#include "server/tresor_member.h"
#include "server/upstream_errors.h"

namespace tresor::server {
namespace {

using providers::Clock;
using providers::TransportError;
using router::AttemptOutcome;

// An upstream answer larger than this is refused: no chat completion comes near it,
// and it bounds what one request can make us buffer.
constexpr size_t kMaxUpstreamBodyBytes = 64 * 1024 * 1024;
// Upstream error bodies are read up to this size (for their message and code).
constexpr size_t kMaxErrorBodyBytes = 64 * 1024;

constexpr std::string_view kAttemptsHeader = "X-Tresor-Attempts";

// Helpers below are plain functions on purpose: g++ 12 miscompiles braced temporaries
// inside coroutines (double destruction), so coroutine bodies only use named values.

bool receipt_opt_out(const RequestHead& head) {
  const auto v = head.value("X-Tresor-Receipt");
  return boost::beast::iequals(v, "false") || v == "0";
}

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

providers::UpstreamRequest chat_upstream_request(const ChatRequest& req, const config::RouteConfig& route) {
  providers::UpstreamRequest up;
  up.path = providers::kChatCompletionsPath;
  up.content_type = "application/json";
  up.accept = req.stream ? "text/event-stream" : "application/json";
  up.body = providers::build_chat_body(req.members, route.upstream_model);
  return up;
}

TresorInfo tresor_info(const std::string& requested_route, const router::AttemptPlan& plan) {
  TresorInfo info;
  info.requested_route = requested_route;
  info.routed_model = plan.route->id;
  info.failover = plan.candidate_index > 0;  // left the preferred route (spec §3.2)
  return info;
}

// The attempts header as it stands when this attempt succeeds.
std::string attempts_with_success(const router::AttemptPlan& plan, Clock::time_point attempt_start) {
  auto attempts = *plan.history;
  router::AttemptRecord ok;
  ok.route = plan.route->id;
  ok.outcome = AttemptOutcome::ok;
  ok.ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - attempt_start).count();
  attempts.push_back(std::move(ok));
  return router::format_attempts(attempts);
}

AttemptOutcome transport_outcome(TransportError error, const router::AttemptPlan& plan, bool stream,
                                 bool before_first_byte) {
  switch (error) {
    case TransportError::connect_failed: return AttemptOutcome::connect_failed;
    case TransportError::tls_failed: return AttemptOutcome::tls_failed;
    case TransportError::protocol:
    case TransportError::too_large: return AttemptOutcome::bad_response;
    case TransportError::timeout:
      // Which clock ran out: the attempt's own timer, or the request's budget?
      if (before_first_byte && plan.first_byte_deadline < plan.request_deadline &&
          Clock::now() < plan.request_deadline)
        return stream ? AttemptOutcome::first_event_timeout : AttemptOutcome::first_byte_timeout;
      return AttemptOutcome::deadline;
    case TransportError::reset:
    case TransportError::cut:
    case TransportError::none: break;
  }
  return AttemptOutcome::reset;
}

void log_refusal(const config::RouteConfig& route, const router::AttemptResult& r) {
  spdlog::info("route {} answered HTTP {}{}{}", route.id, r.http_status, r.upstream_error_code.empty() ? "" : " ",
               r.upstream_error_code);
}

router::AttemptResult outcome_only(AttemptOutcome outcome) {
  router::AttemptResult r;
  r.outcome = outcome;
  return r;
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

receipts::Claims make_claims(const std::string& id, const TresorInfo& info, const std::string& request_sha256,
                             std::string response_sha256, int64_t prompt_tokens, int64_t completion_tokens,
                             const std::optional<std::string>& nonce) {
  receipts::Claims c;
  c.id = id;
  c.issued_at = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  c.requested_route = info.requested_route;
  c.routed_model = info.routed_model;
  c.failover = info.failover;
  c.endpoint = "/v1/chat/completions";
  c.prompt_tokens = prompt_tokens;
  c.completion_tokens = completion_tokens;
  c.request_sha256 = request_sha256;
  c.response_sha256 = std::move(response_sha256);
  c.nonce = nonce;
  return c;
}

std::string customer_of(const ChatHead& head) { return head.key ? head.key->customer : std::string(); }

// One exchange per attempt, driven by router::run_failover.
class ChatAttempts final : public router::AttemptRunner {
 public:
  ChatAttempts(const Runtime& rt, ChatServices services, const ChatHead& head, const ChatRequest& req,
               std::string request_sha256, std::string requested_route, ResponseSink& sink)
      : rt_(rt),
        services_(services),
        head_(head),
        req_(req),
        request_sha256_(std::move(request_sha256)),
        requested_route_(std::move(requested_route)),
        sink_(sink) {}

  boost::asio::awaitable<router::AttemptResult> attempt(const router::AttemptPlan& plan) override {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const config::ProviderConfig& provider = rt_.config->providers.at(route.provider);
    providers::UpstreamRequest up = chat_upstream_request(req_, route);
    const auto connect_timeout = std::chrono::milliseconds(rt_.config->timeouts.connect_ms);
    auto sent = co_await services_.upstream.send(rt_.providers, provider, std::move(up), plan.first_byte_deadline,
                                                 connect_timeout);
    if (!sent.response) {
      spdlog::warn("route {} attempt failed: {}", route.id, sent.detail);
      co_return outcome_only(transport_outcome(sent.error, plan, req_.stream, true));
    }
    providers::UpstreamResponse& response = *sent.response;
    if (response.status() != 200) co_return co_await upstream_refusal(plan, provider, response);
    if (!req_.stream) co_return co_await answer_json(plan, response, attempt_start);
    co_return co_await answer_stream(plan, response, attempt_start);
  }

  // The upstream 4xx to relay when the loop ends in pass_through.
  const std::optional<ApiError>& pass_through() const { return pass_through_; }
  const std::optional<router::AttemptPlan>& served_by() const { return served_by_; }

 private:
  boost::asio::awaitable<router::AttemptResult> upstream_refusal(const router::AttemptPlan& plan,
                                                                 const config::ProviderConfig& provider,
                                                                 providers::UpstreamResponse& response) {
    router::AttemptResult r;
    r.outcome = AttemptOutcome::http_status;
    r.http_status = static_cast<int>(response.status());
    if (auto h = response.header("Retry-After"))
      if (auto s = parse_retry_after(*h)) r.retry_after = std::chrono::seconds(*s);
    TransportError error = TransportError::none;
    const std::string body = co_await response.read_all(kMaxErrorBodyBytes, plan.request_deadline, error);
    r.upstream_error_code = upstream_error_code(body);
    log_refusal(*plan.route, r);
    if (r.http_status >= 400 && r.http_status < 500) pass_through_ = upstream_rejected(response.status(), body, provider);
    co_return r;
  }

  boost::asio::awaitable<router::AttemptResult> answer_json(const router::AttemptPlan& plan,
                                                            providers::UpstreamResponse& response,
                                                            Clock::time_point attempt_start) {
    TransportError error = TransportError::none;
    std::string body = co_await response.read_all(kMaxUpstreamBodyBytes, plan.request_deadline, error);
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
      receipts::Claims claims = make_claims(id, info, request_sha256_, receipts::sha256_hex(body),
                                            answer->prompt_tokens, answer->completion_tokens, head_.nonce);
      // Durable before the id leaves the router (receipts.durability: sync).
      std::string customer = customer_of(head_);
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
    // The receipt id is reserved now and travels on the finish chunk; the receipt itself
    // is stored once the stream completes, before [DONE].
    TresorInfo info = tresor_info(requested_route_, plan);
    if (!head_.receipt_opt_out) info.receipt_id = receipts::new_receipt_id();
    const std::string tresor = tresor_object_json(info);
    StreamRelay relay(tresor, req_.include_usage, std::chrono::seconds(rt_.config->timeouts.stream_idle_seconds));
    const auto first = co_await relay.await_first_event(response, plan.first_byte_deadline);
    switch (first) {
      case StreamRelay::FirstEvent::ready: break;
      case StreamRelay::FirstEvent::timeout:
        co_return outcome_only(transport_outcome(TransportError::timeout, plan, true, true));
      case StreamRelay::FirstEvent::failed:
      case StreamRelay::FirstEvent::empty:
        co_return outcome_only(AttemptOutcome::reset);
      case StreamRelay::FirstEvent::error_event:
        co_return outcome_only(AttemptOutcome::bad_response);
    }
    // Commit: from here on the client has a 200 and no failover is possible.
    served_by_ = plan;
    const std::string attempts = attempts_with_success(plan, attempt_start);
    if (co_await sink_.begin_stream(sse_headers(attempts))) {
      const auto ending = co_await relay.relay(response, sink_);
      if (ending == StreamRelay::Ending::completed) co_await complete_stream(*plan.route, info, relay);
    }
    if (relay.dropped_events() > 0)
      spdlog::warn("route {}: dropped {} invalid JSON event(s)", plan.route->id, relay.dropped_events());
    co_return outcome_only(AttemptOutcome::ok);
  }

  // Charges the customer for a served answer (in memory now, persisted by the store's
  // thread with the next group commit).
  void bill(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens) {
    const double price = chat_price(route, prompt_tokens, completion_tokens);
    if (price <= 0) return;
    const std::string customer = customer_of(head_);
    services_.credits.charge(customer, route.id, price);
    services_.receipts.charge(receipts::SpendEntry{customer, route.id, price});
  }

  // A whole answer was relayed: store its receipt, then tell the client it is done.
  boost::asio::awaitable<void> complete_stream(const config::RouteConfig& route, const TresorInfo& info,
                                               StreamRelay& relay) {
    bill(route, relay.prompt_tokens(), relay.completion_tokens());
    if (info.receipt_id) {
      receipts::Claims claims = make_claims(*info.receipt_id, info, request_sha256_, relay.response_sha256(),
                                            relay.prompt_tokens(), relay.completion_tokens(), head_.nonce);
      std::string customer = customer_of(head_);
      if (!co_await issue_receipt(services_.receipts, rt_.config->receipts, std::move(customer), std::move(claims)))
        spdlog::error("route {}: the stream's receipt could not be stored", info.routed_model);
    }
    const std::string done = "data: [DONE]\n\n";
    if (co_await sink_.write_stream(done)) co_await sink_.end_stream();
  }

  const Runtime& rt_;
  ChatServices services_;
  const ChatHead& head_;
  const ChatRequest& req_;
  std::string request_sha256_;
  std::string requested_route_;
  ResponseSink& sink_;
  std::optional<ApiError> pass_through_;
  std::optional<router::AttemptPlan> served_by_;
};

// The answer when the failover loop did not serve the request.
Response failure_response(const router::FailoverResult& result, const ChatAttempts& attempts) {
  ApiError e;
  switch (result.kind) {
    case router::FailoverResult::Kind::pass_through:
      e = attempts.pass_through().value_or(upstream_error("The upstream rejected the request"));
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
  return p;
}

std::string_view kind_name(router::FailoverResult::Kind kind) {
  switch (kind) {
    case router::FailoverResult::Kind::served: return "served";
    case router::FailoverResult::Kind::pass_through: return "pass_through";
    case router::FailoverResult::Kind::failed: return "failed";
    case router::FailoverResult::Kind::timed_out: return "timed_out";
    case router::FailoverResult::Kind::no_route: return "no_route";
  }
  return "unknown";
}

void log_access(const std::string& requested, const router::FailoverResult& result,
                const std::optional<router::AttemptPlan>& served, bool stream, Clock::time_point started) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  spdlog::info(R"(access {{"endpoint":"/v1/chat/completions","stream":{},"requested_route":"{}","routed_model":"{}","result":"{}","attempts":"{}","duration_ms":{}}})",
               stream, requested, served ? served->route->id : "", kind_name(result.kind),
               router::format_attempts(result.attempts), ms);
}

}  // namespace

std::variant<ChatHead, ApiError> check_chat_head(const Runtime& rt, const RequestHead& head,
                                                 const config::ApiKeyConfig* key) {
  const auto& t = rt.config->timeouts;
  const auto budget = router::parse_timeout_override(head.values(router::kTimeoutHeader), t.default_seconds,
                                                     t.max_seconds);
  if (!budget)
    return invalid_request("invalid_timeout_override", "X-Tresor-Timeout-Seconds must be a positive integer",
                           std::string(router::kTimeoutHeader));
  ChatHead chat;
  chat.key = key;
  chat.budget = *budget;
  chat.receipt_opt_out = receipt_opt_out(head);
  // The old docs' replay nonce, copied into the receipt; bounded so a client cannot
  // inflate every receipt.
  constexpr size_t kMaxNonceBytes = 256;
  if (const auto nonce = head.value("X-Tresor-Nonce"); !nonce.empty() && nonce.size() <= kMaxNonceBytes)
    chat.nonce = std::string(nonce);
  return chat;
}

boost::asio::awaitable<void> handle_chat(const Runtime& rt, ChatServices services, const ChatHead& head,
                                         std::string body, Clock::time_point started, ResponseSink& sink) {
  // The exact bytes received, before anything looks at them (the receipt's request_sha256).
  std::string request_sha256 = head.receipt_opt_out ? std::string() : receipts::sha256_hex(body);
  auto parsed = parse_chat_request(body);
  if (auto* err = std::get_if<ApiError>(&parsed)) {
    Response r = error_response(*err);
    co_return co_await sink.send(std::move(r));
  }
  const auto& req = std::get<ChatRequest>(parsed);
  auto resolved = resolve(rt, req);
  if (!resolved.resolution) {
    Response r = error_response(resolve_error(resolved));
    co_return co_await sink.send(std::move(r));
  }
  const auto& resolution = *resolved.resolution;
  ChatAttempts attempts(rt, services, head, req, std::move(request_sha256), resolution.requested_route, sink);
  const auto policy = failover_policy(*rt.config, req.stream);
  const auto deadline = started + head.budget;
  const auto result =
      co_await router::run_failover(resolution.candidates, started, deadline, policy, services.health, attempts);
  log_access(resolution.requested_route, result, attempts.served_by(), req.stream, started);
  if (result.kind == router::FailoverResult::Kind::served) co_return;
  Response r = failure_response(result, attempts);
  co_await sink.send(std::move(r));
}

}  // namespace tresor::server
