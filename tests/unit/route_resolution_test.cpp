// Route addressing (spec §2) and the candidate list for failover (spec §3).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "config/config.h"
#include "router/route_resolution.h"

using tresor::config::RouteType;
using tresor::router::parse_compound_id;
using tresor::router::resolve_routes;
using tresor::router::ResolveError;
using tresor::router::ResolveResult;
using tresor::router::RouteHints;
using tresor::router::RouteId;

namespace {

// Config order is the auto-resolution preference.
const char* const kRoutes = R"(
providers:
  pm: {base_url: "http://127.0.0.1:1/v1"}
  tf: {base_url: "http://127.0.0.1:2/v1"}
  ch: {base_url: "http://127.0.0.1:3/v1"}
routes:
  - {id: "eu/privatemode/gpt-oss-120b", provider: pm, upstream_model: "openai/gpt-oss-120b"}
  - {id: "global/tinfoil/gpt-oss-120b", provider: tf, upstream_model: "gpt-oss-120b"}
  - {id: "EU/Tinfoil/gpt-oss-120b", provider: tf, upstream_model: "gpt-oss-120b-eu"}
  - {id: "global/chutes/kimi-k2.6", provider: ch, upstream_model: "kimi"}
  - {id: "eu/privatemode/kimi-k2.6", provider: pm, upstream_model: "kimi"}
  - {id: "eu/privatemode/Kimi-Big", provider: pm, upstream_model: "kimi-big"}
  - {id: "eu/privatemode/whisper-large-v3", provider: pm, upstream_model: "whisper", type: transcription}
  - {id: "global/tinfoil/whisper-large-v3", provider: tf, upstream_model: "whisper", type: transcription}
  - {id: "global/tinfoil/dual", provider: tf, upstream_model: "dual-chat"}
  - {id: "eu/tinfoil/dual", provider: tf, upstream_model: "dual-audio", type: transcription}
)";

const tresor::config::Config& cfg() {
  static const auto config = tresor::config::load_config_text(kRoutes, "routes.yaml");
  return *config;
}

std::vector<std::string> ids(const ResolveResult& r) {
  std::vector<std::string> out;
  if (r.resolution)
    for (const auto* route : r.resolution->candidates) out.push_back(route->id);
  return out;
}

ResolveResult chat(std::string_view model, RouteHints hints = {}, std::vector<RouteId> failover = {}) {
  return resolve_routes(cfg(), model, hints, RouteType::chat, failover);
}

RouteId id(std::string_view s) {
  auto parsed = parse_compound_id(s);
  REQUIRE(parsed);
  return *parsed;
}

}  // namespace

TEST_CASE("compound ids: three segments, region and provider lower-cased, model key kept") {
  auto r = parse_compound_id("EU/PrivateMode/GPT-oss-120B");
  REQUIRE(r);
  CHECK(r->region == "eu");
  CHECK(r->provider == "privatemode");
  CHECK(r->model_key == "GPT-oss-120B");
  CHECK(r->str() == "eu/privatemode/GPT-oss-120B");

  r = parse_compound_id("auto/AUTO/k");
  REQUIRE(r);
  CHECK(r->str() == "auto/auto/k");
  CHECK(parse_compound_id("a/b/c.d:e@f")->model_key == "c.d:e@f");
}

TEST_CASE("compound ids: malformed ids are refused") {
  const char* bad[] = {"",        "k",      "a/b",    "a/b/c/d", "/b/c",     "a//c",  "a/b/",
                       "//",      "///",    "a/b c/d", " a/b/c", "a/b/c ",  "a/b/c\n", "a/\tb/c"};
  for (const char* s : bad) {
    INFO("id: '" << s << "'");
    CHECK_FALSE(parse_compound_id(s).has_value());
  }
}

TEST_CASE("config route ids are normalised like client ids") {
  const auto& routes = cfg().routes;
  REQUIRE(routes.size() == 10);
  CHECK(routes[2].id == "eu/tinfoil/gpt-oss-120b");
  CHECK(routes[2].region == "eu");
  CHECK(routes[2].provider_segment == "tinfoil");
  CHECK(routes[5].id == "eu/privatemode/Kimi-Big");
}

TEST_CASE("resolve: a fixed compound id has exactly its own route") {
  const auto r = chat("eu/privatemode/gpt-oss-120b");
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/privatemode/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b"});
  CHECK(r.resolution->candidates[0]->upstream_model == "openai/gpt-oss-120b");
}

TEST_CASE("resolve: region and provider of a compound id are case-insensitive, the model key is not") {
  auto r = chat("EU/PrivateMode/gpt-oss-120b");
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/privatemode/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b"});

  r = chat("eu/privatemode/GPT-OSS-120B");
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::not_found);

  r = chat("eu/privatemode/Kimi-Big");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/Kimi-Big"});
  CHECK(chat("eu/privatemode/kimi-big").error == ResolveError::not_found);
}

TEST_CASE("resolve: a bare key is auto/auto/key, expanded in config order") {
  const auto r = chat("gpt-oss-120b");
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "auto/auto/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b", "global/tinfoil/gpt-oss-120b",
                                           "eu/tinfoil/gpt-oss-120b"});
}

TEST_CASE("resolve: region and provider hints fill the segments of a bare key") {
  auto r = chat("gpt-oss-120b", {"eu", std::nullopt});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/auto/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b", "eu/tinfoil/gpt-oss-120b"});

  r = chat("gpt-oss-120b", {std::nullopt, "tinfoil"});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "auto/tinfoil/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"global/tinfoil/gpt-oss-120b", "eu/tinfoil/gpt-oss-120b"});

  r = chat("gpt-oss-120b", {"EU", "TinFoil"});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/tinfoil/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/tinfoil/gpt-oss-120b"});

  r = chat("gpt-oss-120b", {"us", std::nullopt});
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::not_found);
}

TEST_CASE("resolve: hints are ignored for a compound id") {
  const auto r = chat("global/tinfoil/gpt-oss-120b", {"eu", "privatemode"});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "global/tinfoil/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"global/tinfoil/gpt-oss-120b"});
}

TEST_CASE("resolve: auto in any segment of a compound id") {
  auto r = chat("eu/auto/gpt-oss-120b");
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/auto/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b", "eu/tinfoil/gpt-oss-120b"});

  r = chat("AUTO/tinfoil/gpt-oss-120b");
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "auto/tinfoil/gpt-oss-120b");
  CHECK(ids(r) == std::vector<std::string>{"global/tinfoil/gpt-oss-120b", "eu/tinfoil/gpt-oss-120b"});

  r = chat("auto/auto/kimi-k2.6");
  CHECK(ids(r) == std::vector<std::string>{"global/chutes/kimi-k2.6", "eu/privatemode/kimi-k2.6"});
}

TEST_CASE("resolve: an unknown route is not_found and names the normalised route") {
  auto r = chat("eu/nobody/gpt-oss-120b");
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::not_found);
  CHECK(r.message.find("eu/nobody/gpt-oss-120b") != std::string::npos);

  r = chat("no-such-model");
  CHECK(r.error == ResolveError::not_found);
  CHECK(r.message.find("auto/auto/no-such-model") != std::string::npos);

  CHECK(chat("EU/Nobody/x").message.find("eu/nobody/x") != std::string::npos);
}

TEST_CASE("resolve: a route of the other endpoint type is wrong_type") {
  auto r = chat("eu/privatemode/whisper-large-v3");
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::wrong_type);

  r = chat("whisper-large-v3");
  CHECK(r.error == ResolveError::wrong_type);

  r = resolve_routes(cfg(), "eu/privatemode/gpt-oss-120b", {}, RouteType::transcription);
  CHECK(r.error == ResolveError::wrong_type);

  r = resolve_routes(cfg(), "whisper-large-v3", {}, RouteType::transcription);
  REQUIRE(r.resolution);
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/whisper-large-v3", "global/tinfoil/whisper-large-v3"});
}

TEST_CASE("resolve: a pattern matching both types keeps only routes of the endpoint's type") {
  auto r = chat("dual");
  REQUIRE(r.resolution);
  CHECK(ids(r) == std::vector<std::string>{"global/tinfoil/dual"});
  r = resolve_routes(cfg(), "auto/tinfoil/dual", {}, RouteType::transcription);
  REQUIRE(r.resolution);
  CHECK(ids(r) == std::vector<std::string>{"eu/tinfoil/dual"});
  CHECK(chat("eu/auto/dual").error == ResolveError::wrong_type);
}

TEST_CASE("resolve: malformed model values") {
  const char* bad[] = {"", "a/b", "a/b/c/d", "/privatemode/gpt-oss-120b", "eu//gpt-oss-120b",
                       "eu/privatemode/", "gpt oss", " gpt-oss-120b", "gpt-oss-120b\n"};
  for (const char* model : bad) {
    INFO("model: '" << model << "'");
    const auto r = chat(model);
    CHECK_FALSE(r.resolution);
    CHECK(r.error == ResolveError::malformed);
    CHECK_FALSE(r.message.empty());
  }
}

TEST_CASE("resolve: failover entries follow the primary's expansion, in order, without duplicates") {
  const auto r = chat("eu/privatemode/kimi-k2.6", {},
                      {id("global/chutes/kimi-k2.6"), id("auto/auto/gpt-oss-120b"), id("eu/privatemode/kimi-k2.6"),
                       id("global/chutes/kimi-k2.6"), id("EU/PrivateMode/gpt-oss-120b")});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/privatemode/kimi-k2.6");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/kimi-k2.6", "global/chutes/kimi-k2.6",
                                           "eu/privatemode/gpt-oss-120b", "global/tinfoil/gpt-oss-120b",
                                           "eu/tinfoil/gpt-oss-120b"});
}

TEST_CASE("resolve: a bare primary expands first, then the failover entries") {
  const auto r = chat("kimi-k2.6", {"eu", std::nullopt}, {id("global/tinfoil/gpt-oss-120b"), id("auto/auto/kimi-k2.6")});
  REQUIRE(r.resolution);
  CHECK(r.resolution->requested_route == "eu/auto/kimi-k2.6");
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/kimi-k2.6", "global/tinfoil/gpt-oss-120b",
                                           "global/chutes/kimi-k2.6"});
}

TEST_CASE("resolve: failover entries that match nothing or the wrong type add nothing") {
  const auto r = chat("eu/privatemode/gpt-oss-120b", {},
                      {id("eu/nobody/x"), id("eu/privatemode/whisper-large-v3"), id("global/tinfoil/gpt-oss-120b")});
  REQUIRE(r.resolution);
  CHECK(ids(r) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b", "global/tinfoil/gpt-oss-120b"});
}

TEST_CASE("resolve: the primary decides the error even when a failover entry would match") {
  auto r = chat("eu/nobody/gpt-oss-120b", {}, {id("global/tinfoil/gpt-oss-120b")});
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::not_found);

  r = chat("eu/privatemode/whisper-large-v3", {}, {id("global/tinfoil/gpt-oss-120b")});
  CHECK_FALSE(r.resolution);
  CHECK(r.error == ResolveError::wrong_type);
}
