// A finished span as this gateway exports it: the subset of the OpenTelemetry data model
// (trace/v1/trace.proto) the request and attempt spans use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "telemetry/trace_context.h"

namespace tresor::telemetry {

using AttributeValue = std::variant<std::string, bool, int64_t, double, std::vector<std::string>>;

struct Attribute {
  std::string key;
  AttributeValue value;
};

struct SpanEvent {
  uint64_t time_unix_nano = 0;
  std::string name;
  std::vector<Attribute> attributes;
};

enum class SpanKind { internal = 1, server = 2, client = 3 };  // trace.proto Span.SpanKind
enum class SpanStatus { unset = 0, ok = 1, error = 2 };         // trace.proto Status.StatusCode

struct Span {
  TraceId trace_id{};
  SpanId span_id{};
  std::optional<SpanId> parent_id;
  std::string trace_state;
  std::string name;
  SpanKind kind = SpanKind::internal;
  uint64_t start_unix_nano = 0;
  uint64_t end_unix_nano = 0;
  std::vector<Attribute> attributes;
  std::vector<SpanEvent> events;
  SpanStatus status = SpanStatus::unset;
  std::string status_message;  // only with SpanStatus::error

  void set(std::string key, AttributeValue value) { attributes.push_back(Attribute{std::move(key), std::move(value)}); }
};

}  // namespace tresor::telemetry
