// The request head path of the session (server/request_head.h and what serve_request
// does with a head before the body): Beast's parser under server.max_header_bytes, the
// 431/400 answer to a bad head, then the header checks: X-Request-Id, Authorization,
// X-Tresor-Timeout-Seconds, X-Tresor-Receipt, the upload Content-Type, the body framing.
// Input: byte 0 picks max_header_bytes (64..8192, or the default 16384), then a split
// plan (see fuzz_input.h), then the bytes as the client sends them (pieces = reads).
// Properties: a head either parses, or fails with a 431 (only for header_limit) or 400
// envelope; a parsed head respects the limit; a kept X-Request-Id is 1..128 safe
// characters; only the configured key authenticates; a timeout budget is 1..max; a head
// is never both chunked and Content-Length framed, and a head whose framing is accepted
// has one Content-Length of digits or one "chunked" Transfer-Encoding (framing_error);
// an accepted head has one Host that is a host[:port] (none only in HTTP/1.0).
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <string>

#include "router/timeout_override.h"
#include "server/auth.h"
#include "server/multipart_parser.h"
#include "server/request_head.h"
#include "server/request_record.h"
#include "tests/fuzz/fixed_config.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor;
namespace http = boost::beast::http;

namespace {

bool safe_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == ':' || c == '-';
}

// What the session checks once a head has arrived (see serve_request and
// check_control_headers).
void check_head(server::HeadParser& parser, uint64_t max_header_bytes) {
  auto& req = parser.get();
  // What the session runs: the first of the three checks below that refuses, or none.
  const auto refusal = server::head_refusal(req, max_header_bytes);
  const auto same_as_session = [&](const server::ApiError& e) {
    return refusal && refusal->status == e.status && refusal->message == e.message;
  };
  // The session's second size check (Beast bounds the line and the fields separately).
  if (const auto refused = server::oversized_head(req, max_header_bytes)) {
    FUZZ_CHECK(refused->status == 431u && refused->code == "request_header_too_large");
    FUZZ_CHECK(same_as_session(*refused));
    return;
  }
  const server::RequestHead head = server::make_head(req);
  FUZZ_CHECK(head.method == req.method_string());
  size_t bytes = head.method.size() + head.target.size();
  for (const auto& [name, value] : head.headers) bytes += name.size() + value.size();
  FUZZ_CHECK(bytes <= max_header_bytes);

  const std::string id = server::request_id_from(req["X-Request-Id"]);
  FUZZ_CHECK(!id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), safe_id_char));

  static const server::KeyIndex keys(tresor::fuzz::fixed_config());
  const auto auth = keys.authenticate(head.value("Authorization"), head.has("Authorization"));
  if (auth.status == server::AuthStatus::ok) FUZZ_CHECK(auth.key && auth.key->customer == "acme");
  if (!head.has("Authorization")) FUZZ_CHECK(auth.status == server::AuthStatus::missing);

  const auto budget = router::parse_timeout_override(head.values(router::kTimeoutHeader), 180, 600);
  if (budget) FUZZ_CHECK(budget->count() >= 1 && budget->count() <= 600);

  (void)server::boundary_from_content_type(head.value("Content-Type"));

  // Never both framings at once (the request smuggling shape): Beast refuses it.
  if (parser.chunked()) FUZZ_CHECK(!parser.content_length());
  // A head the session goes on with has one unambiguous framing: at most one
  // Content-Length of digits only, at most one Transfer-Encoding and it is "chunked".
  if (const auto refused = server::framing_error(req)) {
    FUZZ_CHECK(refused->status == 400u && refused->code == "bad_request");
    FUZZ_CHECK(same_as_session(*refused));
    return;
  }
  size_t lengths = 0, encodings = 0;
  for (const auto& f : req) {
    if (f.name() == http::field::content_length) {
      ++lengths;
      FUZZ_CHECK(!f.value().empty() && f.value().find_first_not_of("0123456789") == std::string_view::npos);
    }
    if (f.name() == http::field::transfer_encoding) {
      ++encodings;
      FUZZ_CHECK(boost::beast::iequals(f.value(), "chunked") && req.version() >= 11);
    }
  }
  FUZZ_CHECK(lengths <= 1 && encodings <= 1);

  // Host (RFC 9112 §3.2): a head the session goes on with has at most one Host, one in
  // HTTP/1.1, and it has no character that would make it a URL or a list.
  if (const auto refused = server::host_error(req)) {
    FUZZ_CHECK(refused->status == 400u && refused->code == "bad_request");
    FUZZ_CHECK(same_as_session(*refused));
    return;
  }
  FUZZ_CHECK(!refusal);
  size_t hosts = 0;
  for (const auto& f : req) {
    if (f.name() != http::field::host) continue;
    ++hosts;
    FUZZ_CHECK(f.value().find_first_of("/?#@, \t") == std::string_view::npos);
  }
  FUZZ_CHECK(hosts == 1 || (hosts == 0 && req.version() < 11));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t l = tresor::fuzz::take_byte(in);
  const uint64_t max_header_bytes = l == 0 ? 16384 : 64 + 32 * static_cast<uint64_t>(l);
  const auto plan = tresor::fuzz::take_split_plan(in);

  server::HeadParser parser;
  server::limit_head_parser(parser, max_header_bytes);
  // As async_read_header does: bytes accumulate in a buffer; the parser consumes what it
  // can and asks for more (need_more) until the head is complete or fails.
  std::string buffer;
  for (const auto piece : tresor::fuzz::split_cyclic(in, plan)) {
    buffer.append(piece);
    boost::system::error_code ec;
    while (!buffer.empty() && !parser.is_header_done()) {
      const size_t used = parser.put(boost::asio::buffer(buffer.data(), buffer.size()), ec);
      buffer.erase(0, used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) {
        const auto e = server::head_error(ec, max_header_bytes);
        FUZZ_CHECK(e.status == (ec == http::error::header_limit ? 431u : 400u));
        FUZZ_CHECK(!e.code.empty() && !e.message.empty());
        return 0;
      }
      if (used == 0) break;
    }
    if (parser.is_header_done()) {
      check_head(parser, max_header_bytes);
      return 0;
    }
  }
  return 0;
}
