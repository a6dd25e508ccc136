#include "telemetry/otlp_encoding.h"

#include <cstring>

namespace tresor::telemetry {
namespace {

// Protobuf wire types.
constexpr uint32_t kVarint = 0;
constexpr uint32_t kFixed64 = 1;
constexpr uint32_t kLengthDelimited = 2;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_tag(std::string& out, uint32_t field, uint32_t wire_type) { put_varint(out, uint64_t{field} << 3 | wire_type); }

void put_bytes(std::string& out, uint32_t field, const void* data, size_t size) {
  put_tag(out, field, kLengthDelimited);
  put_varint(out, size);
  out.append(static_cast<const char*>(data), size);
}

void put_string(std::string& out, uint32_t field, const std::string& s) {
  if (!s.empty()) put_bytes(out, field, s.data(), s.size());
}

void put_message(std::string& out, uint32_t field, const std::string& encoded) {
  put_bytes(out, field, encoded.data(), encoded.size());
}

void put_fixed64(std::string& out, uint32_t field, uint64_t v) {
  put_tag(out, field, kFixed64);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i) & 0xff));  // little-endian
}

void put_uint(std::string& out, uint32_t field, uint64_t v) {
  if (v == 0) return;  // proto3: a default value is not written
  put_tag(out, field, kVarint);
  put_varint(out, v);
}

// common/v1 AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4,
// array_value 5 (ArrayValue: repeated AnyValue values 1).
std::string any_value(const AttributeValue& value) {
  std::string out;
  if (const auto* s = std::get_if<std::string>(&value)) {
    put_bytes(out, 1, s->data(), s->size());  // written even when empty: the oneof is set
  } else if (const auto* b = std::get_if<bool>(&value)) {
    put_tag(out, 2, kVarint);
    put_varint(out, *b ? 1 : 0);
  } else if (const auto* i = std::get_if<int64_t>(&value)) {
    put_tag(out, 3, kVarint);
    put_varint(out, static_cast<uint64_t>(*i));  // int64: two's complement, 10 bytes if negative
  } else if (const auto* d = std::get_if<double>(&value)) {
    uint64_t bits = 0;
    std::memcpy(&bits, d, sizeof bits);
    put_fixed64(out, 4, bits);
  } else if (const auto* list = std::get_if<std::vector<std::string>>(&value)) {
    std::string array;
    for (const auto& item : *list) put_message(array, 1, any_value(AttributeValue(item)));
    put_message(out, 5, array);
  }
  return out;
}

// common/v1 KeyValue: key 1, value 2.
void put_attributes(std::string& out, uint32_t field, const std::vector<Attribute>& attributes) {
  for (const auto& a : attributes) {
    std::string kv;
    put_string(kv, 1, a.key);
    put_message(kv, 2, any_value(a.value));
    put_message(out, field, kv);
  }
}

// trace/v1 Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6,
// start_time_unix_nano 7, end_time_unix_nano 8, attributes 9, events 11, status 15.
// Span.Event: time_unix_nano 1, name 2, attributes 3. Status: message 2, code 3.
std::string span_message(const Span& s) {
  std::string out;
  put_bytes(out, 1, s.trace_id.data(), s.trace_id.size());
  put_bytes(out, 2, s.span_id.data(), s.span_id.size());
  put_string(out, 3, s.trace_state);
  if (s.parent_id) put_bytes(out, 4, s.parent_id->data(), s.parent_id->size());
  put_string(out, 5, s.name);
  put_uint(out, 6, static_cast<uint64_t>(s.kind));
  put_fixed64(out, 7, s.start_unix_nano);
  put_fixed64(out, 8, s.end_unix_nano);
  put_attributes(out, 9, s.attributes);
  for (const auto& e : s.events) {
    std::string event;
    put_fixed64(event, 1, e.time_unix_nano);
    put_string(event, 2, e.name);
    put_attributes(event, 3, e.attributes);
    put_message(out, 11, event);
  }
  if (s.status != SpanStatus::unset) {
    std::string status;
    put_string(status, 2, s.status_message);
    put_uint(status, 3, static_cast<uint64_t>(s.status));
    put_message(out, 15, status);
  }
  return out;
}

}  // namespace

// ExportTraceServiceRequest: resource_spans 1. ResourceSpans: resource 1, scope_spans 2.
// Resource: attributes 1. ScopeSpans: scope 1, spans 2. InstrumentationScope: name 1, version 2.
std::string encode_export_request(const ExportResource& resource, const std::vector<Span>& spans) {
  std::string scope;
  put_string(scope, 1, resource.scope_name);
  put_string(scope, 2, resource.scope_version);
  std::string scope_spans;
  put_message(scope_spans, 1, scope);
  for (const auto& s : spans) put_message(scope_spans, 2, span_message(s));
  std::string resource_message;
  put_attributes(resource_message, 1, resource.attributes);
  std::string resource_spans;
  put_message(resource_spans, 1, resource_message);
  put_message(resource_spans, 2, scope_spans);
  std::string request;
  put_message(request, 1, resource_spans);
  return request;
}

}  // namespace tresor::telemetry
