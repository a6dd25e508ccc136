// tresor-fake-upstream: a small OpenAI chat-completions and audio-transcriptions server
// with per-request fault injection, used by the gateway's integration tests and the demo.
// See README.md for the fault protocol. Single-threaded: all state lives on one io_context, so no locking.
#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <openssl/evp.h>
#include <zlib.h>

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
      error_event_after, usage_in_finish,
      audio_ms, usage_tokens,  // transcriptions only
      no_usage,                // chat and transcriptions: no usage reported
      huge_headers, endless_headers, garbage, garbage_after, gzip, body_bytes, chunked, no_length,  // hostile upstream
      interim, error_in_200, error_null, no_choices, no_text, multiline_data, sse_extras, omit_fields,
      drop_next_on_connection,  // legal but unusual upstreams
      reject_prefill, honor_prefill, cut_every;  // stream recovery (issue 18)
  std::optional<std::string> content, error_code, sse_line_ending, tool_args, tool_name;
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
                streams_aborted = 0, requests_aborted = 0, dropped_on_connection = 0,
                active_streams = 0;  // active_streams is a live gauge: never reset
  std::uint64_t stream_requests = 0;  // chat stream requests that reached the faults (cut_every counts these)
  std::uint64_t next_connection_id = 0, next_completion_id = 0;
  std::map<std::string, std::uint64_t> by_model;  // chat requests per model (without its ?suffix)
  json::object behaviour;                         // POST /_fake/behaviour without "times"
  std::deque<QueuedBehaviour> behaviour_queue;    // ... with "times", consumed front first
} g;

// What the connection loop does after a response. keep_then_drop: keep the connection,
// but read the next request on it and close without answering (drop_next_on_connection).
enum class Next { keep, keep_then_drop, close, dead };
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
      {"usage_in_finish", &Fault::usage_in_finish},
      {"audio_ms", &Fault::audio_ms},
      {"usage_tokens", &Fault::usage_tokens},
      {"no_usage", &Fault::no_usage},
      {"huge_headers", &Fault::huge_headers},
      {"endless_headers", &Fault::endless_headers},
      {"garbage", &Fault::garbage},
      {"garbage_after", &Fault::garbage_after},
      {"gzip", &Fault::gzip},
      {"body_bytes", &Fault::body_bytes},
      {"chunked", &Fault::chunked},
      {"no_length", &Fault::no_length},
      {"interim", &Fault::interim},
      {"error_in_200", &Fault::error_in_200},
      {"error_null", &Fault::error_null},
      {"no_choices", &Fault::no_choices},
      {"no_text", &Fault::no_text},
      {"multiline_data", &Fault::multiline_data},
      {"sse_extras", &Fault::sse_extras},
      {"omit_fields", &Fault::omit_fields},
      {"drop_next_on_connection", &Fault::drop_next_on_connection},
      {"reject_prefill", &Fault::reject_prefill},
      {"honor_prefill", &Fault::honor_prefill},
      {"cut_every", &Fault::cut_every}};
  for (auto& [name, member] : ints)
    if (key == name) return member;
  return nullptr;
}

// The string fault keys.
std::optional<std::string> Fault::*string_key(std::string_view key) {
  static const std::pair<std::string_view, std::optional<std::string> Fault::*> strings[] = {
      {"content", &Fault::content},
      {"error_code", &Fault::error_code},
      {"sse_line_ending", &Fault::sse_line_ending},
      {"tool_args", &Fault::tool_args},
      {"tool_name", &Fault::tool_name}};
  for (auto& [name, member] : strings)
    if (key == name) return member;
  return nullptr;
}

// String keys whose runtime-behaviour value must be a JSON string (or null); the older
// ones take anything and keep its JSON text.
bool strict_string_key(std::string_view key) { return key == "tool_args" || key == "tool_name"; }

// `interim` also takes the word "both" (= 1: a 100 and a 103).
std::optional<std::int64_t> int_value(std::string_view key, const json::value& v) {
  if (key == "interim" && v.is_string() && v.get_string() == "both") return 1;
  return to_int(v);
}

// Sets one fault key; v is a JSON value (body, runtime behaviour) or a JSON string (model
// query string). A later layer overrides an earlier one key by key; null (or, for an
// integer key, anything that is not a number) unsets the key.
void set_fault(Fault& f, std::string_view key, const json::value& v) {
  if (auto member = int_key(key)) f.*member = int_value(key, v);
  if (f.status && (*f.status < 200 || *f.status > 599)) f.status.reset();  // keep the reply valid HTTP
  if (f.cut_every && *f.cut_every < 1) f.cut_every.reset();  // "every 0th request" means nothing
  if (auto member = string_key(key)) {
    auto& dst = f.*member;
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

// ---------------------------------------------------------------- hostile-upstream faults

// `huge_headers`: about n bytes of extra header lines (X-Fake-Pad-<i>: xxx…), ~1 KiB each.
std::string header_padding(std::int64_t n) {
  std::string out;
  for (std::int64_t i = 0; static_cast<std::int64_t>(out.size()) < n; ++i)
    out += "X-Fake-Pad-" + std::to_string(i) + ": " + std::string(1000, 'x') + "\r\n";
  return out;
}

// `garbage`: n bytes that are neither JSON, SSE nor HTTP (fixed seed: the same every run;
// no CR/LF, so an SSE parser sees one long line without a field it knows).
std::string garbage_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::uint32_t x = 2463534242u;
  for (auto& c : out) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;  // xorshift32
    c = static_cast<char>(x & 0xff);
    if (c == '\r' || c == '\n') c = '#';
  }
  if (!out.empty()) out[0] = '\x8b';  // never a '{' or a letter that starts "HTTP/"
  return out;
}

// `gzip`: real gzip (zlib, windowBits 16 + 15).
std::string gzip_bytes(std::string_view in) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// `body_bytes`: the answer split where padding goes (inside the content / text string,
// so the padded body is still valid JSON), and how many 'x' to insert there.
struct PaddedBody {
  std::string prefix, suffix;
  std::uint64_t padding = 0;
};

PaddedBody padded_body(const std::string& body, std::int64_t target) {
  PaddedBody p;
  std::size_t at = 0;
  for (std::string_view marker : {std::string_view("\"content\":\""), std::string_view("\"text\":\"")})
    if (auto pos = body.find(marker); pos != std::string::npos) { at = pos + marker.size(); break; }
  p.prefix = body.substr(0, at);
  p.suffix = body.substr(at);
  if (target > static_cast<std::int64_t>(body.size())) p.padding = static_cast<std::uint64_t>(target) - body.size();
  return p;
}

// A 200 head for the padded body: Content-Length (default), chunked, or neither (the body
// ends when we close, `no_length`).
std::string padded_head(std::string_view type, std::uint64_t total, const Fault& f, std::string_view extra) {
  std::string h = "HTTP/1.1 200 OK\r\nServer: tresor-fake-upstream\r\nContent-Type: " + std::string(type) + "\r\n";
  if (on(f.no_length)) h += "Connection: close\r\n";
  else if (on(f.chunked)) h += "Transfer-Encoding: chunked\r\n";
  else h += "Content-Length: " + std::to_string(total) + "\r\n";
  return h + std::string(extra) + "\r\n";
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
  std::string content_type = "application/json";  // of completion_body
  // Stream: steps of events (data payloads). Step 0 holds the role chunk(s), steps 1..chunks
  // the content chunks (one per choice), the rest finish chunk(s), usage and [DONE]. The
  // "…_after N chunks" fault points sit between steps.
  std::vector<std::vector<std::string>> events;
  std::string error_event;           // stream: the error_event_after event
  bool hold_open = false;            // stream: no_done without no_done_close: stall after the events
};

// What every chunk of one stream shares, and the shape faults that apply to each.
struct ChunkShape {
  std::uint64_t id;
  std::int64_t created;
  std::string model;
  bool omit_fields, error_null;
};

// `omit_fields` drops id/object/created/model; `error_null` adds "error":null.
void apply_shape(json::object& o, const ChunkShape& c) {
  if (c.omit_fields)
    for (std::string_view k : {"id", "object", "created", "model"}) o.erase(k);
  if (c.error_null) o["error"] = nullptr;
}

json::object chunk_object(const ChunkShape& c, std::int64_t index, json::object delta, json::value finish_reason) {
  json::object choice{{"index", index}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}};
  json::object o{{"id", "chatcmpl-fake-" + std::to_string(c.id)},
                 {"object", "chat.completion.chunk"},
                 {"created", c.created},
                 {"model", c.model},
                 {"choices", json::array{std::move(choice)}}};
  apply_shape(o, c);
  return o;
}

// `error_in_200`: the error envelope some providers send with status 200.
std::string error_in_200_body() {
  return json::serialize(json::object{
      {"error", json::object{{"message", "fake upstream overloaded (error in a 200 answer)"},
                             {"type", "server_error"},
                             {"code", "overloaded"}}}});
}

// The content of choice `index` when the request asks for n > 1: choice 0 is the normal
// content, the others are recognisable so a test can tell they leaked.
std::string choice_content(const std::string& content, std::int64_t index) {
  if (index == 0) return content;
  return index == 1 ? "SECOND-CHOICE from the fake upstream." : "CHOICE-" + std::to_string(index + 1) + " from the fake upstream.";
}

// The request's `n` (choices), 1 when absent or not a number, at most 16.
std::int64_t choice_count(const json::object& body) {
  auto* n = body.if_contains("n");
  std::optional<std::int64_t> v = n ? to_int(*n) : std::nullopt;
  return std::clamp<std::int64_t>(v.value_or(1), 1, 16);
}

// Non-stream answer: all choices, usage, shaped by the faults.
std::string completion_json(const ChunkShape& c, const std::vector<std::string>& contents, json::object usage,
                            bool no_choices, bool no_usage) {
  json::array choices;
  for (std::size_t k = 0; k < contents.size(); ++k) {
    json::object message{{"role", "assistant"}, {"content", contents[k]}};
    choices.push_back(json::object{{"index", k}, {"message", std::move(message)}, {"finish_reason", "stop"}});
  }
  json::object o{{"id", "chatcmpl-fake-" + std::to_string(c.id)},
                 {"object", "chat.completion"},
                 {"created", c.created},
                 {"model", c.model}};
  if (!no_choices) o["choices"] = std::move(choices);
  if (!no_usage) o["usage"] = std::move(usage);
  apply_shape(o, c);
  return json::serialize(o);
}

// Stream events for all choices. With n > 1 the choices' content chunks interleave
// (0, 1, …) and choice k >= 1 sends its last piece after choice 0's finish chunk, so
// the later choices finish after choice 0.
void stream_events(Request& r, const ChunkShape& c, const std::vector<std::string>& contents, json::object usage,
                   bool include_usage) {
  const Fault& f = r.fault;
  const std::size_t n = contents.size();
  std::vector<std::vector<std::string>> pieces;
  for (auto& text : contents) pieces.push_back(split_pieces(text, r.chunks));
  std::vector<std::string> roles;
  for (std::size_t k = 0; k < n; ++k)
    roles.push_back(json::serialize(chunk_object(c, k, {{"role", "assistant"}, {"content", ""}}, nullptr)));
  r.events.push_back(std::move(roles));
  const auto last = static_cast<std::size_t>(r.chunks) - 1;
  for (std::size_t i = 0; i < static_cast<std::size_t>(r.chunks); ++i) {
    std::vector<std::string> step;
    for (std::size_t k = 0; k < n; ++k)
      if (k == 0 || i != last) step.push_back(json::serialize(chunk_object(c, k, {{"content", pieces[k][i]}}, nullptr)));
    r.events.push_back(std::move(step));
  }
  bool usage_on_finish = include_usage && on(f.usage_in_finish);
  std::vector<std::string> finish;
  for (std::size_t k = 0; k < n; ++k) {
    if (k > 0 && r.chunks > 0)
      finish.push_back(json::serialize(chunk_object(c, k, {{"content", pieces[k][last]}}, nullptr)));
    if (on(f.no_finish)) continue;
    auto fin = chunk_object(c, k, {}, "stop");
    if (usage_on_finish && k + 1 == n) fin["usage"] = usage;
    finish.push_back(json::serialize(fin));
  }
  if (!finish.empty()) r.events.push_back(std::move(finish));
  if (include_usage && !usage_on_finish) {
    auto u = chunk_object(c, 0, {}, nullptr);
    u["choices"] = json::array{};
    u["usage"] = std::move(usage);
    r.events.push_back(std::vector<std::string>{json::serialize(u)});
  }
}

// `tool_args`: the answer is one tool call (choice 0 only). Its id carries the completion
// counter, so two requests never share a call id.
// A stream delta's call carries its index; a message's (non-stream) does not.
json::object tool_call(const ChunkShape& c, const std::string& name, std::string arguments, bool with_index) {
  json::object function{{"name", name}, {"arguments", std::move(arguments)}};
  json::object call;
  if (with_index) call["index"] = 0;
  call["id"] = "call_fake_" + std::to_string(c.id);
  call["type"] = "function";
  call["function"] = std::move(function);
  return call;
}

std::string tool_completion_json(const ChunkShape& c, const std::string& name, const std::string& arguments,
                                 json::object usage, bool no_choices, bool no_usage) {
  json::object message{{"role", "assistant"},
                       {"content", nullptr},
                       {"tool_calls", json::array{tool_call(c, name, arguments, false)}}};
  json::object choice{{"index", 0}, {"message", std::move(message)}, {"finish_reason", "tool_calls"}};
  json::object o{{"id", "chatcmpl-fake-" + std::to_string(c.id)},
                 {"object", "chat.completion"},
                 {"created", c.created},
                 {"model", c.model}};
  if (!no_choices) o["choices"] = json::array{std::move(choice)};
  if (!no_usage) o["usage"] = std::move(usage);
  apply_shape(o, c);
  return json::serialize(o);
}

// Stream of one tool call: the role chunk announces the call (name, empty arguments), the
// `chunks` steps carry argument pieces, the finish chunk says "tool_calls". Same step
// layout as stream_events, so the "…_after N chunks" faults count argument pieces.
void tool_stream_events(Request& r, const ChunkShape& c, const std::string& name, const std::string& arguments,
                        json::object usage, bool include_usage) {
  const Fault& f = r.fault;
  json::object head_delta{{"role", "assistant"},
                          {"content", nullptr},
                          {"tool_calls", json::array{tool_call(c, name, std::string(), true)}}};
  r.events.push_back(std::vector<std::string>{json::serialize(chunk_object(c, 0, std::move(head_delta), nullptr))});
  for (auto& piece : split_pieces(arguments, r.chunks)) {
    json::object function{{"arguments", piece}};
    json::object call{{"index", 0}, {"function", std::move(function)}};
    json::object delta{{"tool_calls", json::array{std::move(call)}}};
    r.events.push_back(std::vector<std::string>{json::serialize(chunk_object(c, 0, std::move(delta), nullptr))});
  }
  bool usage_on_finish = include_usage && on(f.usage_in_finish);
  if (!on(f.no_finish)) {
    auto fin = chunk_object(c, 0, {}, "tool_calls");
    if (usage_on_finish) fin["usage"] = usage;
    r.events.push_back(std::vector<std::string>{json::serialize(fin)});
  }
  if (include_usage && !usage_on_finish) {
    auto u = chunk_object(c, 0, {}, nullptr);
    u["choices"] = json::array{};
    u["usage"] = std::move(usage);
    r.events.push_back(std::vector<std::string>{json::serialize(u)});
  }
}

// The last element of `messages` when it is an object, else null.
const json::object* last_message(const json::object& body) {
  auto* msgs = body.if_contains("messages");
  if (!msgs || !msgs->is_array() || msgs->get_array().empty()) return nullptr;
  return msgs->get_array().back().if_object();
}

bool ends_with_assistant(const json::object& body) {
  const json::object* m = last_message(body);
  auto* role = m ? m->if_contains("role") : nullptr;
  return role && role->is_string() && role->get_string() == "assistant";
}

// The assistant prefill P: the last message's string content when its role is "assistant".
std::optional<std::string> assistant_prefill(const json::object& body) {
  if (!ends_with_assistant(body)) return std::nullopt;
  auto* content = last_message(body)->if_contains("content");
  if (!content || !content->is_string()) return std::nullopt;
  return std::string(content->get_string());
}

// `reject_prefill`: what a provider without assistant prefill says.
std::string prefill_rejected_body() {
  return json::serialize(json::object{
      {"error", json::object{{"message", "fake upstream: assistant prefill is not supported"},
                             {"type", "invalid_request_error"},
                             {"param", "messages"},
                             {"code", "prefill_unsupported"}}}});
}

// `cut_every` N: the mid-stream faults hit only every Nth chat stream request (k % N == 0,
// k counted since start or reset); the others stream normally.
void apply_cut_every(Fault& f, std::uint64_t k) {
  if (!f.cut_every || k % static_cast<std::uint64_t>(*f.cut_every) == 0) return;
  f.cut_after.reset();
  f.reset_after.reset();
  f.stall_after.reset();
  f.error_event_after.reset();
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

// The error envelope for the `status` fault.
std::string status_error_body(const Fault& f) {
  json::value code = f.error_code ? json::value(*f.error_code) : json::value(nullptr);
  return error_envelope("fake upstream error " + std::to_string(*f.status),
                        *f.status >= 500 ? "server_error" : "invalid_request_error", code);
}

// The end of every stream after its events: [DONE] (unless no_done), and the event that
// error_event_after sends.
void finish_stream(Request& r) {
  const Fault& f = r.fault;
  bool no_done = on(f.no_done) || on(f.no_done_close);
  if (!no_done) r.events.push_back(std::vector<std::string>{"[DONE]"});
  r.hold_open = no_done && !on(f.no_done_close);
  r.error_event = json::serialize(json::object{
      {"error", json::object{{"message", "fake mid-stream error"}, {"type", "server_error"}, {"code", nullptr}}}});
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
  // no_usage: an upstream that never reports usage (ignores stream_options).
  bool include_usage = iu && iu->is_bool() && iu->get_bool() && !on(f.no_usage);
  if (r.stream) apply_cut_every(f, ++g.stream_requests);
  std::string content = f.content.value_or(g.opt.content);
  if (on(f.honor_prefill))  // continue after the prefill: only the rest of the answer
    if (auto prefill = assistant_prefill(body); prefill && content.starts_with(*prefill)) content.erase(0, prefill->size());
  r.chunks = std::max<std::int64_t>(0, f.chunks.value_or(g.opt.chunks));
  r.pace_ms = f.pace_ms.value_or(g.opt.pace_ms);

  if (f.status) {
    r.error_body = status_error_body(f);
    return r;
  }
  if (on(f.reject_prefill) && ends_with_assistant(body)) {  // answered like a `status` 400
    f.status = 400;
    f.retry_after.reset();
    r.error_body = prefill_rejected_body();
    return r;
  }
  if (on(f.error_in_200)) {  // 200, but the body (or the first event) is an error envelope
    r.completion_body = error_in_200_body();
    r.events = {{r.completion_body}};
    r.chunks = 0;
    return r;
  }

  ChunkShape shape{++g.next_completion_id, static_cast<std::int64_t>(std::time(nullptr)), std::string(model),
                   on(f.omit_fields), on(f.error_null)};
  std::size_t p = prompt_tokens(body);
  if (f.tool_args) {  // one tool call instead of content; `n` and the prefill are ignored
    std::size_t cnt = count_words(*f.tool_args);
    json::object usage{{"prompt_tokens", p}, {"completion_tokens", cnt}, {"total_tokens", p + cnt}};
    std::string name = f.tool_name.value_or("get_weather");
    if (!r.stream) {
      r.completion_body = tool_completion_json(shape, name, *f.tool_args, std::move(usage), on(f.no_choices), on(f.no_usage));
      return r;
    }
    tool_stream_events(r, shape, name, *f.tool_args, std::move(usage), include_usage);
    finish_stream(r);
    return r;
  }
  std::vector<std::string> contents;
  std::size_t cnt = 0;
  for (std::int64_t k = 0; k < choice_count(body); ++k) {
    contents.push_back(choice_content(content, k));
    cnt += count_words(contents.back());
  }
  json::object usage{{"prompt_tokens", p}, {"completion_tokens", cnt}, {"total_tokens", p + cnt}};
  if (!r.stream) {
    r.completion_body = completion_json(shape, contents, std::move(usage), on(f.no_choices), on(f.no_usage));
    return r;
  }
  stream_events(r, shape, contents, std::move(usage), include_usage);
  finish_stream(r);
  return r;
}

// Records the request, then decides its fate. Returns either a finished reply (status,
// body) for requests that never reach the fault machinery, or the prepared Request.
struct Intake {
  int status = 0;  // non-zero: answer with this plain error
  std::string body;
  Request req;
};

// The shape of a /_fake/requests entry; the caller adds members and calls record().
json::object request_entry(const http::request<http::string_body>& req, std::uint64_t connection_id,
                           json::value body) {
  json::object headers;
  for (auto& field : req) {
    std::string name(field.name_string());
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto* prev = headers.if_contains(name);
    std::string value(field.value());
    headers[name] = prev ? std::string(prev->get_string()) + ", " + value : value;
  }
  return json::object{{"method", std::string(req.method_string())},
                      {"target", std::string(req.target())},
                      {"headers", std::move(headers)},
                      {"body", std::move(body)},
                      {"connection_id", connection_id}};
}

void record(json::object entry) {
  g.requests.push_back(std::move(entry));
  if (g.requests.size() > 1000) g.requests.pop_front();
  ++g.request_count;
}

bool key_refused(const http::request<http::string_body>& req) {
  return !g.opt.require_key.empty() && req[http::field::authorization] != "Bearer " + g.opt.require_key;
}

std::string bad_key_body() {
  return error_envelope("Incorrect API key provided", "invalid_request_error", "invalid_api_key");
}

Intake intake(const http::request<http::string_body>& req, std::uint64_t connection_id) {
  // Record first, so that even requests answered with a fault (or a reset) are visible.
  json::value raw_body(req.body());
  record(request_entry(req, connection_id, std::move(raw_body)));
  boost::system::error_code ec;
  json::value parsed = json::parse(req.body(), ec);
  bool is_object = !ec && parsed.is_object();
  if (is_object) ++g.by_model[std::string(model_without_suffix(parsed.get_object()))];

  Intake in;
  if (key_refused(req)) {
    in.status = 401;
    in.body = bad_key_body();
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

// ---------------------------------------------------------------- audio transcriptions
//
// POST …/audio/transcriptions with a multipart/form-data body (RFC 7578, RFC 2046 §5.1).
// The multipart parser here is deliberately written independently of the gateway's own
// (server/multipart_parser): the fake exists to check what the gateway sent. It works on
// the whole body, which the connection loop has already read (64 MiB limit).

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

bool blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

// A header value with parameters: `type; name=token; name="quoted \" string"`. Parameter
// names are lower-cased; quoted strings lose their quotes and the backslash of a \" or
// \\ pair (any other backslash stays, as browsers send it). No percent-decoding: browsers
// send a quote in a filename as %22, which is recorded as is. `ok` is false when the
// parameter syntax is broken.
struct HeaderValue {
  std::string type;
  std::vector<std::pair<std::string, std::string>> params;
  bool ok = true;

  std::optional<std::string> param(std::string_view name) const {
    for (auto& [n, v] : params)
      if (n == name) return v;
    return std::nullopt;
  }
};

HeaderValue parse_header_value(std::string_view v) {
  HeaderValue out;
  std::size_t i = v.find(';');
  out.type = lower(trim(v.substr(0, i)));
  if (i == std::string_view::npos) return out;
  while (i < v.size()) {
    while (i < v.size() && (blank(v[i]) || v[i] == ';')) ++i;
    if (i >= v.size()) break;
    std::size_t eq = v.find('=', i), semi = v.find(';', i);
    if (eq == std::string_view::npos || (semi != std::string_view::npos && semi < eq)) {
      out.ok = false;  // a parameter without "=value"
      i = semi == std::string_view::npos ? v.size() : semi;
      continue;
    }
    std::string name = lower(trim(v.substr(i, eq - i)));
    if (name.empty()) out.ok = false;
    i = eq + 1;
    while (i < v.size() && blank(v[i])) ++i;
    std::string value;
    if (i < v.size() && v[i] == '"') {
      bool closed = false;
      for (++i; i < v.size();) {
        char c = v[i++];
        if (c == '\\' && i < v.size() && (v[i] == '"' || v[i] == '\\')) value += v[i++];
        else if (c == '"') { closed = true; break; }
        else value += c;
      }
      if (!closed) out.ok = false;
      for (; i < v.size() && v[i] != ';'; ++i)
        if (!blank(v[i])) out.ok = false;  // junk after the closing quote
    } else {
      std::size_t end = v.find(';', i);
      value = std::string(trim(v.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i)));
      i = end == std::string_view::npos ? v.size() : end;
    }
    out.params.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

// The boundary from the request's Content-Type, or why there is none usable.
std::string multipart_boundary(std::string_view content_type, std::string& boundary) {
  if (trim(content_type).empty()) return "Content-Type must be multipart/form-data (no Content-Type header)";
  HeaderValue hv = parse_header_value(content_type);
  if (hv.type != "multipart/form-data")
    return "Content-Type must be multipart/form-data, got \"" + hv.type + "\"";
  if (!hv.ok) return "malformed parameters in the multipart/form-data Content-Type";
  auto b = hv.param("boundary");
  if (!b) return "multipart/form-data Content-Type without a boundary parameter";
  // RFC 2046: 1-70 of DIGIT ALPHA '()+_,-./:=? and space, not ending in a space.
  static const std::string_view specials = "'()+_,-./:=? ";
  bool valid = !b->empty() && b->size() <= 70 && b->back() != ' ';
  for (char c : *b)
    if (!std::isalnum(static_cast<unsigned char>(c)) && specials.find(c) == std::string_view::npos) valid = false;
  if (!valid)
    return "invalid multipart boundary \"" + *b +
           "\" (RFC 2046: 1-70 characters of letters, digits and '()+_,-./:=? or space, not ending in a space)";
  boundary = *b;
  return {};
}

struct Part {
  std::string name;
  std::optional<std::string> filename, content_type;
  std::string_view data;  // points into the request body
};

struct Multipart {
  std::string error;  // non-empty: the body is malformed, and why
  std::vector<Part> parts;
};

// A "--boundary" that ends at `after` really is a delimiter when it is followed by "--"
// (the close delimiter), by optional white space and CRLF, or by the end of the body
// (then the closing delimiter is missing, which the caller reports).
bool delimiter_ends_well(std::string_view body, std::size_t after) {
  if (body.substr(after, 2) == "--") return true;
  while (after < body.size() && blank(body[after])) ++after;
  return after >= body.size() || body.substr(after, 2) == "\r\n";
}

// Where the next "\r\n--boundary" delimiter at or after `from` starts, or npos.
std::size_t find_delimiter(std::string_view body, std::string_view crlf_dash_boundary, std::size_t from) {
  for (std::size_t at = from;; ++at) {
    at = body.find(crlf_dash_boundary, at);
    if (at == std::string_view::npos || delimiter_ends_well(body, at + crlf_dash_boundary.size())) return at;
  }
}

// One part's header block (lines without the final empty line) -> name, filename, type.
std::string parse_part_headers(std::string_view block, std::size_t number, Part& part) {
  std::string where = "multipart part #" + std::to_string(number);
  std::optional<HeaderValue> disposition;
  while (!block.empty()) {
    std::size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view{} : block.substr(eol + 2);
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || trim(line.substr(0, colon)).empty())
      return where + ": malformed header line \"" + std::string(line) + "\"";
    std::string name = lower(trim(line.substr(0, colon)));
    std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-disposition" && !disposition) disposition = parse_header_value(value);
    else if (name == "content-type" && !part.content_type) part.content_type = std::string(value);
  }
  if (!disposition) return where + " has no Content-Disposition header (so no name)";
  if (disposition->type != "form-data")
    return where + ": Content-Disposition is \"" + disposition->type + "\", not form-data";
  if (!disposition->ok) return where + ": malformed Content-Disposition parameters";
  auto name = disposition->param("name");
  if (!name || name->empty()) return where + ": Content-Disposition form-data without a name";
  part.name = *name;
  part.filename = disposition->param("filename");
  return {};
}

Multipart parse_multipart(std::string_view body, const std::string& boundary) {
  Multipart m;
  const std::string crlf_dash = "\r\n--" + boundary;
  const std::string_view dash = std::string_view(crlf_dash).substr(2);
  const std::string closing = "--" + boundary + "--";
  // The first delimiter may start the body; otherwise everything before it is preamble.
  std::size_t pos = 0;
  if (body.starts_with(dash) && delimiter_ends_well(body, dash.size())) {
    pos = dash.size();
  } else {
    std::size_t at = find_delimiter(body, crlf_dash, 0);
    if (at == std::string_view::npos) {
      m.error = "multipart body has no delimiter line for boundary \"" + boundary + "\"";
      return m;
    }
    pos = at + crlf_dash.size();
  }
  for (std::size_t number = 1;; ++number) {
    if (body.substr(pos, 2) == "--") return m;  // close delimiter; the epilogue is ignored
    while (pos < body.size() && blank(body[pos])) ++pos;
    if (pos >= body.size()) {
      m.error = "multipart body ends without the closing delimiter \"" + closing + "\"";
      return m;
    }
    pos += 2;  // the CRLF that delimiter_ends_well saw
    std::size_t next = find_delimiter(body, crlf_dash, pos);
    if (next == std::string_view::npos) {
      m.error = "multipart body ends without the closing delimiter \"" + closing + "\" (truncated?)";
      return m;
    }
    std::string_view whole = body.substr(pos, next - pos);  // headers, empty line, data
    Part part;
    std::string_view headers;
    if (whole.starts_with("\r\n")) {
      part.data = whole.substr(2);  // no headers at all
    } else if (!whole.empty()) {
      std::size_t end = whole.find("\r\n\r\n");
      if (end == std::string_view::npos) {
        m.error = "multipart part #" + std::to_string(number) + ": headers not followed by an empty line";
        return m;
      }
      headers = whole.substr(0, end);
      part.data = whole.substr(end + 4);
    }
    m.error = parse_part_headers(headers, number, part);
    if (!m.error.empty()) return m;
    m.parts.push_back(std::move(part));
    pos = next + crlf_dash.size();
  }
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return "sha256-failed";
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 0xF];
  }
  return hex;
}

// JSON text pieces written by hand: Boost.JSON would print 3.25 as 3.25E0.
std::string json_text(std::string_view s) { return json::serialize(json::string(s)); }

std::string json_number(double d) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string out(buf, end);
  if (out.find_first_of(".eE") == std::string::npos) out += ".0";  // 3 -> 3.0: still a double
  return out;
}

// The answer's "usage": audio seconds by default, tokens with usage_tokens.
std::string transcription_usage(const Fault& f, std::size_t file_size, std::string_view text, double seconds) {
  if (!on(f.usage_tokens)) return "{\"type\":\"duration\",\"seconds\":" + json_number(seconds) + "}";
  std::size_t in = (file_size + 999) / 1000, out = count_words(text);
  return "{\"type\":\"tokens\",\"input_tokens\":" + std::to_string(in) + ",\"output_tokens\":" + std::to_string(out) +
         ",\"total_tokens\":" + std::to_string(in + out) + ",\"input_token_details\":{\"audio_tokens\":" +
         std::to_string(in) + ",\"text_tokens\":0}}";
}

// The fields a transcription answer depends on (first occurrence of each).
struct TranscriptionAsk {
  std::string format = "json", language = "english";
  std::optional<std::string> prompt;
  std::optional<std::string> filename, content_type;
  std::size_t size = 0;
  std::string sha256;
};

void transcription_answer(Request& r, const TranscriptionAsk& a) {
  const Fault& f = r.fault;
  std::string text = "fake transcript of " + a.filename.value_or("none") + " (" + a.content_type.value_or("none") +
                     "): bytes=" + std::to_string(a.size) + " sha256=" + a.sha256;
  if (a.prompt) text += " prompt=" + *a.prompt;
  if (on(f.error_in_200)) {  // whatever the format: 200 with a JSON error envelope
    r.completion_body = error_in_200_body();
    return;
  }
  if (a.format == "text" || a.format == "srt" || a.format == "vtt") {
    r.content_type = a.format == "text" ? "text/plain; charset=utf-8" : "text/plain";
    r.completion_body = text;
    return;
  }
  double seconds = static_cast<double>(f.audio_ms.value_or(3250)) / 1000.0;
  std::string usage = on(f.no_usage) ? "" : ",\"usage\":" + transcription_usage(f, a.size, text, seconds);
  std::string t = json_text(text);
  // `no_text` leaves out the top-level text; `error_null` adds "error":null.
  std::string text_member = on(f.no_text) ? "" : ",\"text\":" + t;
  if (on(f.error_null)) usage += ",\"error\":null";
  if (a.format == "json") {
    std::string members = text_member + usage;
    if (!members.empty()) members.erase(0, 1);  // the leading comma
    r.completion_body = "{" + members + "}";
    return;
  }
  std::string d = json_number(seconds);  // verbose_json
  r.completion_body = "{\"task\":\"transcribe\",\"language\":" + json_text(a.language) + ",\"duration\":" + d +
                      text_member + ",\"segments\":[{\"id\":0,\"seek\":0,\"start\":0.0,\"end\":" + d +
                      ",\"text\":" + t +
                      ",\"tokens\":[1,2,3],\"temperature\":0.0,\"avg_logprob\":-0.2,\"compression_ratio\":1.0,"
                      "\"no_speech_prob\":0.01}]" +
                      usage + "}";
}

// Records a transcription request (body null, the parsed form in "transcription"), then
// decides its fate like intake() does for chat.
Intake transcription_intake(const http::request<http::string_body>& req, std::uint64_t connection_id) {
  std::string boundary;
  std::string error = multipart_boundary(req[http::field::content_type], boundary);
  Multipart mp;
  if (error.empty()) {
    mp = parse_multipart(req.body(), boundary);
    error = mp.error;
  }

  json::value no_body(nullptr);
  json::object entry = request_entry(req, connection_id, std::move(no_body));
  std::optional<std::string> model, format, language, prompt;
  const Part* file = nullptr;
  std::size_t file_parts = 0;
  std::string sha;
  if (!error.empty()) {
    entry["transcription"] = nullptr;
    entry["multipart_error"] = error;
  } else {
    json::object fields;
    json::array order;
    for (auto& p : mp.parts) {
      order.emplace_back(p.name);
      if (p.name == "file") {
        if (++file_parts == 1) file = &p;
        continue;
      }
      std::string value(p.data);
      if (auto* prev = fields.if_contains(p.name)) {
        if (!prev->is_array()) {
          json::array both;
          both.push_back(*prev);
          *prev = std::move(both);
        }
        prev->get_array().emplace_back(value);
      } else {
        fields[p.name] = value;
      }
      auto first = [&](const char* name, std::optional<std::string>& dst) {
        if (p.name == name && !dst) dst = value;
      };
      first("model", model);
      first("response_format", format);
      first("language", language);
      first("prompt", prompt);
    }
    json::object t;
    t["fields"] = std::move(fields);
    t["field_order"] = std::move(order);
    if (file) {
      sha = sha256_hex(file->data);
      json::object fo;
      fo["name"] = "file";
      fo["filename"] = file->filename ? json::value(*file->filename) : json::value(nullptr);
      fo["content_type"] = file->content_type ? json::value(*file->content_type) : json::value(nullptr);
      fo["size"] = file->data.size();
      fo["sha256"] = sha;
      t["file"] = std::move(fo);
    } else {
      t["file"] = nullptr;
    }
    entry["transcription"] = std::move(t);
  }
  record(std::move(entry));
  if (model) ++g.by_model[model->substr(0, model->find('?'))];

  Intake in;
  auto refuse = [&](int status, std::string body) {
    in.status = status;
    in.body = std::move(body);
    return in;
  };
  if (key_refused(req)) return refuse(401, bad_key_body());
  if (!error.empty()) return refuse(400, error_envelope(error, "invalid_request_error", nullptr));
  if (file_parts == 0)
    return refuse(400, error_envelope("missing the \"file\" part (the audio file)", "invalid_request_error", nullptr));
  if (file_parts > 1)
    return refuse(400, error_envelope("more than one \"file\" part (" + std::to_string(file_parts) + ")",
                                      "invalid_request_error", nullptr));
  if (!model)
    return refuse(400, error_envelope("missing the \"model\" field", "invalid_request_error", nullptr));
  TranscriptionAsk ask;
  if (format) ask.format = *format;
  static const std::string_view formats[] = {"json", "text", "srt", "verbose_json", "vtt"};
  if (std::find(std::begin(formats), std::end(formats), ask.format) == std::end(formats))
    return refuse(400, error_envelope("unsupported response_format \"" + ask.format +
                                          "\": use one of json, text, srt, verbose_json, vtt",
                                      "invalid_request_error", nullptr));

  // Fault layers: runtime behaviour, then the model's ?suffix (no body "fake" object here).
  Request& r = in.req;
  for (auto& [k, v] : take_behaviour()) set_fault(r.fault, k, v);
  if (auto q = model->find('?'); q != std::string::npos) parse_fault_query(r.fault, std::string_view(*model).substr(q + 1));
  if (r.fault.status) {
    r.error_body = status_error_body(r.fault);
    return in;
  }
  if (language) ask.language = *language;
  ask.prompt = prompt;
  ask.filename = file->filename;
  ask.content_type = file->content_type;
  ask.size = file->data.size();
  ask.sha256 = sha;
  transcription_answer(r, ask);
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
      if (!v.is_null() && !int_value(key, v)) return bad_request("fake key \"" + key + "\" wants an integer");
      if (key == "status" && !v.is_null() && (*to_int(v) < 200 || *to_int(v) > 599))
        return bad_request("fake key \"status\" wants 200-599");
      if (key == "cut_every" && !v.is_null() && *to_int(v) < 1)
        return bad_request("fake key \"cut_every\" wants an integer >= 1");
    } else if (!string_key(key)) {
      return bad_request("unknown fake key \"" + key + "\"");
    } else if (strict_string_key(key) && !v.is_null() && !v.is_string()) {
      return bad_request("fake key \"" + key + "\" wants a string");
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
                                      {"requests_aborted_by_client", g.requests_aborted},
                                      {"dropped_on_connection", g.dropped_on_connection},
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
    g.requests_aborted = 0;
    g.dropped_on_connection = 0;
    g.stream_requests = 0;
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

// How events are framed: all of it legal SSE (WHATWG HTML "event stream" format).
struct SseStyle {
  std::string eol = "\n";  // sse_line_ending: lf, crlf or cr
  bool multiline = false;  // multiline_data
  bool extras = false;     // sse_extras
};

SseStyle sse_style(const Fault& f) {
  SseStyle st;
  std::string le = lower(f.sse_line_ending.value_or("lf"));
  st.eol = le == "crlf" ? "\r\n" : le == "cr" ? "\r" : "\n";
  st.multiline = on(f.multiline_data);
  st.extras = on(f.sse_extras);
  return st;
}

// `multiline_data`: the JSON text cut into lines after every `{`, `[` and `,` outside a
// string, so the lines joined with "\n" (as an SSE parser joins data lines) are the same
// JSON with newlines as extra white space. `[DONE]` stays one line (it is not JSON: cut,
// it would join to something else); other text that is not JSON is cut like JSON.
std::vector<std::string> json_lines(std::string_view data) {
  if (data == "[DONE]") return {std::string(data)};
  std::vector<std::string> lines(1);
  bool in_string = false, escaped = false;
  for (char c : data) {
    lines.back() += c;
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[' || c == ',') {
      lines.emplace_back();
    }
  }
  if (lines.size() > 1 && lines.back().empty()) lines.pop_back();
  return lines;
}

// One event in the bytes of `style`. seq counts the stream's events from 1. With extras:
// a comment-only block before the first event, then per event a comment, `event: message`,
// `id: <seq>`, `retry: 1000` (first event only) and `data:` lines without the space.
std::string sse_event(std::string_view data, const SseStyle& st, std::uint64_t seq) {
  const std::string& e = st.eol;
  std::string out;
  if (st.extras) {
    if (seq == 1) out += ": keep-alive" + e + e;
    out += ": keep-alive" + e + "event: message" + e + "id: " + std::to_string(seq) + e;
    if (seq == 1) out += "retry: 1000" + e;
  }
  const std::string prefix = st.extras ? "data:" : "data: ";
  if (st.multiline)
    for (auto& line : json_lines(data)) out += prefix + line + e;
  else
    out += prefix + std::string(data) + e;
  return out + e;
}

// `interim`: informational heads before the final one: 100 Continue, 103 Early Hints, or
// both (any other non-zero value).
std::string interim_heads(std::int64_t which) {
  std::string out;
  if (which != 103) out += "HTTP/1.1 100 Continue\r\n\r\n";
  if (which != 100) out += "HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n";
  return out;
}

// Writes SSE events, each as its own HTTP chunk and its own write so it leaves the moment
// it is made; waits lag_first_ms before the first event and pace_ms before every other one.
template <class Stream>
struct EventWriter {
  Stream& s;
  std::int64_t lag_first_ms, pace_ms;
  SseStyle style;
  std::uint64_t seq = 0;

  awaitable<void> send(const std::string& data) {
    std::int64_t wait = seq == 0 ? lag_first_ms : pace_ms;
    if (wait > 0) co_await sleep_ms(wait);
    std::string bytes = http_chunk(sse_event(data, style, ++seq));
    co_await write(s, bytes);
  }

  awaitable<void> send_step(const std::vector<std::string>& step) {
    for (auto& data : step) co_await send(data);
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
    if (on(f.interim)) {
      std::string interim = interim_heads(*f.interim);
      co_await write(s, interim);
    }

    if (f.status) {
      std::string extra = f.retry_after ? "Retry-After: " + std::to_string(*f.retry_after) + "\r\n" : "";
      std::string type = "application/json";
      std::string bytes = head(static_cast<int>(*f.status), type, r.error_body.size(), keep_alive, extra);
      co_await write(s, bytes + r.error_body);
      ending = Ending::complete;
      co_return;
    }

    const std::string pad = f.huge_headers && *f.huge_headers > 0 ? header_padding(*f.huge_headers) : std::string();
    if (f.endless_headers && *f.endless_headers > 0) {
      // A head that never ends: one more header line every endless_headers ms, until the
      // client leaves (the watcher cancels us) or a write fails.
      std::string status_line = "HTTP/1.1 200 OK\r\n";
      co_await write(s, status_line);
      for (std::uint64_t i = 0;; ++i) {
        co_await sleep_ms(*f.endless_headers);
        std::string line = "X-Fake-Endless-" + std::to_string(i) + ": " + std::string(64, 'y') + "\r\n";
        co_await write(s, line);
      }
    }
    if (on(f.garbage)) {
      std::string junk = garbage_bytes(4096);
      if (*f.garbage == 2) {  // not even HTTP: junk instead of a status line, then FIN
        co_await write(s, junk);
        ending = Ending::cut;
        co_return;
      }
      std::string type = r.stream ? "text/event-stream" : r.content_type;
      std::string bytes = head(200, type, junk.size(), keep_alive, pad) + junk;
      co_await write(s, bytes);
      ending = Ending::complete;
      co_return;
    }
    if (on(f.gzip)) {
      // Compressed although the request did not ask for it. A stream is all its events
      // compressed as one gzip member in one chunk.
      std::string plain;
      const SseStyle style = sse_style(f);
      std::uint64_t seq = 0;
      if (r.stream)
        for (auto& step : r.events)
          for (auto& e : step) plain += sse_event(e, style, ++seq);
      else
        plain = r.completion_body;
      std::string packed = gzip_bytes(plain);
      std::string type = r.stream ? "text/event-stream" : r.content_type;
      std::string extra = "Content-Encoding: gzip\r\n" + pad;
      std::string bytes = r.stream ? head(200, type, std::nullopt, keep_alive, extra) + http_chunk(packed) + "0\r\n\r\n"
                                   : head(200, type, packed.size(), keep_alive, extra) + packed;
      co_await write(s, bytes);
      ending = Ending::complete;
      co_return;
    }
    if (!r.stream && f.body_bytes) {
      // A big answer, written 64 KiB at a time so that the fake never holds it whole.
      PaddedBody p = padded_body(r.completion_body, *f.body_bytes);
      const std::uint64_t total = p.prefix.size() + p.padding + p.suffix.size();
      const bool chunked = on(f.chunked) && !on(f.no_length);
      std::string bytes = padded_head(r.content_type, total, f, pad);
      bytes += chunked ? http_chunk(p.prefix) : p.prefix;
      co_await write(s, bytes);
      const std::string block(64 * 1024, 'x');
      const std::string framed = http_chunk(block);
      for (std::uint64_t left = p.padding; left > 0;) {
        const std::uint64_t n = std::min<std::uint64_t>(left, block.size());
        if (n == block.size()) {
          co_await write(s, chunked ? framed : block);
        } else {
          std::string tail = block.substr(0, n);
          if (chunked) tail = http_chunk(tail);
          co_await write(s, tail);
        }
        left -= n;
      }
      std::string end = chunked ? http_chunk(p.suffix) + "0\r\n\r\n" : p.suffix;
      co_await write(s, end);
      ending = on(f.no_length) ? Ending::cut : Ending::complete;
      co_return;
    }

    if (!r.stream) {
      const std::string& body = r.completion_body;
      const std::string& type = r.content_type;
      std::string bytes = head(200, type, body.size(), keep_alive, pad);
      bool partial = f.stall_after || f.cut_after || f.reset_after;  // any value: half the body
      bytes += partial ? body.substr(0, body.size() / 2) : body;
      co_await write(s, bytes);
      if (f.stall_after) co_await forever();
      ending = f.cut_after ? Ending::cut : f.reset_after ? Ending::reset : Ending::complete;
      co_return;
    }

    std::string type = "text/event-stream", extra = "Cache-Control: no-cache\r\n" + pad;
    std::string stream_head = head(200, type, std::nullopt, keep_alive, extra);
    co_await write(s, stream_head);
    EventWriter<Stream> events{s, f.lag_first_ms.value_or(0), r.pace_ms, sse_style(f)};
    const std::string bad_event = "{not json";

    co_await events.send_step(r.events[0]);  // role (one per choice)
    bool errored = false;
    for (std::int64_t sent = 0;; ++sent) {
      // Fault points sit between content chunks: "after N chunks" is checked with sent == N.
      if (f.bad_event_after == sent) co_await events.send(bad_event);
      if (f.error_event_after == sent) {
        co_await events.send(r.error_event);
        errored = true;
        break;
      }
      if (f.garbage_after == sent) {
        // 4 KiB of junk inside the event stream, then the response ends (no [DONE]).
        std::string junk = http_chunk(garbage_bytes(4096));
        co_await write(s, junk);
        errored = true;
        break;
      }
      if (f.reset_after == sent) { ending = Ending::reset; co_return; }
      if (f.cut_after == sent) { ending = Ending::cut; co_return; }
      if (f.stall_after == sent) co_await forever();
      if (sent == r.chunks) break;
      co_await events.send_step(r.events[1 + sent]);
    }
    if (!errored) {
      // finish, usage and [DONE], as far as the faults left them in
      for (std::size_t i = 1 + r.chunks; i < r.events.size(); ++i) co_await events.send_step(r.events[i]);
      if (r.hold_open) co_await forever();  // no_done: silence until the client leaves
    }
    const std::string last_chunk = "0\r\n\r\n";  // the terminating zero-length chunk
    co_await write(s, last_chunk);
    ending = Ending::complete;
  } catch (const boost::system::system_error&) {
    ending = Ending::write_failed;  // also how a cancellation by the watcher lands here
  }
}

// A chat or transcription request: record it, then answer it, faults included.
template <class Stream>
awaitable<Next> answer(Stream& s, const http::request<http::string_body>& req, std::uint64_t connection_id,
                       bool transcription) {
  bool keep = req.keep_alive();
  Next after = keep ? Next::keep : Next::close;
  Intake in;
  if (transcription) in = transcription_intake(req, connection_id);
  else in = intake(req, connection_id);
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
    ++g.requests_aborted;
    close_connection(beast::get_lowest_layer(s));
    co_return Next::dead;
  }
  if (ending == Ending::cut) { close_connection(beast::get_lowest_layer(s)); co_return Next::dead; }
  if (ending == Ending::reset) { reset_connection(beast::get_lowest_layer(s)); co_return Next::dead; }
  if (is_stream) ++g.streams_completed;
  co_return after == Next::keep && on(r.fault.drop_next_on_connection) ? Next::keep_then_drop : after;
}

// ---------------------------------------------------------------- connections

template <class Stream>
awaitable<Next> handle(Stream& s, const http::request<http::string_body>& req, std::uint64_t connection_id) {
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  if (req.method() == http::verb::post && path.ends_with("/chat/completions"))
    co_return co_await answer(s, req, connection_id, false);
  if (req.method() == http::verb::post && path.ends_with("/audio/transcriptions"))
    co_return co_await answer(s, req, connection_id, true);
  bool keep = req.keep_alive();
  Reply reply = small_endpoint(req);
  co_await write(s, head(reply.status, reply.type, reply.body.size(), keep) + reply.body);
  co_return keep ? Next::keep : Next::close;
}
template <class Stream>
awaitable<void> serve_http(Stream& s, std::uint64_t connection_id) {
  const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
  beast::flat_buffer buffer;
  bool drop_next = false;  // drop_next_on_connection: the next request here gets no answer
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(64 * 1024 * 1024);
    auto [ec, n] = co_await http::async_read_header(s, buffer, parser, asio::as_tuple(use_awaitable));
    if (ec) break;
    // curl sends Expect: 100-continue for large bodies and would otherwise wait a second.
    if (!drop_next && beast::iequals(parser.get()[http::field::expect], "100-continue"))
      co_await write(s, continue_line);
    std::tie(ec, n) = co_await http::async_read(s, buffer, parser, asio::as_tuple(use_awaitable));
    if (ec) break;
    if (drop_next) {
      // Like an upstream that closes an idle keep-alive connection just as the client
      // reuses it: the request was read, not a byte of an answer goes out.
      ++g.dropped_on_connection;
      break;
    }
    Next next = co_await handle(s, parser.get(), connection_id);
    if (next == Next::dead) co_return;
    drop_next = next == Next::keep_then_drop;
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
      usage("an OpenAI chat-completions and audio-transcriptions fake with fault injection (see README.md)");
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
