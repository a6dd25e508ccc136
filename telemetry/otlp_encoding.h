// OTLP/HTTP protobuf encoding of spans (opentelemetry-proto: collector/trace/v1
// ExportTraceServiceRequest, trace/v1, common/v1, resource/v1): the binary form every OTLP
// receiver accepts, and the smaller one. Only writing is needed, and only these messages,
// so the wire format is written here (varints, length-delimited fields, fixed64) instead of
// generating code from the .proto files with protoc.
#pragma once

#include <string>
#include <vector>

#include "telemetry/span.h"

namespace tresor::telemetry {

struct ExportResource {
  std::vector<Attribute> attributes;  // service.name, service.version, service.instance.id
  std::string scope_name;             // the instrumentation scope ("tresor-router")
  std::string scope_version;
};

// One ExportTraceServiceRequest: one ResourceSpans, one ScopeSpans with `spans`.
std::string encode_export_request(const ExportResource& resource, const std::vector<Span>& spans);

}  // namespace tresor::telemetry
