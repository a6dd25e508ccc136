#include "server/tresor_member.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace tresor::server {

std::string tresor_object_json(const TresorInfo& info) {
  boost::json::object o;
  if (info.receipt_id) o["receipt_id"] = *info.receipt_id;
  o["requested_route"] = info.requested_route;
  o["routed_model"] = info.routed_model;
  o["failover"] = info.failover;
  return boost::json::serialize(o);
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
