// The status page's data (server/status_board.h, server/status_page.h): the rolling window
// per configured route, its percentiles, the bounded event list, the admin key check and
// status.admin_key in the config. The HTTP surface and the page: tests/integration/
// status-page.test.mjs and tests/browser/status-page.test.mjs.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>

#include <string>

#include "config/config.h"
#include "router/route_health.h"
#include "server/status_board.h"
#include "server/status_page.h"

using namespace tresor;
namespace json = boost::json;

namespace {

std::shared_ptr<const config::Config> two_routes(const std::string& extra = "") {
  return config::load_config_text(
      "providers:\n  p: {base_url: \"http://127.0.0.1:9/v1\"}\nroutes:\n"
      "  - {id: \"eu/p/a\", provider: p, upstream_model: m}\n"
      "  - {id: \"eu/p/b\", provider: p, upstream_model: m}\n" + extra,
      "test.yaml");
}

server::RequestRecord served_by(const std::string& route, providers::Clock::time_point started, int ms) {
  server::RequestRecord r;
  r.inference = true;
  r.status = 200;
  r.started = started;
  r.routed_model = route;
  r.requested_route = route;
  r.attempts.push_back({route, router::AttemptOutcome::ok, 200, ms, started, 0});
  return r;
}

server::RequestHead with_auth(const std::string& value) {
  server::RequestHead h;
  h.headers.emplace_back("Authorization", value);
  return h;
}

}  // namespace

TEST_CASE("status board: percentiles over the window, configured routes only", "[status]") {
  const auto cfg = two_routes();
  router::RouteHealth health;
  server::StatusBoard board;
  const auto t0 = providers::Clock::now();
  for (int i = 1; i <= 100; ++i) {
    auto r = served_by("eu/p/a", t0, i);
    board.request_done(r, t0 + std::chrono::milliseconds(i), *cfg);
  }
  auto junk = served_by("eu/nosuch/client-string", t0, 5);  // not configured: never a key
  board.request_done(junk, t0, *cfg);
  const auto doc = json::parse(board.snapshot_json(*cfg, health, nullptr, t0 + std::chrono::seconds(1)));
  const auto& routes = doc.at("routes").as_array();
  REQUIRE(routes.size() == 2);
  const auto& a = routes[0].as_object();
  CHECK(a.at("id").as_string() == "eu/p/a");
  CHECK(a.at("attempts").as_int64() == 100);
  CHECK(a.at("errors").as_int64() == 0);
  CHECK(a.at("breaker").as_string() == "closed");
  // 1..100 ms: the median lies in the 25–50 bucket, p95 in the 50–100 one.
  const double p50 = a.at("latency_ms").at("p50").to_number<double>();
  const double p95 = a.at("latency_ms").at("p95").to_number<double>();
  CHECK(p50 >= 25);
  CHECK(p50 <= 60);
  CHECK(p95 >= 50);
  CHECK(p95 <= 100);
  CHECK(a.at("ttft_ms").is_null());  // no stream
  CHECK(routes[1].at("attempts").as_int64() == 0);
  CHECK(doc.at("log").is_null());
  CHECK(board.snapshot_json(*cfg, health, nullptr, t0).find("nosuch") == std::string::npos);

  // Out of the window: nothing left.
  const auto later = json::parse(board.snapshot_json(*cfg, health, nullptr, t0 + std::chrono::seconds(400)));
  CHECK(later.at("routes").at(0).at("attempts").as_int64() == 0);
}

TEST_CASE("status board: failovers and recoveries with reasons, at most 20, newest first", "[status]") {
  const auto cfg = two_routes();
  router::RouteHealth health;
  server::StatusBoard board;
  const auto t0 = providers::Clock::now();
  for (int i = 0; i < 25; ++i) {
    auto r = served_by("eu/p/b", t0, 3);
    r.failover = true;
    r.request_id = "req-" + std::to_string(i);
    // Alternating reasons: no two neighbours are the same event.
    r.attempts.insert(r.attempts.begin(),
                      {"eu/p/a", router::AttemptOutcome::http_status, i % 2 ? 502 : 503, 2, t0, 0});
    board.request_done(r, t0, *cfg);
  }
  auto cut = served_by("eu/p/b", t0, 3);
  cut.stream = true;
  cut.attempts.insert(cut.attempts.begin(), {"eu/p/a", router::AttemptOutcome::stream_cut, 200, 2, t0, 0});
  board.request_done(cut, t0, *cfg);
  const auto doc = json::parse(board.snapshot_json(*cfg, health, nullptr, t0));
  const auto& events = doc.at("events").as_array();
  REQUIRE(events.size() == 20);
  CHECK(events[0].at("kind").as_string() == "recovered");
  CHECK(events[0].at("reason").as_string() == "stream_cut");
  CHECK(events[0].at("to").as_string() == "eu/p/b");
  CHECK(events[1].at("kind").as_string() == "failover");
  CHECK(events[1].at("reason").as_string() == "503");
  CHECK(events[1].at("request_id").as_string() == "req-24");
  CHECK(events[2].at("reason").as_string() == "502");
  CHECK(events[1].at("count").as_int64() == 1);
  const auto& a = doc.at("routes").at(0).as_object();
  CHECK(a.at("errors").as_int64() == 26);
  CHECK(a.at("error_rate").to_number<double>() == Approx(1.0));
}

TEST_CASE("status board: the same failover back to back is one event with a count", "[status]") {
  const auto cfg = two_routes();
  router::RouteHealth health;
  server::StatusBoard board;
  const auto t0 = providers::Clock::now();
  for (int i = 0; i < 30; ++i) {
    auto r = served_by("eu/p/b", t0, 3);
    r.failover = true;
    r.request_id = "req-" + std::to_string(i);
    r.attempts.insert(r.attempts.begin(), {"eu/p/a", router::AttemptOutcome::skipped_breaker, 0, 0, {}, 0});
    board.request_done(r, t0, *cfg);
  }
  const auto doc = json::parse(board.snapshot_json(*cfg, health, nullptr, t0));
  const auto& events = doc.at("events").as_array();
  REQUIRE(events.size() == 1);
  CHECK(events[0].at("reason").as_string() == "skipped_breaker");
  CHECK(events[0].at("count").as_int64() == 30);
  CHECK(events[0].at("request_id").as_string() == "req-29");
  // A skip is not an attempt: the route's figures are untouched.
  CHECK(doc.at("routes").at(0).at("attempts").as_int64() == 0);
}

TEST_CASE("status board: breaker state and hold from RouteHealth", "[status]") {
  const auto cfg = two_routes();
  router::RouteHealth health;
  server::StatusBoard board;
  const auto now = providers::Clock::now();
  for (unsigned i = 0; i < cfg->breaker.consecutive_failures; ++i) health.record_failure("eu/p/a", now, cfg->breaker);
  const auto doc = json::parse(board.snapshot_json(*cfg, health, nullptr, now));
  CHECK(doc.at("routes").at(0).at("breaker").as_string() == "open");
  CHECK(doc.at("routes").at(0).at("hold_seconds").to_number<double>() > 0);
  CHECK(doc.at("routes").at(1).at("breaker").as_string() == "closed");
}

TEST_CASE("status page: the admin key as Bearer or Basic password, nothing else", "[status]") {
  const std::string key = "adm-0123456789abcdef";
  using server::StatusAuth;
  CHECK(server::check_status_auth(server::RequestHead(), key) == StatusAuth::missing);
  CHECK(server::check_status_auth(with_auth("Bearer " + key), key) == StatusAuth::ok);
  CHECK(server::check_status_auth(with_auth("bearer " + key), key) == StatusAuth::ok);
  // "admin:adm-0123456789abcdef" and ":adm-0123456789abcdef" in base64.
  CHECK(server::check_status_auth(with_auth("Basic YWRtaW46YWRtLTAxMjM0NTY3ODlhYmNkZWY="), key) == StatusAuth::ok);
  CHECK(server::check_status_auth(with_auth("Basic OmFkbS0wMTIzNDU2Nzg5YWJjZGVm"), key) == StatusAuth::ok);
  CHECK(server::check_status_auth(with_auth("Bearer " + key + "0"), key) == StatusAuth::invalid);
  CHECK(server::check_status_auth(with_auth("Bearer " + key.substr(1)), key) == StatusAuth::invalid);
  CHECK(server::check_status_auth(with_auth("Basic " + key), key) == StatusAuth::invalid);
  CHECK(server::check_status_auth(with_auth(key), key) == StatusAuth::invalid);
  server::RequestHead two = with_auth("Bearer " + key);
  two.headers.emplace_back("Authorization", "Bearer " + key);
  CHECK(server::check_status_auth(two, key) == StatusAuth::invalid);
}

TEST_CASE("status.admin_key: off by default, from the environment, short keys refused", "[status][config]") {
  CHECK(two_routes()->status.admin_key.empty());
  CHECK(two_routes("status: {admin_key: \"adm-0123456789abcdef\"}\n")->status.admin_key == "adm-0123456789abcdef");
  CHECK_THROWS_WITH(two_routes("status: {admin_key: \"short\"}\n"), Catch::Contains("16 to 1024 characters"));
  CHECK_THROWS_WITH(two_routes("status: {admin_key: \"has a space in it ok\"}\n"), Catch::Contains("printable ASCII"));
  CHECK_THROWS_WITH(two_routes("status: {key: x}\n"), Catch::Contains("unknown key 'key'"));
}
