// The failover loop: ordered candidates, same-route retries, breakers, Retry-After,
// per-attempt timers, all inside the request's one deadline (spec §3, §4; issue #4).
//
// It drives the actual exchange through AttemptRunner (implemented by the endpoint),
// so it knows nothing of sockets, bodies or clients.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/upstream_failure.h"
#include "config/config.h"
#include "router/attempts.h"
#include "router/route_health.h"

namespace tresor::router {

// Two attempts racing to a first event (hedging, issue 18): the first to claim the commit
// wins and the other is cancelled at once (its pending upstream I/O completes with
// operation_aborted, which closes its connection).
class HedgeRace {
 public:
  // True when `slot` may commit: it is the first to ask (the other is then cancelled), or
  // it already won.
  bool claim(int slot);
  bool lost(int slot) const { return winner_ >= 0 && winner_ != slot; }
  int winner() const { return winner_; }
  boost::asio::cancellation_signal& signal(int slot) { return cancel_[slot]; }

  // Who runs in each slot and since when (unset: the hedge never started), for the trail
  // the winner sends with its head.
  struct Runner {
    std::string route;
    std::optional<Clock::time_point> started;
  };
  Runner runners[2];

 private:
  int winner_ = -1;
  boost::asio::cancellation_signal cancel_[2];
};

struct AttemptPlan {
  const config::RouteConfig* route = nullptr;
  size_t candidate_index = 0;  // position in the candidate list (failover flag = > 0)
  bool last_candidate = false;
  // The attempt must produce its first byte / first event by this time (a per-attempt
  // timer, or the request deadline for the last candidate).
  common::Deadline first_byte_deadline;
  common::Deadline request_deadline;
  Clock::time_point started{};
  const std::vector<AttemptRecord>* history = nullptr;  // attempts before this one
  // A hedged attempt: it must claim the race before committing anything to the client,
  // and reports hedged_cancelled when it lost.
  HedgeRace* race = nullptr;
  int race_slot = 0;

  bool claim_commit() const { return !race || race->claim(race_slot); }
  bool lost_race() const { return race && race->lost(race_slot); }
};

struct AttemptResult {
  AttemptOutcome outcome = AttemptOutcome::ok;
  int http_status = 0;
  std::string upstream_error_code;              // error.code of an upstream error body
  std::optional<std::chrono::seconds> retry_after;  // from a 429/503
  // The client's stream was committed (by this attempt or an earlier one) and then its
  // upstream failed: the next attempts in the usual order are recoveries of that stream.
  // A 4xx then is no answer for the client (it already has a 200): the loop moves on.
  bool committed = false;
  // With `committed`: the runner has ended the client's stream (in-band error); stop.
  bool ended = false;
  // Opaque to the router, copied into the attempt's AttemptRecord: the runner's own id for
  // this attempt (the endpoints put the attempt's trace span id here).
  uint64_t runner_tag = 0;
};

class AttemptRunner {
 public:
  virtual ~AttemptRunner() = default;
  // Runs one exchange. On success (`ok`) the runner has answered the client (or
  // committed a stream to it). Otherwise nothing has been sent to the client, or the
  // result says `committed` (a stream that failed after its first event).
  virtual boost::asio::awaitable<AttemptResult> attempt(const AttemptPlan& plan) = 0;
};

struct FailoverPolicy {
  bool stream = false;
  const config::TimeoutsConfig* timeouts = nullptr;
  const config::RetryConfig* retry = nullptr;
  const config::BreakerConfig* breaker = nullptr;
  const config::RoutingConfig* routing = nullptr;
  // X-Tresor-Hedge-After-Ms (0: no hedging for this request), over the routes' and the
  // global hedge_after_ms.
  std::optional<unsigned> hedge_after_ms;
};

// How long candidate `route` may go without a first event before the next candidate is
// started beside it; nullopt: no hedging.
std::optional<std::chrono::milliseconds> hedge_delay(const FailoverPolicy& policy, const config::RouteConfig& route);

struct FailoverResult {
  enum class Kind {
    served,        // the runner answered the client
    pass_through,  // last attempt's upstream 4xx is the answer (runner kept its body)
    failed,        // every candidate failed: 502
    timed_out,     // the deadline ran out: 504
    no_route,      // nothing could be attempted: 503 + Retry-After
  };
  Kind kind = Kind::failed;
  std::vector<AttemptRecord> attempts;
  std::chrono::seconds retry_after{1};  // for no_route
  // Whether a hedge was started and how it ended (metrics: tresor_hedges_total).
  enum class Hedge { none, won, lost, failed };
  Hedge hedge = Hedge::none;
};

// Pure: what a failed attempt means for the loop. Which clock ran out on a timeout (the
// attempt's own first-byte/first-event timer, or the request's budget), and the outcome
// enum with the upstream's status, error code and Retry-After.
AttemptResult attempt_result(const common::UpstreamFailure& failure, const AttemptPlan& plan, bool stream,
                             Clock::time_point now);

boost::asio::awaitable<FailoverResult> run_failover(const std::vector<const config::RouteConfig*>& candidates,
                                                    Clock::time_point started, common::Deadline deadline,
                                                    const FailoverPolicy& policy, RouteHealth& health,
                                                    AttemptRunner& runner);

// Jittered exponential backoff before same-route retry `retry_number` (1 = first retry):
// backoff_ms · 2^(n-1) · [0.75, 1.25).
std::chrono::milliseconds retry_backoff(unsigned backoff_ms, unsigned retry_number);

}  // namespace tresor::router
