// Route addressing (spec §2): compound ids `region/provider/model_key`, `auto` in any
// segment, bare keys with region/provider hints, and the normalised `requested_route`.
// Pure functions over the config snapshot: no I/O, trivially unit-tested.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace tresor::router {

inline constexpr std::string_view kAuto = "auto";

struct RouteId {
  std::string region;    // lower-case, or "auto"
  std::string provider;  // lower-case, or "auto"
  std::string model_key;
  std::string str() const { return region + '/' + provider + '/' + model_key; }
};

// Parses a compound id (exactly three non-empty segments). Region and provider are
// lower-cased; the model key is kept as given. nullopt when malformed.
std::optional<RouteId> parse_compound_id(std::string_view id);

struct RouteHints {
  std::optional<std::string_view> region;
  std::optional<std::string_view> provider;
};

enum class ResolveError {
  malformed,     // 400 invalid_parameter (param model)
  not_found,     // 404 model_not_found
  wrong_type,    // 400 model_not_supported: only routes of another endpoint type match
};

struct Resolution {
  std::string requested_route;  // normalised primary, before auto-resolution/failover
  // Concrete routes to try, in order: the primary's expansion (config order), then the
  // expansion of each failover entry, duplicates removed.
  std::vector<const config::RouteConfig*> candidates;
};

struct ResolveResult {
  std::optional<Resolution> resolution;
  ResolveError error = ResolveError::not_found;
  std::string message;  // for the client; never contains secrets
};

// `model` may be a compound id or a bare key (then treated as auto/auto/key with the
// hints applied; hints are ignored for compound ids, spec §10.1). `failover` entries
// must already be valid compound ids (see parse_compound_id).
ResolveResult resolve_routes(const config::Config& cfg, std::string_view model,
                             const RouteHints& hints, config::RouteType type,
                             const std::vector<RouteId>& failover = {});

}  // namespace tresor::router
