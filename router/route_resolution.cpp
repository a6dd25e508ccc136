#include "router/route_resolution.h"

#include <algorithm>
#include <cctype>

namespace tresor::router {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool valid_segment(std::string_view s) {
  return !s.empty() && std::none_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isspace(c) || std::iscntrl(c);
  });
}

bool segment_matches(std::string_view pattern, std::string_view value) {
  return pattern == kAuto || pattern == value;
}

bool matches(const RouteId& pattern, const config::RouteConfig& route) {
  return segment_matches(pattern.region, route.region) &&
         segment_matches(pattern.provider, route.provider_segment) &&
         pattern.model_key == route.model_key;
}

}  // namespace

std::optional<RouteId> parse_compound_id(std::string_view id) {
  const auto a = id.find('/');
  if (a == std::string_view::npos) return std::nullopt;
  const auto b = id.find('/', a + 1);
  if (b == std::string_view::npos || id.find('/', b + 1) != std::string_view::npos)
    return std::nullopt;
  RouteId r{lower(id.substr(0, a)), lower(id.substr(a + 1, b - a - 1)),
            std::string(id.substr(b + 1))};
  if (!valid_segment(r.region) || !valid_segment(r.provider) || !valid_segment(r.model_key))
    return std::nullopt;
  return r;
}

ResolveResult resolve_routes(const config::Config& cfg, std::string_view model,
                             const RouteHints& hints, config::RouteType type,
                             const std::vector<RouteId>& failover) {
  ResolveResult result;
  RouteId primary;
  if (model.find('/') == std::string_view::npos) {
    if (!valid_segment(model)) {
      result.error = ResolveError::malformed;
      result.message = "model must be a route id region/provider/model_key or a model key";
      return result;
    }
    // Bare key: auto/auto/key with the body hints filling the segments (spec §2.2).
    primary.region = hints.region && valid_segment(*hints.region) ? lower(*hints.region)
                                                                  : std::string(kAuto);
    primary.provider = hints.provider && valid_segment(*hints.provider)
                           ? lower(*hints.provider)
                           : std::string(kAuto);
    primary.model_key = std::string(model);
  } else if (auto parsed = parse_compound_id(model)) {
    primary = std::move(*parsed);
  } else {
    result.error = ResolveError::malformed;
    result.message = "model '" + std::string(model) +
                     "' is not a valid route id: expected region/provider/model_key";
    return result;
  }

  Resolution res;
  res.requested_route = primary.str();
  bool other_type_matched = false;
  auto expand = [&](const RouteId& pattern) {
    for (const auto& route : cfg.routes) {
      if (!matches(pattern, route)) continue;
      if (route.type != type) {
        other_type_matched = true;
        continue;
      }
      if (std::find(res.candidates.begin(), res.candidates.end(), &route) == res.candidates.end())
        res.candidates.push_back(&route);
    }
  };
  expand(primary);
  if (res.candidates.empty()) {
    // The primary decides the status: a caller naming an unknown route learns so even
    // when a failover entry would have matched.
    result.error = other_type_matched ? ResolveError::wrong_type : ResolveError::not_found;
    result.message = other_type_matched
                         ? "model '" + res.requested_route + "' is not available on this endpoint"
                         : "model '" + res.requested_route + "' not found";
    return result;
  }
  for (const auto& entry : failover) expand(entry);
  result.resolution = std::move(res);
  return result;
}

}  // namespace tresor::router
