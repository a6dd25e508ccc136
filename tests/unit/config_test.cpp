// The YAML config (schema in shared/README.md): what loads, what is refused and where
// the error points.
#include <catch2/catch.hpp>

#include <cctype>
#include <cstdlib>
#include <string>

#include "config/config.h"

using tresor::config::ConfigError;
using tresor::config::load_config_file;
using tresor::config::load_config_text;
using tresor::config::RouteType;

namespace {

// The message of the ConfigError thrown for `text`, or "" when it loads.
std::string error_of(const std::string& text, const std::string& name = "cfg.yaml") {
  try {
    load_config_text(text, name);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// True when `e` starts with "NAME:LINE:COL: " for some column.
bool has_position(const std::string& e, const std::string& name, int line) {
  const std::string prefix = name + ":" + std::to_string(line) + ":";
  if (!starts_with(e, prefix)) return false;
  size_t i = prefix.size();
  const size_t digits = i;
  while (i < e.size() && std::isdigit(static_cast<unsigned char>(e[i]))) ++i;
  return i > digits && e.compare(i, 2, ": ") == 0;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

const char* const kProviders =
    "providers:\n"
    "  pm:\n"
    "    base_url: \"http://127.0.0.1:9/v1\"\n";

}  // namespace

TEST_CASE("config: the README example loads with every value") {
  ScopedEnv key("TRESOR_UT_PM_KEY", "sk-upstream-secret");
  const std::string yaml = R"(server:
  listen: "127.0.0.1:8080"
  threads: 0
  max_body_bytes: 26214400
  max_header_bytes: 16384
timeouts:
  default_seconds: 180
  max_seconds: 600
  connect_ms: 5000
  attempt_first_event_seconds: 10
  attempt_first_byte_seconds: 0
  stream_idle_seconds: 20
retry:
  attempts_per_route: 2
  backoff_ms: 250
  max_retry_after_seconds: 5
breaker:
  consecutive_failures: 5
  cooldown_seconds: 10
providers:
  privatemode:
    base_url: "https://api.privatemode.example/v1"
    api_key: "${TRESOR_UT_PM_KEY}"
    ca_file: ""
    max_connections: 256
routes:
  - id: "eu/privatemode/gpt-oss-120b"
    provider: privatemode
    upstream_model: "openai/gpt-oss-120b"
    type: chat
    pricing: {input_per_mtok: 0.2, output_per_mtok: 0.6, currency: eur}
  - id: "eu/privatemode/whisper-large-v3"
    provider: privatemode
    upstream_model: "whisper-large-v3"
    type: transcription
    pricing: {billing_unit: audio_minute, unit_amount: 0.014, currency: eur}
auth:
  keys:
    - sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
      customer: "acme"
      limits: {per_minute: 600, per_day: 100000}
  customers:
    acme: {credit: 100.0, currency: eur}
receipts:
  signing_key_file: "state/receipt-es256.pem"
  kid: "router-receipt-1"
  retired_keys: []
  ttl_seconds: 604800
store: "sqlite:state/tresor.db"
attestation:
  mode: dev
  trust_bundle_url: ""
)";
  const auto c = load_config_text(yaml, "example.yaml");
  CHECK(c->source_file == "example.yaml");
  REQUIRE(c->server.listen.size() == 1);
  CHECK(c->server.listen[0].host == "127.0.0.1");
  CHECK(c->server.listen[0].port == 8080);
  CHECK(c->server.max_body_bytes == 26214400);
  CHECK(c->timeouts.default_seconds == 180);
  CHECK(c->timeouts.max_seconds == 600);
  CHECK(c->timeouts.attempt_first_byte_seconds == 0);
  CHECK(c->retry.backoff_ms == 250);
  CHECK(c->breaker.cooldown_seconds == 10);
  REQUIRE(c->providers.count("privatemode") == 1);
  CHECK(c->providers.at("privatemode").api_key == "sk-upstream-secret");
  CHECK(c->providers.at("privatemode").base_url == "https://api.privatemode.example/v1");
  REQUIRE(c->routes.size() == 2);
  CHECK(c->routes[0].id == "eu/privatemode/gpt-oss-120b");
  CHECK(c->routes[0].provider == "privatemode");
  CHECK(c->routes[0].upstream_model == "openai/gpt-oss-120b");
  CHECK(c->routes[0].type == RouteType::chat);
  REQUIRE(c->routes[0].pricing);
  CHECK(c->routes[0].pricing->input_per_mtok == Approx(0.2));
  CHECK(c->routes[0].pricing->output_per_mtok == Approx(0.6));
  CHECK(c->routes[0].pricing->currency == "eur");
  CHECK(c->routes[1].type == RouteType::transcription);
  CHECK(c->routes[1].pricing->billing_unit == std::optional<std::string>("audio_minute"));
  CHECK(c->routes[1].pricing->unit_amount == Approx(0.014));
  REQUIRE(c->auth.keys.size() == 1);
  CHECK(c->auth.keys[0].customer == "acme");
  CHECK(c->auth.keys[0].limits.per_minute == std::optional<uint64_t>(600));
  CHECK(c->auth.keys[0].limits.per_day == std::optional<uint64_t>(100000));
  CHECK(c->auth.customers.at("acme").credit == Approx(100.0));
  CHECK(c->receipts.ttl_seconds == 604800);
  CHECK(c->store == "sqlite:state/tresor.db");
  CHECK(c->attestation.mode == "dev");
}

TEST_CASE("config: an empty mapping gives the documented defaults") {
  const auto c = load_config_text("{}", "min.yaml");
  REQUIRE(c->server.listen.size() == 1);
  CHECK(c->server.listen[0].host == "127.0.0.1");
  CHECK(c->server.listen[0].port == 8080);
  CHECK(c->server.max_body_bytes == 26214400);
  CHECK(c->server.max_header_bytes == 16384);
  CHECK(c->timeouts.default_seconds == 180);
  CHECK(c->timeouts.max_seconds == 600);
  CHECK(c->timeouts.connect_ms == 5000);
  CHECK(c->timeouts.attempt_first_event_seconds == 10);
  CHECK(c->timeouts.stream_idle_seconds == 20);
  CHECK(c->retry.attempts_per_route == 2);
  CHECK(c->retry.max_retry_after_seconds == 5);
  CHECK(c->retry.max_route_hold_seconds == 30);
  CHECK_FALSE(c->retry.client_should_retry);
  CHECK(c->breaker.consecutive_failures == 5);
  CHECK(c->receipts.kid == "router-receipt-1");
  CHECK(c->store == "sqlite:state/tresor.db");
  CHECK(c->routes.empty());
}

TEST_CASE("config: retry.client_should_retry") {
  CHECK(load_config_text("retry:\n  client_should_retry: true\n", "r.yaml")->retry.client_should_retry);
  CHECK_FALSE(load_config_text("retry: {client_should_retry: false}", "r.yaml")->retry.client_should_retry);
  CHECK(contains(error_of("retry: {client_should_retry: yes}"), "retry.client_should_retry must be true or false"));
  CHECK(contains(error_of("retry: {client_should_retry: 1}"), "retry.client_should_retry"));
}

TEST_CASE("config: retry.max_route_hold_seconds") {
  CHECK(load_config_text("retry:\n  max_route_hold_seconds: 2\n", "r.yaml")->retry.max_route_hold_seconds == 2);
  CHECK(load_config_text("retry: {max_route_hold_seconds: 0}", "r.yaml")->retry.max_route_hold_seconds == 0);
  CHECK(contains(error_of("retry: {max_route_hold_seconds: 86401}"), "retry.max_route_hold_seconds"));
  CHECK(contains(error_of("retry: {max_route_hold_seconds: -1}"), "retry.max_route_hold_seconds"));
}

TEST_CASE("config: an empty file is an error naming the file") {
  CHECK(starts_with(error_of("", "empty.yaml"), "empty.yaml"));
  CHECK(contains(error_of("", "empty.yaml"), "empty"));
  CHECK(starts_with(error_of("# only a comment\n", "c.yaml"), "c.yaml"));
}

TEST_CASE("config: unknown keys are errors with file:line:col") {
  CHECK(error_of("server:\n  threads: 2\nlisten: \"0.0.0.0:1\"\n") ==
        "cfg.yaml:3:1: unknown key 'listen' in the top level");
  CHECK(error_of("server:\n  threads: 2\n  max_body_byte: 10\n") ==
        "cfg.yaml:3:3: unknown key 'max_body_byte' in server");
  CHECK(starts_with(error_of("timeouts:\n  default_second: 5\n"), "cfg.yaml:2:3: "));
  CHECK(starts_with(error_of("retry: {attempts: 3}\n"), "cfg.yaml:1:9: "));
  CHECK(starts_with(error_of("breaker:\n  cooldown: 1\n"), "cfg.yaml:2:3: "));
  CHECK(starts_with(error_of(std::string(kProviders) + "    apikey: x\n"), "cfg.yaml:4:5: "));
  CHECK(starts_with(error_of(std::string(kProviders) +
                             "routes:\n  - id: eu/pm/m\n    provider: pm\n    upstream_model: m\n    typ: chat\n"),
                    "cfg.yaml:8:5: "));
  CHECK(starts_with(error_of("auth:\n  keys: []\n  customer: {}\n"), "cfg.yaml:3:3: "));
  CHECK(starts_with(error_of("receipts:\n  ttl: 5\n"), "cfg.yaml:2:3: "));
  CHECK(starts_with(error_of("attestation:\n  trust_bundle: x\n"), "cfg.yaml:2:3: "));
  CHECK(contains(error_of("auth:\n  keys:\n    - sha256: \"" + std::string(64, 'a') +
                          "\"\n      customer: a\n      limits: {per_hour: 5}\n"),
                 "unknown key 'per_hour'"));
  CHECK(contains(error_of(std::string(kProviders) +
                          "routes:\n  - id: eu/pm/m\n    provider: pm\n    upstream_model: m\n"
                          "    pricing: {input_per_mtok: 1, currenc: eur}\n"),
                 "unknown key 'currenc'"));
}

TEST_CASE("config: YAML syntax errors carry file:line:col") {
  const std::string e = error_of("server:\n  threads: [1, 2\n", "bad.yaml");
  CHECK(starts_with(e, "bad.yaml:"));
  CHECK(contains(e, ": "));
  const std::string e2 = error_of("server:\n  threads: 1\n bad indent: 2\n", "bad.yaml");
  CHECK(starts_with(e2, "bad.yaml:3:"));
}

TEST_CASE("config: a non-scalar key is a ConfigError with file:line:col, not a crash") {
  const std::string e = error_of("? [a, b]\n: 1\n", "k.yaml");
  INFO(e);
  CHECK(has_position(e, "k.yaml", 1));
  const std::string nested = error_of("server:\n  ? {x: 1}\n  : 2\n", "k.yaml");
  INFO(nested);
  CHECK(has_position(nested, "k.yaml", 2));
}

TEST_CASE("config: ${VAR} is substituted in strings and numbers") {
  ScopedEnv a("TRESOR_UT_A", "alpha");
  ScopedEnv b("TRESOR_UT_B", "beta");
  ScopedEnv port("TRESOR_UT_PORT", "9090");
  ScopedEnv threads("TRESOR_UT_THREADS", "3");
  const auto c = load_config_text(
      "server:\n"
      "  listen: \"0.0.0.0:${TRESOR_UT_PORT}\"\n"
      "  threads: ${TRESOR_UT_THREADS}\n"
      "providers:\n"
      "  pm:\n"
      "    base_url: \"https://${TRESOR_UT_A}.example/v1\"\n"
      "    api_key: \"k-${TRESOR_UT_A}-${TRESOR_UT_B}${TRESOR_UT_A}-$notavar-$\"\n",
      "env.yaml");
  CHECK(c->server.listen[0].port == 9090);
  CHECK(c->server.threads == 3);
  CHECK(c->providers.at("pm").base_url == "https://alpha.example/v1");
  CHECK(c->providers.at("pm").api_key == "k-alpha-betaalpha-$notavar-$");
}

TEST_CASE("config: substituted values are not substituted again") {
  ScopedEnv a("TRESOR_UT_A", "${TRESOR_UT_B}");
  ScopedEnv b("TRESOR_UT_B", "nested");
  const auto c = load_config_text(std::string(kProviders) + "    api_key: \"${TRESOR_UT_A}\"\n", "env.yaml");
  CHECK(c->providers.at("pm").api_key == "${TRESOR_UT_B}");
}

TEST_CASE("config: an empty environment variable substitutes as empty") {
  ScopedEnv a("TRESOR_UT_EMPTY", "");
  const auto c = load_config_text(std::string(kProviders) + "    api_key: \"x${TRESOR_UT_EMPTY}y\"\n", "env.yaml");
  CHECK(c->providers.at("pm").api_key == "xy");
}

TEST_CASE("config: a missing environment variable is an error naming it and its position") {
  ScopedEnv gone("TRESOR_UT_MISSING", nullptr);
  const std::string e = error_of(std::string(kProviders) + "    api_key: \"${TRESOR_UT_MISSING}\"\n", "env.yaml");
  CHECK(starts_with(e, "env.yaml:4:14: "));
  CHECK(contains(e, "TRESOR_UT_MISSING"));
  CHECK(contains(e, "not set"));
}

TEST_CASE("config: malformed ${ } is an error") {
  CHECK(contains(error_of(std::string(kProviders) + "    api_key: \"${TRESOR_UT_A\"\n"), "unterminated"));
  CHECK(starts_with(error_of(std::string(kProviders) + "    api_key: \"a${}b\"\n"), "cfg.yaml:4:14: "));
}

TEST_CASE("config: server.listen forms") {
  auto c = load_config_text("server:\n  listen: [\"127.0.0.1:1\", \"[::1]:8443\", \"example.org:0\"]\n", "l.yaml");
  REQUIRE(c->server.listen.size() == 3);
  CHECK(c->server.listen[0].port == 1);
  CHECK(c->server.listen[1].host == "::1");
  CHECK(c->server.listen[1].port == 8443);
  CHECK(c->server.listen[2].host == "example.org");
  CHECK(c->server.listen[2].port == 0);

  for (const char* bad : {"\"127.0.0.1\"", "\":80\"", "\"h:\"", "\"h:65536\"", "\"h:-1\"", "\"h:8o\"", "[]",
                          "\"h:80 \""}) {
    INFO("listen: " << bad);
    const std::string e = error_of(std::string("server:\n  listen: ") + bad + "\n");
    CHECK(starts_with(e, "cfg.yaml:2:"));
  }
}

TEST_CASE("config: integers outside their range or not integers are refused") {
  const char* bad[] = {
      "server: {threads: 257}",          "server: {threads: -1}",          "server: {threads: 1.5}",
      "server: {threads: two}",          "server: {max_body_bytes: 0}",    "server: {max_header_bytes: 511}",
      "timeouts: {max_seconds: 0}",      "timeouts: {connect_ms: 0}",      "retry: {attempts_per_route: 0}",
      "retry: {attempts_per_route: 11}", "breaker: {consecutive_failures: 0}", "receipts: {ttl_seconds: 0}",
      "server: {threads: 0x10}",         "server: {max_connections: -1}",  "server: {max_connections: 16777217}",
      "server: {max_connections: many}",         "server: {threads: \"\"}",        "server: {threads: 99999999999999999999}",
      "server: {min_body_bytes_per_second: -1}", "server: {min_body_bytes_per_second: 1073741825}",
  };
  for (const char* yaml : bad) {
    INFO(yaml);
    const std::string e = error_of(yaml);
    CHECK(starts_with(e, "cfg.yaml:1:"));
    CHECK(contains(e, "must be an integer"));
  }
  CHECK(load_config_text("server: {threads: 256}", "ok.yaml")->server.threads == 256);
  CHECK(load_config_text("server: {max_header_bytes: 512}", "ok.yaml")->server.max_header_bytes == 512);
  CHECK(load_config_text("server: {max_connections: 20}", "ok.yaml")->server.max_connections == 20);
  CHECK(load_config_text("server: {max_connections: 16777216}", "ok.yaml")->server.max_connections == 16777216);
  CHECK(load_config_text("server: {}", "ok.yaml")->server.max_connections == 0);  // 0: from the fd limit
  CHECK(load_config_text("server: {}", "ok.yaml")->server.min_body_bytes_per_second == 1024);
  CHECK(load_config_text("server: {min_body_bytes_per_second: 0}", "ok.yaml")->server.min_body_bytes_per_second == 0);
}

TEST_CASE("config: default_seconds may not exceed max_seconds") {
  CHECK(contains(error_of("timeouts: {default_seconds: 601, max_seconds: 600}"), "default_seconds"));
  CHECK(contains(error_of("timeouts: {default_seconds: 700}"), "default_seconds"));
  const auto c = load_config_text("timeouts: {default_seconds: 30, max_seconds: 30}", "t.yaml");
  CHECK(c->timeouts.default_seconds == 30);
}

TEST_CASE("config: provider validation") {
  CHECK(contains(error_of("providers:\n  pm: {api_key: x}\n"), "base_url is required"));
  CHECK(starts_with(error_of("providers:\n  pm: {base_url: \"ftp://h/v1\"}\n"), "cfg.yaml:2:"));
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"ftp://h/v1\"}\n"), "http://"));
  CHECK(contains(error_of("providers:\n  auto: {base_url: \"http://h\"}\n"), "invalid provider name"));
  CHECK(contains(error_of("providers:\n  \"a/b\": {base_url: \"http://h\"}\n"), "invalid provider name"));
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"http://h\", ca_file: /nonexistent/ca.pem}\n"),
                 "/nonexistent/ca.pem"));
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"http://h\", max_connections: 0}\n"), "max_connections"));
  CHECK(contains(error_of("providers: [pm]\n"), "providers must be a mapping"));
  const auto c = load_config_text("providers:\n  pm: {base_url: \"http://h\", ca_file: \"\"}\n", "p.yaml");
  CHECK(c->providers.at("pm").ca_file.empty());
  CHECK(c->providers.at("pm").max_connections == 256);
}

TEST_CASE("config: route ids are normalised and validated") {
  const auto c = load_config_text(std::string(kProviders) +
                                      "routes:\n"
                                      "  - {id: \"EU/PrivateMode/Kimi-K2\", provider: pm, upstream_model: k}\n",
                                  "r.yaml");
  REQUIRE(c->routes.size() == 1);
  CHECK(c->routes[0].id == "eu/privatemode/Kimi-K2");
  CHECK(c->routes[0].region == "eu");
  CHECK(c->routes[0].provider_segment == "privatemode");
  CHECK(c->routes[0].model_key == "Kimi-K2");
  CHECK(c->routes[0].type == RouteType::chat);  // default
  CHECK_FALSE(c->routes[0].pricing);

  const char* bad_ids[] = {"eu/pm", "eu/pm/m/x", "/pm/m", "eu//m", "eu/pm/", "auto/pm/m", "eu/AUTO/m",
                           "eu/pm/auto", "e u/pm/m"};
  for (const char* id : bad_ids) {
    INFO("id: " << id);
    const std::string e = error_of(std::string(kProviders) + "routes:\n  - {id: \"" + id +
                                   "\", provider: pm, upstream_model: m}\n");
    CHECK(starts_with(e, "cfg.yaml:5:"));
    CHECK(contains(e, id));
  }
}

TEST_CASE("config: duplicate route ids, case-insensitively in region and provider, are refused") {
  const std::string e = error_of(std::string(kProviders) +
                                 "routes:\n"
                                 "  - {id: \"eu/pm/m\", provider: pm, upstream_model: m}\n"
                                 "  - {id: \"EU/Pm/m\", provider: pm, upstream_model: m2}\n");
  CHECK(starts_with(e, "cfg.yaml:6:"));
  CHECK(contains(e, "duplicate route id 'eu/pm/m'"));
  // The model key is case-sensitive: these are two routes.
  const auto c = load_config_text(std::string(kProviders) +
                                      "routes:\n"
                                      "  - {id: \"eu/pm/m\", provider: pm, upstream_model: m}\n"
                                      "  - {id: \"eu/pm/M\", provider: pm, upstream_model: m2}\n",
                                  "r.yaml");
  CHECK(c->routes.size() == 2);
}

TEST_CASE("config: route fields are required and checked") {
  const std::string routes = std::string(kProviders) + "routes:\n";
  CHECK(contains(error_of(routes + "  - {provider: pm, upstream_model: m}\n"), "id is required"));
  CHECK(contains(error_of(routes + "  - {id: eu/pm/m, upstream_model: m}\n"), "provider is required"));
  CHECK(contains(error_of(routes + "  - {id: eu/pm/m, provider: pm}\n"), "upstream_model is required"));
  CHECK(contains(error_of(routes + "  - {id: eu/pm/m, provider: nope, upstream_model: m}\n"),
                 "'nope' is not in providers"));
  CHECK(contains(error_of(routes + "  - {id: eu/pm/m, provider: pm, upstream_model: m, type: embeddings}\n"),
                 "chat or transcription"));
  CHECK(contains(error_of(routes + "  - {id: eu/pm/m, provider: pm, upstream_model: m, pricing: {input_per_mtok: cheap}}\n"),
                 "input_per_mtok must be"));
  CHECK(contains(error_of("routes: {id: eu/pm/m}\n"), "routes must be a list"));
}

TEST_CASE("config: prices and credit must be finite numbers") {
  const std::string routes = std::string(kProviders) + "routes:\n  - {id: eu/pm/m, provider: pm, upstream_model: m, ";
  for (const char* value : {"nan", "NaN", "inf", "-inf", "infinity", "1e999"}) {
    INFO("value: " << value);
    CHECK(contains(error_of(routes + "pricing: {input_per_mtok: " + value + "}}\n"), "input_per_mtok"));
    CHECK(contains(error_of(routes + "pricing: {output_per_mtok: " + value + "}}\n"), "output_per_mtok"));
    CHECK(contains(error_of(routes + "pricing: {billing_unit: audio_minute, unit_amount: " + value + "}}\n"),
                   "unit_amount"));
    CHECK(contains(error_of(std::string("auth:\n  customers:\n    acme: {credit: ") + value + "}\n"), "credit"));
  }
  const auto c = load_config_text(routes + "pricing: {input_per_mtok: 1e-3, output_per_mtok: 2}}\n", "p.yaml");
  CHECK(c->routes[0].pricing->input_per_mtok == Approx(0.001));
  CHECK(c->routes[0].pricing->output_per_mtok == Approx(2.0));
}

TEST_CASE("config: routes may come before the providers they use") {
  const auto c = load_config_text(
      "routes:\n  - {id: eu/pm/m, provider: pm, upstream_model: m}\nproviders:\n  pm: {base_url: \"http://h\"}\n",
      "order.yaml");
  REQUIRE(c->routes.size() == 1);
  CHECK(c->routes[0].provider == "pm");
}

TEST_CASE("config: route order is kept") {
  const auto c = load_config_text(std::string(kProviders) +
                                      "routes:\n"
                                      "  - {id: z/pm/m, provider: pm, upstream_model: m}\n"
                                      "  - {id: a/pm/m, provider: pm, upstream_model: m}\n"
                                      "  - {id: m/pm/m, provider: pm, upstream_model: m}\n",
                                  "order.yaml");
  REQUIRE(c->routes.size() == 3);
  CHECK(c->routes[0].id == "z/pm/m");
  CHECK(c->routes[1].id == "a/pm/m");
  CHECK(c->routes[2].id == "m/pm/m");
}

TEST_CASE("config: auth key hashes") {
  const std::string upper(64, 'A');
  auto c = load_config_text("auth:\n  keys:\n    - {sha256: \"" + upper + "\", customer: acme}\n", "a.yaml");
  REQUIRE(c->auth.keys.size() == 1);
  CHECK(c->auth.keys[0].sha256_hex == std::string(64, 'a'));
  CHECK_FALSE(c->auth.keys[0].limits.per_minute);

  CHECK(contains(error_of("auth:\n  keys:\n    - {sha256: \"" + std::string(63, 'a') + "\", customer: a}\n"),
                 "64 hex"));
  CHECK(contains(error_of("auth:\n  keys:\n    - {sha256: \"" + std::string(64, 'g') + "\", customer: a}\n"),
                 "64 hex"));
  CHECK(contains(error_of("auth:\n  keys:\n    - {sha256: \"" + std::string(64, 'a') + "\"}\n"),
                 "customer is required"));
  const std::string dup = error_of("auth:\n  keys:\n    - {sha256: \"" + std::string(64, 'a') +
                                   "\", customer: a}\n    - {sha256: \"" + upper + "\", customer: b}\n");
  CHECK(starts_with(dup, "cfg.yaml:4:"));
  CHECK(contains(dup, "duplicate key hash"));
  CHECK(contains(error_of("auth:\n  keys:\n    - {sha256: \"" + std::string(64, 'a') +
                          "\", customer: a, limits: {per_minute: 0}}\n"),
                 "per_minute"));
}

TEST_CASE("config: store and attestation values") {
  CHECK(load_config_text("store: \"redis://127.0.0.1:6379/0\"", "s.yaml")->store == "redis://127.0.0.1:6379/0");
  CHECK(contains(error_of("store: \"postgres://h/db\""), "store must be"));
  CHECK(contains(error_of("store: \"state/tresor.db\""), "store must be"));
  CHECK(contains(error_of("attestation: {mode: snp}"), "only 'dev'"));
}

TEST_CASE("config: receipts.durability and receipts.signing take only their documented values") {
  using tresor::config::ReceiptsConfig;
  const auto defaults = load_config_text("{}", "d.yaml")->receipts;
  CHECK(defaults.durability == ReceiptsConfig::Durability::sync);
  CHECK(defaults.signing == ReceiptsConfig::Signing::on_fetch);
  CHECK(load_config_text("receipts: {durability: async}", "r.yaml")->receipts.durability ==
        ReceiptsConfig::Durability::async);
  CHECK(load_config_text("receipts: {durability: sync}", "r.yaml")->receipts.durability ==
        ReceiptsConfig::Durability::sync);
  CHECK(load_config_text("receipts: {signing: at_issue}", "r.yaml")->receipts.signing ==
        ReceiptsConfig::Signing::at_issue);
  // A typo must not silently fall back to the default (e.g. losing sync durability).
  const auto durability = error_of("receipts:\n  durability: Async\n");
  CHECK(has_position(durability, "cfg.yaml", 2));
  CHECK(contains(durability, "receipts.durability must be sync or async, got 'Async'"));
  const auto signing = error_of("receipts:\n  signing: lazy\n");
  CHECK(has_position(signing, "cfg.yaml", 2));
  CHECK(contains(signing, "receipts.signing must be on_fetch or at_issue, got 'lazy'"));
}

TEST_CASE("config: a structural type error is reported with its position") {
  CHECK(starts_with(error_of("server: 5\n"), "cfg.yaml:1:9: "));
  CHECK(starts_with(error_of("server:\n  threads: [1]\n"), "cfg.yaml:2:12: "));
  CHECK(starts_with(error_of("- a\n- b\n"), "cfg.yaml:1:1: "));
  CHECK(contains(error_of("auth:\n  keys: {a: 1}\n"), "auth.keys must be a list"));
  CHECK(contains(error_of("receipts:\n  retired_keys:\n    - {kid: old}\n"), "public_key_file"));
}

TEST_CASE("config: load_config_file reads a file and names it in errors") {
  CHECK_THROWS_AS(load_config_file("/nonexistent/tresor.yaml"), ConfigError);
  try {
    load_config_file("/nonexistent/tresor.yaml");
  } catch (const ConfigError& e) {
    CHECK(starts_with(e.what(), "/nonexistent/tresor.yaml"));
  }
}

TEST_CASE("config: a key given twice in one mapping is an error with its position") {
  try {
    tresor::config::load_config_text("server:\n  threads: 1\n  threads: 2\n", "dup.yaml");
    FAIL("duplicate key accepted");
  } catch (const tresor::config::ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.rfind("dup.yaml:3:", 0) == 0);
    CHECK(what.find("duplicate key 'threads'") != std::string::npos);
  }
}

TEST_CASE("config: billing_unit is audio_minute or request and needs unit_amount") {
  const std::string routes = std::string(kProviders) +
                             "routes:\n  - {id: eu/pm/w, provider: pm, upstream_model: w, type: transcription, ";
  CHECK(contains(error_of(routes + "pricing: {billing_unit: audio_hour, unit_amount: 1}}\n"),
                 "billing_unit must be audio_minute or request"));
  CHECK(contains(error_of(routes + "pricing: {billing_unit: request}}\n"), "needs unit_amount"));
  const auto c = load_config_text(routes + "pricing: {billing_unit: request, unit_amount: 0.002}}\n", "b.yaml");
  CHECK(c->routes[0].pricing->billing_unit == "request");
}

TEST_CASE("config: the upload spool directory must exist; the memory threshold is bounded") {
  CHECK(contains(error_of("server:\n  upload_spool_dir: /nonexistent/tresor-spool\n"), "is not a directory"));
  CHECK(contains(error_of("server:\n  upload_memory_bytes: 999999999999\n"), "upload_memory_bytes"));
  const auto c = load_config_text("server:\n  upload_spool_dir: /tmp\n  upload_memory_bytes: 0\n", "s.yaml");
  CHECK(c->server.upload_spool_dir == "/tmp");
  CHECK(c->server.upload_memory_bytes == 0);
  const auto d = load_config_text("server: {}\n", "d.yaml");
  CHECK(d->server.upload_spool_dir.empty());
  CHECK(d->server.upload_memory_bytes == 262144);
}

TEST_CASE("config: the spool cap defaults to 1 GiB and must hold one upload of max_body_bytes") {
  const auto d = load_config_text("server: {}\n", "d.yaml");
  CHECK(d->server.spool_max_bytes == 1073741824);
  const auto c = load_config_text("server:\n  max_body_bytes: 1048576\n  spool_max_bytes: 1048576\n", "c.yaml");
  CHECK(c->server.spool_max_bytes == 1048576);
  CHECK(contains(error_of("server:\n  max_body_bytes: 1048577\n  spool_max_bytes: 1048576\n"),
                 "server.spool_max_bytes (1048576) is below server.max_body_bytes (1048577)"));
  CHECK(contains(error_of("server:\n  max_body_bytes: 2147483648\n"),
                 "server.spool_max_bytes (1073741824, the default) is below server.max_body_bytes"));
  // Nothing spools when every body fits in memory: the cap does not matter then.
  const auto m = load_config_text("server:\n  max_body_bytes: 65536\n  upload_memory_bytes: 65536\n  spool_max_bytes: 0\n",
                                  "m.yaml");
  CHECK(m->server.spool_max_bytes == 0);
}

TEST_CASE("config: the upstream body cap has a default and a range") {
  const auto d = load_config_text("server: {}\n", "d.yaml");
  CHECK(d->server.max_upstream_body_bytes == 64ull * 1024 * 1024);
  const auto c = load_config_text("server:\n  max_upstream_body_bytes: 1048576\n", "c.yaml");
  CHECK(c->server.max_upstream_body_bytes == 1048576);
  CHECK(load_config_text("server:\n  max_upstream_body_bytes: 65536\n", "lo.yaml")->server.max_upstream_body_bytes == 65536);
  CHECK(load_config_text("server:\n  max_upstream_body_bytes: 1073741824\n", "hi.yaml")->server.max_upstream_body_bytes ==
        1073741824);
  CHECK(contains(error_of("server:\n  max_upstream_body_bytes: 65535\n"), "max_upstream_body_bytes"));
  CHECK(contains(error_of("server:\n  max_upstream_body_bytes: 1073741825\n"), "max_upstream_body_bytes"));
  CHECK(contains(error_of("server:\n  max_upstream_body_bytes: lots\n"), "max_upstream_body_bytes"));
}

TEST_CASE("config: a provider base_url with a query, a fragment or user info is refused, naming the field") {
  const char* bad[] = {"http://h/v1?api-version=2024-02-01", "http://h/v1#frag", "https://user:pw@h/v1",
                       "https://user@h:8443/v1", "http:///v1"};
  for (const char* url : bad) {
    INFO(url);
    const std::string e = error_of(std::string("providers:\n  pm:\n    base_url: \"") + url + "\"\n");
    CHECK(has_position(e, "cfg.yaml", 3));
    CHECK(contains(e, "providers.pm.base_url"));
  }
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"http://h/v1?x=1\"}\n"), "query"));
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"http://h/v1#x\"}\n"), "fragment"));
  CHECK(contains(error_of("providers:\n  pm: {base_url: \"http://u:p@h/v1\"}\n"), "user info"));
  // An '@' in the path is not user info.
  CHECK(error_of("providers:\n  pm: {base_url: \"http://h/v1/@models\"}\n").empty());
}

TEST_CASE("config: a value from ${ENV} with CR, LF or an inner newline is refused; one trailing newline is trimmed") {
  const std::string yaml = std::string(kProviders) + "    api_key: \"${TRESOR_UT_SECRET}\"\n";
  SECTION("one trailing newline (a mounted secret) is trimmed") {
    ScopedEnv s("TRESOR_UT_SECRET", "sk-abc\n");
    CHECK(load_config_text(yaml, "env.yaml")->providers.at("pm").api_key == "sk-abc");
  }
  for (const char* value : {"sk-abc\r\nX-Injected: 1", "sk\nabc", "sk-abc\r", "sk-abc\n\n", "sk-abc\r\n"}) {
    INFO(value);
    ScopedEnv s("TRESOR_UT_SECRET", value);
    const std::string e = error_of(yaml, "env.yaml");
    CHECK(starts_with(e, "env.yaml:4:14: "));
    CHECK(contains(e, "providers.pm.api_key"));
    CHECK(contains(e, "TRESOR_UT_SECRET"));
    CHECK_FALSE(contains(e, "sk"));  // the secret itself is never in the message
  }
}

TEST_CASE("config: duplicate entries in any mapping are errors with file:line") {
  SECTION("providers") {
    const std::string e = error_of(
        "providers:\n  pm:\n    base_url: \"http://a/v1\"\n  pm:\n    base_url: \"http://b/v1\"\n");
    CHECK(has_position(e, "cfg.yaml", 4));
    CHECK(contains(e, "duplicate key 'pm' in providers"));
  }
  SECTION("auth.customers") {
    const std::string e = error_of("auth:\n  customers:\n    acme: {credit: 1}\n    acme: {credit: 100}\n");
    CHECK(has_position(e, "cfg.yaml", 4));
    CHECK(contains(e, "duplicate key 'acme' in auth.customers"));
  }
  SECTION("a mapping inside a list") {
    const std::string e = error_of(std::string(kProviders) +
                                   "routes:\n  - id: eu/pm/m\n    provider: pm\n    upstream_model: a\n"
                                   "    upstream_model: b\n");
    CHECK(has_position(e, "cfg.yaml", 8));
    CHECK(contains(e, "duplicate key 'upstream_model' in routes[0]"));
  }
  SECTION("the top level") {
    const std::string e = error_of("store: \"sqlite:a.db\"\nstore: \"sqlite:b.db\"\n");
    CHECK(has_position(e, "cfg.yaml", 2));
    CHECK(contains(e, "duplicate key 'store'"));
  }
}

// ---- stream recovery and hedging (issue 18) ----------------------------------------

namespace {

const char* const kRecoveryRoutes =
    "routes:\n"
    "  - id: eu/pm/a\n"
    "    provider: pm\n"
    "    upstream_model: a\n"
    "  - id: eu/pm/b\n"
    "    provider: pm\n"
    "    upstream_model: b\n"
    "    stream_recovery: prefill_only\n"
    "    supports_prefill: true\n"
    "    prefill_style: continue_final_message\n"
    "    hedge_after_ms: 1500\n";

}  // namespace

TEST_CASE("config: routing, retry.max_stream_recoveries and the route recovery keys load", "[config][stream_recovery]") {
  const auto c = load_config_text(std::string("routing:\n  stream_recovery: off\n  hedge_after_ms: 250\n"
                                              "retry:\n  max_stream_recoveries: 3\n") +
                                      kProviders + kRecoveryRoutes,
                                  "r.yaml");
  CHECK(c->routing.stream_recovery == tresor::config::StreamRecovery::off);
  REQUIRE(c->routing.hedge_after_ms.has_value());
  CHECK(*c->routing.hedge_after_ms == 250);
  CHECK(c->retry.max_stream_recoveries == 3);
  REQUIRE(c->routes.size() == 2);
  const auto& b = c->routes[1];
  REQUIRE(b.stream_recovery.has_value());
  CHECK(*b.stream_recovery == tresor::config::StreamRecovery::prefill_only);
  CHECK(b.supports_prefill);
  CHECK(b.prefill_style == tresor::config::PrefillStyle::continue_final_message);
  REQUIRE(b.hedge_after_ms.has_value());
  CHECK(*b.hedge_after_ms == 1500);

  CHECK(load_config_text("routing: {stream_recovery: replay}", "r.yaml")->routing.stream_recovery ==
        tresor::config::StreamRecovery::replay);
  CHECK(load_config_text("routing: {stream_recovery: prefill_only}", "r.yaml")->routing.stream_recovery ==
        tresor::config::StreamRecovery::prefill_only);
  CHECK(load_config_text("retry: {max_stream_recoveries: 0}", "r.yaml")->retry.max_stream_recoveries == 0);
  CHECK(load_config_text("retry: {max_stream_recoveries: 5}", "r.yaml")->retry.max_stream_recoveries == 5);
  CHECK(*load_config_text("routing: {hedge_after_ms: 1}", "r.yaml")->routing.hedge_after_ms == 1);
  CHECK(*load_config_text("routing: {hedge_after_ms: 600000}", "r.yaml")->routing.hedge_after_ms == 600000);
}

TEST_CASE("config: recovery and hedging defaults (replay, one recovery, no prefill, no hedge)",
          "[config][stream_recovery]") {
  const auto c = load_config_text(std::string(kProviders) + kRecoveryRoutes, "d.yaml");
  CHECK(c->routing.stream_recovery == tresor::config::StreamRecovery::replay);
  CHECK_FALSE(c->routing.hedge_after_ms.has_value());
  CHECK(c->retry.max_stream_recoveries == 1);
  const auto& a = c->routes[0];
  CHECK_FALSE(a.stream_recovery.has_value());  // the global mode applies
  CHECK_FALSE(a.supports_prefill);
  CHECK(a.prefill_style == tresor::config::PrefillStyle::assistant_message);
  CHECK_FALSE(a.hedge_after_ms.has_value());
  const auto empty = load_config_text("routing: {}", "d.yaml");
  CHECK(empty->routing.stream_recovery == tresor::config::StreamRecovery::replay);
  CHECK_FALSE(empty->routing.hedge_after_ms.has_value());
}

TEST_CASE("config: bad recovery and hedging values are refused, naming the key", "[config][stream_recovery]") {
  struct Bad {
    std::string yaml;
    std::string names;
  };
  const std::string route = std::string(kProviders) + "routes:\n  - id: eu/pm/a\n    provider: pm\n    upstream_model: a\n";
  const Bad bad[] = {
      {"routing:\n  stream_recovery: maybe\n", "routing.stream_recovery"},
      {"routing:\n  stream_recovery: 1\n", "routing.stream_recovery"},
      {"routing:\n  hedge_after_ms: 0\n", "routing.hedge_after_ms"},
      {"routing:\n  hedge_after_ms: 600001\n", "routing.hedge_after_ms"},
      {"routing:\n  hedge_after_ms: -5\n", "routing.hedge_after_ms"},
      {"routing:\n  hedge_after_ms: soon\n", "routing.hedge_after_ms"},
      {"routing:\n  hedge_after: 5\n", "hedge_after"},
      {"routing:\n  max_stream_recoveries: 1\n", "max_stream_recoveries"},  // belongs under retry
      {"retry:\n  max_stream_recoveries: 6\n", "retry.max_stream_recoveries"},
      {"retry:\n  max_stream_recoveries: -1\n", "retry.max_stream_recoveries"},
      {route + "    prefill_style: x\n", "routes[0].prefill_style"},
      {route + "    stream_recovery: maybe\n", "routes[0].stream_recovery"},
      {route + "    supports_prefill: sometimes\n", "routes[0].supports_prefill"},
      {route + "    hedge_after_ms: 0\n", "routes[0].hedge_after_ms"},
      {route + "    hedge_after_ms: 600001\n", "routes[0].hedge_after_ms"},
      {"routing: [replay]\n", "routing"},
  };
  for (const auto& b : bad) {
    INFO(b.yaml);
    const std::string e = error_of(b.yaml);
    INFO(e);
    CHECK(starts_with(e, "cfg.yaml:"));
    CHECK(contains(e, b.names));
  }
  // The unknown key's position is its own line.
  CHECK(error_of("routing:\n  stream_recovery: replay\n  hedge: 5\n") == "cfg.yaml:3:3: unknown key 'hedge' in routing");
  CHECK(contains(error_of("routing:\n  stream_recovery: maybe\n"), "replay, prefill_only or off"));
}
