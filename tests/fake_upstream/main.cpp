// tresor-fake-upstream: a small OpenAI chat-completions server with per-request fault
// injection, used by the gateway's integration tests and the demo. See README.md for the
// fault protocol. Single-threaded: all state lives on one io_context, so no locking.
#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <poll.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string tls_cert, tls_key, require_key;
  std::int64_t chunks = 5, pace_ms = 0;
  std::string content = "Hello from the fake upstream.";
};

// What a single request asked us to do wrong. Unset = behave.
struct Fault {
  std::optional<std::int64_t> status, retry_after, delay_ms, chunks, pace_ms, stall_after, cut_after,
      reset, reset_after, bad_event_after, lag_first_ms, silent, no_done, no_done_close, no_finish,
      error_event_after, usage_in_finish;
  std::optional<std::string> content, error_code;
};

// A runtime behaviour posted with "times": applies to the next `remaining` chat requests.
struct QueuedBehaviour {
  json::object spec;  // fault keys as posted, without "times"
  std::int64_t remaining;
};

// Process-wide state; reachable from every coroutine (one thread, so plain members).
struct State {
  Options opt;
  std::deque<json::object> requests;  // last 1000 chat requests, oldest first
  std::uint64_t request_count = 0, connections_accepted = 0, streams_completed = 0,
                streams_aborted = 0, active_streams = 0;  // active_streams is a live gauge: never reset
  std::uint64_t next_connection_id = 0, next_completion_id = 0;
  std::map<std::string, std::uint64_t> by_model;  // chat requests per model (without its ?suffix)
  json::object behaviour;                         // POST /_fake/behaviour without "times"
  std::deque<QueuedBehaviour> behaviour_queue;    // ... with "times", consumed front first
} g;

// What the connection loop does after a response.
enum class Next { keep, close, dead };
// How a response producer ended.
enum class Ending { complete, write_failed, cut, reset };

// ---------------------------------------------------------------- small helpers

std::optional<std::int64_t> to_int(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return static_cast<std::int64_t>(v.get_uint64());
  if (v.is_double()) return static_cast<std::int64_t>(v.get_double());
  if (v.is_bool()) return v.get_bool() ? 1 : 0;
  if (v.is_string()) {
    std::string_view s = v.get_string();
    std::int64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc() && p == s.data() + s.size()) return n;
  }
  return std::nullopt;
}

bool on(const std::optional<std::int64_t>& flag) { return flag.value_or(0) != 0; }

// The integer fault keys. first_event_delay_ms is an alias of lag_first_ms.
std::optional<std::int64_t> Fault::*int_key(std::string_view key) {
  static const std::pair<std::string_view, std::optional<std::int64_t> Fault::*> ints[] = {
      {"status", &Fault::status},
      {"retry_after", &Fault::retry_after},
      {"delay_ms", &Fault::delay_ms},
      {"chunks", &Fault::chunks},
      {"pace_ms", &Fault::pace_ms},
      {"stall_after", &Fault::stall_after},
      {"cut_after", &Fault::cut_after},
      {"reset", &Fault::reset},
      {"reset_after", &Fault::reset_after},
      {"bad_event_after", &Fault::bad_event_after},
      {"lag_first_ms", &Fault::lag_first_ms},
      {"first_event_delay_ms", &Fault::lag_first_ms},
      {"silent", &Fault::silent},
      {"no_done", &Fault::no_done},
      {"no_done_close", &Fault::no_done_close},
      {"no_finish", &Fault::no_finish},
      {"error_event_after", &Fault::error_event_after},
      {"usage_in_finish", &Fault::usage_in_finish}};
  for (auto& [name, member] : ints)
    if (key == name) return member;
  return nullptr;
}

bool string_key(std::string_view key) { return key == "content" || key == "error_code"; }

// Sets one fault key; v is a JSON value (body, runtime behaviour) or a JSON string (model
// query string). A later layer overrides an earlier one key by key; null (or, for an
// integer key, anything that is not a number) unsets the key.
void set_fault(Fault& f, std::string_view key, const json::value& v) {
  if (auto member = int_key(key)) f.*member = to_int(v);
  if (f.status && (*f.status < 200 || *f.status > 599)) f.status.reset();  // keep the reply valid HTTP
  if (string_key(key)) {
    auto& dst = key == "content" ? f.content : f.error_code;
    if (v.is_string()) dst = std::string(v.get_string());
    else if (v.is_null()) dst.reset();
    else dst = json::serialize(v);
  }
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') out += ' ';
    else if (s[i] == '%' && i + 2 < s.size()) {
      unsigned byte = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, byte, 16);
      if (ec == std::errc() && p == s.data() + i + 3) { out += static_cast<char>(byte); i += 2; }
      else out += '%';
    } else out += s[i];
  }
  return out;
}

// "status=503&delay_ms=200" -> fault keys.
void parse_fault_query(Fault& f, std::string_view q) {
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    set_fault(f, kv.substr(0, eq), json::string(percent_decode(kv.substr(eq + 1))));
  }
}

std::size_t count_words(std::string_view s) {
  std::size_t n = 0;
  bool in_word = false;
  for (char c : s) {
    bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// Prompt "tokens" = words in string message contents: deterministic, no tokenizer needed.
std::size_t prompt_tokens(const json::object& body) {
  std::size_t n = 0;
  if (auto* msgs = body.if_contains("messages"); msgs && msgs->is_array())
    for (auto& m : msgs->get_array())
      if (auto* c = m.is_object() ? m.get_object().if_contains("content") : nullptr; c && c->is_string())
        n += count_words(c->get_string());
  return n;
}

// Splits text into n roughly equal pieces without cutting a UTF-8 sequence in half
// (a cut one would make the JSON string invalid).
std::vector<std::string> split_pieces(const std::string& text, std::int64_t n) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::int64_t i = 1; i <= n; ++i) {
    std::size_t end = text.size() * i / n;
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    end = std::max(end, start);
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

std::string error_envelope(std::string_view message, std::string_view type, json::value code) {
  return json::serialize(json::object{
      {"error", json::object{{"message", message}, {"type", type}, {"code", std::move(code)}, {"param", nullptr}}}});
}

// We write HTTP/1.1 bytes ourselves instead of using Beast's serializer: the faults need
// exact control over what goes out (half bodies, missing terminators) and when.
std::string head(int status, std::string_view content_type, std::optional<std::size_t> length, bool keep_alive,
                 std::string_view extra = {}) {
  auto st = http::int_to_status(static_cast<unsigned>(status));
  std::string reason = st == http::status::unknown ? "Unknown" : std::string(http::obsolete_reason(st));
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nServer: tresor-fake-upstream\r\n";
  h += "Content-Type: " + std::string(content_type) + "\r\n";
  h += length ? "Content-Length: " + std::to_string(*length) + "\r\n" : "Transfer-Encoding: chunked\r\n";
  if (!keep_alive) h += "Connection: close\r\n";
  return h + std::string(extra) + "\r\n";
}

std::string http_chunk(std::string_view payload) {
  char hex[32];
  auto [end, ec] = std::to_chars(hex, hex + sizeof hex, payload.size(), 16);
  return std::string(hex, end) + "\r\n" + std::string(payload) + "\r\n";
}

awaitable<void> sleep_ms(std::int64_t ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(use_awaitable);
}

// A stall: only ends by cancellation (the client-close watcher winning the race).
awaitable<void> forever() {
  asio::steady_timer t(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
  co_await t.async_wait(use_awaitable);
}

// Runs a and b concurrently; when one finishes (or throws) the other is cancelled.
// Returns 0 or 1: which one finished first.
awaitable<std::size_t> first_of(awaitable<void> a, awaitable<void> b) {
  auto ex = co_await asio::this_coro::executor;
  auto [order, ea, eb] = co_await asio::experimental::make_parallel_group(
                             asio::co_spawn(ex, std::move(a), asio::deferred),
                             asio::co_spawn(ex, std::move(b), asio::deferred))
                             .async_wait(asio::experimental::wait_for_one(), use_awaitable);
  co_return order[0];
}

// Completes when the client has closed (or reset) the connection. It never reads, so a
// pipelined next request stays in the kernel buffer, and it works under TLS too: we look
// at the TCP socket with POLLRDHUP (peer sent FIN) instead of decoding anything.
// Limitation: a client that half-closes after sending its request looks like it left.
awaitable<void> client_closed(tcp::socket& sock) {
  asio::steady_timer backoff(sock.get_executor());
  for (;;) {
    co_await sock.async_wait(tcp::socket::wait_read, use_awaitable);
    pollfd p{sock.native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) co_return;
    // Readable but still open (pipelined bytes): readiness is level-triggered, so back off.
    backoff.expires_after(std::chrono::milliseconds(20));
    co_await backoff.async_wait(use_awaitable);
  }
}

void reset_connection(tcp::socket& sock) {
  boost::system::error_code ec;
  sock.set_option(asio::socket_base::linger(true, 0), ec);  // linger 0 makes close() send RST
  sock.close(ec);
}

void close_connection(tcp::socket& sock) {
  // TCP-level FIN only, also under TLS: no close_notify, so an SSL_shutdown can't hang us.
  boost::system::error_code ec;
  sock.shutdown(tcp::socket::shutdown_both, ec);
  sock.close(ec);
}

// ---------------------------------------------------------------- chat completions
//
// GCC 12 miscompiles some temporaries inside coroutines (initializer lists, string
// literals bound to parameters: double frees, "array used as initializer"). So every
// JSON document is built by the plain functions in this section, and the coroutines
// below only move finished strings around.

struct Request {  // one parsed chat request, with everything it will send precomputed
  Fault fault;
  bool stream = false;
  std::int64_t chunks = 0, pace_ms = 0;
  std::string error_body;            // when fault.status is set
  std::string completion_body;       // non-stream answer
  std::vector<std::string> events;   // stream: role, content..., [finish], [usage], [DONE]
  std::string error_event;           // stream: the error_event_after event
  bool hold_open = false;            // stream: no_done without no_done_close: stall after the events
};

json::object chunk_object(std::uint64_t id, std::int64_t created, const std::string& model, json::object delta,
                          json::value finish_reason) {
  json::object choice{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}};
  return json::object{{"id", "chatcmpl-fake-" + std::to_string(id)},
                      {"object", "chat.completion.chunk"},
                      {"created", created},
                      {"model", model},
                      {"choices", json::array{std::move(choice)}}};
}

// The request's model as sent ("fake-model" if absent), suffix included.
std::string_view raw_model(const json::object& body) {
  if (auto* m = body.if_contains("model"); m && m->is_string()) return m->get_string();
  return "fake-model";
}

std::string_view model_without_suffix(const json::object& body) {
  std::string_view model = raw_model(body);
  return model.substr(0, model.find('?'));
}

// The runtime behaviour for the next chat request: the front of the queue (used up after
// its `times`), else the persistent spec.
json::object take_behaviour() {
  if (g.behaviour_queue.empty()) return g.behaviour;
  QueuedBehaviour& front = g.behaviour_queue.front();
  json::object spec = front.spec;
  if (--front.remaining <= 0) g.behaviour_queue.pop_front();
  return spec;
}

// Layers, each overriding the one before key by key: runtime behaviour, the model's
// ?suffix, the body's "fake" object.
Request prepare_chat(const json::object& body, const json::object& behaviour) {
  Request r;
  Fault& f = r.fault;
  for (auto& [k, v] : behaviour) set_fault(f, k, v);
  std::string_view model = raw_model(body);
  if (auto q = model.find('?'); q != std::string_view::npos) {
    parse_fault_query(f, model.substr(q + 1));
    model = model.substr(0, q);  // echo the model without its fault suffix
  }
  if (auto* fk = body.if_contains("fake"); fk && fk->is_object())
    for (auto& [k, v] : fk->get_object()) set_fault(f, k, v);  // body wins over the model suffix

  auto* stream = body.if_contains("stream");
  r.stream = stream && stream->is_bool() && stream->get_bool();
  auto* so = body.if_contains("stream_options");
  auto* iu = so && so->is_object() ? so->get_object().if_contains("include_usage") : nullptr;
  bool include_usage = iu && iu->is_bool() && iu->get_bool();
  std::string content = f.content.value_or(g.opt.content);
  r.chunks = std::max<std::int64_t>(0, f.chunks.value_or(g.opt.chunks));
  r.pace_ms = f.pace_ms.value_or(g.opt.pace_ms);

  if (f.status) {
    json::value code = f.error_code ? json::value(*f.error_code) : json::value(nullptr);
    r.error_body = error_envelope("fake upstream error " + std::to_string(*f.status),
                                  *f.status >= 500 ? "server_error" : "invalid_request_error", code);
    return r;
  }

  std::uint64_t id = ++g.next_completion_id;
  auto created = static_cast<std::int64_t>(std::time(nullptr));
  std::string m(model);
  std::size_t p = prompt_tokens(body), cnt = count_words(content);
  json::object usage{{"prompt_tokens", p}, {"completion_tokens", cnt}, {"total_tokens", p + cnt}};
  if (!r.stream) {
    json::object message{{"role", "assistant"}, {"content", content}};
    json::object choice{{"index", 0}, {"message", std::move(message)}, {"finish_reason", "stop"}};
    r.completion_body = json::serialize(json::object{{"id", "chatcmpl-fake-" + std::to_string(id)},
                                                     {"object", "chat.completion"},
                                                     {"created", created},
                                                     {"model", m},
                                                     {"choices", json::array{std::move(choice)}},
                                                     {"usage", std::move(usage)}});
    return r;
  }
  r.events.push_back(json::serialize(chunk_object(id, created, m, {{"role", "assistant"}, {"content", ""}}, nullptr)));
  for (auto& piece : split_pieces(content, r.chunks))
    r.events.push_back(json::serialize(chunk_object(id, created, m, {{"content", piece}}, nullptr)));
  bool usage_on_finish = include_usage && on(f.usage_in_finish);
  if (!on(f.no_finish)) {
    auto finish = chunk_object(id, created, m, {}, "stop");
    if (usage_on_finish) finish["usage"] = usage;
    r.events.push_back(json::serialize(finish));
  }
  if (include_usage && !usage_on_finish) {
    auto u = chunk_object(id, created, m, {}, nullptr);
    u["choices"] = json::array{};
    u["usage"] = std::move(usage);
    r.events.push_back(json::serialize(u));
  }
  bool no_done = on(f.no_done) || on(f.no_done_close);
  if (!no_done) r.events.push_back("[DONE]");
  r.hold_open = no_done && !on(f.no_done_close);
  r.error_event = json::serialize(json::object{
      {"error", json::object{{"message", "fake mid-stream error"}, {"type", "server_error"}, {"code", nullptr}}}});
  return r;
}

// Records the request, then decides its fate. Returns either a finished reply (status,
// body) for requests that never reach the fault machinery, or the prepared Request.
struct Intake {
  int status = 0;  // non-zero: answer with this plain error
  std::string body;
  Request req;
};

Intake intake(const http::request<http::string_body>& req, std::uint64_t connection_id) {
  // Record first, so that even requests answered with a fault (or a reset) are visible.
  json::object headers;
  for (auto& field : req) {
    std::string name(field.name_string());
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto* prev = headers.if_contains(name);
    std::string value(field.value());
    headers[name] = prev ? std::string(prev->get_string()) + ", " + value : value;
  }
  g.requests.push_back(json::object{{"method", std::string(req.method_string())},
                                    {"target", std::string(req.target())},
                                    {"headers", std::move(headers)},
                                    {"body", req.body()},
                                    {"connection_id", connection_id}});
  if (g.requests.size() > 1000) g.requests.pop_front();
  ++g.request_count;
  boost::system::error_code ec;
  json::value parsed = json::parse(req.body(), ec);
  bool is_object = !ec && parsed.is_object();
  if (is_object) ++g.by_model[std::string(model_without_suffix(parsed.get_object()))];

  Intake in;
  if (!g.opt.require_key.empty() && req[http::field::authorization] != "Bearer " + g.opt.require_key) {
    in.status = 401;
    in.body = error_envelope("Incorrect API key provided", "invalid_request_error", "invalid_api_key");
    return in;
  }
  if (!is_object) {
    in.status = 400;
    in.body = error_envelope("We could not parse the JSON body of your request.", "invalid_request_error", nullptr);
    return in;
  }
  in.req = prepare_chat(parsed.get_object(), take_behaviour());
  return in;
}

// The small endpoints: status, content type, body.
struct Reply {
  int status;
  std::string type, body;
};

// GET /_fake/behaviour: {"persistent": {spec}, "queue": [{spec..., "times": remaining}, ...]}
std::string behaviour_json() {
  json::array queue;
  for (auto& q : g.behaviour_queue) {
    json::object entry = q.spec;
    entry["times"] = q.remaining;
    queue.push_back(std::move(entry));
  }
  return json::serialize(json::object{{"persistent", g.behaviour}, {"queue", std::move(queue)}});
}

Reply bad_request(const std::string& message) {
  return {400, "application/json", error_envelope(message, "invalid_request_error", nullptr)};
}

// POST /_fake/behaviour: {} clears everything; a spec without "times" replaces the
// persistent spec; with "times": N it is queued for the next N chat requests.
Reply post_behaviour(const std::string& body) {
  boost::system::error_code ec;
  json::value parsed = json::parse(body.empty() ? std::string("{}") : body, ec);
  if (ec || !parsed.is_object()) return bad_request("/_fake/behaviour wants a JSON object");
  json::object spec = parsed.get_object();
  if (spec.empty()) {
    g.behaviour.clear();
    g.behaviour_queue.clear();
    return {200, "application/json", behaviour_json()};
  }
  std::optional<std::int64_t> times;
  for (auto& [k, v] : spec) {
    std::string key(k);
    if (key == "times") {
      times = to_int(v);
      if (!times || *times < 1) return bad_request("\"times\" wants an integer >= 1");
    } else if (int_key(key)) {
      if (!v.is_null() && !to_int(v)) return bad_request("fake key \"" + key + "\" wants an integer");
      if (key == "status" && !v.is_null() && (*to_int(v) < 200 || *to_int(v) > 599))
        return bad_request("fake key \"status\" wants 200-599");
    } else if (!string_key(key)) {
      return bad_request("unknown fake key \"" + key + "\"");
    }
  }
  spec.erase("times");
  if (times) g.behaviour_queue.push_back(QueuedBehaviour{std::move(spec), *times});
  else g.behaviour = std::move(spec);
  return {200, "application/json", behaviour_json()};
}

std::string stats_json() {
  json::object by_model;
  for (auto& [model, n] : g.by_model) by_model[model] = n;
  return json::serialize(json::object{{"requests", g.request_count},
                                      {"connections_accepted", g.connections_accepted},
                                      {"active_streams", g.active_streams},
                                      {"streams_completed", g.streams_completed},
                                      {"streams_aborted_by_client", g.streams_aborted},
                                      {"by_model", std::move(by_model)}});
}

Reply small_endpoint(const http::request<http::string_body>& req) {
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  auto method = req.method();
  if (method == http::verb::get && path == "/healthz") return {200, "text/plain", "ok"};
  if (method == http::verb::get && path == "/_fake/requests")
    return {200, "application/json", json::serialize(json::array(g.requests.begin(), g.requests.end()))};
  if (method == http::verb::get && path == "/_fake/stats") return {200, "application/json", stats_json()};
  if (method == http::verb::get && path == "/_fake/behaviour") return {200, "application/json", behaviour_json()};
  if (method == http::verb::post && path == "/_fake/behaviour") return post_behaviour(req.body());
  if (method == http::verb::post && path == "/_fake/reset") {
    g.requests.clear();
    g.request_count = g.connections_accepted = g.streams_completed = g.streams_aborted = 0;
    g.by_model.clear();
    g.behaviour.clear();
    g.behaviour_queue.clear();
    return {200, "application/json", "{}"};
  }
  return {404, "application/json",
          error_envelope("Unknown request URL: " + std::string(req.method_string()) + " " + std::string(path),
                         "invalid_request_error", nullptr)};
}

template <class Stream>
awaitable<void> write(Stream& s, const std::string& bytes) {
  co_await asio::async_write(s, asio::buffer(bytes), use_awaitable);
}

// Writes SSE events, each as its own HTTP chunk and its own write so it leaves the moment
// it is made; waits lag_first_ms before the first event and pace_ms before every other one.
template <class Stream>
struct EventWriter {
  Stream& s;
  std::int64_t lag_first_ms, pace_ms;
  bool first = true;

  awaitable<void> send(const std::string& data) {
    std::int64_t wait = first ? lag_first_ms : pace_ms;
    first = false;
    if (wait > 0) co_await sleep_ms(wait);
    std::string bytes = http_chunk("data: " + data + "\n\n");
    co_await write(s, bytes);
  }
};

// Produces the whole answer, faults included. It never closes the socket itself (the
// caller does after the race with client_closed) and reports how it ended via `ending`.
template <class Stream>
awaitable<void> produce(Stream& s, const Request& r, bool keep_alive, Ending& ending) {
  const Fault& f = r.fault;
  try {
    if (on(f.silent)) co_await forever();  // never answer; ends when the client leaves
    if (f.delay_ms && *f.delay_ms > 0) co_await sleep_ms(*f.delay_ms);

    if (f.status) {
      std::string extra = f.retry_after ? "Retry-After: " + std::to_string(*f.retry_after) + "\r\n" : "";
      std::string type = "application/json";
      std::string bytes = head(static_cast<int>(*f.status), type, r.error_body.size(), keep_alive, extra);
      co_await write(s, bytes + r.error_body);
      ending = Ending::complete;
      co_return;
    }

    if (!r.stream) {
      const std::string& body = r.completion_body;
      std::string type = "application/json";
      std::string bytes = head(200, type, body.size(), keep_alive);
      bool partial = f.stall_after || f.cut_after || f.reset_after;  // any value: half the body
      bytes += partial ? body.substr(0, body.size() / 2) : body;
      co_await write(s, bytes);
      if (f.stall_after) co_await forever();
      ending = f.cut_after ? Ending::cut : f.reset_after ? Ending::reset : Ending::complete;
      co_return;
    }

    std::string type = "text/event-stream", extra = "Cache-Control: no-cache\r\n";
    std::string stream_head = head(200, type, std::nullopt, keep_alive, extra);
    co_await write(s, stream_head);
    EventWriter<Stream> events{s, f.lag_first_ms.value_or(0), r.pace_ms};
    const std::string bad_event = "{not json";

    co_await events.send(r.events[0]);  // role
    bool errored = false;
    for (std::int64_t sent = 0;; ++sent) {
      // Fault points sit between content chunks: "after N chunks" is checked with sent == N.
      if (f.bad_event_after == sent) co_await events.send(bad_event);
      if (f.error_event_after == sent) {
        co_await events.send(r.error_event);
        errored = true;
        break;
      }
      if (f.reset_after == sent) { ending = Ending::reset; co_return; }
      if (f.cut_after == sent) { ending = Ending::cut; co_return; }
      if (f.stall_after == sent) co_await forever();
      if (sent == r.chunks) break;
      co_await events.send(r.events[1 + sent]);
    }
    if (!errored) {
      // finish, usage and [DONE], as far as the faults left them in
      for (std::size_t i = 1 + r.chunks; i < r.events.size(); ++i) co_await events.send(r.events[i]);
      if (r.hold_open) co_await forever();  // no_done: silence until the client leaves
    }
    const std::string last_chunk = "0\r\n\r\n";  // the terminating zero-length chunk
    co_await write(s, last_chunk);
    ending = Ending::complete;
  } catch (const boost::system::system_error&) {
    ending = Ending::write_failed;  // also how a cancellation by the watcher lands here
  }
}

template <class Stream>
awaitable<Next> chat(Stream& s, const http::request<http::string_body>& req, std::uint64_t connection_id) {
  bool keep = req.keep_alive();
  Next after = keep ? Next::keep : Next::close;
  Intake in = intake(req, connection_id);
  if (in.status) {
    std::string type = "application/json";
    co_await write(s, head(in.status, type, in.body.size(), keep) + in.body);
    co_return after;
  }
  const Request& r = in.req;
  if (r.fault.reset.value_or(0) != 0) {
    reset_connection(beast::get_lowest_layer(s));
    co_return Next::dead;
  }

  // A stream counts from the moment we accept it, so a client leaving during delay_ms
  // counts as an aborted stream too.
  bool is_stream = r.stream && (!r.fault.status || on(r.fault.silent));
  if (is_stream) ++g.active_streams;
  Ending ending = Ending::write_failed;
  std::size_t winner = co_await first_of(produce(s, r, keep, ending), client_closed(beast::get_lowest_layer(s)));
  if (is_stream) --g.active_streams;

  if (winner == 1 || ending == Ending::write_failed) {
    if (is_stream) ++g.streams_aborted;
    close_connection(beast::get_lowest_layer(s));
    co_return Next::dead;
  }
  if (ending == Ending::cut) { close_connection(beast::get_lowest_layer(s)); co_return Next::dead; }
  if (ending == Ending::reset) { reset_connection(beast::get_lowest_layer(s)); co_return Next::dead; }
  if (is_stream) ++g.streams_completed;
  co_return after;
}

// ---------------------------------------------------------------- connections

template <class Stream>
awaitable<Next> handle(Stream& s, const http::request<http::string_body>& req, std::uint64_t connection_id) {
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  if (req.method() == http::verb::post && path.ends_with("/chat/completions"))
    co_return co_await chat(s, req, connection_id);
  bool keep = req.keep_alive();
  Reply reply = small_endpoint(req);
  co_await write(s, head(reply.status, reply.type, reply.body.size(), keep) + reply.body);
  co_return keep ? Next::keep : Next::close;
}
template <class Stream>
awaitable<void> serve_http(Stream& s, std::uint64_t connection_id) {
  const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(64 * 1024 * 1024);
    auto [ec, n] = co_await http::async_read_header(s, buffer, parser, asio::as_tuple(use_awaitable));
    if (ec) break;
    // curl sends Expect: 100-continue for large bodies and would otherwise wait a second.
    if (beast::iequals(parser.get()[http::field::expect], "100-continue"))
      co_await write(s, continue_line);
    std::tie(ec, n) = co_await http::async_read(s, buffer, parser, asio::as_tuple(use_awaitable));
    if (ec) break;
    Next next = co_await handle(s, parser.get(), connection_id);
    if (next == Next::dead) co_return;
    if (next == Next::close) break;
  }
  close_connection(beast::get_lowest_layer(s));
}

awaitable<void> serve(tcp::socket sock, ssl::context* tls, std::uint64_t connection_id) {
  try {
    sock.set_option(tcp::no_delay(true));  // paced events must not sit in Nagle's buffer
    if (!tls) {
      co_await serve_http(sock, connection_id);
    } else {
      ssl::stream<tcp::socket> s(std::move(sock), *tls);
      co_await s.async_handshake(ssl::stream_base::server, use_awaitable);
      co_await serve_http(s, connection_id);
    }
  } catch (const std::exception&) {
    // A client that vanished mid-write or failed the TLS handshake: nothing to report.
  }
}

awaitable<void> accept_loop(tcp::acceptor& acceptor, ssl::context* tls) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {  // e.g. out of file descriptors: wait a little instead of spinning
      co_await sleep_ms(50);
      continue;
    }
    ++g.connections_accepted;
    asio::co_spawn(ex, serve(std::move(sock), tls, ++g.next_connection_id), asio::detached);
  }
}

int usage(const char* why) {
  std::cerr << "tresor-fake-upstream: " << why << "\n"
            << "usage: tresor-fake-upstream [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--chunks N]\n"
            << "                            [--pace-ms MS] [--require-key KEY] [--content TEXT]\n";
  return 2;
}

std::optional<std::int64_t> parse_int(std::string_view s) { return to_int(json::string(s)); }

}  // namespace

int main(int argc, char** argv) {
  Options& o = g.opt;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      usage("an OpenAI chat-completions fake with fault injection (see README.md)");
      return 0;
    }
    static const std::string_view known[] = {"--listen",  "--tls-cert", "--tls-key",     "--chunks",
                                             "--pace-ms", "--content",  "--require-key"};
    if (std::find(std::begin(known), std::end(known), a) == std::end(known))
      return usage(("unknown option " + std::string(a)).c_str());
    if (i + 1 >= argc) return usage(("missing value for " + std::string(a)).c_str());
    std::string v = argv[++i];
    if (a == "--listen") {
      auto colon = v.rfind(':');
      auto port = colon == std::string::npos ? std::nullopt : parse_int(v.substr(colon + 1));
      if (!port || *port < 0 || *port > 65535) return usage("--listen wants HOST:PORT");
      o.host = v.substr(0, colon);
      if (o.host.size() >= 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
      o.port = static_cast<std::uint16_t>(*port);
    } else if (a == "--tls-cert") o.tls_cert = v;
    else if (a == "--tls-key") o.tls_key = v;
    else if (a == "--require-key") o.require_key = v;
    else if (a == "--content") o.content = v;
    else if (a == "--chunks" || a == "--pace-ms") {
      auto n = parse_int(v);
      if (!n || *n < 0) return usage((std::string(a) + " wants a non-negative integer").c_str());
      (a == "--chunks" ? o.chunks : o.pace_ms) = *n;
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) return usage("--tls-cert and --tls-key go together");

  std::signal(SIGPIPE, SIG_IGN);  // a vanished client must be a write error, not a dead process
  try {
    asio::io_context ioc(1);
    std::optional<ssl::context> tls;
    if (!o.tls_cert.empty()) {
      tls.emplace(ssl::context::tls_server);
      tls->use_certificate_chain_file(o.tls_cert);
      tls->use_private_key_file(o.tls_key, ssl::context::pem);
    }
    tcp::endpoint ep = *tcp::resolver(ioc).resolve(o.host, std::to_string(o.port)).begin();
    tcp::acceptor acceptor(ioc);
    acceptor.open(ep.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
    std::cout << "LISTENING " << acceptor.local_endpoint().port() << std::endl;  // tests parse this line

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](auto, int) { ioc.stop(); });
    asio::co_spawn(ioc, accept_loop(acceptor, tls ? &*tls : nullptr), asio::detached);
    ioc.run();
  } catch (const std::exception& e) {
    std::cerr << "tresor-fake-upstream: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
