// One top-level member of a JSON object as raw bytes of the text it came from: the server
// scans the client's body into these (server/json_members.h), providers write them
// upstream byte for byte (providers/openai_adapter.h).
#pragma once

#include <string>
#include <string_view>

namespace tresor::common {

// One top-level member of the client's JSON object, as raw bytes of the client's body.
struct JsonMember {
  std::string_view raw_key;    // the key with its quotes, exactly as received
  std::string key;             // unescaped, for matching
  std::string_view raw_value;  // the value's JSON text, exactly as received
};

}  // namespace tresor::common
