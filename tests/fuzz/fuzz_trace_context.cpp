// W3C Trace Context headers from a client (telemetry/trace_context.h) and the OTLP encoding
// of whatever ends up in a span (telemetry/otlp_encoding.h).
// Input: the traceparent header, '\n', the tracestate header ('\n' more traceparents).
// Properties: an accepted traceparent names non-zero ids and formats back to a header that
// parses to the same ids and flag; a request's trace continues exactly the accepted parent
// (its tracestate kept only then, and only printable, ≤ 512 bytes); the span carrying the
// raw header bytes as attributes encodes without a crash, every byte inside the message.
#include <string>
#include <string_view>
#include <vector>

#include "telemetry/otlp_encoding.h"
#include "telemetry/trace_context.h"
#include "tests/fuzz/fuzz_input.h"

namespace {
bool nonzero(const auto& id) {
  for (auto b : id)
    if (b != 0) return true;
  return false;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tresor::telemetry;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> lines;
  while (!in.empty()) {
    const size_t nl = in.find('\n');
    lines.push_back(in.substr(0, nl));
    in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  }
  const std::string_view parent = lines.empty() ? std::string_view{} : lines[0];
  const std::string_view state = lines.size() > 1 ? lines[1] : std::string_view{};
  const size_t parents = lines.empty() ? 0 : (lines.size() > 2 ? lines.size() - 1 : 1);

  const auto parsed = parse_traceparent(parent);
  if (parsed) {
    FUZZ_CHECK(nonzero(parsed->trace_id) && nonzero(parsed->parent_id));
    const auto again = parse_traceparent(format_traceparent(parsed->trace_id, parsed->parent_id, parsed->sampled));
    FUZZ_CHECK(again && again->trace_id == parsed->trace_id && again->parent_id == parsed->parent_id &&
               again->sampled == parsed->sampled);
  }
  const RequestTrace trace = start_request_trace(parent, parents, state, 1.0);
  FUZZ_CHECK(nonzero(trace.trace_id) && nonzero(trace.span_id));
  if (parents == 1 && parsed) {
    FUZZ_CHECK(trace.trace_id == parsed->trace_id && trace.parent_id && *trace.parent_id == parsed->parent_id);
  } else {
    FUZZ_CHECK(!trace.parent_id && trace.tracestate.empty());
  }
  FUZZ_CHECK(trace.tracestate.size() <= 512);
  for (char c : trace.tracestate) FUZZ_CHECK(c >= 0x20 && c <= 0x7e);

  Span span;
  span.trace_id = trace.trace_id;
  span.span_id = trace.span_id;
  span.parent_id = trace.parent_id;
  span.trace_state = trace.tracestate;
  span.name = std::string(parent);
  span.set("raw.traceparent", std::string(parent));
  span.set("raw.lines", std::vector<std::string>(lines.begin(), lines.end()));
  span.set("raw.size", static_cast<int64_t>(size) - 1000);
  const std::string encoded = encode_export_request(ExportResource{}, {span});
  FUZZ_CHECK(encoded.size() >= parent.size() * 2);  // the name and the attribute each carry it
  return 0;
}
