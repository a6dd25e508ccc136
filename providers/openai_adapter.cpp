#include "providers/openai_adapter.h"

#include "common/json_text.h"

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

std::string build_prefill_body(const std::vector<JsonMember>& members, std::string_view upstream_model,
                               std::string_view stream_options, std::string_view assistant_text,
                               bool continue_final_message) {
  // The messages array with the assistant message before its closing bracket (the raw
  // value is validated JSON: its last byte is that bracket).
  std::string messages;
  std::string assistant = R"({"role":"assistant","content":)";
  common::append_json_string(assistant, assistant_text);
  assistant += '}';
  std::vector<JsonMember> edited;
  edited.reserve(members.size() + 2);
  for (const auto& m : members) {
    if (continue_final_message && (m.key == "continue_final_message" || m.key == "add_generation_prompt")) continue;
    if (m.key != "messages") {
      edited.push_back(m);
      continue;
    }
    const std::string_view raw = m.raw_value;
    const size_t close = raw.rfind(']');
    if (close == std::string_view::npos) {  // not an array: the upstream says what it thinks of it
      edited.push_back(m);
      continue;
    }
    messages.assign(raw.substr(0, close));
    const size_t last = messages.find_last_not_of(" \t\r\n");
    if (last != std::string::npos && messages[last] != '[') messages += ',';
    messages += assistant;
    messages += ']';
    JsonMember replaced = m;
    replaced.raw_value = messages;
    edited.push_back(replaced);
  }
  if (continue_final_message) {
    edited.push_back(JsonMember{R"("continue_final_message")", "continue_final_message", "true"});
    edited.push_back(JsonMember{R"("add_generation_prompt")", "add_generation_prompt", "false"});
  }
  return build_chat_body(edited, upstream_model, stream_options);
}

}  // namespace tresor::providers
