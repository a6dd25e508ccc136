// The top-level members of a JSON object as raw byte spans of its text, so a body can be
// forwarded or rewritten member by member without re-serialising (which would change
// number spelling and key order).
#pragma once

#include <simdjson.h>

#include <string_view>
#include <vector>

#include "common/json_members.h"

namespace tresor::server {

// `text` must be the exact bytes the DOM parser validated into `object` (the scan relies
// on that validation and does no error handling of its own). Views point into `text`.
void scan_top_level_members(std::string_view text, simdjson::dom::object object,
                            std::vector<common::JsonMember>& out);

}  // namespace tresor::server
