#include "server/models_endpoint.h"

#include "server/api_error.h"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>

namespace tresor::server {
namespace {

// Percent-decoding of a query component ('+' is a space in form encoding) or, with
// `plus_is_space` false, of a path segment (where '+' is itself).
std::string url_decode(std::string_view s, bool plus_is_space = true) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size()) {
      unsigned v = 0;
      const auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (ec == std::errc() && p == s.data() + i + 3) {
        out.push_back(static_cast<char>(v));
        i += 2;
      } else {
        out.push_back('%');
      }
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct ModelQuery {
  bool detail = false;
  std::optional<std::string> region, provider, type;
};

ModelQuery parse_query(std::string_view query) {
  ModelQuery q;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const auto eq = pair.find('=');
    const std::string name = url_decode(pair.substr(0, eq));
    const std::string value = eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1));
    // The first occurrence of a parameter counts.
    if (name == "detail" && !q.detail) q.detail = value == "true" || value == "1";
    else if (name == "region" && !q.region) q.region = value;
    else if (name == "provider" && !q.provider) q.provider = value;
    else if (name == "type" && !q.type) q.type = value;
  }
  return q;
}

std::string json_string(std::string_view s) { return boost::json::serialize(boost::json::value(boost::json::string(s))); }

// Shortest round-trip form (0.014, not Boost.JSON's 1.4E-2).
std::string json_number(double d) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  return ec == std::errc() ? std::string(buf, end) : std::string("0");
}

std::string_view type_name(config::RouteType t) {
  return t == config::RouteType::transcription ? "transcription" : "chat";
}

std::string pricing_json(const config::Pricing& p) {
  std::string out = "{";
  auto add = [&out](std::string_view key, const std::string& value) {
    if (out.size() > 1) out += ',';
    out += '"';
    out += key;
    out += "\":";
    out += value;
  };
  if (p.billing_unit) add("billing_unit", json_string(*p.billing_unit));
  if (p.unit_amount) add("unit_amount", json_number(*p.unit_amount));
  if (p.input_per_mtok) add("input_per_mtok", json_number(*p.input_per_mtok));
  if (p.output_per_mtok) add("output_per_mtok", json_number(*p.output_per_mtok));
  if (!p.currency.empty()) add("currency", json_string(p.currency));
  return out + "}";
}

std::string model_json(const config::RouteConfig& r, bool detail, int64_t created) {
  std::string out = "{\"id\":" + json_string(r.id) + ",\"object\":\"model\",\"created\":" + std::to_string(created) +
                    ",\"owned_by\":" + json_string(r.provider_segment);
  if (detail) {
    out += ",\"tresor\":{\"model_key\":" + json_string(r.model_key) + ",\"region\":" + json_string(r.region) +
           ",\"provider\":" + json_string(r.provider_segment) + ",\"type\":\"" + std::string(type_name(r.type)) + "\"";
    if (r.pricing) out += ",\"pricing\":" + pricing_json(*r.pricing);
    out += "}";
  }
  return out + "}";
}

}  // namespace

Response model_response(const config::Config& cfg, std::string_view encoded_id, std::string_view query,
                        int64_t created) {
  const std::string id = url_decode(encoded_id, false);
  for (const auto& r : cfg.routes) {
    if (r.id != id) continue;
    Response res;
    res.body = model_json(r, parse_query(query).detail, created);
    return res;
  }
  // Echoed only when it is short printable ASCII: a decoded path may hold any byte, and
  // the error body must stay valid UTF-8 JSON.
  const bool echo = id.size() <= 200 && std::all_of(id.begin(), id.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  return error_response(ApiError{404, "invalid_request_error", "model_not_found",
                                 echo ? "The model '" + id + "' does not exist" : std::string("The model does not exist"),
                                 std::string("model")});
}

Response models_response(const config::Config& cfg, std::string_view query, int64_t created) {
  const ModelQuery q = parse_query(query);
  std::string data;
  for (const auto& r : cfg.routes) {
    if (q.region && *q.region != r.region) continue;
    if (q.provider && *q.provider != r.provider_segment) continue;
    if (q.type && *q.type != type_name(r.type)) continue;
    if (!data.empty()) data += ',';
    data += model_json(r, q.detail, created);
  }
  Response res;
  res.body = "{\"object\":\"list\",\"data\":[" + data + "]}";
  return res;
}

}  // namespace tresor::server
