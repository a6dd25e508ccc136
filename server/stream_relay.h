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
#include <string>
#include <vector>

#include "common/sha256.h"
#include "providers/exchange.h"
#include "server/api_error.h"
#include "server/http_types.h"

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
    completed,    // the answer is whole: the caller issues the receipt, then writes [DONE]
    failed,       // an in-band error event was written and the stream ended
    client_gone,  // a write failed: nothing more to do
  };
  // Writes what is queued and relays the rest; the client stream must have begun.
  // After `completed` the held-back tail is still unwritten: store the receipt, then write
  // release_held() and [DONE].
  boost::asio::awaitable<Ending> relay(providers::ChatEventStream& upstream, ResponseSink& sink);
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
  // Ends the client's stream with an in-band error after what is queued and held.
  boost::asio::awaitable<Ending> fail(ResponseSink& sink, const ApiError& error);

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
};

}  // namespace tresor::server
