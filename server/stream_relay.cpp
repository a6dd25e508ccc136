#include "server/stream_relay.h"

#include "server/api_error.h"
#include "server/tresor_member.h"
#include "server/upstream_errors.h"

namespace tresor::server {
namespace {

using providers::ChatChunk;
using End = providers::ChatEventStream::End;

void append_event(std::string& out, std::string_view data) {
  out += "data: ";
  out.append(data);
  out += "\n\n";
}

ApiError stream_stalled(std::chrono::seconds idle) {
  ApiError e = upstream_timeout();
  e.message = "The upstream stream stalled for more than " + std::to_string(idle.count()) + " s";
  return e;
}

}  // namespace

StreamRelay::StreamRelay(std::string tresor_object, std::string unreceipted_tresor_object, std::chrono::seconds idle)
    : tresor_(std::move(tresor_object)), unreceipted_tresor_(std::move(unreceipted_tresor_object)), idle_(idle) {}

void StreamRelay::take(std::vector<ChatChunk>& chunks) {
  for (auto& chunk : chunks) {
    digest_.update(chunk.json);  // as the client gets it, minus the tresor member
    const bool carries_tresor = chunk.kind != ChatChunk::Kind::content;
    if (carries_tresor) tresor_sent_ = true;
    emit(std::move(chunk.json), carries_tresor);
  }
  chunks.clear();
}

void StreamRelay::finish(const providers::ChatEventStream& upstream) {
  if (!tresor_sent_) {
    // No finish chunk came: carry the tresor object on a chunk of its own, one with a
    // choices[0] (SDK loops read chunk.choices[0]) and no finish_reason we did not get.
    std::string chunk = upstream.synthetic_chunk();
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

boost::asio::awaitable<StreamRelay::Ending> StreamRelay::fail(ResponseSink& sink, const ApiError& error) {
  // A stream that fails has no receipt: what was held goes out without its id.
  out_ += release_held(false);
  append_event(out_, error_body(error));
  const std::string bytes = std::move(out_);
  out_.clear();
  co_await sink.write_stream(bytes);
  co_await sink.end_stream();
  co_return Ending::failed;
}

boost::asio::awaitable<StreamRelay::Ending> StreamRelay::relay(providers::ChatEventStream& upstream,
                                                              ResponseSink& sink) {
  for (;;) {
    if (!out_.empty()) {
      const std::string bytes = std::move(out_);
      out_.clear();
      // A failed write means the client left: returning drops the upstream stream, which
      // closes its connection and so cancels the upstream request.
      if (!co_await sink.write_stream(bytes)) co_return Ending::client_gone;
    }
    if (done_) co_return Ending::completed;
    const End end = co_await upstream.next(idle_, chunks_);
    take(chunks_);
    switch (end) {
      case End::more: break;
      case End::done: finish(upstream); break;
      case End::stalled: co_return co_await fail(sink, stream_stalled(idle_));
      case End::cut: co_return co_await fail(sink, upstream_error("The upstream stream ended before completion"));
      case End::oversized: co_return co_await fail(sink, upstream_error("The upstream sent an oversized event"));
      case End::error_event: {
        const ApiError e = upstream_stream_error(upstream.error_code(), upstream.error_message());
        co_return co_await fail(sink, e);
      }
    }
  }
}

}  // namespace tresor::server
