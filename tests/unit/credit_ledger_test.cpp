// Customer credit (spec §9.4, §7.5): what an answer costs, when a customer is out of
// credit (402), and what GET /v1/usage reports.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <string>

#include "config/config.h"
#include "server/credit_ledger.h"

using namespace tresor;
using server::CreditLedger;
using server::TranscriptionBilling;

namespace {

config::RouteConfig route_with(std::optional<config::Pricing> pricing) {
  config::RouteConfig r;
  r.id = "eu/pm/model";
  r.pricing = std::move(pricing);
  return r;
}

config::Pricing per_mtok(double input, double output) {
  config::Pricing p;
  p.input_per_mtok = input;
  p.output_per_mtok = output;
  return p;
}

config::Pricing per_unit(const char* unit, double amount) {
  config::Pricing p;
  p.billing_unit = unit;
  p.unit_amount = amount;
  return p;
}

// A config with customer "acme" holding 10 EUR of credit.
config::Config config_with_acme() {
  config::Config c;
  c.auth.customers["acme"] = config::CustomerConfig{10.0, "EUR"};
  return c;
}

boost::json::object parse(const std::string& s) { return boost::json::parse(s).as_object(); }

}  // namespace

TEST_CASE("credit: a chat answer costs its tokens at the route's per-million prices", "[credit]") {
  CHECK(server::chat_price(route_with(per_mtok(2.0, 8.0)), 1'000'000, 500'000) == Approx(6.0));
  CHECK(server::chat_price(route_with(per_mtok(3.0, 0)), 1000, 0) == Approx(0.003));
  CHECK(server::chat_price(route_with(std::nullopt), 1'000'000, 1'000'000) == 0);
  config::Pricing input_only;
  input_only.input_per_mtok = 1.0;
  CHECK(server::chat_price(route_with(input_only), 2'000'000, 9'000'000) == Approx(2.0));
}

TEST_CASE("credit: transcription billing follows billing_unit, else the token prices", "[credit]") {
  CHECK(server::transcription_billing(route_with(std::nullopt)) == TranscriptionBilling::free);
  CHECK(server::transcription_billing(route_with(config::Pricing{})) == TranscriptionBilling::free);
  CHECK(server::transcription_billing(route_with(per_unit("audio_minute", 0.006))) == TranscriptionBilling::duration);
  CHECK(server::transcription_billing(route_with(per_unit("request", 0.01))) == TranscriptionBilling::request);
  CHECK(server::transcription_billing(route_with(per_mtok(1, 2))) == TranscriptionBilling::tokens);

  // audio_minute: the unit amount per minute, pro rata by second.
  CHECK(server::transcription_price(route_with(per_unit("audio_minute", 0.6)), 90, 0, 0) == Approx(0.9));
  CHECK(server::transcription_price(route_with(per_unit("request", 0.25)), 3600, 5, 5) == Approx(0.25));
  CHECK(server::transcription_price(route_with(per_mtok(1.0, 4.0)), 60, 1'000'000, 250'000) == Approx(2.0));
  CHECK(server::transcription_price(route_with(std::nullopt), 60, 1000, 1000) == 0);
}

TEST_CASE("credit: a listed customer can spend until the credit is used up; others are unlimited", "[credit]") {
  const auto cfg = config_with_acme();
  CreditLedger ledger({});
  CHECK(ledger.can_spend(cfg, "acme"));
  CHECK(ledger.can_spend(cfg, "someone-else"));
  ledger.charge("acme", "eu/pm/a", 6.0);
  CHECK(ledger.can_spend(cfg, "acme"));
  ledger.charge("acme", "eu/pm/b", 4.0);  // exactly used up
  CHECK_FALSE(ledger.can_spend(cfg, "acme"));
  ledger.charge("someone-else", "eu/pm/a", 1e9);
  CHECK(ledger.can_spend(cfg, "someone-else"));
}

TEST_CASE("credit: free and negative amounts charge nothing", "[credit]") {
  const auto cfg = config_with_acme();
  CreditLedger ledger({});
  ledger.charge("acme", "eu/pm/a", 0);
  ledger.charge("acme", "eu/pm/a", -50);
  const auto usage = parse(ledger.usage_json(cfg, "acme"));
  CHECK(usage.at("spent").to_number<double>() == 0);
  CHECK(usage.at("by_route").as_object().empty());
}

TEST_CASE("credit: spend persisted by the store is counted after a restart", "[credit]") {
  const auto cfg = config_with_acme();
  CreditLedger ledger({{"acme", "eu/pm/a", 7.0}, {"acme", "eu/pm/b", 3.5}, {"other", "eu/pm/a", 1.0}});
  CHECK_FALSE(ledger.can_spend(cfg, "acme"));
  const auto usage = parse(ledger.usage_json(cfg, "acme"));
  CHECK(usage.at("spent").to_number<double>() == Approx(10.5));
  CHECK(usage.at("remaining").to_number<double>() == Approx(-0.5));
  CHECK(usage.at("by_route").as_object().size() == 2);
}

TEST_CASE("credit: /v1/usage names the customer, its currency, credit, spend per route and remainder", "[credit]") {
  const auto cfg = config_with_acme();
  CreditLedger ledger({});
  ledger.charge("acme", "eu/pm/a", 1.25);
  ledger.charge("acme", "eu/pm/a", 0.75);
  ledger.charge("acme", "us/pm/b", 3.0);
  const auto usage = parse(ledger.usage_json(cfg, "acme"));
  CHECK(usage.at("object").as_string() == "usage");
  CHECK(usage.at("customer").as_string() == "acme");
  CHECK(usage.at("currency").as_string() == "EUR");
  CHECK(usage.at("credit").to_number<double>() == Approx(10.0));
  CHECK(usage.at("spent").to_number<double>() == Approx(5.0));
  CHECK(usage.at("remaining").to_number<double>() == Approx(5.0));
  const auto& by_route = usage.at("by_route").as_object();
  CHECK(by_route.at("eu/pm/a").to_number<double>() == Approx(2.0));
  CHECK(by_route.at("us/pm/b").to_number<double>() == Approx(3.0));
}

TEST_CASE("credit: an unlisted customer's usage has null credit and remainder (unlimited)", "[credit]") {
  const auto cfg = config_with_acme();
  CreditLedger ledger({});
  ledger.charge("walk-in", "eu/pm/a", 2.0);
  const auto usage = parse(ledger.usage_json(cfg, "walk-in"));
  CHECK(usage.at("credit").is_null());
  CHECK(usage.at("remaining").is_null());
  CHECK_FALSE(usage.contains("currency"));
  CHECK(usage.at("spent").to_number<double>() == Approx(2.0));
  // Nothing spent yet: zero and an empty breakdown, not an error.
  const auto fresh = parse(ledger.usage_json(cfg, "nobody"));
  CHECK(fresh.at("spent").to_number<double>() == 0);
  CHECK(fresh.at("by_route").as_object().empty());
}
