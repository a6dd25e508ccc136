#include "server/request_record.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "receipts/claims.h"

namespace tresor::server {

std::string request_id_from(std::string_view header) {
  constexpr size_t kMaxRequestId = 128;
  const bool usable = !header.empty() && header.size() <= kMaxRequestId &&
                      std::all_of(header.begin(), header.end(), [](unsigned char c) {
                        return std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
                      });
  return usable ? std::string(header) : receipts::new_random_uuid();
}

namespace {

std::string utc_now_iso8601() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%.*s.%03dZ", static_cast<int>(n), buf, static_cast<int>(ms));
  return out;
}

}  // namespace

std::string access_log_json(const RequestRecord& r, providers::Clock::time_point now) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  using std::chrono::milliseconds;
  boost::json::object o;
  o["time"] = utc_now_iso8601();
  o["request_id"] = r.request_id;
  o["method"] = r.method;
  o["endpoint"] = r.endpoint;
  o["customer"] = r.customer;
  o["status"] = r.status;
  o["stream"] = r.stream;
  if (r.inference) {
    o["requested_route"] = r.requested_route;
    o["routed_model"] = r.routed_model;
    o["failover"] = r.failover;
    o["attempts"] = router::format_attempts(r.attempts);
    o["upstream_ms"] = duration_cast<milliseconds>(r.upstream_wait).count();
    o["overhead_us"] = duration_cast<microseconds>(r.overhead(now)).count();
  }
  o["duration_ms"] = duration_cast<milliseconds>(now - r.started).count();
  o["bytes_in"] = r.bytes_in;
  o["bytes_out"] = r.bytes_out;
  return boost::json::serialize(o);
}

}  // namespace tresor::server
