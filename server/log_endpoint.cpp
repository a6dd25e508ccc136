#include "server/log_endpoint.h"

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <optional>

#include "receipts/checkpoint.h"
#include "receipts/cosignature.h"
#include "receipts/transparency_log.h"
#include "server/api_error.h"

namespace tresor::server {
namespace {

using receipts::TransparencyLog;

// Tiles and entry bundles never change once served (a partial tile has its width in its
// path); checkpoints change every interval.
constexpr const char* kImmutable = "public, max-age=31536000, immutable";

using receipts::parse_decimal;

// "<N>[.p/<W>]" with N as 3-digit groups, every group but the last prefixed by "x"
// (x001/x234/067); false when malformed (C2SP tlog-tiles).
bool parse_tile_index(std::string_view path, uint64_t& index, unsigned& width) {
  width = 256;
  if (const auto p = path.find(".p/"); p != std::string_view::npos) {
    const auto w = parse_decimal(path.substr(p + 3));
    if (!w || *w == 0 || *w > 255) return false;
    width = static_cast<unsigned>(*w);
    path = path.substr(0, p);
  }
  index = 0;
  for (;;) {
    const auto slash = path.find('/');
    std::string_view group = path.substr(0, slash);
    const bool last = slash == std::string_view::npos;
    if (!last) {
      if (group.empty() || group[0] != 'x') return false;
      group.remove_prefix(1);
    }
    uint64_t g = 0;
    if (group.size() != 3) return false;
    for (char c : group) {
      if (c < '0' || c > '9') return false;
      g = g * 10 + static_cast<uint64_t>(c - '0');
    }
    if (index > (UINT64_MAX - g) / 1000) return false;
    index = index * 1000 + g;
    if (last) return true;
    path = path.substr(slash + 1);
  }
}

// The value of `name` in a query string ("a=1&b=2").
std::optional<uint64_t> query_number(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
      return parse_decimal(pair.substr(name.size() + 1));
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return std::nullopt;
}

Response text(std::string body, const char* type, const char* cache) {
  Response r;
  r.content_type = type;
  r.body = std::move(body);
  r.headers.emplace_back("Cache-Control", cache);
  return r;
}

Response not_found() { return error_response(not_found_path()); }

constexpr size_t kMaxSignatureLines = 16;

Response bad_range(const std::string& message) { return error_response(invalid_request("invalid_log_range", message)); }

boost::json::array proof_json(const std::vector<receipts::merkle::Hash>& proof) {
  boost::json::array a;
  for (const auto& h : proof) a.emplace_back(receipts::hash_base64(h));
  return a;
}

Response json_answer(const boost::json::object& o) {
  Response r;
  r.body = boost::json::serialize(o);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

Response tile_response(std::string_view rest, const TransparencyLog& log) {
  uint64_t index = 0;
  unsigned width = 0;
  std::optional<std::string> data;
  if (rest.substr(0, 8) == "entries/") {
    if (!parse_tile_index(rest.substr(8), index, width)) return not_found();
    data = log.entry_bundle(index, width);
  } else {
    const auto slash = rest.find('/');
    const auto level = parse_decimal(rest.substr(0, slash));
    if (slash == std::string_view::npos || !level || *level > 63 || !parse_tile_index(rest.substr(slash + 1), index, width))
      return not_found();
    data = log.tile(static_cast<unsigned>(*level), index, width);
  }
  if (!data) return not_found();
  return text(std::move(*data), "application/octet-stream", kImmutable);
}

Response consistency_response(std::string_view query, const TransparencyLog& log) {
  const auto old_size = query_number(query, "old");
  const auto new_size = query_number(query, "new");
  if (!old_size || !new_size) return bad_range("old and new must be tree sizes (decimal integers)");
  const auto proof = log.consistency_proof(*old_size, *new_size);
  if (!proof) return bad_range("need old <= new <= the latest checkpoint's size");
  boost::json::object o;
  o["old"] = *old_size;
  o["new"] = *new_size;
  o["proof"] = proof_json(*proof);
  return json_answer(o);
}

Response inclusion_response(std::string_view query, const TransparencyLog& log) {
  const auto index = query_number(query, "index");
  const auto size = query_number(query, "size");
  if (!index || !size) return bad_range("index and size must be decimal integers");
  const auto proof = log.inclusion_proof(*index, *size);
  if (!proof) return bad_range("need index < size <= the latest checkpoint's size");
  boost::json::object o;
  o["index"] = *index;
  o["size"] = *size;
  o["proof"] = proof_json(*proof);
  return json_answer(o);
}

}  // namespace

Response log_response(std::string_view target, const TransparencyLog* log) {
  if (!log) return not_found();
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q).substr(kLogPrefix.size());
  const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  if (path == "checkpoint") {
    const auto c = log->checkpoint();
    if (!c) {
      Response r = error_response(ApiError{503, "service_unavailable", "log_unavailable",
                                           "The transparency log has no checkpoint yet; retry shortly", std::nullopt});
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    return text(c->note, "text/plain; charset=utf-8", "no-store");
  }
  if (path == "checkpoint/cosigned") {
    const auto c = log->cosigned_checkpoint();
    if (!c) return not_found();
    return text(c->note, "text/plain; charset=utf-8", "no-store");
  }
  if (path == "key") return text(log->verifier_key() + "\n", "text/plain; charset=utf-8", "public, max-age=300");
  if (path.substr(0, 5) == "tile/") return tile_response(path.substr(5), *log);
  if (path == "proof/consistency") return consistency_response(query, *log);
  if (path == "proof/inclusion") return inclusion_response(query, *log);
  return not_found();
}

void add_log_fields(boost::json::object& answer, uint64_t log_index, const TransparencyLog& log) {
  answer["log_index"] = log_index;
  const auto inclusion = log.inclusion(log_index);
  if (!inclusion) return;
  answer["checkpoint"] = inclusion->checkpoint->note;
  answer["inclusion_proof"] = proof_json(inclusion->proof);
}

Response cosignature_response(std::string_view body, const TransparencyLog* log,
                              const std::vector<std::string>& witnesses, const RecordCosignature& record) {
  if (!log) return not_found();
  // The note's text ends at its first blank line; signature lines follow (the log's, then
  // the cosignatures).
  const auto blank = body.find("\n\n");
  const auto latest = log->checkpoint();
  if (blank == std::string_view::npos || !latest)
    return error_response(invalid_request("invalid_cosignature", "The body must be the checkpoint note followed by "
                                                                 "the witness's cosignature line"));
  const std::string_view text = body.substr(0, blank + 1);
  uint64_t accepted = 0, on_other_text = 0;
  size_t lines = 0;
  for (std::string_view rest = body.substr(blank + 2); !rest.empty();) {
    const auto end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    // Anyone may post here and a line naming a witness costs an Ed25519 verification per
    // key: bound what one request buys (the log's line and a few witnesses' fit easily).
    if (++lines > kMaxSignatureLines)
      return error_response(invalid_request("invalid_cosignature", "More than " +
                                                                       std::to_string(kMaxSignatureLines) +
                                                                       " signature lines"));
    for (const auto& vkey : witnesses) {
      if (receipts::cosignature::verify(latest->text, line, vkey)) {
        record(latest->size, std::string(line) + "\n");
        ++accepted;
        break;
      }
      if (text != latest->text && receipts::cosignature::verify(text, line, vkey)) ++on_other_text;
    }
  }
  if (accepted == 0 && on_other_text > 0)
    return error_response(ApiError{409, "invalid_request_error", "checkpoint_superseded",
                                   "The cosignature is valid but not over the latest checkpoint (size " +
                                       std::to_string(latest->size) + "); cosign that one",
                                   std::nullopt});
  if (accepted == 0)
    return error_response(invalid_request("invalid_cosignature",
                                          "No line is a valid cosignature by a configured witness over the latest "
                                          "checkpoint"));
  boost::json::object o;
  o["accepted"] = accepted;
  return json_answer(o);
}

}  // namespace tresor::server
