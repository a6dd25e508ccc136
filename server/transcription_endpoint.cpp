#include "server/transcription_endpoint.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "providers/multipart_body.h"
#include "router/failover.h"
#include "server/json_members.h"
#include "server/json_parser.h"
#include "server/receipt_issuer.h"
#include "server/spool_body_source.h"
#include "server/tresor_member.h"

namespace tresor::server {
namespace {

using providers::Clock;
using providers::TransportError;
using router::AttemptOutcome;

constexpr std::string_view kUpstreamPath = "/audio/transcriptions";
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

// What the client gets from an upstream 200, before the tresor member.
struct TranscriptAnswer {
  std::string body;
  std::string content_type;
  std::optional<int64_t> audio_seconds;  // rounded up
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
};

// A non-negative finite number, or nullopt (also for a missing member: the lookup result
// is checked, never converted, since converting a failed lookup throws).
std::optional<double> number_at(simdjson::simdjson_result<simdjson::dom::element> lookup) {
  simdjson::dom::element e;
  double d = 0;
  if (lookup.get(e) || !e.is_number() || e.get(d) || !std::isfinite(d) || d < 0) return std::nullopt;
  return d;
}

std::string usage_json(TranscriptionBilling billing, const TranscriptAnswer& a, bool upstream_tokens) {
  const bool tokens = billing == TranscriptionBilling::tokens ||
                      (billing == TranscriptionBilling::free && upstream_tokens);
  if (tokens)
    return R"({"type":"tokens","input_tokens":)" + std::to_string(a.input_tokens) + R"(,"output_tokens":)" +
           std::to_string(a.output_tokens) + R"(,"total_tokens":)" + std::to_string(a.input_tokens + a.output_tokens) +
           "}";
  if (!a.audio_seconds) return std::string();
  return R"({"type":"duration","seconds":)" + std::to_string(*a.audio_seconds) + "}";
}

// Reads the upstream JSON (json / verbose_json): `text` must be a string. The usage is
// normalised (spec §7.5) from whatever OpenAI variant the upstream reported, or from
// verbose_json's `duration`; every other member passes through byte for byte.
std::optional<TranscriptAnswer> read_transcript(const std::string& upstream, TranscriptFormat format,
                                                const config::RouteConfig& route) {
  simdjson::dom::element root;
  if (upstream_json_parser().parse(upstream).get(root) || !root.is_object()) return std::nullopt;
  std::string_view text;
  if (root["text"].get(text)) return std::nullopt;
  TranscriptAnswer a;
  bool upstream_tokens = false;
  std::optional<double> seconds;
  simdjson::dom::element usage;
  if (!root["usage"].get(usage) && usage.is_object()) {
    std::string_view type;
    if (usage["type"].get(type)) type = {};
    int64_t n = 0;
    if (type == "tokens" || usage["input_tokens"].is_int64()) {
      upstream_tokens = true;
      if (!usage["input_tokens"].get(n) && n >= 0) a.input_tokens = n;
      if (!usage["output_tokens"].get(n) && n >= 0) a.output_tokens = n;
    }
    if (auto s = number_at(usage["seconds"])) seconds = s;
  }
  if (!seconds) seconds = number_at(root["duration"]);
  if (seconds && *seconds < 1e9) a.audio_seconds = static_cast<int64_t>(std::ceil(*seconds));
  const std::string usage_member = usage_json(transcription_billing(route), a, upstream_tokens);

  if (format == TranscriptFormat::text) {
    a.body = std::string(text);
    a.content_type = "text/plain; charset=utf-8";
    return a;
  }
  std::vector<common::JsonMember> members;
  scan_top_level_members(upstream, root.get_object(), members);
  a.body = "{";
  for (const auto& m : members) {
    if (m.key == "usage" || m.key == "tresor") continue;
    if (a.body.size() > 1) a.body += ',';
    a.body.append(m.raw_key).append(":").append(m.raw_value);
  }
  if (!usage_member.empty()) a.body.append(a.body.size() > 1 ? "," : "").append("\"usage\":").append(usage_member);
  a.body += '}';
  a.content_type = "application/json";
  return a;
}

HeaderList route_headers(const TresorInfo& info, const std::string& attempts) {
  HeaderList h;
  h.emplace_back(std::string(kAttemptsHeader), attempts);
  if (info.receipt_id) h.emplace_back("X-Tresor-Receipt-Id", *info.receipt_id);
  h.emplace_back("X-Tresor-Requested-Route", info.requested_route);
  h.emplace_back("X-Tresor-Routed-Model", info.routed_model);
  h.emplace_back("X-Tresor-Failover", info.failover ? "true" : "false");
  return h;
}

Response transcript_response(TranscriptAnswer answer, const TresorInfo& info, const std::string& attempts) {
  Response r;
  if (answer.content_type == "application/json") append_tresor_member(answer.body, tresor_object_json(info));
  r.body = std::move(answer.body);
  r.content_type = std::move(answer.content_type);
  r.headers = route_headers(info, attempts);
  return r;
}

ClaimFigures claim_figures(const std::string& request_sha256, const TranscriptAnswer& a,
                           const RouterAttestation& attestation) {
  ClaimFigures f;
  f.endpoint = std::string(kTranscriptionsPath);
  f.request_sha256 = request_sha256;
  f.response_sha256 = receipts::sha256_hex(a.body);  // before the tresor member
  f.prompt_tokens = a.input_tokens;
  f.completion_tokens = a.output_tokens;
  f.audio_seconds = a.audio_seconds;
  f.router_attestation = attestation.receipt_block();
  return f;
}

providers::UpstreamRequest upstream_request(providers::MultipartUploadBody& body, const std::string& content_type) {
  providers::UpstreamRequest up;
  up.path = kUpstreamPath;
  up.content_type = content_type;
  up.accept = "application/json";
  up.streamed_body = &body;
  return up;
}

class TranscriptionAttempts final : public EndpointAttempts {
 public:
  TranscriptionAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head,
                        const TranscriptionRequest& req, const TranscriptionUpload& upload,
                        std::string requested_route, ResponseSink& sink)
      : EndpointAttempts(services.record),
        rt_(rt),
        services_(services),
        head_(head),
        req_(req),
        upload_(upload),
        requested_route_(std::move(requested_route)),
        sink_(sink) {}

  boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) override {
    const auto attempt_start = Clock::now();
    const config::RouteConfig& route = *plan.route;
    const config::ProviderConfig& provider = rt_.config->providers.at(route.provider);
    const std::vector<providers::FormField> fields = upstream_fields(req_, route);
    SpoolBodySource file_bytes(upload_.spool(), &services_.file_io);
    providers::MultipartUploadBody body(fields, req_.file, file_bytes);
    const std::string content_type = body.content_type();
    providers::UpstreamRequest up = upstream_request(body, content_type);
    const auto connect_timeout = std::chrono::milliseconds(rt_.config->timeouts.connect_ms);
    const auto asked = Clock::now();
    auto sent = co_await services_.upstream.send(rt_.providers, provider, std::move(up), plan.first_byte_deadline,
                                                 connect_timeout);
    waited(asked);
    if (!sent.response) {
      spdlog::warn("route {} attempt failed: {}", route.id, sent.detail);
      co_return outcome_only(transport_outcome(sent.error, plan, false, true));
    }
    providers::UpstreamResponse& response = *sent.response;
    if (response.status() != 200) co_return co_await refused(plan, provider, response);
    TransportError error = TransportError::none;
    const auto reading = Clock::now();
    const size_t cap = transcript_cap(*rt_.config);
    const std::string upstream = co_await response.read_all(cap, plan.request_deadline, error);
    waited(reading);
    if (error != TransportError::none) {
      spdlog::warn("route {} failed while sending its transcript: {}", route.id, providers::to_string(error));
      co_return outcome_only(transport_outcome(error, plan, false, false));
    }
    std::optional<TranscriptAnswer> answer = read_transcript(upstream, req_.format, route);
    if (!answer) {
      spdlog::warn("route {} answered 200 without a JSON transcript", route.id);
      co_return outcome_only(AttemptOutcome::bad_response);
    }
    served_by_ = plan;
    const double price = transcription_price(route, answer->audio_seconds.value_or(0), answer->input_tokens,
                                             answer->output_tokens);
    charge_customer(services_, head_.customer(), route, price);
    TresorInfo info = tresor_info(requested_route_, plan);
    if (!head_.receipt_opt_out) {
      const std::string id = receipts::new_receipt_id();
      receipts::Claims claims = make_claims(id, info, claim_figures(upload_.body_sha256(), *answer, services_.attestation), head_.nonce);
      std::string customer = head_.customer();
      if (co_await issue_receipt(services_.receipts, rt_.config->receipts, std::move(customer), std::move(claims)))
        info.receipt_id = id;
      else
        spdlog::error("route {}: the receipt could not be stored; answering without receipt_id", route.id);
    }
    const std::string attempts = attempts_with_success(plan, attempt_start);
    Response reply = transcript_response(std::move(*answer), info, attempts);
    co_await sink_.send(std::move(reply));
    co_return outcome_only(AttemptOutcome::ok);
  }


 private:
  const Runtime& rt_;
  EndpointServices services_;
  const ControlHeaders& head_;
  const TranscriptionRequest& req_;
  const TranscriptionUpload& upload_;
  std::string requested_route_;
  ResponseSink& sink_;
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
  TranscriptionAttempts attempts(rt, services, head, req, upload, resolution.requested_route, sink);
  co_await serve_with_failover(rt, services, resolution, false, started, head.budget, attempts, sink);
}

}  // namespace tresor::server
