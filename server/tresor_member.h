// The `tresor` object on responses (spec §1.1). It is always written last in the
// top-level object, compact, as the exact bytes `,"tresor":{…}`, so a client can remove
// it with a byte operation to recompute the response digest (receipts issue).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tresor::server {

struct TresorInfo {
  std::optional<std::string> receipt_id;  // absent with X-Tresor-Receipt: false
  std::string requested_route;
  std::string routed_model;
  bool failover = false;
  // A receipt was wanted but could not be stored (the store is unreachable and
  // store.outage.receipts is open): the answer goes without receipt_id and says so.
  bool receipt_unavailable = false;
  // A stream continued on another route after its upstream failed (issue 18): the route
  // whose stream failed, and the attempt trail (X-Tresor-Attempts format, which the
  // already-sent header cannot show).
  std::optional<std::string> recovered_from;
  std::optional<std::string> attempts;
};

// {"receipt_id":…,"requested_route":…,"routed_model":…,"failover":…}
std::string tresor_object_json(const TresorInfo& info);

// Appends `"tresor":<object>` as the last member of the JSON object in `json` (which
// must be valid JSON). Returns false, leaving `json` unchanged, when it is not an object.
bool append_tresor_member(std::string& json, std::string_view tresor_object);

}  // namespace tresor::server
