// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a client
// sends is continued, and each upstream attempt is sent one naming its own span.
// Pure parsing and formatting; ids come from the system's secure random source.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tresor::telemetry {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

struct TraceParent {
  TraceId trace_id{};
  SpanId parent_id{};
  bool sampled = false;  // trace-flags bit 0
};

// `traceparent` per §3.2: version-traceid-parentid-flags, lowercase hex only. Version 00
// must be exactly 55 characters; a later version may be longer if a '-' follows the flags
// (its extra fields are ignored); version ff, all-zero ids and any other form are invalid
// (nullopt: the request starts a new trace).
std::optional<TraceParent> parse_traceparent(std::string_view header);

// `tracestate` as it is passed on: kept when it is at most 512 printable ASCII characters
// (the length every participant must propagate, §3.3.1.5), else dropped (nullopt).
std::optional<std::string> usable_tracestate(std::string_view header);

// "00-<trace id>-<span id>-<flags>".
std::string format_traceparent(const TraceId& trace, const SpanId& span, bool sampled);

TraceId new_trace_id();
SpanId new_span_id();
std::string hex(const TraceId& id);
std::string hex(const SpanId& id);
uint64_t span_id_value(const SpanId& id);  // big-endian, never 0 for a valid id
SpanId span_id_from(uint64_t value);

// What one request's trace is: its id, the server span's id and parent, the sampling
// decision, and the tracestate to pass on.
struct RequestTrace {
  TraceId trace_id{};
  SpanId span_id{};                  // the request's (server) span
  std::optional<SpanId> parent_id;   // the client's span, when it sent a traceparent
  bool sampled = true;
  std::string tracestate;
};

// The request's trace from its headers: the client's continued when `traceparent` is
// valid (its sampled flag decides), else a new trace sampled with `sample_ratio`.
// `traceparent_count` > 1 makes it invalid (two parents cannot both be continued).
RequestTrace start_request_trace(std::string_view traceparent, size_t traceparent_count, std::string_view tracestate,
                                 double sample_ratio);

}  // namespace tresor::telemetry
