#include "server/chat_endpoint.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>

#include "providers/sse_parser.h"
#include "router/timeout_override.h"
#include "server/chat_request.h"
#include "server/tresor_member.h"

namespace tresor::server {
namespace {

using providers::Clock;
using providers::TransportError;

// An upstream answer (JSON or error body) larger than this is refused: no chat
// completion comes near it, and it bounds what one request can make us buffer.
constexpr size_t kMaxUpstreamBodyBytes = 64 * 1024 * 1024;
// Upstream error messages are relayed to the client up to this length.
constexpr size_t kMaxRelayedMessage = 1000;

ApiError upstream_error(std::string message) {
  return {502, "upstream_error", "upstream_error", std::move(message), std::nullopt};
}

ApiError upstream_timeout() {
  return {504, "timeout_error", "upstream_timeout", "The upstream did not answer within the request's time budget",
          std::nullopt};
}

Response error_response(const ApiError& e) {
  Response r;
  r.status = e.status;
  r.body = error_body(e);
  return r;
}

// Removes any occurrence of the provider's key from text we relay (an upstream might
// echo the credential in an error message).
std::string scrub(std::string text, const std::string& secret) {
  if (secret.size() >= 4)
    for (size_t pos; (pos = text.find(secret)) != std::string::npos;) text.replace(pos, secret.size(), "[redacted]");
  if (text.size() > kMaxRelayedMessage) text.resize(kMaxRelayedMessage);
  return text;
}

std::string upstream_message(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view message;
  if (!parser.parse(body).get(root) && !root["error"]["message"].get(message)) return std::string(message);
  if (!parser.parse(body).get(root) && !root["message"].get(message)) return std::string(message);
  return {};
}

// Upstream said no with an HTTP status (spec §3.2, §6.3).
ApiError map_upstream_status(unsigned status, const std::string& body, const config::ProviderConfig& provider) {
  if (status == 401 || status == 403) {
    // The provider rejected *our* credentials: the client can do nothing about it, and
    // the upstream's message may quote the key.
    return upstream_error("The upstream provider rejected the router's credentials");
  }
  if (status >= 400 && status < 500 && status != 408 && status != 429) {
    std::string message = scrub(upstream_message(body), provider.api_key);
    if (message.empty()) message = "The upstream rejected the request (HTTP " + std::to_string(status) + ")";
    return {status, "invalid_request_error", "upstream_rejected", std::move(message), std::nullopt};
  }
  return upstream_error("The upstream failed (HTTP " + std::to_string(status) + ")");
}

ApiError map_transport_error(TransportError error) {
  if (error == TransportError::timeout) return upstream_timeout();
  return upstream_error("The upstream could not be reached or failed mid-answer (" +
                        std::string(providers::to_string(error)) + ")");
}

bool receipt_opt_out(const RequestHead& head) {
  const auto v = head.value("X-Tresor-Receipt");
  return boost::beast::iequals(v, "false") || v == "0";
}

std::string sse_event(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  out += "data: ";
  out.append(data);
  out += "\n\n";
  return out;
}

enum class ChunkKind { content, finish, usage, error };

// Which OpenAI stream chunk this is: the tresor object goes on the finish chunk (and on
// a trailing usage chunk), spec §1.1.
ChunkKind classify_chunk(simdjson::dom::element chunk) {
  simdjson::dom::element e;
  if (!chunk["error"].get(e)) return ChunkKind::error;
  simdjson::dom::array choices;
  if (!chunk["choices"].get(choices)) {
    if (choices.size() == 0) return chunk["usage"].error() ? ChunkKind::content : ChunkKind::usage;
    simdjson::dom::element finish;
    if (!choices.at(0)["finish_reason"].get(finish) && !finish.is_null()) return ChunkKind::finish;
  }
  return ChunkKind::content;
}

struct Exchange {
  const Runtime& rt;
  const ChatHead& head;
  const config::RouteConfig& route;
  const config::ProviderConfig& provider;
  TresorInfo tresor;
};

// Helpers below are plain functions on purpose: g++ 12 miscompiles braced temporaries
// inside coroutines (double destruction), so coroutine bodies only use named values.

Exchange make_exchange(const Runtime& rt, const ChatHead& head, const config::RouteConfig& route,
                       const config::ProviderConfig& provider, const std::string& requested_route) {
  TresorInfo info;
  info.requested_route = requested_route;
  info.routed_model = route.id;
  info.failover = false;
  return Exchange{rt, head, route, provider, std::move(info)};
}

HeaderList sse_headers() {
  HeaderList h;
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");
  return h;
}

bool is_event_stream(const providers::UpstreamResponse& response) {
  return response.header("Content-Type").value_or("").find("text/event-stream") != std::string::npos;
}

void log_stream_failure(const Exchange& x, std::string_view what) {
  spdlog::warn("upstream {} ({}) stream failed: {}", x.provider.name, x.route.id, what);
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

// The client's answer to a complete upstream JSON exchange.
Response json_answer(Exchange& x, unsigned status, std::string body, TransportError error) {
  if (error != TransportError::none) {
    spdlog::warn("upstream {} ({}) failed reading the answer: {}", x.provider.name, x.route.id,
                 providers::to_string(error));
    return error_response(map_transport_error(error));
  }
  if (status != 200) {
    spdlog::info("upstream {} ({}) answered HTTP {}", x.provider.name, x.route.id, status);
    return error_response(map_upstream_status(status, body, x.provider));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body).get(root) || !root.is_object() ||
      !append_tresor_member(body, tresor_object_json(x.tresor))) {
    spdlog::warn("upstream {} ({}) answered 200 with a body that is not a JSON object", x.provider.name,
                 x.route.id);
    return error_response(upstream_error("The upstream answered with invalid JSON"));
  }
  Response r;
  r.body = std::move(body);
  return r;
}

boost::asio::awaitable<void> relay_json(Exchange& x, providers::UpstreamResponse& response,
                                        Clock::time_point deadline, ResponseSink& sink) {
  TransportError error = TransportError::none;
  std::string body = co_await response.read_all(kMaxUpstreamBodyBytes, deadline, error);
  Response r = json_answer(x, response.status(), std::move(body), error);
  co_await sink.send(std::move(r));
}

boost::asio::awaitable<void> relay_stream(Exchange& x, providers::UpstreamResponse& response,
                                          Clock::time_point deadline, ResponseSink& sink) {
  if (response.status() != 200) co_return co_await relay_json(x, response, deadline, sink);
  if (!is_event_stream(response)) {
    Response r = error_response(upstream_error("The upstream did not answer with an event stream"));
    co_return co_await sink.send(std::move(r));
  }
  const auto idle = std::chrono::seconds(x.rt.config->timeouts.stream_idle_seconds);
  const std::string tresor = tresor_object_json(x.tresor);
  providers::SseParser sse;
  simdjson::dom::parser parser;
  std::vector<std::string> events;
  bool started = false, done = false, tresor_sent = false;
  // Until the first event the request budget applies; after it, the idle limit between
  // events (spec §4): total stream length is not capped.
  Clock::time_point read_deadline = deadline;

  // Before the first event the failure is a plain HTTP error; after it, a final error
  // event with no [DONE] (spec §1.1).
  auto fail_stream = [&](ApiError e) -> boost::asio::awaitable<void> {
    if (!started) {
      Response r = error_response(e);
      co_return co_await sink.send(std::move(r));
    }
    const std::string event = sse_event(error_body(e));
    co_await sink.write_stream(event);
    co_await sink.end_stream();
  };

  while (!done) {
    TransportError error = TransportError::none;
    const std::string bytes = co_await response.read_some(read_deadline, error);
    if (error != TransportError::none) {
      log_stream_failure(x, providers::to_string(error));
      ApiError e = error == TransportError::timeout ? upstream_timeout()
                                                    : upstream_error("The upstream stream failed before completion");
      co_return co_await fail_stream(std::move(e));
    }
    if (bytes.empty() && response.body_done()) {
      log_stream_failure(x, "ended without [DONE]");
      ApiError e = upstream_error("The upstream stream ended before completion");
      co_return co_await fail_stream(std::move(e));
    }
    events.clear();
    if (!sse.feed(bytes, events)) {
      log_stream_failure(x, "oversized event");
      ApiError e = upstream_error("The upstream sent an oversized stream event");
      co_return co_await fail_stream(std::move(e));
    }
    std::string out;
    for (auto& data : events) {
      if (data == "[DONE]") {
        if (!tresor_sent) {
          // No finish chunk came: carry the tresor object on a chunk of its own.
          std::string chunk = R"({"object":"chat.completion.chunk","choices":[]})";
          append_tresor_member(chunk, tresor);
          out += sse_event(chunk);
        }
        out += sse_event("[DONE]");
        done = true;
        break;
      }
      data.reserve(data.size() + simdjson::SIMDJSON_PADDING);
      simdjson::dom::element chunk;
      if (parser.parse(data.data(), data.size(), false).get(chunk) || !chunk.is_object()) {
        spdlog::debug("dropping an invalid JSON event from upstream {}", x.provider.name);
        continue;  // spec §3.2: invalid JSON events from upstream are dropped
      }
      const auto kind = classify_chunk(chunk);
      if (kind == ChunkKind::error) {
        out += sse_event(data);
        if (!started && !(started = co_await sink.begin_stream(sse_headers()))) co_return;
        co_await sink.write_stream(out);
        co_return co_await sink.end_stream();
      }
      if (kind == ChunkKind::finish || kind == ChunkKind::usage) {
        append_tresor_member(data, tresor);
        tresor_sent = true;
      }
      out += sse_event(data);
    }
    if (out.empty()) continue;
    if (!started) {
      if (!(started = co_await sink.begin_stream(sse_headers()))) co_return;
    }
    // A failed write means the client left: returning drops the upstream response,
    // which closes its connection and so cancels the upstream request.
    if (!co_await sink.write_stream(out)) co_return;
    read_deadline = Clock::now() + idle;
  }
  co_await sink.end_stream();
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
  return ChatHead{key, *budget, receipt_opt_out(head)};
}

boost::asio::awaitable<void> handle_chat(const Runtime& rt, providers::UpstreamClient& upstream,
                                         const ChatHead& head, std::string body, Clock::time_point started,
                                         ResponseSink& sink) {
  auto parsed = parse_chat_request(body);
  if (auto* err = std::get_if<ApiError>(&parsed)) {
    Response r = error_response(*err);
    co_return co_await sink.send(std::move(r));
  }
  auto& req = std::get<ChatRequest>(parsed);
  auto resolved = resolve(rt, req);
  if (!resolved.resolution) {
    Response r = error_response(resolve_error(resolved));
    co_return co_await sink.send(std::move(r));
  }
  const auto& resolution = *resolved.resolution;
  // One attempt on the preferred route; ordered failover over the remaining candidates
  // is the routing issue's work (#4).
  const config::RouteConfig& route = *resolution.candidates.front();
  const config::ProviderConfig& provider = rt.config->providers.at(route.provider);
  Exchange x = make_exchange(rt, head, route, provider, resolution.requested_route);

  const auto deadline = started + head.budget;
  providers::UpstreamRequest up = chat_upstream_request(req, route);
  const auto connect_timeout = std::chrono::milliseconds(rt.config->timeouts.connect_ms);
  auto result = co_await upstream.send(rt.providers, provider, std::move(up), deadline, connect_timeout);
  if (!result.response) {
    spdlog::error("upstream {} ({}) attempt failed: {}", provider.name, route.id, result.detail);
    Response r = error_response(map_transport_error(result.error));
    co_return co_await sink.send(std::move(r));
  }
  if (req.stream) co_await relay_stream(x, *result.response, deadline, sink);
  else co_await relay_json(x, *result.response, deadline, sink);
}

}  // namespace tresor::server
