// Metrics' money series (server/metrics.h): exact integer nanos, by configured route and
// currency; refusals by reason; cut streams billed. The request path's calls are covered by
// the integration tests; this checks what /metrics shows for given calls.
#include <catch2/catch.hpp>
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
