// The failover loop: ordered candidates, same-route retries, breakers, Retry-After,
// per-attempt timers, all inside the request's one deadline (spec §3, §4; issue #4).
//
// It drives the actual exchange through AttemptRunner (implemented by the endpoint),
// so it knows nothing of sockets, bodies or clients.
#pragma once

#include <boost/asio/awaitable.hpp>

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
};

struct AttemptResult {
  AttemptOutcome outcome = AttemptOutcome::ok;
  int http_status = 0;
  std::string upstream_error_code;              // error.code of an upstream error body
  std::optional<std::chrono::seconds> retry_after;  // from a 429/503
};

class AttemptRunner {
 public:
  virtual ~AttemptRunner() = default;
  // Runs one exchange. On success (`ok`) the runner has answered the client (or
  // committed a stream to it). Otherwise nothing has been sent to the client.
  virtual boost::asio::awaitable<AttemptResult> attempt(const AttemptPlan& plan) = 0;
};

struct FailoverPolicy {
  bool stream = false;
  const config::TimeoutsConfig* timeouts = nullptr;
  const config::RetryConfig* retry = nullptr;
  const config::BreakerConfig* breaker = nullptr;
};

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
