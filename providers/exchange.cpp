// One upstream exchange per attempt. The order of the checks follows what a client of an
// OpenAI-compatible API relies on: the HTTP status first, then that a 200 really is an
// answer (JSON object, no error object, the members every SDK reads), and only then does
// anything reach the caller as a success.
#include "providers/exchange.h"

#include <boost/beast/core/string.hpp>
#include <spdlog/spdlog.h>

#include <cmath>

#include "common/json_members.h"
#include "common/json_text.h"
#include "common/secure_random.h"
#include "providers/error_body.h"
#include "providers/json_parser.h"
#include "providers/openai_adapter.h"

namespace tresor::providers {
namespace {

using Kind = UpstreamFailure::Kind;

// Upstream error bodies are read up to this size (for their message and code).
constexpr size_t kMaxErrorBodyBytes = 64 * 1024;
// After [DONE]: how much of a stream's tail (normally just the zero-length chunk) is read,
// and how long for, to keep its connection for the next request.
constexpr size_t kStreamTailBytes = 64 * 1024;
constexpr auto kStreamTailWait = std::chrono::milliseconds(20);
constexpr std::string_view kTranscriptionsPath = "/audio/transcriptions";

UpstreamFailure transport_failure(TransportError error, bool before_first_byte, std::string detail) {
  UpstreamFailure f;
  f.kind = Kind::transport;
  f.transport = error;
  f.before_first_byte = before_first_byte;
  f.detail = std::move(detail);
  return f;
}

UpstreamFailure bad_response(std::string detail) {
  UpstreamFailure f;
  f.kind = Kind::bad_response;
  f.detail = std::move(detail);
  return f;
}

// A non-200 answer: its status, Retry-After and the error body's code and message.
boost::asio::awaitable<UpstreamFailure> refusal(const ExchangeTarget& t, UpstreamResponse& response) {
  UpstreamFailure f;
  f.kind = Kind::http_status;
  f.http_status = response.status();
  if (auto h = response.header("Retry-After"))
    if (auto s = parse_retry_after(*h)) f.retry_after = std::chrono::seconds(*s);
  TransportError error = TransportError::none;
  const std::string body = co_await response.read_all(kMaxErrorBodyBytes, t.request_deadline, error);
  UpstreamErrorBody parsed = parse_error_body(body, t.provider.api_key);
  f.error_code = std::move(parsed.code);
  f.message = std::move(parsed.message);
  f.detail = "HTTP " + std::to_string(f.http_status) + (f.error_code.empty() ? "" : " " + f.error_code);
  co_return f;
}

using SendResult = std::variant<std::unique_ptr<UpstreamResponse>, UpstreamFailure>;

// Sends the attempt and reads the head; anything but a 200 is a failure.
boost::asio::awaitable<SendResult> send_attempt(const ExchangeTarget& t, UpstreamRequest request) {
  request.traceparent = t.traceparent;
  request.tracestate = t.tracestate;
  UpstreamResult sent = co_await t.client.send(t.providers, t.provider, std::move(request), t.first_byte_deadline,
                                               t.connect_timeout);
  if (!sent.response) co_return transport_failure(sent.error, true, std::move(sent.detail));
  if (sent.response->status() != 200) co_return co_await refusal(t, *sent.response);
  co_return std::move(sent.response);
}

// POST /chat/completions with the JSON body, asking for `accept`.
UpstreamRequest chat_request(std::string body, std::string_view accept) {
  UpstreamRequest up;
  up.path = kChatCompletionsPath;
  up.content_type = "application/json";
  up.accept = accept;
  up.body = std::move(body);
  return up;
}

// Sends the attempt and reads the whole body of its 200, bounded by the target's limit
// and the request deadline.
boost::asio::awaitable<std::variant<std::string, UpstreamFailure>> fetch_answer(const ExchangeTarget& t,
                                                                                 UpstreamRequest request) {
  SendResult sent = co_await send_attempt(t, std::move(request));
  if (auto* f = std::get_if<UpstreamFailure>(&sent)) co_return std::move(*f);
  TransportError error = TransportError::none;
  std::string body =
      co_await std::get<std::unique_ptr<UpstreamResponse>>(sent)->read_all(t.max_body_bytes, t.request_deadline, error);
  if (error != TransportError::none)
    co_return transport_failure(error, false, "failed while sending its answer: " + std::string(to_string(error)));
  co_return body;
}

// A top-level `error` member that is present and not null: the upstream says it failed,
// whatever its status line said.
bool has_error_object(simdjson::dom::element root) {
  simdjson::dom::element error;
  return !root["error"].get(error) && !error.is_null();
}

// "chatcmpl-" and 24 random hex digits: the id of an answer whose upstream sent none.
std::string fallback_completion_id() {
  unsigned char b[12];
  common::secure_random_bytes(b, sizeof b);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "chatcmpl-";
  for (const unsigned char c : b) {
    id += kHex[c >> 4];
    id += kHex[c & 15];
  }
  return id;
}

std::string json_string(std::string_view s) {
  std::string out;
  common::append_json_string(out, s);
  return out;
}

// Adds whichever of id/object/created/model the answer lacks right after its opening
// brace (the object is known to have a `choices` member, so a comma always follows).
void fill_in_answer_fields(std::string& body, simdjson::dom::element root, std::string_view upstream_model) {
  std::string missing;
  simdjson::dom::element e;
  if (root["id"].get(e) || !e.is_string()) missing += "\"id\":" + json_string(fallback_completion_id()) + ",";
  if (root["object"].get(e) || !e.is_string()) missing += R"("object":"chat.completion",)";
  if (root["created"].get(e) || !e.is_number())
    missing += "\"created\":" +
               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count()) + ",";
  if (root["model"].get(e) || !e.is_string()) missing += "\"model\":" + json_string(upstream_model) + ",";
  if (missing.empty()) return;
  body.insert(body.find('{') + 1, missing);
}

int64_t non_negative(simdjson::simdjson_result<simdjson::dom::element> lookup) {
  int64_t n = 0;
  return !lookup.get(n) && n >= 0 ? n : 0;
}

// A non-negative finite number, or nullopt (also for a missing member).
std::optional<double> number_at(simdjson::simdjson_result<simdjson::dom::element> lookup) {
  simdjson::dom::element e;
  double d = 0;
  if (lookup.get(e) || !e.is_number() || e.get(d) || !std::isfinite(d) || d < 0) return std::nullopt;
  return d;
}

}  // namespace

std::variant<ChatAnswer, UpstreamFailure> validate_chat_answer(std::string body, std::string_view upstream_model) {
  simdjson::dom::element root;
  if (upstream_json_parser().parse(body).get(root) || !root.is_object())
    return bad_response("answered 200 with a body that is not a JSON object");
  if (has_error_object(root)) return bad_response("answered 200 with an error object");
  simdjson::dom::array choices;
  if (root["choices"].get(choices)) return bad_response("answered 200 without a choices array");
  ChatAnswer answer;
  simdjson::dom::object usage;
  answer.usage_reported = !root["usage"].get(usage);
  if (answer.usage_reported) {
    answer.usage.prompt_tokens = non_negative(usage["prompt_tokens"]);
    answer.usage.completion_tokens = non_negative(usage["completion_tokens"]);
  }
  std::string_view text;
  if (!root["model"].get(text)) answer.model = std::string(text.substr(0, 256));
  for (simdjson::dom::element choice : choices) {
    simdjson::dom::object message;
    if (!choice["message"].get(message)) answer.generated_bytes += generated_text_bytes(message);
    if (!choice["finish_reason"].get(text) && answer.finish_reasons.size() < 16)
      answer.finish_reasons.emplace_back(text.substr(0, 64));
  }
  fill_in_answer_fields(body, root, upstream_model);
  answer.body = std::move(body);
  return answer;
}

std::variant<TranscriptAnswer, UpstreamFailure> validate_transcript(std::string body) {
  simdjson::dom::element root;
  if (upstream_json_parser().parse(body).get(root) || !root.is_object())
    return bad_response("answered 200 with a body that is not a JSON object");
  if (has_error_object(root)) return bad_response("answered 200 with an error object");
  std::string_view text;
  if (root["text"].get(text)) return bad_response("answered 200 without a transcript text");
  TranscriptAnswer a;
  a.text = std::string(text);
  simdjson::dom::element usage;
  if (!root["usage"].get(usage) && usage.is_object()) {
    std::string_view type;
    if (usage["type"].get(type)) type = {};
    if (type == "tokens" || usage["input_tokens"].is_int64()) {
      a.token_usage = true;
      a.input_tokens = non_negative(usage["input_tokens"]);
      a.output_tokens = non_negative(usage["output_tokens"]);
    }
    a.seconds = number_at(usage["seconds"]);
  }
  if (!a.seconds) a.seconds = number_at(root["duration"]);
  std::vector<common::JsonMember> members;
  common::scan_top_level_members(body, root.get_object(), members);
  for (const auto& m : members) {
    if (m.key == "usage" || m.key == "tresor") continue;
    if (!a.members.empty()) a.members += ',';
    a.members.append(m.raw_key).append(":").append(m.raw_value);
  }
  return a;
}

boost::asio::awaitable<std::variant<ChatAnswer, UpstreamFailure>> exchange_chat(const ExchangeTarget& target,
                                                                                 std::string body) {
  auto read = co_await fetch_answer(target, chat_request(std::move(body), "application/json"));
  if (auto* f = std::get_if<UpstreamFailure>(&read)) co_return std::move(*f);
  co_return validate_chat_answer(std::move(std::get<std::string>(read)), target.route.upstream_model);
}

boost::asio::awaitable<std::variant<TranscriptAnswer, UpstreamFailure>> exchange_transcription(
    const ExchangeTarget& target, BodySource& body, std::string content_type) {
  UpstreamRequest up;
  up.path = kTranscriptionsPath;
  up.content_type = content_type;
  up.accept = "application/json";
  up.streamed_body = &body;
  auto read = co_await fetch_answer(target, std::move(up));
  if (auto* f = std::get_if<UpstreamFailure>(&read)) co_return std::move(*f);
  co_return validate_transcript(std::move(std::get<std::string>(read)));
}

// ---------------------------------------------------------------------------------
// Streams

boost::asio::awaitable<std::variant<std::unique_ptr<ChatEventStream>, UpstreamFailure>> open_chat_stream(
    const ExchangeTarget& target, std::string body, ChatStreamDecoder::Options options) {
  SendResult sent = co_await send_attempt(target, chat_request(std::move(body), "text/event-stream"));
  if (auto* f = std::get_if<UpstreamFailure>(&sent)) co_return std::move(*f);
  auto& response = std::get<std::unique_ptr<UpstreamResponse>>(sent);
  const std::string type = response->header("Content-Type").value_or("");
  if (type.find("text/event-stream") == std::string::npos) co_return bad_response("did not answer with an event stream");
  if (options.upstream_model.empty()) options.upstream_model = target.route.upstream_model;
  if (options.fallback_id.empty()) options.fallback_id = fallback_completion_id();
  if (options.created == 0)
    options.created = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  co_return std::make_unique<ChatEventStream>(std::move(response), std::move(options), target.provider.api_key);
}

ChatEventStream::ChatEventStream(std::unique_ptr<UpstreamResponse> response, ChatStreamDecoder::Options options,
                                 std::string provider_secret)
    : response_(std::move(response)), decoder_(std::move(options)), secret_(std::move(provider_secret)) {}

ChatEventStream::~ChatEventStream() = default;

boost::asio::awaitable<std::optional<UpstreamFailure>> ChatEventStream::first_chunks(common::Deadline deadline,
                                                                                      std::vector<ChatChunk>& out) {
  while (out.empty()) {
    TransportError error = TransportError::none;
    const std::string bytes = co_await response_->read_some(deadline, error);
    if (error != TransportError::none)
      co_return transport_failure(error, true, "stream failed before its first event: " + std::string(to_string(error)));
    if (bytes.empty() && response_->body_done()) co_return bad_response("stream ended without any event");
    status_ = decoder_.feed(bytes, out);
    switch (status_) {
      case ChatStreamDecoder::Status::more: break;
      case ChatStreamDecoder::Status::error_event: {
        UpstreamFailure f = bad_response("stream began with an error event");
        f.error_code = error_code();
        co_return f;
      }
      case ChatStreamDecoder::Status::oversized: co_return bad_response("stream began with an oversized event");
      case ChatStreamDecoder::Status::done:
        if (out.empty()) co_return bad_response("stream ended ([DONE]) without any event");
        break;
    }
  }
  co_return std::nullopt;
}

boost::asio::awaitable<ChatEventStream::End> ChatEventStream::next(std::chrono::seconds idle,
                                                                   std::vector<ChatChunk>& out,
                                                                   std::optional<common::Deadline> limit) {
  for (;;) {
    switch (status_) {
      case ChatStreamDecoder::Status::more: break;
      case ChatStreamDecoder::Status::done: co_return End::done;
      case ChatStreamDecoder::Status::error_event: co_return End::error_event;
      case ChatStreamDecoder::Status::oversized: co_return End::oversized;
    }
    // Once every choice has finished (and usage came, if asked), an upstream that goes
    // quiet or closes instead of sending [DONE] has completed its answer.
    const bool grace = decoder_.complete();
    const auto wait = grace ? std::chrono::duration_cast<Clock::duration>(kCompletionGrace)
                            : std::chrono::duration_cast<Clock::duration>(idle);
    TransportError error = TransportError::none;
    common::Deadline until = common::Deadline::after(wait);
    if (limit) until = common::earlier_of(until, *limit);
    const std::string bytes = co_await response_->read_some(until, error);
    const bool ended = error != TransportError::none || (bytes.empty() && response_->body_done());
    if (ended && grace) {
      status_ = ChatStreamDecoder::Status::done;
      continue;
    }
    if (ended) {
      spdlog::warn("upstream stream failed after the first event: {}",
                   error == TransportError::none ? "ended without [DONE]" : to_string(error));
      co_return error == TransportError::timeout ? End::stalled : End::cut;
    }
    const size_t before = out.size();
    status_ = decoder_.feed(bytes, out);
    if (status_ == ChatStreamDecoder::Status::more && out.size() > before) co_return End::more;
  }
}

boost::asio::awaitable<void> ChatEventStream::finish_for_reuse() {
  co_await response_->finish_for_reuse(kStreamTailBytes, common::Deadline::after(kStreamTailWait));
}

std::string ChatEventStream::error_code() const { return parse_error_body(decoder_.error_event(), secret_).code; }

std::string ChatEventStream::error_message() const {
  return parse_error_body(decoder_.error_event(), secret_).message;
}

}  // namespace tresor::providers
