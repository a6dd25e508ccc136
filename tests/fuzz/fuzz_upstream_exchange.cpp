// The upstream HTTP client (providers/upstream_client) against an upstream that answers
// two requests in a row with bytes the fuzzer chooses, over a real loopback socket
// (tests/fuzz/scripted_upstream.h), on one io_context, no threads.
// Input: a split plan for response 1, a split plan for response 2 (fuzz_input.h: the
// write sizes), three bytes for the split point (big-endian, modulo the rest's size + 1),
// then the rest: response 1's bytes up to the split point, response 2's after it.
// The upstream writes response 1 after request 1 and keeps the connection open when a
// final message in response 1 ended (an independent parse, the oracle below, says so),
// else it shuts down its sending side; any bytes after the final message go out with its
// last byte (as from an upstream that sent them together). Response 2 is written (then the sending side shut down) only after
// request 2 arrived, on whichever connection, and again for a third request.
// Properties:
// - a status handed back is the final status of the bytes that upstream connection sent
//   (never a 1xx), and a body read to its end is exactly that message's body: nothing
//   truncated reported complete, no byte of response 1 in what request 2 reads;
// - request 2 goes on response 1's connection only after response 1 was read to the end
//   of a complete, length-framed keep-alive message with nothing after it;
// - a request is re-sent (a third request upstream) only when the reused connection
//   closed without sending a byte, and then it is (unless the deadline passed).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "providers/upstream_client.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/scripted_upstream.h"

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tresor::providers::Clock;
using tresor::providers::TransportError;
using tresor::providers::UpstreamClient;

// What the bytes of one connection mean, by Beast's parser fed everything at once,
// interim (1xx) heads skipped, followed by EOF when `eof_after`.
struct Oracle {
  bool final = false;     // a final head (status 200..999) was parsed
  int status = 0;
  bool complete = false;  // its message ended
  std::string body;
  bool reusable = false;  // complete, not close-delimited, keep-alive, nothing after it
  size_t message_end = std::string::npos;
};

Oracle oracle(std::string_view bytes, bool eof_after) {
  Oracle o;
  size_t off = 0;
  for (;;) {
    http::response_parser<http::string_body> p;
    p.eager(true);
    // The client's limit per head (a head over it is never accepted there), and Beast's
    // own field size limit (it throws above 64 KiB) is then never met.
    p.header_limit(64 * 1024);
    p.body_limit(boost::none);
    boost::system::error_code ec;
    size_t used = 0;
    while (!p.is_done() && off + used < bytes.size()) {
      const size_t n = p.put(asio::buffer(bytes.data() + off + used, bytes.size() - off - used), ec);
      used += n;
      if (ec == http::error::need_more) {
        ec = {};
        if (n == 0) break;
        continue;
      }
      if (ec) break;  // malformed: no message, or a head and a broken body
    }
    const bool malformed = ec && ec != http::error::need_more;
    if (!p.is_header_done()) return o;
    const int status = p.get().result_int();
    if (status >= 100 && status < 200 && status != 101) {
      off += used;  // an interim head: the next one follows
      continue;
    }
    if (status < 200) return o;  // 101 or below 100: no final answer
    o.final = true;
    o.status = status;
    if (malformed) return o;  // the head counts, the message never ends
    bool by_eof = false;
    if (!p.is_done() && eof_after) {
      p.put_eof(ec);
      if (ec) return o;  // cut
      by_eof = true;
    }
    if (!p.is_done()) return o;
    o.complete = true;
    o.body = p.get().body();
    o.message_end = off + used;
    o.reusable = !by_eof && p.keep_alive() && off + used == bytes.size();
    return o;
  }
}

struct ClientSide {
  bool got_response = false;
  int status = 0;
  TransportError error = TransportError::none;
  bool read_ok = false;
  bool body_done = false;
  std::string body;
};

asio::awaitable<void> two_requests(UpstreamClient& client, std::shared_ptr<const tresor::providers::ProviderSet> set,
                                   const tresor::config::ProviderConfig& provider, ClientSide (&out)[2]) {
  for (auto& side : out) {
    const auto deadline = tresor::common::Deadline::after(std::chrono::milliseconds(150));
    tresor::providers::UpstreamRequest request;
    request.path = "/chat/completions";
    request.content_type = "application/json";
    request.body = "{}";
    auto result = co_await client.send(set, provider, std::move(request), deadline, std::chrono::milliseconds(150));
    side.error = result.error;
    if (!result.response) continue;
    side.got_response = true;
    side.status = result.response->status();
    side.body = co_await result.response->read_all(1 << 20, deadline, side.error);
    side.read_ok = side.error == TransportError::none;
    side.body_done = result.response->body_done();
  }
}

void check_side(const ClientSide& side, const Oracle& o) {
  if (side.got_response) {
    FUZZ_CHECK(o.final);
    FUZZ_CHECK(side.status == o.status);
  }
  if (side.read_ok) {
    FUZZ_CHECK(o.complete);
    FUZZ_CHECK(side.body == o.body);
  }
  if (side.body_done) FUZZ_CHECK(o.complete);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto plan1 = tresor::fuzz::take_split_plan(in);
  const auto plan2 = tresor::fuzz::take_split_plan(in);
  size_t split = size_t{tresor::fuzz::take_byte(in)} << 16;
  split |= size_t{tresor::fuzz::take_byte(in)} << 8;
  split |= tresor::fuzz::take_byte(in);
  split %= in.size() + 1;
  const std::string first(in.substr(0, split));
  const std::string second(in.substr(split));

  // The upstream keeps response 1's connection open when a final message in it ended
  // (whatever follows it, whatever its Connection header says: the client must decide),
  // and closes it otherwise (so that a cut or close-delimited answer ends at once).
  const Oracle o1_open = oracle(first, false);
  const bool keep_open = o1_open.complete;
  const Oracle o1 = keep_open ? o1_open : oracle(first, true);
  const Oracle o2 = oracle(second, true);

  asio::io_context ioc;
  tresor::testing::ScriptedUpstream upstream(ioc);
  tresor::testing::ScriptedReply r1{first, plan1, !keep_open};
  if (o1.complete) r1.rest_with_piece_at = o1.message_end;
  const tresor::testing::ScriptedReply r2{second, plan2, true};
  upstream.replies = {r1, r2, r2};

  tresor::config::ProviderConfig provider;
  provider.name = "fuzz";
  provider.base_url = upstream.base_url();
  provider.max_connections = 1;
  tresor::config::Config cfg;
  cfg.providers.emplace(provider.name, provider);
  const auto set = std::make_shared<const tresor::providers::ProviderSet>(cfg);

  ClientSide out[2];
  {
    UpstreamClient client(ioc, 1);
    upstream.start();
    asio::co_spawn(ioc, two_requests(client, set, provider, out), [&](std::exception_ptr e) {
      upstream.stop();
      if (e) std::rethrow_exception(e);
    });
    ioc.run();
  }

  check_side(out[0], o1);
  check_side(out[1], o2);
  const auto& conns = upstream.request_connection;
  FUZZ_CHECK(conns.size() <= 3);
  if (conns.size() >= 2 && conns[1] == 1) {  // request 2 went on response 1's connection
    FUZZ_CHECK(o1.reusable);
    FUZZ_CHECK(out[0].read_ok && out[0].body_done);
  }
  if (conns.size() == 3) FUZZ_CHECK(conns[1] == 1 && second.empty());  // only a stale connection is retried
  // ... and it is: a reused connection closed without a byte is no failed attempt.
  if (conns.size() == 2 && conns[1] == 1 && second.empty()) FUZZ_CHECK(out[1].error == TransportError::timeout);
  return 0;
}
