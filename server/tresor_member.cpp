#include "server/tresor_member.h"

#include "common/json_text.h"

namespace tresor::server {

std::string tresor_object_json(const TresorInfo& info) {
  // Built as text: once per answer (or stream), and small (see common/json_text.h).
  std::string out = "{";
  if (info.receipt_id) {
    common::append_json_name(out, "receipt_id");
    common::append_json_string(out, *info.receipt_id);
    out += ',';
  }
  common::append_json_name(out, "requested_route");
  common::append_json_string(out, info.requested_route);
  out += ',';
  common::append_json_name(out, "routed_model");
  common::append_json_string(out, info.routed_model);
  out += ',';
  common::append_json_name(out, "failover");
  common::append_json_bool(out, info.failover);
  if (info.receipt_unavailable) out += R"(,"receipt_unavailable":true)";
  if (info.recovered_from) {
    out += ',';
    common::append_json_name(out, "recovered_from");
    common::append_json_string(out, *info.recovered_from);
  }
  if (info.attempts) {
    out += ',';
    common::append_json_name(out, "attempts");
    common::append_json_string(out, *info.attempts);
  }
  out += '}';
  return out;
}

bool append_tresor_member(std::string& json, std::string_view tresor_object) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t close = json.size();
  while (close > 0 && is_space(json[close - 1])) --close;
  if (close == 0 || json[close - 1] != '}') return false;
  --close;  // index of the closing brace
  size_t open = 0;
  while (open < close && is_space(json[open])) ++open;
  if (json[open] != '{') return false;
  size_t last = close;
  while (last > open + 1 && is_space(json[last - 1])) --last;
  const bool empty_object = last == open + 1;
  std::string member;
  member.reserve(tresor_object.size() + 10);
  if (!empty_object) member += ',';
  member += "\"tresor\":";
  member.append(tresor_object);
  // Insert right after the last member, so the bytes `,"tresor":{…}` are contiguous.
  json.insert(last, member);
  return true;
}

}  // namespace tresor::server
