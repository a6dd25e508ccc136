// Route addressing (router/route_resolution.h): compound ids, bare keys with hints,
// failover entries, resolved against a small fixed config.
// Input lines ('\n'): the model, the region hint, the provider hint, then failover
// entries (only those parse_compound_id accepts are passed on, as the endpoint does).
// Byte 0 picks the endpoint type and whether the hints are present.
// Properties: a parsed id prints back to itself; every candidate is a configured route
// of the requested type, listed once; a failed resolution explains itself.
#include <set>
#include <string>
#include <vector>

#include "router/route_resolution.h"
#include "tests/fuzz/fixed_config.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;

namespace {

std::string_view take_line(std::string_view& in) {
  const size_t nl = in.find('\n');
  const std::string_view line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  return line;
}

void check_parse(std::string_view s) {
  const auto id = router::parse_compound_id(s);
  if (!id) return;
  FUZZ_CHECK(!id->region.empty() && !id->provider.empty() && !id->model_key.empty());
  const auto again = router::parse_compound_id(id->str());
  FUZZ_CHECK(again && again->str() == id->str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t mode = tresor::fuzz::take_byte(in);
  const auto type = (mode & 1) ? config::RouteType::transcription : config::RouteType::chat;
  const std::string_view model = take_line(in);
  const std::string_view region = take_line(in);
  const std::string_view provider = take_line(in);
  router::RouteHints hints;
  if (mode & 2) hints.region = region;
  if (mode & 4) hints.provider = provider;
  check_parse(model);
  std::vector<router::RouteId> failover;
  while (!in.empty()) {
    const std::string_view entry = take_line(in);
    check_parse(entry);
    if (auto id = router::parse_compound_id(entry)) failover.push_back(std::move(*id));
  }

  const auto& cfg = tresor::fuzz::fixed_config();
  const auto result = router::resolve_routes(cfg, model, hints, type, failover);
  if (!result.resolution) {
    FUZZ_CHECK(!result.message.empty());
    return 0;
  }
  std::set<const config::RouteConfig*> seen;
  for (const auto* route : result.resolution->candidates) {
    FUZZ_CHECK(route >= cfg.routes.data() && route < cfg.routes.data() + cfg.routes.size());
    FUZZ_CHECK(route->type == type);
    FUZZ_CHECK(seen.insert(route).second);
  }
  FUZZ_CHECK(!result.resolution->candidates.empty());
  return 0;
}
