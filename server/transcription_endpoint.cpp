#include "server/transcription_endpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "providers/multipart_body.h"
#include "router/failover.h"
#include "server/spool_body_source.h"

namespace tresor::server {
namespace {

using providers::Clock;
// A transcript larger than this is refused (30 minutes of speech in verbose_json with
// word timestamps stays far below it) even when server.max_upstream_body_bytes, which
// bounds what one request makes us buffer, is set higher.
constexpr size_t kMaxTranscriptBytes = 16 * 1024 * 1024;

size_t transcript_cap(const config::Config& cfg) {
  return std::min<uint64_t>(kMaxTranscriptBytes, cfg.server.max_upstream_body_bytes);
}

// Helpers below are plain functions on purpose: g++ 12 miscompiles braced temporaries
// inside coroutines (double destruction), so coroutine bodies only use named values.

std::string_view format_name(TranscriptFormat f) {
  switch (f) {
    case TranscriptFormat::json: return "json";
    case TranscriptFormat::text: return "text";
    case TranscriptFormat::verbose_json: return "verbose_json";
  }
  return "json";
}

router::ResolveResult resolve(const Runtime& rt, const TranscriptionRequest& req) {
  router::RouteHints hints;
  if (req.region) hints.region = *req.region;
  if (req.provider) hints.provider = *req.provider;
  return router::resolve_routes(*rt.config, req.model, hints, config::RouteType::transcription);
}

// The form sent upstream: model = the route's upstream_model, the response format (json
// when the client wants text: the JSON carries the usage we bill and normalise), then
// the client's other fields as they came.
std::vector<providers::FormField> upstream_fields(const TranscriptionRequest& req, const config::RouteConfig& route) {
  std::vector<providers::FormField> fields;
  fields.reserve(req.forwarded.size() + 2);
  providers::FormField model;
  model.name = "model";
  model.value = route.upstream_model;
  fields.push_back(std::move(model));
  providers::FormField format;
  format.name = "response_format";
  format.value = std::string(format_name(req.format == TranscriptFormat::text ? TranscriptFormat::json : req.format));
  fields.push_back(std::move(format));
  fields.insert(fields.end(), req.forwarded.begin(), req.forwarded.end());
  return fields;
}

// What the client gets from a validated upstream transcript, before the tresor member.
struct ClientTranscript {
  std::string body;
  std::string content_type;
  std::optional<int64_t> audio_seconds;  // rounded up
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
};

std::string usage_json(accounts::TranscriptionBilling billing, const ClientTranscript& a, bool upstream_tokens) {
  const bool tokens = billing == accounts::TranscriptionBilling::tokens ||
                      (billing == accounts::TranscriptionBilling::free && upstream_tokens);
  if (tokens)
    return R"({"type":"tokens","input_tokens":)" + std::to_string(a.input_tokens) + R"(,"output_tokens":)" +
           std::to_string(a.output_tokens) + R"(,"total_tokens":)" + std::to_string(a.input_tokens + a.output_tokens) +
           "}";
  if (!a.audio_seconds) return std::string();
  return R"({"type":"duration","seconds":)" + std::to_string(*a.audio_seconds) + "}";
}

// The client's transcript in its format: text, or the upstream JSON with the usage
// normalised (spec §7.5) from whatever OpenAI variant the upstream reported; every other
// member passes through byte for byte.
ClientTranscript client_transcript(const providers::TranscriptAnswer& answer, TranscriptFormat format,
                                   const config::RouteConfig& route) {
  ClientTranscript a;
  a.input_tokens = answer.input_tokens;
  a.output_tokens = answer.output_tokens;
  if (answer.seconds && *answer.seconds < 1e9) a.audio_seconds = static_cast<int64_t>(std::ceil(*answer.seconds));
  if (format == TranscriptFormat::text) {
    a.body = answer.text;
    a.content_type = "text/plain; charset=utf-8";
    return a;
  }
  const std::string usage_member = usage_json(accounts::transcription_billing(route), a, answer.token_usage);
  a.body = "{" + answer.members;
  if (!usage_member.empty()) a.body.append(a.body.size() > 1 ? "," : "").append("\"usage\":").append(usage_member);
  a.body += '}';
  a.content_type = "application/json";
  return a;
}

class TranscriptionAttempts final : public EndpointAttempts {
 public:
  TranscriptionAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head,
                        const TranscriptionRequest& req, const TranscriptionUpload& upload,
                        std::string requested_route, ResponseSink& sink)
      : EndpointAttempts(rt, services, head, std::move(requested_route), sink), req_(req), upload_(upload) {}

  boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) override {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const std::vector<providers::FormField> fields = upstream_fields(req_, route);
    SpoolBodySource file_bytes(upload_.spool(), &services_.file_io);
    providers::MultipartUploadBody body(fields, req_.file, file_bytes);
    std::string content_type = body.content_type();
    const providers::ExchangeTarget to = target(plan, transcript_cap(*rt_.config));
    const auto asked = Clock::now();
    auto got = co_await providers::exchange_transcription(to, body, std::move(content_type));
    waited(asked);
    if (auto* failure = std::get_if<providers::UpstreamFailure>(&got)) co_return failed(plan, *failure, false);
    const ClientTranscript t = client_transcript(std::get<providers::TranscriptAnswer>(got), req_.format, route);
    WholeAnswer answer;
    answer.charge.route = &route;
    answer.charge.prompt_tokens = t.input_tokens;
    answer.charge.completion_tokens = t.output_tokens;
    answer.charge.cost =
        accounts::transcription_cost(route, t.audio_seconds.value_or(0), t.input_tokens, t.output_tokens);
    answer.figures.endpoint = std::string(kTranscriptionsPath);
    answer.figures.request_sha256 = upload_.body_sha256();
    answer.figures.prompt_tokens = t.input_tokens;
    answer.figures.completion_tokens = t.output_tokens;
    answer.figures.audio_seconds = t.audio_seconds;
    answer.body = t.body;
    answer.content_type = t.content_type;
    answer.route_headers = true;
    co_return co_await deliver(plan, attempt_start, std::move(answer));
  }

 private:
  const TranscriptionRequest& req_;
  const TranscriptionUpload& upload_;
};

}  // namespace

boost::asio::awaitable<void> handle_transcription(const Runtime& rt, EndpointServices services,
                                                  const ControlHeaders& head, const TranscriptionUpload& upload,
                                                  Clock::time_point started, ResponseSink& sink) {
  auto validated = validate_transcription(upload);
  if (auto* err = std::get_if<ApiError>(&validated)) co_return co_await send_error(sink, *err);
  const auto& req = std::get<TranscriptionRequest>(validated);
  auto resolved = resolve(rt, req);
  if (!resolved.resolution) {
    const ApiError e = resolve_error(resolved);
    co_return co_await send_error(sink, e);
  }
  const auto& resolution = *resolved.resolution;
  if (!co_await reserve_or_refuse(services, accounts::transcription_bound(resolution.candidates), started, head.budget,
                                 sink))
    co_return;
  TranscriptionAttempts attempts(rt, services, head, req, upload, resolution.requested_route, sink);
  co_await serve_with_failover(rt, services, resolution, false, started, head.budget, attempts, sink);
}

}  // namespace tresor::server
