// Decodes an upstream chat-completions event stream (text/event-stream of
// chat.completion.chunk objects) into the chunks the client gets. Pure: no I/O, no
// clock, no logging; the server feeds it the bytes it reads and writes what comes out.
// Spec: /work/shared/spec/tresor-api.md §1.1 (streaming), providers/README.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "providers/sse_parser.h"

// Declared only: users of the decoder need not compile simdjson's header.
namespace simdjson::dom {
class array;
class object;
}  // namespace simdjson::dom

namespace tresor::providers {

struct TokenUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool operator==(const TokenUsage&) const = default;
};

// One chunk as the client gets it (without the gateway's tresor member).
struct ChatChunk {
  // finish: choices[0] has a non-null finish_reason; usage: a chunk the client asked for
  // whose choices are empty and which carries usage.
  enum class Kind { content, finish, usage };
  Kind kind = Kind::content;
  std::string json;                 // one line of JSON: no CR/LF bytes
  std::optional<TokenUsage> usage;  // when this chunk carried a non-null usage object
  bool operator==(const ChatChunk&) const = default;
};

// Bytes of text a model generated in one message or delta (content, reasoning,
// refusal, tool-call names and arguments), unescaped: what the token estimate counts
// when an upstream reports no usage.
uint64_t generated_text_bytes(simdjson::dom::object message);

class ChatStreamDecoder {
 public:
  struct Options {
    std::string upstream_model;       // fills a missing "model"
    std::string fallback_id;          // fills a missing "id" (when the upstream never sent one)
    int64_t created = 0;              // fills a missing "created" (when the upstream never sent one)
    bool client_wants_usage = false;  // stream_options.include_usage was asked by the client
    size_t max_event_bytes = SseParser::kDefaultMaxEventBytes;
  };
  enum class Status { more, done, error_event, oversized };

  explicit ChatStreamDecoder(Options options);

  // Decodes `bytes` (any split), appends the chunks for the client to `out`. Stops at
  // [DONE] (done), at an upstream error object (error_event; chunks before it in the same
  // feed are in `out`), or at an oversized event. After done/error_event/oversized,
  // further feeds return the same status and add nothing.
  Status feed(std::string_view bytes, std::vector<ChatChunk>& out);

  // Every choice index seen so far has a finish_reason (at least one was seen), and usage
  // arrived if the client asked for it: the completion rule when an upstream ends
  // without [DONE].
  bool complete() const;
  bool any_event() const { return any_event_; }  // at least one valid chunk was decoded (forwarded or not)
  const std::string& error_event() const { return error_event_; }  // raw JSON of the upstream's error event
  std::optional<TokenUsage> usage() const { return usage_; }       // the last usage seen (covers all choices)
  uint64_t generated_bytes() const { return generated_bytes_; }    // text generated so far, every choice
  // For traces: the upstream's "model" (empty when it sent none, or not as a plain string),
  // and the finish_reason of each choice that finished, in the order they came (at most 16).
  std::string response_model() const;
  const std::vector<std::string>& finish_reasons() const { return finish_reasons_; }
  size_t dropped_events() const { return dropped_events_; }        // events that were not a JSON object
  Status status() const { return status_; }
  // True while the SSE framing holds a partial line or event (an upstream that ends here was cut).
  bool has_partial_event() const { return sse_.has_partial_event(); }

  // A chunk with the id/created/model the client's chunks carry (the upstream's first
  // values, else the fallbacks), for a chunk the gateway must write itself (e.g. the
  // tresor chunk when no finish chunk came):
  // {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[{"index":0,"delta":{},"finish_reason":null}]}
  std::string synthetic_chunk() const;

 private:
  struct ChoiceState {
    int64_t index;
    bool finished;
  };

  struct ChoiceScan {
    size_t total = 0;            // elements of the choices array
    bool finished = false;       // the first choice 0 has a non-null finish_reason
    bool index_missing = false;  // a choice 0 is choice 0 by its position only
  };
  enum class Rewrite { none, keep_choice_0, empty_choices };

  void decode_event(std::string& data, std::vector<ChatChunk>& out);
  ChoiceScan scan_choices(simdjson::dom::array choices);
  void note_choice(int64_t index, bool finished);
  void rewrite_chunk(simdjson::dom::object chunk, Rewrite rewrite, std::string& json) const;
  void write_kept_choices(simdjson::dom::object chunk, std::string& json) const;
  void fill_in(simdjson::dom::object chunk, std::string& json) const;

  Options options_;
  SseParser sse_;
  Status status_ = Status::more;
  bool any_event_ = false;
  std::string error_event_;
  std::optional<TokenUsage> usage_;
  uint64_t generated_bytes_ = 0;
  size_t dropped_events_ = 0;
  std::vector<std::string> finish_reasons_;
  // The upstream's first non-null id/created/model, as minified JSON text (empty: none yet).
  std::string first_id_;
  std::string first_created_;
  std::string first_model_;
  std::string fallback_id_json_;
  std::string fallback_created_json_;
  std::string fallback_model_json_;
  std::vector<size_t> kept_positions_;  // positions of choice 0 in the current chunk's choices
  // Every choice index seen, sorted. Bounded: an upstream sending ever new indexes must
  // not make us track (and insert into) without limit; OpenAI allows n <= 128.
  static constexpr size_t kMaxTrackedChoices = 1024;
  std::vector<ChoiceState> choices_;
  size_t unfinished_choices_ = 0;
  bool too_many_choices_ = false;
};

}  // namespace tresor::providers
