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
  for (auto& chunk : chunks)
    if (!take_one(chunk)) break;
  chunks.clear();
}

bool StreamRelay::take_one(ChatChunk& chunk) {
  if (diverged_) return false;
  if (seam_) {
    switch (seam_->accept(chunk.json)) {
      case providers::StreamSeam::Verdict::drop: return true;
      case providers::StreamSeam::Verdict::diverged: diverged_ = true; return false;
      case providers::StreamSeam::Verdict::forward: ++forwarded_since_seam_; break;
    }
    // A finish the client already has was left out of the rewritten chunk.
    if (chunk.kind == ChatChunk::Kind::finish && delivered_.finished()) chunk.kind = ChatChunk::Kind::content;
  }
  if (track_) {
    unread_delivered_ += chunk.json;  // one line of JSON: no CR/LF inside
    unread_delivered_ += '\n';
    // Raw chunks are ~40x their text: past this, fold them into the text (a long answer's
    // memory stays its text plus this much; a short one is never parsed twice).
    constexpr size_t kMaxUnreadDelivered = 32 * 1024;
    // Not while a seam still compares against the text (after it caught up it reads only the identity).
    if (unread_delivered_.size() > kMaxUnreadDelivered && (!seam_ || seam_->caught_up())) delivered();
  }
  digest_.update(chunk.json);  // as the client gets it, minus the tresor member
  const bool carries_tresor = chunk.kind != ChatChunk::Kind::content;
  if (carries_tresor) tresor_sent_ = true;
  emit(std::move(chunk.json), carries_tresor);
  return true;
}

const providers::DeliveredAnswer& StreamRelay::delivered() {
  std::string_view rest = unread_delivered_;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    delivered_.note(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
  }
  unread_delivered_.clear();
  return delivered_;
}

void StreamRelay::continue_with(providers::StreamSeam::Mode mode) {
  seam_.reset();  // the previous seam reads delivered_, which changes now
  seam_ = std::make_unique<providers::StreamSeam>(delivered(), mode);
  forwarded_since_seam_ = 0;
  done_ = false;
}

void StreamRelay::set_tresor(std::string tresor_object, std::string unreceipted_tresor_object) {
  tresor_ = std::move(tresor_object);
  unreceipted_tresor_ = std::move(unreceipted_tresor_object);
}

void StreamRelay::finish(const providers::ChatEventStream& upstream) {
  if (!tresor_sent_) {
    // No finish chunk came: carry the tresor object on a chunk of its own, one with a
    // choices[0] (SDK loops read chunk.choices[0]) and no finish_reason we did not get.
    std::string chunk = seam_ ? seam_->with_identity(upstream.synthetic_chunk()) : upstream.synthetic_chunk();
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

boost::asio::awaitable<void> StreamRelay::fail(ResponseSink& sink, const ApiError& error) {
  // A stream that fails has no receipt: what was held goes out without its id.
  out_ += release_held(false);
  append_event(out_, error_body(error));
  const std::string bytes = std::move(out_);
  out_.clear();
  if (co_await sink.write_stream(bytes)) co_await sink.end_stream();
}

boost::asio::awaitable<StreamRelay::Ending> StreamRelay::relay(providers::ChatEventStream& upstream,
                                                              ResponseSink& sink,
                                                              std::optional<common::Deadline> first_forward_by) {
  for (;;) {
    if (!out_.empty()) {
      const std::string bytes = std::move(out_);
      out_.clear();
      // A failed write means the client left: returning drops the upstream stream, which
      // closes its connection and so cancels the upstream request.
      if (!co_await sink.write_stream(bytes)) co_return Ending::client_gone;
      if (pace_) pace_->wrote(providers::Clock::now());
    }
    if (diverged_) co_return Ending::diverged;
    if (done_) co_return Ending::completed;
    std::optional<common::Deadline> limit;
    if (seam_ && forwarded_since_seam_ == 0) limit = first_forward_by;
    const End end = co_await upstream.next(idle_, chunks_, limit);
    take(chunks_);
    stalled_ = false;
    switch (end) {
      case End::more: break;
      case End::done:
        if (diverged_) break;
        // A recovery whose answer ended before reproducing what the client has is a
        // different answer.
        if (seam_ && !seam_->caught_up() && !delivered_.finished()) {
          diverged_ = true;
          break;
        }
        finish(upstream);
        break;
      case End::stalled:
        stalled_ = true;
        failure_ = stream_stalled(idle_);
        co_return Ending::upstream_failed;
      case End::cut:
        failure_ = upstream_error("The upstream stream ended before completion");
        co_return Ending::upstream_failed;
      case End::oversized:
        failure_ = upstream_error("The upstream sent an oversized event");
        co_return Ending::upstream_failed;
      case End::error_event:
        failure_ = upstream_stream_error(upstream.error_code(), upstream.error_message());
        co_return Ending::upstream_failed;
    }
  }
}

}  // namespace tresor::server
