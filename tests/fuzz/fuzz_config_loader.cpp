// The YAML config loader (config/config.h, load_config_text).
// Input: the YAML text.
// Properties: a bad config throws ConfigError and nothing else (anything else escapes
// main's clear "FILE:LINE:COL: message" path); a config that loads is usable: every
// route names a configured provider (the chat endpoint looks it up with .at()), resolves
// by its own id, first.
#include <string>

#include "config/config.h"
#include "router/route_resolution.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

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
  for (const auto& route : cfg->routes) {
    FUZZ_CHECK(cfg->providers.count(route.provider) == 1);
    const auto resolved = router::resolve_routes(*cfg, route.id, {}, route.type);
    FUZZ_CHECK(resolved.resolution && !resolved.resolution->candidates.empty());
    FUZZ_CHECK(resolved.resolution->candidates.front()->id == route.id);
  }
  return 0;
}
