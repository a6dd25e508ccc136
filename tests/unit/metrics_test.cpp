// Metrics' money series (server/metrics.h): exact integer nanos, by configured route and
// currency; refusals by reason; cut streams billed. The per-route stream and GenAI series
// (issue 20): bucket math from StreamPace, the route each one goes to, bounded labels. The
// request path's calls are covered by the integration tests; this checks what /metrics shows
// for given calls.
#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <sstream>
#include <string>

#include "config/config.h"
#include "router/route_health.h"
#include "server/metrics.h"

using namespace tresor;

namespace {

std::shared_ptr<const config::Config> two_routes() {
  return config::load_config_text(
      "providers:\n  p: {base_url: \"http://127.0.0.1:9/v1\"}\nroutes:\n"
      "  - {id: \"eu/p/priced\", provider: p, upstream_model: m,"
      " pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6, currency: eur}}\n"
      "  - {id: \"eu/p/free\", provider: p, upstream_model: m}\n",
      "test.yaml");
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("money series: every configured priced route from the start, exact integer nanos", "[metrics]") {
  server::Metrics metrics;
  const auto cfg = two_routes();
  router::RouteHealth health;
  std::string text = metrics.render(*cfg, health, {});
  CHECK(has_line(text, "# TYPE tresor_spend_nanos_total counter"));
  CHECK(has_line(text, "tresor_spend_nanos_total{route=\"eu/p/priced\",currency=\"eur\"} 0"));
  CHECK(has_line(text, "tresor_spend_estimated_nanos_total{route=\"eu/p/priced\",currency=\"eur\"} 0"));
  CHECK(text.find("tresor_spend_nanos_total{route=\"eu/p/free\"") == std::string::npos);  // unpriced
  CHECK(has_line(text, "tresor_cut_streams_billed_total{route=\"eu/p/free\"} 0"));
  CHECK(has_line(text, "tresor_reservation_refusals_total{reason=\"tokens_limited\"} 0"));

  // Beyond 2^53 a double counter would round: 9007199254740993 must stay exact.
  metrics.spend("eu/p/priced", "eur", 9'007'199'254'740'992, false);
  metrics.spend("eu/p/priced", "eur", 1, true);
  metrics.spend("eu/p/priced", "eur", 0, true);   // nothing
  metrics.spend("eu/p/free", "", 0, false);       // nothing, no currency "" series
  metrics.spend("gone/p/route", "eur", 5, false); // not configured: never shown
  metrics.reservation_refused(accounts::Refusal::Kind::balance_exceeded);
  metrics.reservation_refused(accounts::Refusal::Kind::balance_exceeded);
  metrics.reservation_refused(accounts::Refusal::Kind::tokens_limited);
  metrics.cut_stream_billed("eu/p/free");
  text = metrics.render(*cfg, health, {});
  CHECK(has_line(text, "tresor_spend_nanos_total{route=\"eu/p/priced\",currency=\"eur\"} 9007199254740993"));
  CHECK(has_line(text, "tresor_spend_estimated_nanos_total{route=\"eu/p/priced\",currency=\"eur\"} 1"));
  CHECK(text.find("currency=\"\"") == std::string::npos);
  CHECK(text.find("gone/p/route") == std::string::npos);
  CHECK(has_line(text, "tresor_reservation_refusals_total{reason=\"balance_exceeded\"} 2"));
  CHECK(has_line(text, "tresor_reservation_refusals_total{reason=\"rate_limited\"} 0"));
  CHECK(has_line(text, "tresor_reservation_refusals_total{reason=\"tokens_limited\"} 1"));
  CHECK(has_line(text, "tresor_cut_streams_billed_total{route=\"eu/p/free\"} 1"));
  CHECK(has_line(text, "tresor_cut_streams_billed_total{route=\"eu/p/priced\"} 0"));
}

// ---- Issue 20: per-route stream pace, tokens, upstream operations, stream failures --------

namespace {

using Clock = providers::Clock;
using std::chrono::milliseconds;

const std::string kPriced = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"p\",gen_ai_request_model=\"m\","
                            "tresor_route=\"eu/p/priced\"";
const std::string kFree = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"p\",gen_ai_request_model=\"m\","
                          "tresor_route=\"eu/p/free\"";

router::AttemptRecord attempt(std::string route, router::AttemptOutcome outcome, long long ms, int status = 0) {
  router::AttemptRecord a;
  a.route = std::move(route);
  a.outcome = outcome;
  a.ms = ms;
  a.http_status = status;
  return a;
}

// A chat stream that started at `t0` with content written at these offsets (ms).
server::RequestRecord stream_record(Clock::time_point t0, std::initializer_list<long long> writes_ms) {
  server::RequestRecord r;
  r.endpoint = "/v1/chat/completions";
  r.inference = true;
  r.stream = true;
  r.status = 200;
  r.started = t0;
  for (const long long ms : writes_ms) r.pace.wrote(t0 + milliseconds(ms));
  return r;
}

// The series of a scrape: every sample line's name and labels, without its value.
std::set<std::string> series(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') out.insert(line.substr(0, line.rfind(' ')));
  return out;
}

}  // namespace

TEST_CASE("stream pace: time to first token and the gaps land in StreamPace's buckets, on the route of the first token",
          "[metrics]") {
  server::Metrics metrics;
  const auto cfg = two_routes();
  router::RouteHealth health;
  std::string text = metrics.render(*cfg, health, {});
  // Every configured chat route has its series from the start.
  for (const auto& labels : {kPriced, kFree}) {
    CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_count{" + labels + "} 0"));
    CHECK(has_line(text, "gen_ai_client_token_usage_count{" + labels + ",gen_ai_token_type=\"output\"} 0"));
    CHECK(has_line(text, "gen_ai_client_operation_duration_seconds_count{" + labels + "} 0"));
  }
  CHECK(has_line(text, "# TYPE gen_ai_server_time_to_first_token_seconds histogram"));
  CHECK(has_line(text, "tresor_stream_chunk_gap_seconds_count{route=\"eu/p/free\"} 0"));
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/priced\",reason=\"stream_stalled\"} 0"));

  // First content after 30 ms; gaps of 3 ms, 150 ms and 7 s.
  auto r = stream_record(Clock::now(), {30, 33, 183, 7183});
  r.routed_model = "eu/p/priced";
  r.attempts = {attempt("eu/p/priced", router::AttemptOutcome::http_status, 20, 503),
                attempt("eu/p/priced", router::AttemptOutcome::ok, 500)};
  r.billed = server::BilledUsage{12, 5, false, 0, ""};
  metrics.request_done(r, r.started + milliseconds(7200));
  text = metrics.render(*cfg, health, {});

  const std::string ttft = "gen_ai_server_time_to_first_token_seconds_bucket{" + kPriced;
  CHECK(has_line(text, ttft + ",le=\"0.02\"} 0"));
  CHECK(has_line(text, ttft + ",le=\"0.04\"} 1"));
  CHECK(has_line(text, ttft + ",le=\"+Inf\"} 1"));
  const std::string gap = "tresor_stream_chunk_gap_seconds_bucket{route=\"eu/p/priced\"";
  CHECK(has_line(text, gap + ",le=\"0.005\"} 1"));  // 3 ms
  CHECK(has_line(text, gap + ",le=\"0.1\"} 1"));
  CHECK(has_line(text, gap + ",le=\"0.2\"} 2"));    // 150 ms
  CHECK(has_line(text, gap + ",le=\"5\"} 2"));
  CHECK(has_line(text, gap + ",le=\"+Inf\"} 3"));   // 7 s
  CHECK(has_line(text, "tresor_stream_chunk_gap_seconds_count{route=\"eu/p/priced\"} 3"));
  // Done at 7.2 s: 7.17 s after the first token, over 4 tokens after the first: 1.79 s per token.
  const std::string tpot = "gen_ai_server_time_per_output_token_seconds_bucket{" + kPriced;
  CHECK(has_line(text, tpot + ",le=\"1\"} 0"));
  CHECK(has_line(text, tpot + ",le=\"2.5\"} 1"));
  // Tokens: 12 in, 5 out.
  const std::string tokens = "gen_ai_client_token_usage_bucket{" + kPriced + ",gen_ai_token_type=";
  CHECK(has_line(text, tokens + "\"input\",le=\"4\"} 0"));
  CHECK(has_line(text, tokens + "\"input\",le=\"16\"} 1"));
  CHECK(has_line(text, tokens + "\"output\",le=\"4\"} 0"));
  CHECK(has_line(text, tokens + "\"output\",le=\"16\"} 1"));
  CHECK(has_line(text, "gen_ai_client_token_usage_sum{" + kPriced + ",gen_ai_token_type=\"input\"} 12"));
  // Each attempt's duration, a failed one by its error type.
  const std::string op = "gen_ai_client_operation_duration_seconds_bucket{" + kPriced;
  CHECK(has_line(text, op + ",le=\"0.32\"} 0"));
  CHECK(has_line(text, op + ",le=\"0.64\"} 1"));
  CHECK(has_line(text, op + ",error_type=\"http_5xx\",le=\"0.02\"} 1"));
  // The other route did not move.
  CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_count{" + kFree + "} 0"));
  CHECK(has_line(text, "tresor_stream_chunk_gap_seconds_count{route=\"eu/p/free\"} 0"));
}

TEST_CASE("a stream whose upstream failed after its 200: counted by route and reason; first token on the failed route",
          "[metrics]") {
  server::Metrics metrics;
  const auto cfg = two_routes();
  router::RouteHealth health;
  // priced streamed, was cut, free recovered the stream and ended it.
  auto r = stream_record(Clock::now(), {100, 110});
  r.routed_model = "eu/p/free";
  r.attempts = {attempt("eu/p/priced", router::AttemptOutcome::stream_cut, 100),
                attempt("eu/p/free", router::AttemptOutcome::ok, 40)};
  r.billed = server::BilledUsage{3, 9, false, 0, ""};
  metrics.request_done(r, r.started + milliseconds(200));
  // Another: stalled, then a recovery that diverged (no attempt finished it: no time per token).
  auto r2 = stream_record(Clock::now(), {50, 60});
  r2.attempts = {attempt("eu/p/free", router::AttemptOutcome::stream_stalled, 3000),
                 attempt("eu/p/priced", router::AttemptOutcome::recovery_diverged, 40)};
  metrics.request_done(r2, r2.started + milliseconds(3100));
  const std::string text = metrics.render(*cfg, health, {});
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/priced\",reason=\"stream_cut\"} 1"));
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/priced\",reason=\"stream_stalled\"} 0"));
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/priced\",reason=\"recovery_diverged\"} 1"));
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/free\",reason=\"stream_stalled\"} 1"));
  CHECK(has_line(text, "tresor_stream_upstream_failures_total{route=\"eu/p/free\",reason=\"stream_cut\"} 0"));
  // The first token came from the route that was cut (priced), the second stream's from free.
  CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_count{" + kPriced + "} 1"));
  CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_count{" + kFree + "} 1"));
  CHECK(has_line(text, "gen_ai_server_time_per_output_token_seconds_count{" + kPriced + "} 1"));
  CHECK(has_line(text, "gen_ai_server_time_per_output_token_seconds_count{" + kFree + "} 0"));
  // Tokens go to the route that served (and billed) the answer.
  CHECK(has_line(text, "gen_ai_client_token_usage_sum{" + kFree + ",gen_ai_token_type=\"output\"} 9"));
  CHECK(has_line(text, "gen_ai_client_token_usage_count{" + kPriced + ",gen_ai_token_type=\"output\"} 0"));
  CHECK(has_line(text, "gen_ai_client_operation_duration_seconds_count{" + kPriced +
                           ",error_type=\"stream_cut\"} 1"));
  CHECK(has_line(text, "gen_ai_client_operation_duration_seconds_count{" + kPriced +
                           ",error_type=\"recovery_diverged\"} 1"));
}

TEST_CASE("route bounding: client model strings and unconfigured routes never add a series", "[metrics]") {
  server::Metrics metrics;
  const auto cfg = two_routes();
  router::RouteHealth health;
  // An unknown model: 404 before any attempt. The first one creates its status series.
  const auto unknown = [&](const std::string& model) {
    server::RequestRecord r;
    r.endpoint = "/v1/chat/completions";
    r.inference = true;
    r.status = 404;
    r.started = Clock::now();
    r.requested_route = model;
    metrics.request_done(r, r.started + milliseconds(1));
  };
  unknown("warm-up");
  const auto before = series(metrics.render(*cfg, health, {}));
  for (int i = 0; i < 200; ++i) unknown("eu/junk" + std::to_string(i) + "/m");
  CHECK(series(metrics.render(*cfg, health, {})) == before);

  // Stats of a route that is not (or no longer) configured are never shown in the new families.
  auto r = stream_record(Clock::now(), {10, 20});
  r.routed_model = "gone/p/route";
  r.attempts = {attempt("gone/p/route", router::AttemptOutcome::stream_cut, 10),
                attempt("gone/p/route", router::AttemptOutcome::ok, 10)};
  r.billed = server::BilledUsage{1, 2, false, 0, ""};
  metrics.request_done(r, r.started + milliseconds(30));
  const std::string text = metrics.render(*cfg, health, {});
  for (const auto& family : {"gen_ai_", "tresor_stream_chunk_gap", "tresor_stream_upstream_failures"}) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(family, 0) == 0) CHECK(line.find("gone/p/route") == std::string::npos);
  }
}
