// The config's money and limit fields for accounts/ (issue 16): prices and credits are read
// exactly as integer nanos, token limits and reservation bounds as written, and a bad
// amount is a ConfigError that names the field and its file:line.
#include <catch2/catch.hpp>

#include <cctype>
#include <string>

#include "config/config.h"

using tresor::config::ConfigError;
using tresor::config::load_config_text;

namespace {

const char* const kKeyHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// The message of the ConfigError thrown for `text`, or "" when it loads.
std::string error_of(const std::string& text, const std::string& name) {
  try {
    load_config_text(text, name);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// True when `e` starts with "NAME:LINE:COL: ".
bool has_position(const std::string& e, const std::string& name, int line) {
  const std::string prefix = name + ":" + std::to_string(line) + ":";
  if (e.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size();
  const size_t digits = i;
  while (i < e.size() && std::isdigit(static_cast<unsigned char>(e[i]))) ++i;
  return i > digits && e.compare(i, 2, ": ") == 0;
}

// Lines 1-3 providers, 4-15 routes, 16-22 auth; the value under test lands on line 22.
std::string config_with(const std::string& credit, const std::string& input_price = "0.2") {
  return std::string("providers:\n"                                   // 1
                     "  pm:\n"                                         // 2
                     "    base_url: \"http://127.0.0.1:9/v1\"\n"       // 3
                     "routes:\n"                                       // 4
                     "  - id: eu/pm/chat\n"                            // 5
                     "    provider: pm\n"                              // 6
                     "    upstream_model: m\n"                         // 7
                     "    max_output_tokens: 2048\n"                   // 8
                     "    pricing: {input_per_mtok: ") +
         input_price + ", output_per_mtok: 0.6, currency: eur}\n" +  // 9
         "  - id: eu/pm/whisper\n"                                     // 10
         "    provider: pm\n"                                          // 11
         "    upstream_model: w\n"                                     // 12
         "    type: transcription\n"                                   // 13
         "    max_audio_seconds: 900\n"                                // 14
         "    pricing: {billing_unit: audio_minute, unit_amount: 0.014, currency: eur}\n"  // 15
         "auth:\n"                                                     // 16
         "  keys:\n"                                                   // 17
         "    - sha256: \"" + kKeyHash + "\"\n"                        // 18
         "      customer: acme\n"                                      // 19
         "      limits: {per_minute: 60, tokens_per_minute: 50000, tokens_per_day: 2000000}\n"  // 20
         "  customers:\n"                                              // 21
         "    acme: {credit: " + credit + ", currency: eur}\n";         // 22
}

}  // namespace

TEST_CASE("config: money fields load as exact nanos, limits and bounds as written", "[accounts][config]") {
  const auto c = load_config_text(config_with("0.3"), "money.yaml");
  REQUIRE(c->routes.size() == 2);
  const auto& chat = c->routes[0];
  REQUIRE(chat.pricing);
  CHECK(chat.pricing->input_nanos_per_mtok == std::optional<int64_t>(200'000'000));
  CHECK(chat.pricing->output_nanos_per_mtok == std::optional<int64_t>(600'000'000));
  CHECK_FALSE(chat.pricing->unit_nanos.has_value());
  CHECK(chat.max_output_tokens == std::optional<uint64_t>(2048));
  CHECK_FALSE(chat.max_audio_seconds.has_value());
  const auto& whisper = c->routes[1];
  REQUIRE(whisper.pricing);
  CHECK(whisper.pricing->unit_nanos == std::optional<int64_t>(14'000'000));
  CHECK_FALSE(whisper.pricing->input_nanos_per_mtok.has_value());
  CHECK(whisper.max_audio_seconds == std::optional<uint64_t>(900));
  CHECK_FALSE(whisper.max_output_tokens.has_value());
  REQUIRE(c->auth.keys.size() == 1);
  const auto& limits = c->auth.keys[0].limits;
  CHECK(limits.per_minute == std::optional<uint64_t>(60));
  CHECK_FALSE(limits.per_day.has_value());
  CHECK(limits.tokens_per_minute == std::optional<uint64_t>(50000));
  CHECK(limits.tokens_per_day == std::optional<uint64_t>(2'000'000));
  const auto& acme = c->auth.customers.at("acme");
  CHECK(acme.credit_nanos == 300'000'000);
  CHECK(acme.currency == "eur");
}

TEST_CASE("config: exponent and nine-decimal amounts are exact", "[accounts][config]") {
  CHECK(load_config_text(config_with("1e3"), "m.yaml")->auth.customers.at("acme").credit_nanos == 1000'000'000'000);
  CHECK(load_config_text(config_with("0.000000001"), "m.yaml")->auth.customers.at("acme").credit_nanos == 1);
  // Amounts that a double gets wrong: 1.001 × 1e9 truncates to 1000999999, and no double
  // holds 9000000000.000000001.
  CHECK(load_config_text(config_with("1.001"), "m.yaml")->auth.customers.at("acme").credit_nanos == 1'001'000'000);
  CHECK(load_config_text(config_with("9000000000.000000001"), "m.yaml")->auth.customers.at("acme").credit_nanos ==
        9'000'000'000'000'000'001);
  CHECK(load_config_text(config_with("1", "1.003"), "m.yaml")->routes[0].pricing->input_nanos_per_mtok ==
        std::optional<int64_t>(1'003'000'000));
  CHECK(load_config_text(config_with("0.1", "1.5E-3"), "m.yaml")->routes[0].pricing->input_nanos_per_mtok ==
        std::optional<int64_t>(1'500'000));
}

TEST_CASE("config: a bad credit is a ConfigError naming the field at file:line", "[accounts][config]") {
  for (const char* bad : {"-1", "0.0000000001", "abc", "9300000000", "1e40"}) {
    INFO("credit: " << bad);
    const std::string e = error_of(config_with(bad), "money.yaml");
    CHECK(has_position(e, "money.yaml", 22));
    CHECK(contains(e, "auth.customers.acme.credit"));
    CHECK(contains(e, bad));
  }
}

TEST_CASE("config: a bad price is a ConfigError naming the field at file:line", "[accounts][config]") {
  for (const char* bad : {"-0.2", "0.0000000001", "abc"}) {
    INFO("input_per_mtok: " << bad);
    const std::string e = error_of(config_with("1", bad), "money.yaml");
    CHECK(has_position(e, "money.yaml", 9));
    CHECK(contains(e, "routes[0].pricing.input_per_mtok"));
  }
}

TEST_CASE("config: token limits and reservation bounds are positive integers", "[accounts][config]") {
  std::string cfg = config_with("1");
  const auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = cfg;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  std::string e = error_of(replaced("tokens_per_minute: 50000", "tokens_per_minute: 0"), "t.yaml");
  CHECK(has_position(e, "t.yaml", 20));
  CHECK(contains(e, "limits.tokens_per_minute"));
  e = error_of(replaced("tokens_per_day: 2000000", "tokens_per_day: many"), "t.yaml");
  CHECK(has_position(e, "t.yaml", 20));
  CHECK(contains(e, "limits.tokens_per_day"));
  e = error_of(replaced("max_output_tokens: 2048", "max_output_tokens: -5"), "t.yaml");
  CHECK(has_position(e, "t.yaml", 8));
  CHECK(contains(e, "routes[0].max_output_tokens"));
  e = error_of(replaced("max_audio_seconds: 900", "max_audio_seconds: 1.5"), "t.yaml");
  CHECK(has_position(e, "t.yaml", 14));
  CHECK(contains(e, "routes[1].max_audio_seconds"));
}
