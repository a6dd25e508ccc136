#include "providers/chat_stream_decoder.h"
#include "providers/json_parser.h"
#include "common/json_text.h"

#include <algorithm>
#include <cstring>

#include <simdjson.h>

namespace tresor::providers {
namespace {

// What a trace keeps of the finish reasons (server/request_trace.h): bounded whatever the
// upstream sends.
constexpr size_t kMaxFinishReasons = 16;
constexpr size_t kMaxFinishReasonBytes = 64;


// The thread's upstream parser (providers/json_parser.h): a parser of our own per stream
// would allocate its buffers per request. What a parse returns is used up before feed()
// returns.
simdjson::dom::parser& event_parser() { return upstream_json_parser(); }

std::string json_string(std::string_view s) {
  std::string out;
  common::append_json_string(out, s);
  return out;
}

std::optional<TokenUsage> read_usage(simdjson::dom::object chunk) {
  simdjson::dom::object usage;
  if (chunk["usage"].get(usage)) return std::nullopt;  // absent, null or not an object
  TokenUsage u;
  int64_t n = 0;
  if (!usage["prompt_tokens"].get(n)) u.prompt_tokens = n;
  if (!usage["completion_tokens"].get(n)) u.completion_tokens = n;
  return u;
}

bool has_member(simdjson::dom::object chunk, std::string_view key) { return !chunk[key].error(); }

// Remembers the upstream's first non-null value of `key`, as minified JSON text.
void remember_first(simdjson::dom::object chunk, std::string_view key, std::string& first) {
  if (!first.empty()) return;
  simdjson::dom::element value;
  if (!chunk[key].get(value) && !value.is_null()) first = simdjson::minify(value);
}

// Valid JSON holds CR/LF only as whitespace between tokens (inside strings they must be
// escaped), and no two tokens need whitespace to stay apart: removing them is safe.
void remove_line_breaks(std::string& json) {
  json.erase(std::remove_if(json.begin(), json.end(), [](char c) { return c == '\n' || c == '\r'; }), json.end());
}

}  // namespace

ChatStreamDecoder::ChatStreamDecoder(Options options)
    : options_(std::move(options)),
      sse_(options_.max_event_bytes),
      fallback_id_json_(json_string(options_.fallback_id)),
      fallback_created_json_(std::to_string(options_.created)),
      fallback_model_json_(json_string(options_.upstream_model)) {}

ChatStreamDecoder::Status ChatStreamDecoder::feed(std::string_view bytes, std::vector<ChatChunk>& out) {
  while (status_ == Status::more) {
    switch (sse_.next(bytes)) {
      case SseParser::Next::event:
        decode_event(sse_.data(), out);
        break;
      case SseParser::Next::need_more:
        return status_;
      case SseParser::Next::oversized:
        status_ = Status::oversized;
        break;
    }
  }
  return status_;
}

bool ChatStreamDecoder::complete() const {
  return !choices_.empty() && unfinished_choices_ == 0 && !too_many_choices_ && (!options_.client_wants_usage || usage_.has_value());
}

std::string ChatStreamDecoder::response_model() const {
  // first_model_ is minified JSON; only a plain string without escapes is taken as a name.
  if (first_model_.size() < 2 || first_model_.front() != '"' || first_model_.back() != '"' ||
      first_model_.find('\\') != std::string::npos)
    return {};
  return first_model_.substr(1, first_model_.size() - 2);
}

std::string ChatStreamDecoder::synthetic_chunk() const {
  std::string out = R"({"id":)";
  out += first_id_.empty() ? fallback_id_json_ : first_id_;
  out += R"(,"object":"chat.completion.chunk","created":)";
  out += first_created_.empty() ? fallback_created_json_ : first_created_;
  out += R"(,"model":)";
  out += first_model_.empty() ? fallback_model_json_ : first_model_;
  out += R"(,"choices":[{"index":0,"delta":{},"finish_reason":null}]})";
  return out;
}

void ChatStreamDecoder::note_choice(int64_t index, bool finished) {
  auto it = std::lower_bound(choices_.begin(), choices_.end(), index,
                             [](const ChoiceState& c, int64_t i) { return c.index < i; });
  if (it == choices_.end() || it->index != index) {
    if (choices_.size() == kMaxTrackedChoices) {
      too_many_choices_ = true;  // complete() can no longer tell: never complete without [DONE]
      return;
    }
    choices_.insert(it, ChoiceState{index, finished});
    if (!finished) ++unfinished_choices_;
  } else if (finished && !it->finished) {
    it->finished = true;
    --unfinished_choices_;
  }
}

// Scans `choices`: notes every choice's finish state (all indexes, for complete()) and
// records which array positions are choice 0, the only one the client gets.
uint64_t generated_text_bytes(simdjson::dom::object message) {
  uint64_t bytes = 0;
  std::string_view text;
  for (const char* key : {"content", "reasoning_content", "reasoning", "refusal"})
    if (!message[key].get(text)) bytes += text.size();
  simdjson::dom::array calls;
  if (message["tool_calls"].get(calls)) return bytes;
  for (simdjson::dom::element call : calls) {
    simdjson::dom::object function;
    if (call["function"].get(function)) continue;
    if (!function["name"].get(text)) bytes += text.size();
    if (!function["arguments"].get(text)) bytes += text.size();
  }
  return bytes;
}

ChatStreamDecoder::ChoiceScan ChatStreamDecoder::scan_choices(simdjson::dom::array choices) {
  ChoiceScan scan;
  kept_positions_.clear();
  size_t position = 0;
  for (simdjson::dom::element element : choices) {
    ++scan.total;
    simdjson::dom::object choice;
    if (element.get(choice)) {  // not an object: not a choice; left out of what we forward
      ++position;
      continue;
    }
    int64_t index = 0;
    const bool explicit_index = !choice["index"].get(index);
    if (!explicit_index) index = static_cast<int64_t>(position);
    simdjson::dom::object delta;
    if (!choice["delta"].get(delta)) generated_bytes_ += generated_text_bytes(delta);
    simdjson::dom::element reason;
    const bool finished = !choice["finish_reason"].get(reason) && !reason.is_null();
    std::string_view reason_text;
    if (finished && !reason.get(reason_text) && finish_reasons_.size() < kMaxFinishReasons &&
        reason_text.size() <= kMaxFinishReasonBytes)
      finish_reasons_.emplace_back(reason_text);
    note_choice(index, finished);
    if (index == 0) {
      if (kept_positions_.empty()) scan.finished = finished;
      if (!explicit_index) scan.index_missing = true;
      kept_positions_.push_back(position);
    }
    ++position;
  }
  return scan;
}

void ChatStreamDecoder::decode_event(std::string& data, std::vector<ChatChunk>& out) {
  if (data == "[DONE]") {
    status_ = Status::done;
    return;
  }
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: give it room in place (the
  // SSE parser reuses this buffer, so this allocates only while events grow).
  data.reserve(data.size() + simdjson::SIMDJSON_PADDING);
  simdjson::dom::object chunk;
  if (event_parser().parse(data.data(), data.size(), false).get(chunk)) {
    ++dropped_events_;  // spec §3.2: an event that is not a JSON object is dropped, not relayed
    return;
  }
  simdjson::dom::element error;
  if (!chunk["error"].get(error) && !error.is_null()) {
    error_event_ = data;
    status_ = Status::error_event;
    return;
  }
  any_event_ = true;
  remember_first(chunk, "id", first_id_);
  remember_first(chunk, "created", first_created_);
  remember_first(chunk, "model", first_model_);
  const std::optional<TokenUsage> usage = read_usage(chunk);
  if (usage) usage_ = usage;

  simdjson::dom::array choices;
  const bool has_choices = !chunk["choices"].get(choices);
  const ChoiceScan scan = has_choices ? scan_choices(choices) : ChoiceScan{};
  if (!has_choices) kept_positions_.clear();

  ChatChunk result;
  result.usage = usage;
  Rewrite rewrite = Rewrite::none;
  if (!kept_positions_.empty()) {
    result.kind = scan.finished ? ChatChunk::Kind::finish : ChatChunk::Kind::content;
    if (kept_positions_.size() != scan.total || scan.index_missing) rewrite = Rewrite::keep_choice_0;
  } else if (usage && options_.client_wants_usage) {
    result.kind = ChatChunk::Kind::usage;
    if (!has_choices || scan.total != 0) rewrite = Rewrite::empty_choices;
  } else {
    // Nothing of choice 0, and no usage the client asked for: a chunk with empty
    // choices would break clients that read choices[0].
    return;
  }

  if (rewrite == Rewrite::none) {
    result.json = data;  // the hot path: the upstream's bytes, one copy
    if (std::memchr(data.data(), '\n', data.size())) remove_line_breaks(result.json);  // multi-line data
  } else {
    rewrite_chunk(chunk, rewrite, result.json);
  }
  fill_in(chunk, result.json);
  out.push_back(std::move(result));
}

// Rewrites the chunk from its DOM: member by member as simdjson minifies them (one line,
// no whitespace), in the upstream's order, with `choices` replaced. Duplicate members
// stay as they were (a reader taking the first one sees what the passthrough path would
// show), except a second `choices`, which is left out.
void ChatStreamDecoder::rewrite_chunk(simdjson::dom::object chunk, Rewrite rewrite, std::string& json) const {
  // clear() + append, not `json = "{"`: g++ 12 at -O3 reports a false -Wrestrict inside
  // libstdc++'s assign (GCC bug 105329), as in the tests that build strings the same way.
  json.clear();
  json += '{';
  bool choices_written = false;
  auto write_choices = [&] {
    json += R"("choices":[)";
    if (rewrite == Rewrite::keep_choice_0) write_kept_choices(chunk, json);
    json += ']';
    choices_written = true;
  };
  for (const auto field : chunk) {
    const bool is_choices = field.key == "choices";
    if (is_choices && choices_written) continue;
    if (json.size() > 1) json += ',';
    if (is_choices) {
      write_choices();
      continue;
    }
    common::append_json_string(json, field.key);
    json += ':';
    json += simdjson::minify(field.value);
  }
  if (!choices_written) {
    if (json.size() > 1) json += ',';
    write_choices();
  }
  json += '}';
}

// The elements of `choices` that are choice 0, each with "index": 0 first (an element
// without index was choice 0 by its position).
void ChatStreamDecoder::write_kept_choices(simdjson::dom::object chunk, std::string& json) const {
  simdjson::dom::array choices;
  if (chunk["choices"].get(choices)) return;
  size_t position = 0;
  auto kept = kept_positions_.begin();
  for (simdjson::dom::element element : choices) {
    simdjson::dom::object choice;
    if (kept != kept_positions_.end() && *kept == position && !element.get(choice)) {
      if (kept != kept_positions_.begin()) json += ',';
      json += R"({"index":0)";
      for (const auto field : choice) {
        if (field.key == "index") continue;
        json += ',';
        common::append_json_string(json, field.key);
        json += ':';
        json += simdjson::minify(field.value);
      }
      json += '}';
      ++kept;
    }
    ++position;
  }
}

// Adds the id/object/created/model members the chunk lacks right after its opening
// brace. The chunk is non-empty (it has choices or usage), so a comma follows them.
void ChatStreamDecoder::fill_in(simdjson::dom::object chunk, std::string& json) const {
  const bool id = has_member(chunk, "id");
  const bool object = has_member(chunk, "object");
  const bool created = has_member(chunk, "created");
  const bool model = has_member(chunk, "model");
  if (id && object && created && model) return;
  std::string members;
  if (!id) members += R"("id":)" + (first_id_.empty() ? fallback_id_json_ : first_id_) + ",";
  if (!object) members += R"("object":"chat.completion.chunk",)";
  if (!created) members += R"("created":)" + (first_created_.empty() ? fallback_created_json_ : first_created_) + ",";
  if (!model) members += R"("model":)" + (first_model_.empty() ? fallback_model_json_ : first_model_) + ",";
  const size_t brace = json.find('{');
  json.insert(brace + 1, members);
}

}  // namespace tresor::providers
