// UpstreamClient against a scripted upstream on a real loopback socket (one io_context,
// no threads): interim 1xx answers, when a connection may go back to the pool, and the
// stale pooled connection retry. Connection reuse is observed as the upstream's accept
// count and the connection each request arrived on.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <optional>
#include <string>
#include <vector>

#include "providers/upstream_client.h"
#include "tests/fuzz/scripted_upstream.h"

namespace {

namespace asio = boost::asio;
using tresor::providers::Clock;
using tresor::providers::TransportError;
using tresor::providers::UpstreamClient;
using tresor::testing::ScriptedReply;
using tresor::testing::ScriptedUpstream;

struct Outcome {
  TransportError error = TransportError::none;  // of send(), else of reading the body
  int status = 0;
  std::string body;
  bool body_done = false;
};

// A request body pulled piece by piece, as the transcription upload is.
class StringSource : public tresor::providers::BodySource {
 public:
  explicit StringSource(std::string bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  void rewind() override { at_ = 0; }
  asio::awaitable<size_t> read(char* buf, size_t n) override {
    const size_t k = std::min({n, bytes_.size() - at_, size_t{3}});  // small pieces on purpose
    std::copy_n(bytes_.data() + at_, k, buf);
    at_ += k;
    co_return k;
  }

 private:
  std::string bytes_;
  size_t at_ = 0;
};

// How a step uses its response: read it all, read one piece and drop it, or not read it.
enum class Use { read_all, one_piece_then_drop };

struct Step {
  std::string body = "{\"n\":1}";
  Use use = Use::read_all;
  bool streamed = false;
};

class Fixture {
 public:
  Fixture() : upstream(ioc) {
    tresor::config::ProviderConfig p;
    p.name = "scripted";
    p.base_url = upstream.base_url();
    p.max_connections = 4;
    provider = p;
    tresor::config::Config cfg;
    cfg.providers.emplace(p.name, p);
    providers = std::make_shared<const tresor::providers::ProviderSet>(cfg);
  }

  // Runs the steps one after the other (each response released before the next send).
  std::vector<Outcome> run(std::vector<Step> steps) {
    upstream.start();
    std::vector<Outcome> out;
    UpstreamClient client(ioc, 1);
    asio::co_spawn(ioc, drive(client, steps, out), [&](std::exception_ptr e) {
      upstream.stop();
      if (e) std::rethrow_exception(e);
    });
    ioc.run();
    return out;
  }

  asio::io_context ioc;
  ScriptedUpstream upstream;
  tresor::config::ProviderConfig provider;
  std::shared_ptr<const tresor::providers::ProviderSet> providers;

 private:
  asio::awaitable<void> drive(UpstreamClient& client, std::vector<Step> steps, std::vector<Outcome>& out) {
    for (const auto& step : steps) {
      const auto deadline = tresor::common::Deadline::after(std::chrono::seconds(5));
      tresor::providers::UpstreamRequest request;
      request.path = "/chat/completions";
      request.content_type = "application/json";
      StringSource source(step.body);
      if (step.streamed) request.streamed_body = &source;
      else request.body = step.body;
      auto result = co_await client.send(providers, provider, std::move(request), deadline,
                                         std::chrono::milliseconds(2000));
      Outcome o;
      o.error = result.error;
      if (result.response) {
        o.status = result.response->status();
        if (step.use == Use::read_all) {
          o.body = co_await result.response->read_all(1 << 20, deadline, o.error);
        } else {
          o.body = co_await result.response->read_some(deadline, o.error);
        }
        o.body_done = result.response->body_done();
      }
      out.push_back(o);
    }
  }
};

std::string ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

const std::string kInterim =
    "HTTP/1.1 100 Continue\r\n\r\n"
    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";

}  // namespace

TEST_CASE("100 and 103 before a 200 JSON answer: the 200 is the answer, the next request gets its own",
          "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{kInterim + ok("{\"first\":true}")}, {ok("{\"second\":true}")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].error == TransportError::none);
  CHECK(out[0].status == 200);
  CHECK(out[0].body == "{\"first\":true}");
  CHECK(out[1].status == 200);
  CHECK(out[1].body == "{\"second\":true}");
  CHECK(f.upstream.accepts == 1);  // a clean keep-alive message: the connection was reused
}

TEST_CASE("103 before a chunked 200, delivered in small pieces: the next request gets its own answer",
          "[upstream_client]") {
  Fixture f;
  ScriptedReply first{kInterim +
                      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "d\r\ndata: first\n\n\r\n0\r\n\r\n",
                      {7, 1, 13}};
  f.upstream.replies = {first, {ok("second")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].error == TransportError::none);
  CHECK(out[0].status == 200);
  CHECK(out[0].body == "data: first\n\n");
  CHECK(out[1].status == 200);
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 1);
}

TEST_CASE("101 Switching Protocols is a protocol error and its connection is not reused", "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"},
                        {ok("second")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].error == TransportError::protocol);
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 2);
}

TEST_CASE("more interim answers than allowed is a protocol error", "[upstream_client]") {
  Fixture f;
  std::string many;
  for (int i = 0; i < 40; ++i) many += "HTTP/1.1 103 Early Hints\r\n\r\n";
  f.upstream.replies = {{many + ok("late")}};
  const auto out = f.run({Step{}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].error == TransportError::protocol);
}

TEST_CASE("bytes after the Content-Length body: the connection is closed, not read by the next request",
          "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{ok("first") + ok("smuggled")}, {ok("second")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].body == "first");
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 2);
  CHECK(f.upstream.request_connection == std::vector<int>{1, 2});
}

TEST_CASE("a close-delimited answer (no length, not chunked) is read to EOF and not reused", "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"eof\":1}", {}, true},
                        {ok("second")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].error == TransportError::none);
  CHECK(out[0].body == "{\"eof\":1}");
  CHECK(out[0].body_done);
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 2);
}

TEST_CASE("an answer abandoned mid-body closes its connection", "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"}, {ok("second")}};
  Step abandon;
  abandon.use = Use::one_piece_then_drop;
  const auto out = f.run({abandon, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].body == "partial");
  CHECK_FALSE(out[0].body_done);
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 2);
}

TEST_CASE("Connection: close is honoured even when the upstream keeps the socket open", "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst"}, {ok("second")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[0].body == "first");
  CHECK(out[1].body == "second");
  CHECK(f.upstream.accepts == 2);
}

TEST_CASE("a pooled connection the upstream closes without a byte is retried once, transparently",
          "[upstream_client]") {
  Fixture f;
  const bool streamed = GENERATE(false, true);
  // Request 2 reaches the old connection, which closes without answering; the client
  // re-sends it on a new connection (request 3 to the upstream) and gets that answer.
  f.upstream.replies = {{ok("first")}, {"", {}, true}, {ok("retried")}};
  Step second;
  second.body = "{\"the\":\"second request body\"}";
  second.streamed = streamed;
  const auto out = f.run({Step{}, second});
  REQUIRE(out.size() == 2);
  CHECK(out[1].error == TransportError::none);
  CHECK(out[1].status == 200);
  CHECK(out[1].body == "retried");
  CHECK(f.upstream.accepts == 2);
  REQUIRE(f.upstream.request_bodies.size() == 3);
  CHECK(f.upstream.request_connection == std::vector<int>{1, 1, 2});
  CHECK(f.upstream.request_bodies[1] == second.body);  // re-sent identically
  CHECK(f.upstream.request_bodies[2] == second.body);
}

TEST_CASE("a new connection closed before the response head is a reset, not retried", "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{"", {}, true}, {ok("never")}};
  const auto out = f.run({Step{}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].error == TransportError::reset);
  CHECK(f.upstream.accepts == 1);
  CHECK(f.upstream.request_bodies.size() == 1);
}

TEST_CASE("a pooled connection that sends part of a head and closes is a reset, not retried",
          "[upstream_client]") {
  Fixture f;
  f.upstream.replies = {{ok("first")}, {"HTTP/1.1 200 O", {}, true}, {ok("never")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[1].error == TransportError::reset);
  CHECK(f.upstream.request_bodies.size() == 2);
}

TEST_CASE("a pooled connection reset (RST) before any byte is a reset attempt, not re-sent", "[upstream_client]") {
  Fixture f;
  ScriptedReply reset("");
  reset.reset_after = true;
  f.upstream.replies = {{ok("first")}, reset, {ok("never")}};
  const auto out = f.run({Step{}, Step{}});
  REQUIRE(out.size() == 2);
  CHECK(out[1].error == TransportError::reset);
  CHECK(f.upstream.request_bodies.size() == 2);  // an upstream that resets requests sees each attempt once
}
