// Relays one upstream chat event stream to the client (spec §1.1, issue #4 item 5).
//
// Two phases. Before commit, events are read until the first valid one: nothing has
// reached the client, so the caller can still fail over. After commit (the client's
// 200 is out), every failure becomes an in-band `data: {"error":…}` event and the stream
// ends without [DONE]; never a finish_reason we did not receive.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "providers/sse_parser.h"
#include "receipts/claims.h"
#include "providers/upstream_client.h"
#include "server/http_types.h"

namespace tresor::server {

class StreamRelay {
 public:
  // After the upstream sent its finish chunk (and usage, if the client asked for it),
  // this much silence — or the upstream closing — completes the stream.
  static constexpr auto kCompletionGrace = std::chrono::milliseconds(500);

  enum class FirstEvent {
    ready,        // a valid event is buffered: commit and relay()
    timeout,      // no event before the deadline
    failed,       // reset/cut/protocol error before the first event
    unusable,     // a 200 that is no stream: it ended (or sent [DONE]) without any event,
                  // or its first event is over the event size limit (bad_response)
    error_event,  // the upstream's first event was an error object
  };

  // `tresor_object` carries the receipt id; `unreceipted_tresor_object` is the same without
  // it, for a stream whose receipt is not stored (it failed, or the stream did). The finish
  // and usage chunks carry it, so they (and anything after them) are held back until the
  // caller knows whether the receipt is stored: a receipt id never reaches the client
  // before its receipt (durability: sync). `provider_secret` is scrubbed from an upstream
  // error event before it is relayed.
  StreamRelay(std::string tresor_object, std::string unreceipted_tresor_object, bool include_usage,
              std::chrono::seconds idle, std::string provider_secret = {});

  boost::asio::awaitable<FirstEvent> await_first_event(providers::UpstreamResponse& upstream,
                                                       providers::Clock::time_point deadline);
  enum class Ending {
    completed,    // the answer is whole: the caller issues the receipt, then writes [DONE]
    failed,       // an in-band error event was written and the stream ended
    client_gone,  // a write failed: nothing more to do
  };
  // Writes what is buffered and relays the rest; the client stream must have begun.
  // After `completed` the held-back tail is still unwritten: store the receipt, then write
  // release_held() and [DONE].
  boost::asio::awaitable<Ending> relay(providers::UpstreamResponse& upstream, ResponseSink& sink);
  // The held-back events (finish, usage, …), each tresor object with the receipt id only
  // when `receipt_stored`. Clears them.
  std::string release_held(bool receipt_stored);

  size_t dropped_events() const { return dropped_events_; }
  // SHA-256 over the data payloads the client received, each without its tresor member,
  // [DONE] excluded (the receipt's response_sha256). Call once, after `completed`.
  std::string response_sha256() { return digest_.hex(); }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }

 private:
  enum class Batch { more, done, error_event, oversized };
  Batch consume(std::string_view bytes);
  void finish();  // the answer is complete: make sure the client gets the tresor object
  // Queues one event for the client: held back when it carries the tresor object or
  // something is held already (the order stays the upstream's).
  void emit(std::string data, bool carries_tresor);

  struct HeldEvent {
    std::string data;  // without the tresor member
    bool carries_tresor = false;
  };
  bool complete_without_done() const { return finish_seen_ && (usage_seen_ || !include_usage_); }

  std::string tresor_;
  std::string unreceipted_tresor_;
  std::string provider_secret_;
  bool include_usage_;
  std::chrono::seconds idle_;
  providers::SseParser sse_;
  std::vector<std::string> events_;
  std::string out_;  // client bytes not yet written
  std::vector<HeldEvent> held_;
  size_t dropped_events_ = 0;
  bool any_event_ = false;
  bool tresor_sent_ = false;
  bool finish_seen_ = false;
  bool usage_seen_ = false;
  bool done_ = false;
  receipts::Sha256 digest_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
};

}  // namespace tresor::server
