// One simdjson DOM parser per I/O thread for upstream JSON (answers, stream events,
// error bodies), reused so that a request does not allocate a parser of its own.
// Whatever a parse returns is invalidated by the next parse on this thread: use it up
// before the next co_await, since another coroutine on the thread may parse then.
#pragma once

#include <simdjson.h>

namespace tresor::providers {

inline simdjson::dom::parser& upstream_json_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

}  // namespace tresor::providers
