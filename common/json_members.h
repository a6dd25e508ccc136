// The top-level members of a JSON object as raw byte spans of its text, so a body can be
// forwarded or rewritten member by member without re-serialising (which would change
// number spelling and key order): the server scans the client's body into these, providers
// write them upstream byte for byte (providers/openai_adapter.h) and scan upstream answers.
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

namespace tresor::common {

// One top-level member of a JSON object, as raw bytes of its text.
struct JsonMember {
  std::string_view raw_key;    // the key with its quotes, exactly as received
  std::string key;             // unescaped, for matching
  std::string_view raw_value;  // the value's JSON text, exactly as received
};

// `text` must be the exact bytes the DOM parser validated into `object` (the scan relies
// on that validation and does no error handling of its own). Views point into `text`.
void scan_top_level_members(std::string_view text, simdjson::dom::object object, std::vector<JsonMember>& out);

}  // namespace tresor::common
