// The YAML config loader (config/config.h, load_config_text).
// Input: the YAML text.
// Properties: a bad config throws ConfigError and nothing else (anything else escapes
// main's clear "FILE:LINE:COL: message" path); a config that loads is usable: every
// route names a configured provider (the chat endpoint looks it up with .at()), resolves
// by its own id, first; every money field was read both ways and they agree (the exact
// nanos within double rounding of the number /v1/models shows).
#include <cmath>
#include <string>

#include "config/config.h"
#include "router/route_resolution.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

// The exact amount and the double read from the same text: within double rounding.
void check_money(const std::optional<double>& shown, const std::optional<int64_t>& nanos) {
  FUZZ_CHECK(shown.has_value() == nanos.has_value());
  if (!nanos) return;
  FUZZ_CHECK(*nanos >= 0);
  FUZZ_CHECK(std::fabs(*shown * 1e9 - static_cast<double>(*nanos)) <= 1 + static_cast<double>(*nanos) * 1e-15);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = config::load_config_text(text, "fuzz.yaml");
  } catch (const config::ConfigError& e) {
    FUZZ_CHECK(std::string(e.what()).rfind("fuzz.yaml", 0) == 0);  // names where it failed
    return 0;
  }
  FUZZ_CHECK(cfg != nullptr);
  for (const auto& [name, customer] : cfg->auth.customers)
    check_money(std::optional<double>(customer.credit), std::optional<int64_t>(customer.credit_nanos));
  for (const auto& route : cfg->routes) {
    if (route.pricing) {
      check_money(route.pricing->input_per_mtok, route.pricing->input_nanos_per_mtok);
      check_money(route.pricing->output_per_mtok, route.pricing->output_nanos_per_mtok);
      check_money(route.pricing->unit_amount, route.pricing->unit_nanos);
    }
    FUZZ_CHECK(cfg->providers.count(route.provider) == 1);
    const auto resolved = router::resolve_routes(*cfg, route.id, {}, route.type);
    FUZZ_CHECK(resolved.resolution && !resolved.resolution->candidates.empty());
    FUZZ_CHECK(resolved.resolution->candidates.front()->id == route.id);
  }
  return 0;
}
