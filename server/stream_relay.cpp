#include "server/stream_relay.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "server/api_error.h"
#include "server/json_parser.h"
#include "server/tresor_member.h"
#include "server/upstream_errors.h"

namespace tresor::server {
namespace {

using providers::Clock;
using providers::TransportError;

void append_event(std::string& out, std::string_view data) {
  out += "data: ";
  out.append(data);
  out += "\n\n";
}

enum class ChunkKind { content, finish, usage, error };

struct ChunkInfo {
  ChunkKind kind = ChunkKind::content;
  bool has_usage = false;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Which OpenAI stream chunk this is: the tresor object goes on the finish chunk (and a
// trailing usage chunk), spec §1.1.
ChunkInfo classify_chunk(simdjson::dom::element chunk) {
  ChunkInfo info;
  simdjson::dom::element e;
  if (!chunk["error"].get(e)) {
    info.kind = ChunkKind::error;
    return info;
  }
  simdjson::dom::element usage;
  info.has_usage = !chunk["usage"].get(usage) && usage.is_object();
  if (info.has_usage) {
    int64_t n = 0;
    if (!usage["prompt_tokens"].get(n)) info.prompt_tokens = n;
    if (!usage["completion_tokens"].get(n)) info.completion_tokens = n;
  }
  simdjson::dom::array choices;
  if (!chunk["choices"].get(choices)) {
    if (choices.size() == 0) {
      if (info.has_usage) info.kind = ChunkKind::usage;
      return info;
    }
    simdjson::dom::element finish;
    if (!choices.at(0)["finish_reason"].get(finish) && !finish.is_null()) info.kind = ChunkKind::finish;
  }
  return info;
}

ApiError stream_stalled(std::chrono::seconds idle) {
  ApiError e = upstream_timeout();
  e.message = "The upstream stream stalled for more than " + std::to_string(idle.count()) + " s";
  return e;
}

std::string error_event(const ApiError& e) {
  std::string out;
  append_event(out, error_body(e));
  return out;
}

}  // namespace

StreamRelay::StreamRelay(std::string tresor_object, std::string unreceipted_tresor_object, bool include_usage,
                         std::chrono::seconds idle, std::string provider_secret)
    : tresor_(std::move(tresor_object)),
      unreceipted_tresor_(std::move(unreceipted_tresor_object)),
      provider_secret_(std::move(provider_secret)),
      include_usage_(include_usage),
      idle_(idle) {}

void StreamRelay::finish() {
  if (!tresor_sent_) {
    // No finish chunk came: carry the tresor object on a chunk of its own.
    std::string chunk = R"({"object":"chat.completion.chunk","choices":[]})";
    digest_.update(chunk);
    emit(std::move(chunk), true);
    tresor_sent_ = true;
  }
  done_ = true;
}

void StreamRelay::emit(std::string data, bool carries_tresor) {
  if (carries_tresor || !held_.empty())
    held_.push_back(HeldEvent{std::move(data), carries_tresor});
  else
    append_event(out_, data);
}

std::string StreamRelay::release_held(bool receipt_stored) {
  std::string out;
  for (auto& e : held_) {
    if (e.carries_tresor) append_tresor_member(e.data, receipt_stored ? tresor_ : unreceipted_tresor_);
    append_event(out, e.data);
  }
  held_.clear();
  return out;
}

StreamRelay::Batch StreamRelay::consume(std::string_view bytes) {
  events_.clear();
  if (!sse_.feed(bytes, events_)) return Batch::oversized;
  for (auto& data : events_) {
    if (data == "[DONE]") {
      if (!any_event_) return Batch::done;
      finish();
      return Batch::done;
    }
    data.reserve(data.size() + simdjson::SIMDJSON_PADDING);
    simdjson::dom::element chunk;
    if (upstream_json_parser().parse(data.data(), data.size(), false).get(chunk) || !chunk.is_object()) {
      ++dropped_events_;  // spec §3.2: invalid JSON events are dropped, not relayed
      spdlog::debug("dropped an invalid JSON event from the upstream stream");
      continue;
    }
    const ChunkInfo info = classify_chunk(chunk);
    if (info.kind == ChunkKind::error) {
      // Mid-stream: relay the upstream's error, rebuilt with the provider's key scrubbed,
      // after what was held back (a stream that fails has no receipt).
      if (any_event_) {
        out_ += release_held(false);
        append_event(out_, error_body(upstream_stream_error(data, provider_secret_)));
      }
      return Batch::error_event;
    }
    digest_.update(data);  // as the client gets it, minus the tresor member
    const bool carries_tresor = info.kind == ChunkKind::finish || info.kind == ChunkKind::usage;
    if (carries_tresor) tresor_sent_ = true;
    if (info.kind == ChunkKind::finish) finish_seen_ = true;
    if (info.has_usage) {
      usage_seen_ = true;
      prompt_tokens_ = info.prompt_tokens;
      completion_tokens_ = info.completion_tokens;
    }
    emit(std::move(data), carries_tresor);
    any_event_ = true;
  }
  return Batch::more;
}

boost::asio::awaitable<StreamRelay::FirstEvent> StreamRelay::await_first_event(
    providers::UpstreamResponse& upstream, Clock::time_point deadline) {
  while (!any_event_) {
    TransportError error = TransportError::none;
    const std::string bytes = co_await upstream.read_some(deadline, error);
    if (error == TransportError::timeout) co_return FirstEvent::timeout;
    if (error != TransportError::none) co_return FirstEvent::failed;
    if (bytes.empty() && upstream.body_done()) co_return FirstEvent::unusable;
    const Batch batch = consume(bytes);
    if (batch == Batch::error_event) co_return FirstEvent::error_event;
    if (batch == Batch::oversized) co_return FirstEvent::unusable;
    if (batch == Batch::done && !any_event_) co_return FirstEvent::unusable;
  }
  co_return FirstEvent::ready;
}

boost::asio::awaitable<StreamRelay::Ending> StreamRelay::relay(providers::UpstreamResponse& upstream,
                                                              ResponseSink& sink) {
  for (;;) {
    if (!out_.empty()) {
      const std::string chunk = std::move(out_);
      out_.clear();
      // A failed write means the client left: returning drops the upstream response,
      // which closes its connection and so cancels the upstream request.
      if (!co_await sink.write_stream(chunk)) co_return Ending::client_gone;
    }
    if (done_) co_return Ending::completed;
    const auto grace = complete_without_done();
    const auto deadline = Clock::now() + (grace ? std::chrono::duration_cast<Clock::duration>(kCompletionGrace)
                                                : std::chrono::duration_cast<Clock::duration>(idle_));
    TransportError error = TransportError::none;
    const std::string bytes = co_await upstream.read_some(deadline, error);
    const bool ended = error != TransportError::none || (bytes.empty() && upstream.body_done());
    if (ended && grace) {
      // Finish chunk (and any usage asked for) arrived; the upstream closed or went
      // quiet instead of sending [DONE]: the answer is complete.
      finish();
      continue;
    }
    if (ended) {
      const ApiError e = error == TransportError::timeout ? stream_stalled(idle_)
                                                          : upstream_error("The upstream stream ended before completion");
      spdlog::warn("upstream stream failed after the first event: {}",
                   error == TransportError::none ? "ended without [DONE]" : providers::to_string(error));
      const std::string event = release_held(false) + error_event(e);
      co_await sink.write_stream(event);
      co_await sink.end_stream();
      co_return Ending::failed;
    }
    const Batch batch = consume(bytes);
    if (batch == Batch::error_event || batch == Batch::oversized) {
      if (batch == Batch::oversized) {
        const ApiError e = upstream_error("The upstream sent an oversized event");
        out_ += release_held(false);
        out_ += error_event(e);
      }
      const std::string chunk = std::move(out_);
      out_.clear();
      co_await sink.write_stream(chunk);
      co_await sink.end_stream();
      co_return Ending::failed;
    }
  }
}

}  // namespace tresor::server
