#include "server/request_record.h"


#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "common/clock_text.h"
#include "common/json_text.h"

namespace tresor::server {

std::string access_log_json(const RequestRecord& r, providers::Clock::time_point now) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  using std::chrono::milliseconds;
  // Written member by member into one string (a boost::json::object cost a dozen
  // allocations per request); the same members in the same order as before.
  std::string out;
  out.reserve(384);
  out += "{\"time\":\"";  // timestamp characters never need escaping
  common::append_timestamp(out, std::chrono::system_clock::now(), common::ClockZone::utc);
  out += '"';
  out += ",\"request_id\":";
  common::append_json_string(out, r.request_id);
  out += ",\"method\":";
  common::append_json_string(out, r.method);
  out += ",\"endpoint\":";
  common::append_json_string(out, r.endpoint);
  out += ",\"customer\":";
  common::append_json_string(out, r.customer);
  out += ",\"status\":" + std::to_string(r.status);
  out += r.stream ? ",\"stream\":true" : ",\"stream\":false";
  if (r.inference) {
    out += ",\"requested_route\":";
    common::append_json_string(out, r.requested_route);
    out += ",\"routed_model\":";
    common::append_json_string(out, r.routed_model);
    out += r.failover ? ",\"failover\":true" : ",\"failover\":false";
    out += ",\"attempts\":";
    common::append_json_string(out, router::format_attempts(r.attempts));
    out += ",\"upstream_ms\":" + std::to_string(duration_cast<milliseconds>(r.upstream_wait).count());
    out += ",\"overhead_us\":" + std::to_string(duration_cast<microseconds>(r.overhead(now)).count());
    if (r.trace) out += ",\"trace_id\":\"" + telemetry::hex(r.trace->trace_id) + '"';
  }
  out += ",\"duration_ms\":" + std::to_string(duration_cast<milliseconds>(now - r.started).count());
  out += ",\"bytes_in\":" + std::to_string(r.bytes_in);
  out += ",\"bytes_out\":" + std::to_string(r.bytes_out);
  out += '}';
  return out;
}

}  // namespace tresor::server
