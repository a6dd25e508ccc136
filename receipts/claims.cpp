#include "receipts/claims.h"

#include "common/json_text.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace tresor::receipts {

std::string claims_json(const Claims& c) {
  // Written member by member, in the order of spec §5.3 (one receipt per request: a
  // boost::json::object here cost ~7% of an I/O thread's time with receipts on).
  std::string out;
  out.reserve(512 + (c.router_attestation_json ? c.router_attestation_json->size() : 0));
  const auto name = [&out](std::string_view n) {
    out += out.empty() ? '{' : ',';
    common::append_json_name(out, n);
  };
  const auto text = [&](std::string_view n, std::string_view v) {
    name(n);
    common::append_json_string(out, v);
  };
  const auto number = [&](std::string_view n, int64_t v) {
    name(n);
    common::append_json_int(out, v);
  };
  text("jti", c.id);
  number("iat", c.issued_at);
  text("receipt_type", "message");
  text("requested_route", c.requested_route);
  text("routed_model", c.routed_model);
  name("failover");
  common::append_json_bool(out, c.failover);
  text("endpoint", c.endpoint);
  number("prompt_tokens", c.prompt_tokens);
  number("completion_tokens", c.completion_tokens);
  if (c.audio_seconds) number("audio_seconds", *c.audio_seconds);
  name("usage_estimated");
  common::append_json_bool(out, c.usage_estimated);
  if (c.cost) {
    text("cost", *c.cost);
    text("currency", c.currency);
  }
  text("request_sha256", c.request_sha256);
  text("response_sha256", c.response_sha256);
  // The block is compact JSON the router serialised itself at start-up (attestation.cpp),
  // so it is spliced in as it is; anything not an object is left out, as before.
  const auto& block = c.router_attestation_json;
  if (block && block->size() >= 2 && block->front() == '{' && block->back() == '}') {
    name("router_attestation");
    out += *block;
  }
  if (c.nonce) text("nonce", *c.nonce);
  if (!c.recoveries.empty()) {
    name("recoveries");
    out += '[';
    for (const auto& r : c.recoveries) {
      if (out.back() != '[') out += ',';
      out += R"({"from":)";
      common::append_json_string(out, r.from);
      out += R"(,"to":)";
      common::append_json_string(out, r.to);
      out += R"(,"offset":)";
      out += std::to_string(r.offset);
      out += R"(,"mode":)";
      common::append_json_string(out, r.mode);
      out += '}';
    }
    out += ']';
  }
  out += '}';
  return out;
}

}  // namespace tresor::receipts

namespace tresor::receipts {

std::string strip_tresor_member(std::string_view json) {
  constexpr std::string_view kMember = ",\"tresor\":{";
  const auto at = json.rfind(kMember);
  if (at == std::string_view::npos) return std::string(json);
  const auto close = json.find('}', at + kMember.size());
  if (close == std::string_view::npos) return std::string(json);
  std::string out(json.substr(0, at));
  out.append(json.substr(close + 1));
  return out;
}

std::string response_sha256_of_json(std::string_view body) { return sha256_hex(strip_tresor_member(body)); }

std::string response_sha256_of_sse(std::string_view stream) {
  Sha256 digest;
  size_t pos = 0;
  while (pos < stream.size()) {
    auto end = stream.find('\n', pos);
    if (end == std::string_view::npos) end = stream.size();
    std::string_view line = stream.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    constexpr std::string_view kData = "data: ";
    if (line.substr(0, kData.size()) == kData) {
      const auto payload = line.substr(kData.size());
      if (payload != "[DONE]") digest.update(strip_tresor_member(payload));
    }
    pos = end + 1;
  }
  return digest.hex();
}

}  // namespace tresor::receipts
