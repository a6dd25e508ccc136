#include "providers/openai_adapter.h"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace tresor::providers {

bool is_tresor_only_field(std::string_view key) {
  return key == "failover" || key == "region" || key == "provider";
}

std::string build_chat_body(const std::vector<JsonMember>& members, std::string_view upstream_model,
                            std::string_view stream_options) {
  size_t size = 2 + upstream_model.size() + 16 + stream_options.size() + 20;
  for (const auto& m : members) size += m.raw_key.size() + m.raw_value.size() + 2;
  std::string out;
  out.reserve(size);
  out += '{';
  bool first = true;
  auto separator = [&] {
    if (!first) out += ',';
    first = false;
  };
  bool model_written = false;
  for (const auto& m : members) {
    if (is_tresor_only_field(m.key)) continue;
    if (!stream_options.empty() && m.key == "stream_options") continue;
    separator();
    out.append(m.raw_key);
    out += ':';
    if (m.key == "model") {
      // Config text is not JSON: escape it properly.
      out += boost::json::serialize(boost::json::string(upstream_model));
      model_written = true;
    } else {
      out.append(m.raw_value);
    }
  }
  if (!model_written) {
    separator();
    out += "\"model\":";
    out += boost::json::serialize(boost::json::string(upstream_model));
  }
  if (!stream_options.empty()) {
    separator();
    out += "\"stream_options\":";
    out += stream_options;
  }
  out += '}';
  return out;
}

}  // namespace tresor::providers
