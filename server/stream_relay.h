// Relays one decoded upstream chat stream (providers::ChatEventStream) to the client
// (spec §1.1, §5.3).
//
// The stream is committed to the client once its first chunk is in hand (the caller
// takes it with ChatEventStream::first_chunks and begins the client's 200). From then on,
// every failure becomes an in-band `data: {"error":…}` event and the stream ends without
// [DONE]; never a finish_reason we did not receive. The relay owns what is the gateway's
// own: the tresor member on the finish and usage chunks, holding them back until the
// receipt is stored, and the digest of what the client received.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "providers/exchange.h"
#include "providers/stream_seam.h"
#include "server/api_error.h"
#include "server/http_types.h"
#include "server/request_record.h"

namespace tresor::server {

class StreamRelay {
 public:
  // `tresor_object` carries the receipt id; `unreceipted_tresor_object` is the same without
  // it, for a stream whose receipt is not stored (it failed, or the stream did). The finish
  // and usage chunks carry it, so they (and anything after them) are held back until the
  // caller knows whether the receipt is stored: a receipt id never reaches the client
  // before its receipt (durability: sync).
  StreamRelay(std::string tresor_object, std::string unreceipted_tresor_object, std::chrono::seconds idle);

  // Queues chunks for the client (the first ones, from first_chunks()).
  void take(std::vector<providers::ChatChunk>& chunks);

  enum class Ending {
    completed,        // the answer is whole: the caller issues the receipt, then writes [DONE]
    upstream_failed,  // cut, stalled, error event: failure() says why; the client's stream is
                      // still open, for a recovery (issue 18) or fail()
    diverged,         // a recovery's text differs from what the client has (never spliced)
    client_gone,      // a write failed: nothing more to do
  };
  // Writes what is queued and relays the rest; the client stream must have begun.
  // After `completed` the held-back tail is still unwritten: store the receipt, then write
  // release_held() and [DONE]. `first_forward_by` bounds the wait for the first chunk a
  // recovery forwards (timeouts.attempt_first_event_seconds).
  boost::asio::awaitable<Ending> relay(providers::ChatEventStream& upstream, ResponseSink& sink,
                                       std::optional<common::Deadline> first_forward_by = std::nullopt);
  // After upstream_failed: the in-band error for the client, and whether silence was the cause.
  const ApiError& failure() const { return failure_; }
  bool stalled() const { return stalled_; }
  // Ends the client's stream with an in-band error after what is queued and held.
  boost::asio::awaitable<void> fail(ResponseSink& sink, const ApiError& error);

  // Recovery (issue 18): keep what the client has (track_delivered before the first take),
  // then continue from another attempt's chunks through a seam over it.
  void track_delivered() { track_ = true; }
  // What the client has: the chunks it got are kept as they are (one copy, no parse on the
  // hot path) and read into the DeliveredAnswer only when a recovery asks.
  const providers::DeliveredAnswer& delivered();
  void continue_with(providers::StreamSeam::Mode mode);
  // Chunks forwarded since continue_with (a recovery that forwarded none failed before its
  // first event).
  size_t forwarded_since_seam() const { return forwarded_since_seam_; }
  // The tresor objects of the finish chunk change when another route finishes the answer.
  void set_tresor(std::string tresor_object, std::string unreceipted_tresor_object);
  // Where the client's pace is noted (each write of content), for the metrics and traces.
  void note_pace_in(StreamPace* pace) { pace_ = pace; }
  // The held-back events (finish, usage, …), each tresor object with the receipt id only
  // when `receipt_stored`. Clears them.
  std::string release_held(bool receipt_stored);

  // SHA-256 over the data payloads the client received, each without its tresor member,
  // [DONE] excluded (the receipt's response_sha256). Call once, after `completed`.
  std::string response_sha256() { return digest_.hex(); }

 private:
  // The answer is complete: make sure the client gets the tresor object.
  void finish(const providers::ChatEventStream& upstream);
  // Queues one event for the client: held back when it carries the tresor object or
  // something is held already (the order stays the upstream's).
  void emit(std::string data, bool carries_tresor);
  // Takes one chunk for the client: through the seam during a recovery.
  bool take_one(providers::ChatChunk& chunk);

  struct HeldEvent {
    std::string data;  // without the tresor member
    bool carries_tresor = false;
  };

  std::string tresor_;
  std::string unreceipted_tresor_;
  std::chrono::seconds idle_;
  std::vector<providers::ChatChunk> chunks_;
  std::string out_;  // client bytes not yet written
  std::vector<HeldEvent> held_;
  bool tresor_sent_ = false;
  bool done_ = false;
  common::Sha256 digest_;
  bool track_ = false;
  StreamPace* pace_ = nullptr;
  std::string unread_delivered_;  // chunks the client got since delivered() last read them, one per line
  providers::DeliveredAnswer delivered_;
  std::unique_ptr<providers::StreamSeam> seam_;
  size_t forwarded_since_seam_ = 0;
  bool diverged_ = false;
  ApiError failure_;
  bool stalled_ = false;
};

}  // namespace tresor::server
