// Shape borrowed from Boost.Beast's advanced_server example: one object per connection
// owning its stream and buffer; each phase handles its errors before the next starts.
#include "server/session.h"

#include "server/log_endpoint.h"
#include "server/status_page.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "server/api_error.h"
#include "server/body_pace.h"
#include "server/chat_endpoint.h"
#include "server/chat_request.h"
#include "server/http_types.h"
#include "server/receipt_issuer.h"
#include "server/metrics.h"
#include "server/models_endpoint.h"
#include "server/request_head.h"
#include "server/request_record.h"
#include "common/http_wire.h"
#include "server/access_log.h"
#include "server/log_throttle.h"
#include "server/transcription_endpoint.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <type_traits>

namespace tresor::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

// A client that stops reading our answer for this long is dropped.
constexpr auto kWriteTimeout = std::chrono::seconds(60);
// After an error answered without reading the request body, we keep discarding what the
// client still sends for at most this long before closing (nginx's "lingering close"):
// closing a socket with unread input makes the kernel send RST, and the client could
// lose our error response.
constexpr auto kLingerTime = std::chrono::seconds(2);
// One read of an upload body: the only part of a file upload the session holds.
constexpr size_t kUploadReadBytes = 64 * 1024;
constexpr size_t kIdleReadBufferBytes = 16 * 1024;
constexpr auto kPeerProbeAfter = std::chrono::milliseconds(50);

constexpr std::string_view kChatPath = "/v1/chat/completions";
constexpr std::string_view kReceiptsPrefix = "/v1/receipts/";
constexpr std::string_view kModelPrefix = "/v1/models/";

enum class Endpoint { health, ready, metrics, models, model, attestation, chat, transcription, receipt, jwks, usage,
                      log, log_cosignature, status, status_data, unknown };

struct RouteMatch {
  Endpoint endpoint = Endpoint::unknown;
  bool method_allowed = false;
  const char* allow = "";
  // The endpoint as a bounded label for metrics and logs (ids and unknown paths folded).
  std::string_view label = "other";
};


RouteMatch match(http::verb method, std::string_view target) {
  const auto path = target.substr(0, target.find('?'));
  const bool get = method == http::verb::get || method == http::verb::head;
  const bool post = method == http::verb::post;
  // Fixed paths: the path itself is the label.
  static constexpr std::pair<std::string_view, Endpoint> kFixed[] = {
      {"/healthz", Endpoint::health},         {"/readyz", Endpoint::ready},
      {"/metrics", Endpoint::metrics},        {"/v1/models", Endpoint::models},
      {"/attestation", Endpoint::attestation}, {"/v1/usage", Endpoint::usage},
      // The old docs served the JWKS at /v1/verify/jwks.json: kept as an alias.
      {"/.well-known/jwks.json", Endpoint::jwks}, {"/v1/verify/jwks.json", Endpoint::jwks},
      {kChatPath, Endpoint::chat},            {kTranscriptionsPath, Endpoint::transcription},
      {kStatusPath, Endpoint::status},        {kStatusDataPath, Endpoint::status_data}};
  for (const auto& [fixed, endpoint] : kFixed) {
    if (path != fixed) continue;
    const bool inference = endpoint == Endpoint::chat || endpoint == Endpoint::transcription;
    return {endpoint, inference ? post : get, inference ? "POST" : "GET, HEAD", fixed};
  }
  if (path.rfind(kReceiptsPrefix, 0) == 0 && path.size() > kReceiptsPrefix.size())
    return {Endpoint::receipt, get, "GET, HEAD", "/v1/receipts/{id}"};
  if (path == kCosignaturePath) return {Endpoint::log_cosignature, post, "POST", kCosignaturePath};
  // Tile paths are unbounded: one label for the whole log surface.
  if (path.rfind(kLogPrefix, 0) == 0) return {Endpoint::log, get, "GET, HEAD", "/v1/log/{path}"};
  if (path.rfind(kModelPrefix, 0) == 0 && path.size() > kModelPrefix.size())
    return {Endpoint::model, get, "GET, HEAD", "/v1/models/{id}"};
  return {};
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Error values are built here, outside the coroutines: g++ 12 miscompiles braced
// temporaries inside coroutines (double destruction), so coroutine bodies only use
// named values.
ApiError body_too_large(uint64_t limit) {
  return ApiError{413, "invalid_request_error", "request_too_large",
                  "Request body exceeds " + std::to_string(limit) + " bytes", std::nullopt};
}

ApiError not_multipart() {
  return invalid_request("invalid_multipart",
                         "Content-Type must be multipart/form-data with a boundary parameter");
}

UploadLimits upload_limits(const config::ServerConfig& cfg) {
  UploadLimits l;
  l.max_bytes = cfg.max_body_bytes;
  l.memory_bytes = cfg.upload_memory_bytes;
  // $TMPDIR (or /tmp) is looked up once: temp_directory_path() stats it on every call.
  static const std::filesystem::path default_dir = [] {
    std::error_code ec;
    auto dir = std::filesystem::temp_directory_path(ec);
    return dir.empty() ? std::filesystem::path("/tmp") : dir;
  }();
  l.spool_dir = cfg.upload_spool_dir.empty() ? default_dir : std::filesystem::path(cfg.upload_spool_dir);
  return l;
}

// Built outside the coroutine (g++ 12 and captures in coroutines, see above).
std::function<void()> feed_job(TranscriptionUpload& upload, std::string_view bytes, std::optional<ApiError>& err) {
  return [&upload, bytes, &err] { err = upload.feed(bytes); };
}

SpoolCounts spool_counts(const SpoolBudget& budget) {
  SpoolCounts c;
  c.bytes_in_use = budget.in_use();
  c.refusals = budget.refusals();
  return c;
}

Response usage_response(const std::optional<std::string>& json) {
  if (!json) {
    Response r = error_response(ApiError{503, "service_unavailable", "ledger_unavailable",
                                         "The spend ledger is unavailable; retry shortly", std::nullopt});
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  Response r;
  r.body = *json;
  return r;
}

ApiError unauthorized(AuthStatus status) {
  const bool missing = status == AuthStatus::missing;
  return ApiError{401, "authentication_error", missing ? "missing_api_key" : "invalid_api_key",
                  missing ? "Missing API key: send Authorization: Bearer tr-…" : "Invalid API key", std::nullopt};
}

ApiError duplicate_authorization() {
  return invalid_request("duplicate_authorization", "Send exactly one Authorization header",
                         std::string("Authorization"));
}

Response jwks_response(const std::string& jwks) {
  Response r;
  r.body = jwks;
  r.headers.emplace_back("Cache-Control", "public, max-age=300");
  return r;
}

ApiError receipt_not_found() {
  return ApiError{404, "invalid_request_error", "receipt_not_found", "Receipt not found", std::nullopt};
}

// {"id":…,"receipt":"<JWS>"}: tresor-verify reads this shape from stdin. The log's fields
// (log_index, checkpoint, inclusion_proof) come after, for verifiers that know them.
Response receipt_response(const std::string& id, const std::string& jws, std::optional<uint64_t> log_index,
                          const receipts::TransparencyLog* log) {
  boost::json::object o;
  o["id"] = id;
  o["receipt"] = jws;
  if (log_index && log) add_log_fields(o, *log_index, *log);
  Response r;
  r.body = boost::json::serialize(o);
  return r;
}

// 503 + Retry-After when the store could not tell: the receipt may exist (a 404 would
// tell the client it does not).
Response receipt_answer(const std::string& id, const receipts::FetchResult& fetched,
                        const receipts::TransparencyLog* log) {
  if (fetched.jws) return receipt_response(id, *fetched.jws, fetched.log_index, log);
  if (!fetched.store_unavailable) return error_response(receipt_not_found());
  Response r = error_response(ApiError{503, "service_unavailable", "receipt_store_unavailable",
                                       "The receipt store is unavailable; retry shortly", std::nullopt});
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

Response health_response() {
  Response r;
  r.body = R"({"status":"ok"})";
  return r;
}

Response metrics_response(std::string text) {
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = std::move(text);
  return r;
}

int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Ready unless draining, or the store is unreachable and nothing could be served under
// the outage policy. A shared store's outage hits every replica at once: marking them
// all unready would turn "served without limits" (or a clean 503 store_unavailable)
// into connection refused everywhere, so with any function open the replica stays ready
// and says "degraded". A local store (SQLite) that fails is this replica's own problem.
Response ready_response(bool draining, bool store_reachable, bool shared_store, const config::StoreOutagePolicy& policy) {
  Response r;
  const bool all_closed = policy.rate_limits == config::OutageMode::closed &&
                          policy.credits == config::OutageMode::closed &&
                          policy.receipts == config::OutageMode::closed;
  const bool unready = draining || (!store_reachable && (!shared_store || all_closed));
  r.status = unready ? 503 : 200;
  if (draining) r.body = R"({"status":"draining"})";
  else if (store_reachable) r.body = R"({"status":"ok"})";
  else if (unready) r.body = R"({"status":"store_unreachable","store":"unreachable"})";
  else r.body = R"({"status":"degraded","store":"unreachable"})";
  return r;
}

// Stream is beast::tcp_stream (HTTP) or beast::ssl_stream<beast::tcp_stream> (HTTPS, with
// server.tls), as in Beast's advanced_server_flex example.
template <typename Stream>
class Session final : public ResponseSink, public SessionControl {
 public:
  Session(Stream stream, SessionServices services)
      : stream_(std::move(stream)), services_(services), runtime_(services.runtime) {
    services_.registry.insert(this);
    services_.lifecycle.open_sessions.fetch_add(1);
  }
  ~Session() {
    services_.registry.erase(this);
    services_.lifecycle.open_sessions.fetch_sub(1);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void drain() override {
    if (!idle_) return;  // busy: send() answers with Connection: close
    error_code ec;
    lowest().socket().cancel(ec);  // the pending head read ends with operation_aborted
    idle_ = false;  // closing now: not a candidate for make_room() any more
  }

  std::optional<providers::Clock::time_point> idle_since() const override {
    if (!idle_) return std::nullopt;
    return idle_since_;
  }

  asio::awaitable<void> run() {
    error_code ec;
    lowest().socket().set_option(tcp::no_delay(true), ec);
    services_.metrics.connection_opened();
    if (co_await open_tls()) {
      while (co_await serve_one()) {
      }
    }
    services_.metrics.connection_closed();
    if (linger_) co_await lingering_close();
    co_await close_tls();
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  // ResponseSink ------------------------------------------------------------------
  void commit() override { answer_started_ = true; }
  // A half-close counts: mid-answer, no HTTP client sends its FIN and still waits.
  bool client_left() override { return client_gone_ || peer_state() != PeerState::present; }

  asio::awaitable<void> send(Response response) override {
    answer_started_ = true;
    // Probed only once the request has taken a while: a client that gives up does so on
    // a slow answer, and the probe is a syscall that every fast answer would pay (it was
    // one of six per proxied request). A client gone after a quicker answer is noticed
    // by the write, or not at all, as in nginx.
    const PeerState before = providers::Clock::now() - record_.started >= kPeerProbeAfter ? peer_state()
                                                                                        : PeerState::present;
    if (before == PeerState::reset) {
      // The client reset its connection while we worked on its answer (e.g. a long
      // upstream wait): nobody is left to read it.
      client_gone_ = true;
      responded_ = true;
      record_.status = 499;
      co_return;
    }
    http::response<http::string_body> res{static_cast<http::status>(response.status), version_};
    if (response.status == 405) res.set(http::field::allow, allow_);
    stamp(res, response.content_type, response.headers);
    // The router's own time up to this answer (total minus waiting on upstreams).
    res.set("X-Tresor-Overhead-Us",
            std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                               record_.overhead(providers::Clock::now())).count()));
    record_.status = response.status;
    record_.bytes_out += response.body.size();
    res.keep_alive(keep_alive_);
    if (!head_only_) res.body() = std::move(response.body);
    res.prepare_payload();
    if (head_only_) res.content_length(response.body.size());
    lowest().expires_after(kWriteTimeout);
    error_code ec;
    const std::string wire = common::wire_bytes(res, head_only_);
    co_await asio::async_write(stream_, asio::buffer(wire), asio::redirect_error(asio::use_awaitable, ec));
    // A client that had sent EOF may have half-closed (it still reads: it gets the
    // answer) or closed for good: then its kernel answers our bytes with a reset, which
    // a second look sees (at once on loopback; over a network the reset may come after
    // it, and that client is then logged as answered).
    if (ec || (before == PeerState::half_closed && peer_state() == PeerState::reset)) {
      client_gone_ = true;
      record_.status = 499;  // the client left before it got the answer (nginx's 499)
    }
    responded_ = true;
  }

  asio::awaitable<bool> begin_stream(HeaderList headers) override {
    answer_started_ = true;
    http::response<http::empty_body> res{http::status::ok, version_};
    stamp(res, "text/event-stream", headers);
    record_.status = 200;
    if (!streaming_) {
      streaming_ = true;
      services_.metrics.stream_started();
      if (services_.status) services_.status->stream_started();
    }
    // HTTP/1.0 has no chunked encoding: the stream then ends with the connection.
    chunked_ = version_ >= 11;
    if (chunked_) res.chunked(true);
    else keep_alive_ = false;
    res.keep_alive(keep_alive_);
    lowest().expires_after(kWriteTimeout);
    http::response_serializer<http::empty_body> sr{res};
    error_code ec;
    co_await http::async_write_header(stream_, sr, asio::redirect_error(asio::use_awaitable, ec));
    responded_ = true;
    if (ec) client_gone_ = true;
    co_return !ec;
  }

  asio::awaitable<bool> write_stream(std::string_view bytes) override {
    if (client_gone_) co_return false;
    record_.bytes_out += bytes.size();
    lowest().expires_after(kWriteTimeout);
    error_code ec;
    if (chunked_) {
      co_await asio::async_write(stream_, http::make_chunk(asio::buffer(bytes.data(), bytes.size())),
                                 asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(stream_, asio::buffer(bytes.data(), bytes.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) client_gone_ = true;
    co_return !ec;
  }

  asio::awaitable<void> end_stream() override {
    if (client_gone_ || !chunked_) co_return;
    lowest().expires_after(kWriteTimeout);
    error_code ec;
    co_await asio::async_write(stream_, http::make_chunk_last(), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) client_gone_ = true;
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  // What every answer head carries: who we are, its type and headers, this request's
  // rate-limit headers and id; while draining, no keep-alive.
  template <typename Fields>
  void stamp(Fields& res, std::string_view content_type, const HeaderList& headers) {
    res.set(http::field::server, "tresor-router");
    res.set(http::field::content_type, content_type);
    for (const auto& [name, value] : headers) res.set(name, value);
    for (const auto& [name, value] : grant_.headers()) res.set(name, value);
    if (!record_.request_id.empty()) res.set("X-Request-Id", record_.request_id);
    if (record_.trace) res.set("X-Tresor-Trace-Id", telemetry::hex(record_.trace->trace_id));
    if (services_.lifecycle.draining) keep_alive_ = false;
  }

  // What the client's socket tells, nothing consumed. EOF is not "gone": a client may
  // half-close (shutdown(SHUT_WR)) once its request is sent, which HTTP/1.1 allows, and
  // still read the answer. Only a reset (or a failed write) means gone. After EOF the
  // kernel's recv() reports EOF even once a reset came, so the TCP state says that.
  enum class PeerState { present, half_closed, reset };
  PeerState peer_state() {
    const int fd = lowest().socket().native_handle();
    tcp_info info{};
    socklen_t info_size = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_size) == 0 && info.tcpi_state == TCP_CLOSE)
      return PeerState::reset;
    char byte;
    const auto n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return PeerState::half_closed;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return PeerState::reset;
    return PeerState::present;  // pipelined bytes, or nothing yet
  }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  // What a reset watch shares with its completion handler, which may run after the
  // request (even the session) is over: it acts only while `armed`.
  struct ResetWatch {
    asio::cancellation_signal cancel;
    bool armed = true;
  };

  // Watches the client while an inference handler runs: a client that resets its
  // connection before its answer began ends the handler at once — the upstream attempt
  // in flight is cancelled (terminal cancellation reaches the operation it awaits, and
  // its connection is closed), no retry or other route is tried, and the grant is
  // released (nothing delivered, nothing charged, no receipt). epoll reports a reset
  // (EPOLLERR/EPOLLHUP) to a wait_error; a half-close (FIN) is not reported to it, and
  // such a client still gets its answer. Once the answer has begun (commit()), a reset
  // shows as a failed write instead (a cut stream is billed). A plain completion handler,
  // not a coroutine: it costs one queued wait per request.
  void watch_for_reset(const std::shared_ptr<ResetWatch>& watch) {
    lowest().socket().async_wait(tcp::socket::wait_error, [this, watch](error_code ec) {
      if (ec || !watch->armed || answer_started_ || peer_state() != PeerState::reset) return;
      client_gone_ = true;
      record_.status = 499;
      spdlog::debug("the client reset its connection before its answer; cancelling the request");
      watch->cancel.emit(asio::cancellation_type::terminal);
    });
  }

  // HTTPS: the handshake, bounded like a request head (a client that never completes it
  // is a slowloris too).
  asio::awaitable<bool> open_tls() {
    if constexpr (kTls) {
      lowest().expires_after(std::chrono::seconds(runtime_.current()->config->server.header_timeout_seconds));
      error_code ec;
      co_await stream_.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        spdlog::debug("TLS handshake with a client failed: {}", ec.message());
        co_return false;
      }
    }
    co_return true;
  }

  // HTTPS: close_notify before the TCP close, briefly (the peer may be gone).
  asio::awaitable<void> close_tls() {
    if constexpr (kTls) {
      if (client_gone_) co_return;
      lowest().expires_after(std::chrono::seconds(1));
      error_code ec;
      co_await stream_.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // The key index's answer, remembered per connection: a client sends the same
  // Authorization on every request, and hashing the key (SHA-256) was ~8% of a proxied
  // request's instructions. Only a success is remembered, and only for the config
  // snapshot it came from (a reload that drops the key takes effect on the next request).
  AuthResult authenticate(const std::shared_ptr<const Runtime>& runtime, const RequestHead& head) {
    const std::string_view header = head.value("Authorization");
    // Only a success is stored, so a matching header is never the empty (absent) one; a
    // snapshot gone or replaced locks to something other than `runtime`.
    if (auth_memo_.runtime.lock() == runtime && header == auth_memo_.header)
      return AuthResult{AuthStatus::ok, auth_memo_.key};
    const auto auth = runtime->keys.authenticate(header, head.has("Authorization"));
    if (auth.status == AuthStatus::ok) {
      auth_memo_.runtime = runtime;
      auth_memo_.header.assign(header);
      auth_memo_.key = auth.key;
    }
    return auth;
  }

  void size_read_buffer(uint64_t body_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(body_bytes, kUploadReadBytes));
    if (buffer_.capacity() - buffer_.size() < want) buffer_.reserve(buffer_.size() + want);
  }

  // Serves one request, then logs it and counts it; false when the connection must close.
  asio::awaitable<bool> serve_one() {
    record_ = RequestRecord();
    const bool keep = co_await serve_request();
    end_grant();
    now_.spool.release();  // an upload refused before its body was read held it
    // An idle keep-alive connection holds no upload-sized buffer (10,000 of them must fit).
    if (buffer_.capacity() > kIdleReadBufferBytes) buffer_.shrink_to_fit();
    if (record_.started != providers::Clock::time_point{}) finish_record();
    co_return keep && !services_.lifecycle.draining;
  }

  // W3C Trace Context: the client's traceparent is continued when it is one valid header;
  // tracestate headers are one list (RFC 9110 §5.3 joins repeated fields with commas).
  template <typename Request>
  void start_trace(const Request& req) {
    size_t parents = 0;
    std::string_view parent;
    std::string state;
    for (const auto& field : req) {
      if (beast::iequals(field.name_string(), "traceparent")) {
        ++parents;
        parent = field.value();
      } else if (beast::iequals(field.name_string(), "tracestate")) {
        if (!state.empty()) state += ',';
        state += field.value();
      }
    }
    record_.trace = telemetry::start_request_trace(parent, parents, state, services_.tracer->sample_ratio());
  }

  // The request is over: a hold it did not settle (it failed, the client left) is given
  // back now, not when the next request on this connection starts.
  void end_grant() { grant_ = accounts::Grant(); }

  // The access log line and the metrics of the request that just ended.
  void finish_record() {
    const auto now = providers::Clock::now();
    if (record_.status == 0) record_.status = 499;  // nothing was answered: the client left
    services_.metrics.request_done(record_, now);
    if (services_.tracer && record_.trace) services_.tracer->request_done(record_, *now_.runtime->config, now);
    if (services_.status && now_.runtime) services_.status->request_done(record_, now, *now_.runtime->config);
    // After request_done: a scrape that sees the stream gone also sees it counted.
    if (streaming_) {
      streaming_ = false;
      services_.metrics.stream_ended();
      if (services_.status) services_.status->stream_ended();
    }
    write_access_line(access_log_json(record_, now), stream_.get_executor());
  }

  // Serves one request, phase by phase; false when the connection must close afterwards.
  // A phase that answers the request itself returns whether the connection stays open;
  // nullopt goes on to the next phase.
  asio::awaitable<bool> serve_request() {
    if (const auto end = co_await read_head()) co_return *end;
    if (const auto end = co_await route_request()) co_return *end;
    if (const auto end = co_await admit_request()) co_return *end;
    if (const auto end = co_await check_body_head()) co_return *end;
    if (now_.route.endpoint == Endpoint::transcription) co_return co_await serve_upload();
    if (const auto end = co_await read_chat_body()) co_return *end;
    co_return co_await dispatch_chat();
  }

  // Phase 1: the request head, within header_timeout (slowloris, idle keep-alive), under
  // the limits current now; the request then runs on the snapshot current when its head
  // has arrived, to the end (a keep-alive connection that sat idle through a reload must
  // see the new keys and routes).
  asio::awaitable<std::optional<bool>> read_head() {
    const auto head_runtime = runtime_.current();
    const auto& head_cfg = head_runtime->config->server;
    now_.reset();
    auto& parser = now_.head_parser.emplace();
    limit_head_parser(parser, head_cfg.max_header_bytes);  // body: checked after authentication
    responded_ = false;
    version_ = 11;
    keep_alive_ = false;
    head_only_ = false;

    lowest().expires_after(std::chrono::seconds(head_cfg.header_timeout_seconds));
    error_code ec;
    if (services_.lifecycle.closing) co_return false;
    idle_ = true;
    idle_since_ = providers::Clock::now();
    co_await http::async_read_header(stream_, buffer_, parser, asio::redirect_error(asio::use_awaitable, ec));
    idle_ = false;
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
      co_return false;
    if (ec) {
      // Oversized head, or malformed HTTP including ambiguous framing (Content-Length
      // with chunked): answer, then close.
      const ApiError e = head_error(ec, head_cfg.max_header_bytes);
      co_return co_await finish_without_body(e, true);
    }
    // Parsed, but over the whole-head limit, ambiguously framed or with a bad Host.
    if (const auto refused = head_refusal(parser.get(), head_cfg.max_header_bytes)) {
      const ApiError e = *refused;
      co_return co_await finish_without_body(e, true);
    }
    to_origin_form(parser.get());  // RFC 9112 §3.2.2: served like its origin form
    now_.started = providers::Clock::now();
    now_.runtime = runtime_.current();
    const auto& req = parser.get();
    record_.started = now_.started;
    record_.method = std::string(req.method_string());
    record_.request_id = request_id_from(req["X-Request-Id"]);
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    head_only_ = req.method() == http::verb::head;
    now_.has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
    now_.head = make_head(req);
    co_return std::nullopt;
  }

  // Phase 2: route by path and method; the public endpoints are answered here.
  asio::awaitable<std::optional<bool>> route_request() {
    const auto& req = now_.head_parser->get();
    const RouteMatch route = match(req.method(), req.target());
    now_.route = route;
    allow_ = route.allow;
    record_.endpoint = route.label;
    record_.inference = route.endpoint == Endpoint::chat || route.endpoint == Endpoint::transcription;
    if (services_.tracer && record_.inference) start_trace(req);
    if (route.endpoint == Endpoint::unknown || !route.method_allowed) {
      const ApiError e = route.endpoint == Endpoint::unknown ? not_found_path() : method_not_allowed();
      co_return co_await finish_without_body(e, now_.has_body);
    }
    if (route.endpoint == Endpoint::health || route.endpoint == Endpoint::ready || route.endpoint == Endpoint::jwks ||
        route.endpoint == Endpoint::metrics || route.endpoint == Endpoint::models ||
        route.endpoint == Endpoint::model || route.endpoint == Endpoint::attestation || route.endpoint == Endpoint::log) {
      Response r = public_response(route.endpoint, *now_.runtime, req.target());
      co_await send(std::move(r));
      co_return keep_alive_ && !now_.has_body && !client_gone_;
    }
    if (route.endpoint == Endpoint::status || route.endpoint == Endpoint::status_data) {
      // The admin key, not an API key (server/status_page.h).
      Response r = status_response(route.endpoint == Endpoint::status_data, now_.head, *now_.runtime->config,
                                   *services_.status, services_.health, services_.log, providers::Clock::now());
      co_await send(std::move(r));
      co_return keep_alive_ && !now_.has_body && !client_gone_;
    }
    if (route.endpoint == Endpoint::log_cosignature) {
      // No API key: the cosignature's own signature, by a configured witness, is the check.
      if (const auto end = co_await read_chat_body()) co_return *end;
      Response r = cosignature_response(
          now_.body_parser->get().body(), services_.log, now_.runtime->config->log.witnesses,
          [&receipts = services_.receipts](uint64_t size, std::string line) {
            receipts.add_cosignature(size, std::move(line));
          });
      co_await send(std::move(r));
      co_return keep_alive_ && !client_gone_;
    }
    co_return std::nullopt;
  }

  // Phase 3: the key (on the headers alone: an unauthenticated client is answered before
  // a byte of its body is read), then admission by accounts/: the key's request limits on
  // every authenticated request, the customer's credit for inference; the limit headers
  // go on whatever answer follows (spec §9.2). /v1/usage and receipts are answered here.
  asio::awaitable<std::optional<bool>> admit_request() {
    const auto& runtime = *now_.runtime;
    if (now_.head.values("Authorization").size() > 1) {
      // Two keys: which one a hop in front checked, or logs, is a guess; never "first wins".
      const ApiError e = duplicate_authorization();
      co_return co_await finish_without_body(e, now_.has_body);
    }
    const auto auth = authenticate(now_.runtime, now_.head);
    if (auth.status != AuthStatus::ok) {
      const ApiError e = unauthorized(auth.status);
      co_return co_await finish_without_body(e, now_.has_body);
    }
    record_.customer = auth.key->customer;
    // Inference: the control headers first, so that the store steps below already wait
    // no longer than the request's own budget (X-Tresor-Timeout-Seconds).
    std::chrono::seconds budget(runtime.config->timeouts.default_seconds);
    if (record_.inference) {
      auto controls = check_control_headers(runtime, now_.head, auth.key);
      if (auto* err = std::get_if<ApiError>(&controls)) co_return co_await finish_without_body(*err, now_.has_body);
      now_.controls = std::get<ControlHeaders>(controls);
      budget = now_.controls.budget;
    }
    const auto deadline = now_.started + budget;
    now_.controls.deadline = deadline;
    co_await admit(runtime, *auth.key, record_.inference, deadline);
    if (refusal_) co_return co_await finish_without_body(*refusal_, now_.has_body);
    if (record_.inference && !now_.controls.receipt_opt_out && !store_reachable() &&
        services_.outage.receipts == config::OutageMode::closed) {
      // store.outage.receipts: closed — no answer without its receipt while the store is
      // known to be down (an answer already made when storing fails is still delivered).
      const accounts::Refusal refusal = accounts::store_unavailable_refusal();
      services_.metrics.reservation_refused(refusal.kind);
      co_return co_await finish_without_body(refusal_response(refusal), now_.has_body);
    }
    if (now_.route.endpoint == Endpoint::usage) {
      const auto usage = co_await services_.accounts.usage_json(*runtime.config, auth.key->customer,
                                                                std::chrono::system_clock::now(), deadline);
      Response r = usage_response(usage);
      co_await send(std::move(r));
      co_return keep_alive_ && !now_.has_body && !client_gone_;
    }
    if (now_.route.endpoint == Endpoint::receipt) {
      co_await send_receipt(now_.head_parser->get().target(), auth.key->customer);
      co_return keep_alive_ && !now_.has_body && !client_gone_;
    }
    co_return std::nullopt;
  }

  // Phase 4a: what the head says about the body (type, size, Expect: 100-continue),
  // before any of it is read.
  asio::awaitable<std::optional<bool>> check_body_head() {
    auto& parser = *now_.head_parser;
    const auto& req = parser.get();
    const auto& server_cfg = now_.runtime->config->server;
    if (now_.route.endpoint == Endpoint::transcription) {
      now_.boundary = boundary_from_content_type(req[http::field::content_type]);
      if (!now_.boundary) {
        const ApiError e = not_multipart();
        co_return co_await finish_without_body(e, now_.has_body);
      }
    } else if (auto err = check_chat_content_type(req[http::field::content_type])) {
      co_return co_await finish_without_body(*err, now_.has_body);
    }
    if (parser.content_length().value_or(0) > server_cfg.max_body_bytes) {
      const ApiError e = too_large();
      co_return co_await finish_without_body(e, true);
    }
    if (now_.route.endpoint == Endpoint::transcription && !reserve_spool(server_cfg, parser.content_length().value_or(0))) {
      const ApiError e = spool_full();
      co_return co_await finish_without_body(e, now_.has_body);
    }
    // RFC 9110 §10.1.1: never a 100 (Continue) to an HTTP/1.0 client, which cannot read
    // interim answers (it takes the 100 for the answer); it sends its body anyway.
    if (version_ >= 11 && beast::iequals(req[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version_};
      lowest().expires_after(kWriteTimeout);
      error_code ec;
      co_await http::async_write(stream_, cont, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return false;
    }
    // Beast reads as much as the buffer's free capacity (512 bytes after a small head):
    // a 64 KiB body took 128 reads. Sized for this body here, shrunk back after it.
    size_read_buffer(parser.content_length().value_or(kUploadReadBytes));
    co_return std::nullopt;
  }

  // An upload that will spool (over upload_memory_bytes) and says its size reserves it
  // whole before a byte of it is read (and before 100 Continue): refused now, the client
  // has sent nothing it must send again. A chunked one reserves as its file is written.
  // content_length: 0 when the body is chunked (or empty).
  bool reserve_spool(const config::ServerConfig& cfg, uint64_t content_length) {
    now_.spool = SpoolReservation(services_.spool, cfg.spool_max_bytes);
    if (content_length <= cfg.upload_memory_bytes) return true;
    return now_.spool.cover(content_length);
  }

  ApiError too_large() const {
    const uint64_t limit = now_.runtime->config->server.max_body_bytes;
    return now_.route.endpoint == Endpoint::transcription ? file_too_large(limit) : body_too_large(limit);
  }

  EndpointServices endpoint_services() {
    return EndpointServices{services_.upstream, services_.health, services_.receipts,    services_.accounts,
                            grant_,             services_.file_io, record_,              services_.metrics,
                            services_.attestation,  services_.store_breaker};
  }

  // Phase 4b (chat): the JSON body, capped at max_body_bytes without buffering past the cap.
  asio::awaitable<std::optional<bool>> read_chat_body() {
    const auto& server_cfg = now_.runtime->config->server;
    auto& body_parser = now_.body_parser.emplace(std::move(*now_.head_parser));
    // Room for the JSON parser's padding from the start (parse_chat_request would
    // otherwise grow, and so copy, the body once more).
    if (const auto len = body_parser.content_length(); len && *len <= server_cfg.max_body_bytes)
      body_parser.get().body().reserve(static_cast<size_t>(*len) + simdjson::SIMDJSON_PADDING);
    body_parser.body_limit(server_cfg.max_body_bytes);
    const BodyPace pace(providers::Clock::now(), std::chrono::seconds(server_cfg.body_timeout_seconds),
                        server_cfg.min_body_bytes_per_second);
    error_code ec;
    while (!body_parser.is_done()) {
      lowest().expires_at(pace.next_read_deadline(body_parser.get().body().size(), providers::Clock::now()));
      co_await http::async_read_some(stream_, buffer_, body_parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::body_limit) {
        const ApiError e = too_large();
        co_return co_await finish_without_body(e, true);
      }
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
          ec == asio::error::connection_reset)
        co_return false;
      if (ec) {
        const ApiError e = bad_http("Malformed request body", ec);
        co_return co_await finish_without_body(e, true);
      }
    }
    record_.bytes_in = body_parser.get().body().size();
    co_return std::nullopt;
  }

  // Phase 5 (chat): the endpoint, beside the watch for a client that resets.
  asio::awaitable<bool> dispatch_chat() {
    answer_started_ = false;
    auto handler = handle_chat(*now_.runtime, endpoint_services(), now_.controls,
                               std::move(now_.body_parser->get().body()), now_.started, *this);
    co_return co_await dispatch(std::move(handler));
  }

  // Runs an inference handler until it ends or the client resets (watch_for_reset); a
  // handler that ended without answering gets a 500.
  asio::awaitable<bool> dispatch(asio::awaitable<void> handler) {
    answer_started_ = false;
    auto watch = std::make_shared<ResetWatch>();
    watch_for_reset(watch);
    const auto executor = co_await asio::this_coro::executor;
    auto [failure] = co_await asio::co_spawn(
        executor, std::move(handler), asio::bind_cancellation_slot(watch->cancel.slot(), asio::as_tuple(asio::use_awaitable)));
    watch->armed = false;
    error_code ignored;
    lowest().socket().cancel(ignored);  // ends the wait: nothing else is pending on the socket now
    // The cancellation ends the handler with operation_aborted; anything else is a fault
    // that the session's top level logs, as before.
    if (failure && !client_gone_) std::rethrow_exception(failure);
    if (!responded_) {
      Response r = error_response(internal_error());
      co_await send(std::move(r));
    }
    co_return keep_alive_ && !client_gone_;
  }

  // Phases 4b and 5 of a transcription: the multipart body streams through the upload
  // (fields kept, the file spooled, at most one read buffer of it in memory here), then
  // the endpoint runs on the spooled upload.
  asio::awaitable<bool> serve_upload() {
    const Runtime& runtime = *now_.runtime;
    const auto& server_cfg = runtime.config->server;
    const ApiError too_large = file_too_large(server_cfg.max_body_bytes);
    UploadLimits limits = upload_limits(server_cfg);
    limits.digest_body = !now_.controls.receipt_opt_out;
    TranscriptionUpload upload(*now_.boundary, limits, std::move(now_.spool));
    http::request_parser<http::buffer_body> body_parser{std::move(*now_.head_parser)};
    body_parser.body_limit(server_cfg.max_body_bytes);
    std::vector<char> piece(kUploadReadBytes);
    error_code ec;
    const BodyPace pace(providers::Clock::now(), std::chrono::seconds(server_cfg.body_timeout_seconds),
                        server_cfg.min_body_bytes_per_second);
    while (!body_parser.is_done()) {
      body_parser.get().body().data = piece.data();
      body_parser.get().body().size = piece.size();
      lowest().expires_at(pace.next_read_deadline(record_.bytes_in, providers::Clock::now()));
      co_await http::async_read_some(stream_, buffer_, body_parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec == http::error::body_limit) co_return co_await finish_without_body(too_large, true);
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
          ec == asio::error::connection_reset || ec == http::error::partial_message)
        co_return false;  // the client left mid-upload: the spool goes with `upload`
      if (ec) {
        const ApiError e = bad_http("Malformed request body", ec);
        co_return co_await finish_without_body(e, true);
      }
      const std::string_view bytes(piece.data(), piece.size() - body_parser.get().body().size);
      record_.bytes_in += bytes.size();
      std::optional<ApiError> err;
      if (upload.stays_in_memory(bytes.size())) err = upload.feed(bytes);
      else co_await services_.file_io.run(feed_job(upload, bytes, err));  // spool writes: off this thread
      if (err) co_return co_await finish_without_body(*err, !body_parser.is_done());
    }
    if (auto err = upload.finish()) co_return co_await finish_without_body(*err, false);
    // The budget (X-Tresor-Timeout-Seconds) counts from here, not from the request head: it
    // bounds the upstream's work, and a 25 MiB upload over a slow link must not use it up
    // before any route is tried (the upload itself is bounded by body_timeout_seconds and
    // min_body_bytes_per_second).
    const auto uploaded = providers::Clock::now();
    auto handler = handle_transcription(runtime, endpoint_services(), now_.controls, upload, uploaded, *this);
    co_return co_await dispatch(std::move(handler));
  }

  // The endpoints answered without authentication.
  Response public_response(Endpoint endpoint, const Runtime& runtime, beast::string_view target) {
    switch (endpoint) {
      case Endpoint::jwks: return jwks_response(services_.jwks);
      case Endpoint::log: return log_response(std::string_view(target.data(), target.size()), services_.log);
      case Endpoint::metrics:
        return metrics_response(
            services_.metrics.render(*runtime.config, services_.health, services_.receipts.counts(),
                                     spool_counts(services_.spool), services_.log) +
            (services_.tracer ? services_.tracer->metrics_text() : std::string()));
      case Endpoint::models:
      case Endpoint::model: {
        const std::string_view t(target.data(), target.size());
        const auto q = t.find('?');
        const std::string_view query = q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
        if (endpoint == Endpoint::models) return models_response(*runtime.config, query, unix_seconds(runtime.loaded_at));
        const std::string_view id = t.substr(0, q).substr(kModelPrefix.size());
        return model_response(*runtime.config, id, query, unix_seconds(runtime.loaded_at));
      }
      case Endpoint::ready:
        // A local store: answers with the last probe's result and starts the next one (never
        // waits on the store). A shared one: its breaker, which the prober thread keeps.
        if (!services_.store_breaker) services_.receipts.probe_store();
        return ready_response(services_.lifecycle.draining, store_reachable(), services_.store_breaker != nullptr,
                              services_.outage);
      case Endpoint::attestation: {
        Response r;
        r.body = services_.attestation.envelope_json();
        r.headers.emplace_back("Cache-Control", "no-store");
        return r;
      }
      default: return health_response();
    }
  }

  // GET /v1/receipts/{id}: scoped to the caller's customer; unknown, expired, malformed
  // or another customer's id are all the same 404, so existence does not leak; a store
  // that cannot answer is a 503. UUIDs are case-insensitive (RFC 9562) and stored
  // lowercase: the id is looked up, and echoed, in its canonical lowercase form (the
  // form of the receipt's `jti`).
  asio::awaitable<void> send_receipt(std::string_view target, const std::string& customer) {
    const auto path = target.substr(0, target.find('?'));
    const std::string id = ascii_lower(path.substr(kReceiptsPrefix.size()));
    receipts::FetchResult fetched;
    if (receipts::is_receipt_id(id)) fetched = co_await fetch_receipt(services_.receipts, id, customer);
    Response r = receipt_answer(id, fetched, services_.log);
    co_await send(std::move(r));
  }

  // The shared store as far as this replica knows: its breaker closed (a local store: the
  // receipt service's last probe).
  bool store_reachable() const {
    if (services_.store_breaker) return !services_.store_breaker->down();
    return services_.receipts.store_reachable();
  }

  // The admission phase: the grant (and its limit headers) for this request, or the
  // refusal to answer in refusal_.
  asio::awaitable<void> admit(const Runtime& runtime, const config::ApiKeyConfig& key, bool spends,
                              providers::Clock::time_point deadline) {
    auto admission =
        co_await services_.accounts.admit(*runtime.config, key, std::chrono::system_clock::now(), spends, deadline);
    grant_ = std::move(admission.grant);
    refusal_.reset();
    if (!admission.refusal) co_return;
    services_.metrics.reservation_refused(admission.refusal->kind);
    refusal_ = refusal_response(*admission.refusal);
  }

  // Answers an error while the request body (if any) is still unread; the connection
  // cannot be reused then, so it closes after a lingering drain.
  asio::awaitable<bool> finish_without_body(const ApiError& e, bool body_pending) {
    Response r = error_response(e);
    if (e.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
    // The spool frees up as the uploads in flight end, typically within seconds.
    if (e.code == kSpoolFullCode) r.headers.emplace_back("Retry-After", "1");
    co_return co_await finish_without_body(std::move(r), body_pending);
  }

  asio::awaitable<bool> finish_without_body(Response r, bool body_pending) {
    if (body_pending) keep_alive_ = false;
    co_await send(std::move(r));
    if (body_pending) linger_ = true;
    co_return keep_alive_ && !client_gone_;
  }

  asio::awaitable<void> lingering_close() {
    error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest().expires_after(kLingerTime);
    char scratch[16 * 1024];
    while (!ec) co_await stream_.async_read_some(asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  struct {
    std::weak_ptr<const Runtime> runtime;  // the snapshot `key` belongs to
    std::string header;
    const config::ApiKeyConfig* key = nullptr;
  } auth_memo_;
  SessionServices services_;
  RuntimeHolder& runtime_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_only_ = false;
  bool responded_ = false;
  bool client_gone_ = false;
  bool answer_started_ = false;  // send() or begin_stream() was entered for this request
  bool chunked_ = false;
  bool linger_ = false;
  const char* allow_ = "";
  // What the phases of the request being served share.
  struct Current {
    std::optional<HeadParser> head_parser;  // moved into a body parser in phase 4b
    std::optional<http::request_parser<http::string_body>> body_parser;  // chat
    std::shared_ptr<const Runtime> runtime;  // the snapshot the request runs on, to the end
    providers::Clock::time_point started{};
    RequestHead head;
    RouteMatch route;
    bool has_body = false;
    ControlHeaders controls;
    std::optional<std::string> boundary;  // transcriptions: the multipart boundary
    // Transcriptions: the upload's share of the spool budget, reserved from Content-Length
    // in phase 4a, then handed to the upload (given back when the request ends).
    SpoolReservation spool;

    // For the next request on the connection (the parsers cannot be assigned).
    void reset() {
      head_parser.reset();
      body_parser.reset();
      runtime.reset();
      started = {};
      head = RequestHead();
      route = RouteMatch();
      has_body = false;
      controls = ControlHeaders();
      boundary.reset();
      spool.release();
    }
  };
  Current now_;
  accounts::Grant grant_;       // this request's admission: limit headers, its hold
  std::optional<Response> refusal_;  // the admission's refusal (429, 402), if any
  RequestRecord record_;        // the request being served (log line, metrics)
  bool streaming_ = false;      // counted in tresor_active_streams
  bool idle_ = false;           // waiting for the next request head (drain closes it)
  providers::Clock::time_point idle_since_{};  // when idle_ last became true
};

}  // namespace

namespace {

// A refused connection gets this long to take its 503 before it is closed.
constexpr auto kRefuseTime = std::chrono::seconds(1);

std::string busy_answer() {
  const ApiError e{503, "service_unavailable", "server_busy",
                   "The server is at its connection limit; retry shortly", std::nullopt};
  const Response r = error_response(e);
  http::response<http::string_body> res{http::status::service_unavailable, 11};
  res.set(http::field::server, "tresor-router");
  res.set(http::field::content_type, r.content_type);
  res.set(http::field::retry_after, "1");
  res.keep_alive(false);
  res.body() = r.body;
  res.prepare_payload();
  return common::wire_bytes(res);
}

// The 503 is written before the request is read (it may not have arrived); the read
// side is then drained briefly, as in lingering_close(), so that closing with the
// request unread does not reset the connection before the client reads the answer.
asio::awaitable<void> refuse_busy(tcp::socket socket) {
  static const std::string answer = busy_answer();
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(kRefuseTime);
  error_code ec;
  co_await asio::async_write(stream, asio::buffer(answer), asio::redirect_error(asio::use_awaitable, ec));
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  char scratch[4096];
  while (!ec) co_await stream.async_read_some(asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
  stream.close();
}

void log_at_cap(Admission admission, size_t open, size_t max_sessions) {
  thread_local LogThrottle throttle;
  const auto left_out = throttle.allow();
  if (!left_out) return;
  spdlog::warn("connection limit: {} connections on this worker (its share of server.max_connections is {}): {}"
               " ({} more such events in the last second not logged)",
               open, max_sessions,
               admission == Admission::refused ? "every one busy, refused a new connection with 503"
                                               : "closed the connection idle longest for a new one",
               *left_out);
}

}  // namespace

Admission make_room(SessionRegistry& registry, size_t max_sessions) {
  if (max_sessions == 0 || registry.size() < max_sessions) return Admission::admitted;
  // A linear scan, only at the cap: cheaper than keeping every session in an LRU list
  // on every request.
  SessionControl* oldest = nullptr;
  providers::Clock::time_point oldest_since{};
  for (auto* s : registry) {
    const auto since = s->idle_since();
    if (since && (!oldest || *since < oldest_since)) {
      oldest = s;
      oldest_since = *since;
    }
  }
  if (!oldest) return Admission::refused;
  oldest->drain();
  return Admission::idle_closed;
}

asio::awaitable<void> run_session(tcp::socket socket, SessionServices services) {
  const Admission admission = make_room(services.registry, services.max_sessions);
  if (admission != Admission::admitted) {
    log_at_cap(admission, services.registry.size(), services.max_sessions);
    if (admission == Admission::idle_closed) {
      services.metrics.idle_connection_closed();
    } else {
      services.metrics.connection_refused();
      if (!services.tls) co_await refuse_busy(std::move(socket));
      co_return;  // HTTPS: closed without a handshake
    }
  }
  if (services.tls) {
    Session<beast::ssl_stream<beast::tcp_stream>> session(
        beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *services.tls), services);
    co_await session.run();
  } else {
    Session<beast::tcp_stream> session(beast::tcp_stream(std::move(socket)), services);
    co_await session.run();
  }
}

}  // namespace tresor::server
