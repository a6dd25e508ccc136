#include "providers/stream_seam.h"

#include <simdjson.h>

#include <utility>
#include <vector>

#include "common/json_text.h"
#include "providers/json_parser.h"

namespace tresor::providers {
namespace {

// One piece of generated text in a delta: its field path and its (unescaped) text.
struct Piece {
  std::string path;
  std::string_view text;
};

// What one delta of choice 0 says, by field path. Tool calls keep their index, so a
// forwarded remainder can name it, and their id/type for a call the client has not seen.
struct ToolCallDelta {
  int64_t index = 0;
  std::string_view id;    // empty: none in this delta
  std::string_view type;
};

struct DeltaText {
  std::vector<Piece> pieces;
  std::vector<ToolCallDelta> tool_calls;
  bool has_function_call = false;
};

constexpr std::string_view kTextFields[] = {"content", "reasoning_content", "reasoning", "refusal"};

void add_string(DeltaText& out, simdjson::dom::object o, std::string_view key, std::string path) {
  std::string_view text;
  if (!o[key].get(text)) out.pieces.push_back(Piece{std::move(path), text});
}

DeltaText read_delta(simdjson::dom::object delta) {
  DeltaText out;
  for (const auto field : kTextFields) add_string(out, delta, field, std::string(field));
  simdjson::dom::array calls;
  if (!delta["tool_calls"].get(calls)) {
    int64_t position = 0;
    for (simdjson::dom::element element : calls) {
      simdjson::dom::object call;
      if (element.get(call)) continue;
      ToolCallDelta tc;
      if (call["index"].get(tc.index)) tc.index = position;
      if (call["id"].get(tc.id)) tc.id = {};        // absent or not a string: none
      if (call["type"].get(tc.type)) tc.type = {};
      simdjson::dom::object function;
      if (!call["function"].get(function)) {
        const std::string base = "tool_calls." + std::to_string(tc.index) + ".";
        add_string(out, function, "name", base + "name");
        add_string(out, function, "arguments", base + "arguments");
      }
      out.tool_calls.push_back(tc);
      ++position;
    }
  }
  simdjson::dom::object function_call;
  if (!delta["function_call"].get(function_call)) {
    out.has_function_call = true;
    add_string(out, function_call, "name", "function_call.name");
    add_string(out, function_call, "arguments", "function_call.arguments");
  }
  return out;
}

// The elements of `choices` that are choice 0 (the only choice a client gets).
template <typename F>
void for_choice_0(simdjson::dom::object chunk, F&& f) {
  simdjson::dom::array choices;
  if (chunk["choices"].get(choices)) return;
  for (simdjson::dom::element element : choices) {
    simdjson::dom::object choice;
    if (element.get(choice)) continue;
    int64_t index = 0;
    if (!choice["index"].get(index) && index != 0) continue;
    f(choice);
  }
}

bool finish_reason_of(simdjson::dom::object choice) {
  simdjson::dom::element reason;
  return !choice["finish_reason"].get(reason) && !reason.is_null();
}

simdjson::dom::parser& parser() { return upstream_json_parser(); }

bool parse(std::string_view json, simdjson::dom::object& out) {
  return !parser().parse(json.data(), json.size(), true).get(out);
}

// The chunk's top-level members with the first attempt's id/object/created/model in
// front and `choices` replaced by `choices_json` (when not empty).
std::string rebuild(simdjson::dom::object chunk, const std::string& id, const std::string& created,
                    const std::string& model, const std::string& choices_json) {
  // Ours, else the chunk's own (the decoder gives every client chunk all three).
  const auto value = [&](const std::string& ours, std::string_view key) {
    if (!ours.empty()) return ours;
    simdjson::dom::element v;
    return chunk[key].get(v) ? std::string("null") : simdjson::minify(v);
  };
  std::string out;
  out += R"({"id":)";
  out += value(id, "id");
  out += R"(,"object":"chat.completion.chunk","created":)";
  out += value(created, "created");
  out += R"(,"model":)";
  out += value(model, "model");
  bool choices_written = false;
  for (const auto field : chunk) {
    if (field.key == "id" || field.key == "object" || field.key == "created" || field.key == "model") continue;
    if (field.key == "choices") {
      if (choices_written) continue;
      choices_written = true;
      out += R"(,"choices":)";
      out += choices_json.empty() ? simdjson::minify(field.value) : choices_json;
      continue;
    }
    out += ',';
    common::append_json_string(out, field.key);
    out += ':';
    out += simdjson::minify(field.value);
  }
  if (!choices_written && !choices_json.empty()) {
    out += R"(,"choices":)";
    out += choices_json;
  }
  out += '}';
  return out;
}

// {"name":…,"arguments":…} with the parts of `fresh` under `base` ("tool_calls.<i>." or
// "function_call."), each only when there is one.
void append_function(std::string& out, const std::map<std::string, std::string>& fresh, const std::string& base) {
  out += '{';
  bool first = true;
  for (const std::string_view key : {"name", "arguments"}) {
    const auto it = fresh.find(base + std::string(key));
    if (it == fresh.end()) continue;
    if (!first) out += ',';
    first = false;
    common::append_json_string(out, key);
    out += ':';
    common::append_json_string(out, it->second);
  }
  out += '}';
}

// One choice-0 element of a forwarded chunk: only `fresh` (the text the client lacks, by
// path), the id and type of a tool call the client has not seen (`known_calls`: those it
// has), and the finish_reason when `finish`.
std::string remainder_choice(const DeltaText& d, const std::map<std::string, std::string>& fresh,
                             const std::set<int64_t>& known_calls, simdjson::dom::object choice, bool finish) {
  std::string out = R"({"index":0,"delta":{)";
  bool first = true;
  const auto member = [&](std::string_view key) {
    if (!first) out += ',';
    first = false;
    common::append_json_string(out, key);
    out += ':';
  };
  for (const auto field : kTextFields)
    if (auto it = fresh.find(std::string(field)); it != fresh.end()) {
      member(field);
      common::append_json_string(out, it->second);
    }
  bool calls_open = false;
  for (const auto& tc : d.tool_calls) {
    const std::string base = "tool_calls." + std::to_string(tc.index) + ".";
    const auto name = fresh.find(base + "name");
    const auto arguments = fresh.find(base + "arguments");
    const bool new_call = !known_calls.count(tc.index);
    if (name == fresh.end() && arguments == fresh.end() && !new_call) continue;
    if (!calls_open) {
      member("tool_calls");
      out += '[';
      calls_open = true;
    } else {
      out += ',';
    }
    out += R"({"index":)" + std::to_string(tc.index);
    if (new_call && !tc.id.empty()) {
      out += R"(,"id":)";
      common::append_json_string(out, tc.id);
    }
    if (new_call && !tc.type.empty()) {
      out += R"(,"type":)";
      common::append_json_string(out, tc.type);
    }
    out += R"(,"function":)";
    append_function(out, fresh, base);
    out += '}';
  }
  if (calls_open) out += ']';
  if (d.has_function_call) {
    if (fresh.count("function_call.name") || fresh.count("function_call.arguments")) {
      member("function_call");
      append_function(out, fresh, "function_call.");
    }
  }
  out += R"(},"finish_reason":)";
  if (finish) {
    simdjson::dom::element reason;
    out += choice["finish_reason"].get(reason) ? std::string("null") : simdjson::minify(reason);
  } else {
    out += "null";
  }
  out += '}';
  return out;
}

}  // namespace

void DeliveredAnswer::note(std::string_view chunk_json) {
  simdjson::dom::object chunk;
  if (!parse(chunk_json, chunk)) return;
  if (id_.empty()) {
    simdjson::dom::element v;
    if (!chunk["id"].get(v)) id_ = simdjson::minify(v);
    if (!chunk["created"].get(v)) created_ = simdjson::minify(v);
    if (!chunk["model"].get(v)) model_ = simdjson::minify(v);
  }
  for_choice_0(chunk, [&](simdjson::dom::object choice) {
    simdjson::dom::object delta;
    if (!choice["delta"].get(delta)) {
      const DeltaText d = read_delta(delta);
      for (const auto& piece : d.pieces) text_[piece.path].append(piece.text);
      for (const auto& tc : d.tool_calls) tool_calls_.insert(tc.index);
    }
    if (finish_reason_of(choice)) finished_ = true;
  });
}

uint64_t DeliveredAnswer::text_bytes() const {
  uint64_t n = 0;
  for (const auto& [path, text] : text_) n += text.size();
  return n;
}

bool DeliveredAnswer::plain_content() const {
  if (!tool_calls_.empty()) return false;
  for (const auto& [path, text] : text_)
    if (path != "content" && !text.empty()) return false;
  return true;
}

std::string DeliveredAnswer::content() const {
  const auto it = text_.find("content");
  return it == text_.end() ? std::string() : it->second;
}

StreamSeam::StreamSeam(const DeliveredAnswer& delivered, Mode mode) : delivered_(delivered) {
  // A prefill continuation starts where the client is: nothing to reproduce.
  if (mode == Mode::prefill)
    for (const auto& [path, text] : delivered_.text_) seen_[path] = text.size();
}

bool StreamSeam::covered() const {
  for (const auto& [path, text] : delivered_.text_) {
    const auto it = seen_.find(path);
    if ((it == seen_.end() ? 0 : it->second) < text.size()) return false;
  }
  return true;
}

std::string StreamSeam::with_identity(std::string_view chunk_json) const {
  simdjson::dom::object chunk;
  if (delivered_.id_.empty() || !parse(chunk_json, chunk)) return std::string(chunk_json);
  return rebuild(chunk, delivered_.id_, delivered_.created_, delivered_.model_, std::string());
}

StreamSeam::Verdict StreamSeam::accept(std::string& chunk_json) {
  if (caught_up_) {
    chunk_json = with_identity(chunk_json);
    return Verdict::forward;
  }
  simdjson::dom::object chunk;
  if (!parse(chunk_json, chunk)) return Verdict::drop;

  // Per choice-0 element: the delta with only what the client lacks.
  std::string choices = "[";
  bool any_new = false;
  bool any_choice = false;
  bool diverged = false;
  for_choice_0(chunk, [&](simdjson::dom::object choice) {
    if (diverged) return;
    any_choice = true;
    DeltaText d;
    simdjson::dom::object delta;
    if (!choice["delta"].get(delta)) d = read_delta(delta);
    std::map<std::string, std::string> fresh;  // path → the part beyond what the client has
    for (const auto& piece : d.pieces) {
      const auto known = delivered_.text_.find(piece.path);
      const std::string_view have = known == delivered_.text_.end() ? std::string_view() : known->second;
      uint64_t& pos = seen_[piece.path];
      const uint64_t overlap =
          std::min<uint64_t>(piece.text.size(), have.size() > pos ? have.size() - pos : 0);
      if (piece.text.substr(0, overlap) != have.substr(pos, overlap)) {
        diverged = true;
        return;
      }
      pos += piece.text.size();
      if (piece.text.size() > overlap) fresh[piece.path] += piece.text.substr(overlap);
    }
    bool finish = finish_reason_of(choice);
    // A tool call the client has not seen may open with a delta of only its id.
    bool new_call_id = false;
    for (const auto& tc : d.tool_calls)
      if (!tc.id.empty() && !delivered_.tool_calls_.count(tc.index)) new_call_id = true;
    const bool moves_on = !fresh.empty() || new_call_id;
    // Going beyond the client's text, or ending, before every field the client has was
    // reproduced; or going on after the client's answer ended: a different answer.
    if (((moves_on || finish) && !covered()) || (moves_on && delivered_.finished())) {
      diverged = true;
      return;
    }
    if (finish && delivered_.finished()) finish = false;  // the client has its finish chunk
    if (!moves_on && !finish) return;
    any_new = true;

    const std::string out = remainder_choice(d, fresh, delivered_.tool_calls_, choice, finish);
    if (choices.size() > 1) choices += ',';
    choices += out;
  });
  if (diverged) return Verdict::diverged;

  simdjson::dom::element usage;
  const bool has_usage = !chunk["usage"].get(usage) && !usage.is_null();
  if (!any_new && !(has_usage && !any_choice)) {
    // Nothing the client lacks. A usage the client asked for rides on a chunk of its own
    // (empty choices), forwarded below; usage on a dropped content chunk is not lost to
    // billing (the decoder keeps it), only to the client's view of a recovered stream.
    return Verdict::drop;
  }
  choices += ']';
  if (covered()) caught_up_ = true;
  chunk_json = rebuild(chunk, delivered_.id_, delivered_.created_, delivered_.model_,
                       any_choice ? choices : std::string());
  return Verdict::forward;
}

}  // namespace tresor::providers
