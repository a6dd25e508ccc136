// One exchange with an upstream, end to end: send the attempt, read the head, read and
// validate the answer, and hand back a provider-neutral result — a chat answer, a stream
// of decoded chat chunks, a transcription, or an UpstreamFailure (common/upstream_failure.h)
// that router/ classifies. Nothing here knows about clients, customers or receipts; no
// byte an upstream sent reaches a caller without having been parsed and checked here.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/upstream_failure.h"
#include "config/config.h"
#include "providers/chat_stream_decoder.h"
#include "providers/upstream_client.h"

namespace tresor::providers {

using common::UpstreamFailure;

// Where one attempt goes and how long it may take.
struct ExchangeTarget {
  UpstreamClient& client;                         // this worker's
  std::shared_ptr<const ProviderSet> providers;   // the config snapshot's
  const config::ProviderConfig& provider;
  const config::RouteConfig& route;
  common::Deadline first_byte_deadline;           // the head (stream: the first chunk) by then
  common::Deadline request_deadline;              // the whole answer by then
  std::chrono::milliseconds connect_timeout;
  size_t max_body_bytes;                          // a non-stream answer above this is bad_response
  std::string traceparent;                        // W3C Trace Context for this attempt, or empty
  std::string tracestate;
};

// A validated non-stream chat answer: a JSON object with a `choices` array and no error
// object, with `id`, `object`, `created` and `model` present (filled in when the upstream
// left them out).
struct ChatAnswer {
  std::string body;
  TokenUsage usage;
  bool usage_reported = false;   // the body had a usage object (else: estimate)
  uint64_t generated_bytes = 0;  // generated_text_bytes() of every choice's message
  std::string model;             // the answer's "model" as the upstream sent it (may be empty)
  std::vector<std::string> finish_reasons;  // each choice's, in order (for traces; at most 16)
};
// The checks exchange_chat applies to a 200's body (pure, for tests).
std::variant<ChatAnswer, UpstreamFailure> validate_chat_answer(std::string body, std::string_view upstream_model);

boost::asio::awaitable<std::variant<ChatAnswer, UpstreamFailure>> exchange_chat(const ExchangeTarget& target,
                                                                                 std::string body);

// A validated transcription answer (a JSON object with a string `text` and no error
// object), with what its usage says in every OpenAI variant.
struct TranscriptAnswer {
  // The upstream JSON's top-level members other than `usage` (and a `tresor` of its own),
  // byte for byte, joined with commas and without braces: the client's JSON is rebuilt
  // around them with a normalised usage.
  std::string members;
  std::string text;
  bool token_usage = false;      // the upstream reported tokens (usage.type "tokens")
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  std::optional<double> seconds; // usage.seconds, else verbose_json's duration
};
std::variant<TranscriptAnswer, UpstreamFailure> validate_transcript(std::string body);

boost::asio::awaitable<std::variant<TranscriptAnswer, UpstreamFailure>> exchange_transcription(
    const ExchangeTarget& target, BodySource& body, std::string content_type);

// An upstream chat event stream whose head said 200 text/event-stream, decoded into the
// chunks the client gets (chat_stream_decoder.h).
class ChatEventStream {
 public:
  // After the upstream's completion rule is met without [DONE] (every choice finished,
  // usage if asked), this much silence — or the upstream closing — completes the stream.
  static constexpr auto kCompletionGrace = std::chrono::milliseconds(500);

  enum class End {
    more,         // chunks were added; call next() again
    done,         // [DONE], or the completion rule: the answer is whole
    stalled,      // silence longer than the idle limit
    cut,          // the upstream closed or reset before the answer was whole
    error_event,  // the upstream sent an error object: error()
    oversized,    // an event over the size limit
  };

  ChatEventStream(std::unique_ptr<UpstreamResponse> response, ChatStreamDecoder::Options options,
                  std::string provider_secret);
  ~ChatEventStream();

  // Before anything is committed to the client: reads until the first chunk for the
  // client (in `out`), or fails (then nothing has reached the client and the caller
  // fails over). A stream that ends or errs before its first chunk is bad_response.
  boost::asio::awaitable<std::optional<UpstreamFailure>> first_chunks(common::Deadline deadline,
                                                                       std::vector<ChatChunk>& out);
  // Reads on; `idle` bounds the silence between events, and `limit` (when set) the wait
  // as a whole: reaching it is `stalled` too.
  boost::asio::awaitable<End> next(std::chrono::seconds idle, std::vector<ChatChunk>& out,
                                   std::optional<common::Deadline> limit = std::nullopt);
  // After done: drops the rest of the body (normally just the chunked terminator) briefly,
  // so that the connection can go back to the pool; otherwise it is closed.
  boost::asio::awaitable<void> finish_for_reuse();

  // The upstream's error event, its message and code scrubbed of the provider's key.
  std::string error_code() const;
  std::string error_message() const;
  std::optional<TokenUsage> usage() const { return decoder_.usage(); }
  uint64_t generated_bytes() const { return decoder_.generated_bytes(); }
  std::string response_model() const { return decoder_.response_model(); }
  const std::vector<std::string>& finish_reasons() const { return decoder_.finish_reasons(); }
  size_t dropped_events() const { return decoder_.dropped_events(); }
  // A chunk of this stream's id/created/model with an empty delta for choice 0: the carrier
  // of the gateway's own member when the upstream sent no finish chunk.
  std::string synthetic_chunk() const { return decoder_.synthetic_chunk(); }

 private:
  std::unique_ptr<UpstreamResponse> response_;
  ChatStreamDecoder decoder_;
  std::string secret_;
  ChatStreamDecoder::Status status_ = ChatStreamDecoder::Status::more;
};

boost::asio::awaitable<std::variant<std::unique_ptr<ChatEventStream>, UpstreamFailure>> open_chat_stream(
    const ExchangeTarget& target, std::string body, ChatStreamDecoder::Options options);

}  // namespace tresor::providers
