#include "telemetry/trace_context.h"

#include "common/secure_random.h"

namespace tresor::telemetry {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is invalid in traceparent (§3.2.2)
}

// `text` (2·N lowercase hex digits) into `out`; false on any other character.
template <size_t N>
bool parse_hex(std::string_view text, std::array<uint8_t, N>& out) {
  if (text.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool all_zero(const std::array<uint8_t, N>& id) {
  for (uint8_t b : id)
    if (b != 0) return false;
  return true;
}

template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * N, '0');
  for (size_t i = 0; i < N; ++i) {
    out[2 * i] = kDigits[id[i] >> 4];
    out[2 * i + 1] = kDigits[id[i] & 15];
  }
  return out;
}

}  // namespace

std::optional<TraceParent> parse_traceparent(std::string_view h) {
  // version(2) - trace-id(32) - parent-id(16) - flags(2) = 55 characters.
  constexpr size_t kLength = 55;
  if (h.size() < kLength || h[2] != '-' || h[35] != '-' || h[52] != '-') return std::nullopt;
  std::array<uint8_t, 1> version{};
  std::array<uint8_t, 1> flags{};
  TraceParent p;
  if (!parse_hex(h.substr(0, 2), version) || version[0] == 0xff) return std::nullopt;
  if (version[0] == 0 && h.size() != kLength) return std::nullopt;
  if (h.size() > kLength && h[kLength] != '-') return std::nullopt;
  if (!parse_hex(h.substr(3, 32), p.trace_id) || !parse_hex(h.substr(36, 16), p.parent_id) ||
      !parse_hex(h.substr(53, 2), flags))
    return std::nullopt;
  if (all_zero(p.trace_id) || all_zero(p.parent_id)) return std::nullopt;
  p.sampled = (flags[0] & 1) != 0;
  return p;
}

std::optional<std::string> usable_tracestate(std::string_view h) {
  if (h.empty() || h.size() > 512) return std::nullopt;
  for (char c : h)
    if (c < 0x20 || c > 0x7e) return std::nullopt;
  return std::string(h);
}

std::string format_traceparent(const TraceId& trace, const SpanId& span, bool sampled) {
  return "00-" + to_hex(trace) + "-" + to_hex(span) + (sampled ? "-01" : "-00");
}

TraceId new_trace_id() {
  TraceId id{};
  do common::secure_random_bytes(id.data(), id.size());
  while (all_zero(id));
  return id;
}

SpanId new_span_id() {
  SpanId id{};
  do common::secure_random_bytes(id.data(), id.size());
  while (all_zero(id));
  return id;
}

std::string hex(const TraceId& id) { return to_hex(id); }
std::string hex(const SpanId& id) { return to_hex(id); }

uint64_t span_id_value(const SpanId& id) {
  uint64_t v = 0;
  for (uint8_t b : id) v = v << 8 | b;
  return v;
}

SpanId span_id_from(uint64_t value) {
  SpanId id{};
  for (size_t i = id.size(); i-- > 0; value >>= 8) id[i] = static_cast<uint8_t>(value & 0xff);
  return id;
}

RequestTrace start_request_trace(std::string_view traceparent, size_t traceparent_count, std::string_view tracestate,
                                 double sample_ratio) {
  RequestTrace t;
  t.span_id = new_span_id();
  const auto parent = traceparent_count == 1 ? parse_traceparent(traceparent) : std::nullopt;
  if (parent) {
    t.trace_id = parent->trace_id;
    t.parent_id = parent->parent_id;
    t.sampled = parent->sampled;
    // §3.3: tracestate is read only along a valid traceparent.
    if (auto state = usable_tracestate(tracestate)) t.tracestate = std::move(*state);
    return t;
  }
  t.trace_id = new_trace_id();
  if (sample_ratio >= 1) {
    t.sampled = true;
  } else {
    // The trace id's random low 56 bits decide, as OTel's TraceIdRatioBased sampler does.
    uint64_t low = 0;
    for (size_t i = 9; i < 16; ++i) low = low << 8 | t.trace_id[i];
    t.sampled = static_cast<double>(low) < sample_ratio * static_cast<double>(uint64_t{1} << 56);
  }
  return t;
}

}  // namespace tresor::telemetry
