// What the two inference endpoints (chat completions, audio transcriptions) share: the
// control headers read before the body, the services they run against, and the pieces
// of an AttemptRunner that do not depend on the body format (outcome classification,
// upstream refusals, the failure answer, receipt claims, billing, the access log).
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "providers/upstream_client.h"
#include "receipts/claims.h"
#include "receipts/receipt_service.h"
#include "router/failover.h"
#include "router/route_resolution.h"
#include "router/route_health.h"
#include "server/api_error.h"
#include "server/attestation.h"
#include "server/credit_ledger.h"
#include "server/file_io_pool.h"
#include "server/http_types.h"
#include "server/request_record.h"
#include "server/runtime.h"
#include "server/tresor_member.h"

namespace tresor::server {

inline constexpr std::string_view kAttemptsHeader = "X-Tresor-Attempts";

// What the header phase settles before any body byte is read.
struct ControlHeaders {
  const config::ApiKeyConfig* key = nullptr;
  std::chrono::seconds budget{0};    // X-Tresor-Timeout-Seconds or the default
  bool receipt_opt_out = false;      // X-Tresor-Receipt: false|0
  std::optional<std::string> nonce;  // X-Tresor-Nonce, copied into the receipt

  std::string customer() const { return key ? key->customer : std::string(); }
};

std::variant<ControlHeaders, ApiError> check_control_headers(const Runtime& rt, const RequestHead& head,
                                                             const config::ApiKeyConfig* key);

// Process-wide state the endpoints share across workers and reloads.
struct EndpointServices {
  providers::UpstreamClient& upstream;  // this worker's
  router::RouteHealth& health;          // the process's
  receipts::ReceiptService& receipts;   // the process's
  CreditLedger& credits;                // the process's
  FileIoPool& file_io;                  // the process's: spool reads off the I/O threads
  RequestRecord& record;                // this request's: routes, attempts, upstream wait
  const RouterAttestation& attestation; // the process's: embedded in receipts
};

// 400 / 404 for a model that does not resolve (spec §2.2).
ApiError resolve_error(const router::ResolveResult& resolved);

TresorInfo tresor_info(const std::string& requested_route, const router::AttemptPlan& plan);

// The X-Tresor-Attempts value as it stands when this attempt succeeds.
std::string attempts_with_success(const router::AttemptPlan& plan, providers::Clock::time_point attempt_start);

router::AttemptOutcome transport_outcome(providers::TransportError error, const router::AttemptPlan& plan,
                                         bool stream, bool before_first_byte);
router::AttemptResult outcome_only(router::AttemptOutcome outcome);

// An upstream answer other than 200: its status, Retry-After and error code for the
// failover loop; a 4xx is also kept in `pass_through` (relayed if the loop ends there).
boost::asio::awaitable<router::AttemptResult> upstream_refusal(const router::AttemptPlan& plan,
                                                               const config::ProviderConfig& provider,
                                                               providers::UpstreamResponse& response,
                                                               std::optional<ApiError>& pass_through);

// The answer when the failover loop did not serve the request.
Response failure_response(const router::FailoverResult& result, const std::optional<ApiError>& pass_through);

router::FailoverPolicy failover_policy(const config::Config& cfg, bool stream);

struct ClaimFigures {
  std::string endpoint;  // "/v1/chat/completions", "/v1/audio/transcriptions"
  std::string request_sha256;
  std::string response_sha256;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<int64_t> audio_seconds;
  std::string router_attestation;  // RouterAttestation::receipt_block()
};
receipts::Claims make_claims(const std::string& id, const TresorInfo& info, ClaimFigures figures,
                             const std::optional<std::string>& nonce);

// Charges the customer for a served answer (in memory now, persisted by the store's
// thread with the next group commit). Nothing for a zero price.
void charge_customer(const EndpointServices& services, const std::string& customer, const config::RouteConfig& route,
                     double price);

// An endpoint's AttemptRunner: besides running attempts it remembers which plan served,
// the upstream 4xx to relay if the loop ends in pass_through, and adds the time spent
// waiting on upstreams (and between attempts) to the request's record as it goes, so an
// answer sent from inside an attempt already reports the right X-Tresor-Overhead-Us.
class EndpointAttempts : public router::AttemptRunner {
 public:
  explicit EndpointAttempts(RequestRecord& record) : record_(record) {}
  boost::asio::awaitable<router::AttemptResult> attempt(const router::AttemptPlan& plan) final;

  const std::optional<ApiError>& pass_through() const { return pass_through_; }
  const std::optional<router::AttemptPlan>& served_by() const { return served_by_; }

 protected:
  virtual boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) = 0;

  // Adds the time since `since` to the upstream wait (the overhead figures subtract it).
  void waited(providers::Clock::time_point since) { record_.upstream_wait += providers::Clock::now() - since; }
  // upstream_refusal() with its body read counted as upstream wait.
  boost::asio::awaitable<router::AttemptResult> refused(const router::AttemptPlan& plan,
                                                        const config::ProviderConfig& provider,
                                                        providers::UpstreamResponse& response);

  std::optional<ApiError> pass_through_;
  std::optional<router::AttemptPlan> served_by_;

 private:
  RequestRecord& record_;
  std::optional<providers::Clock::time_point> last_attempt_end_;
};

// Sends `error` in the envelope (a coroutine, so callers need no braced temporaries).
boost::asio::awaitable<void> send_error(ResponseSink& sink, const ApiError& error);

// The failover loop over the resolved candidates inside the request's one deadline
// (started + budget), what it did noted in services.record, and the failure answer when
// nothing served.
boost::asio::awaitable<void> serve_with_failover(const Runtime& rt, EndpointServices services, const router::Resolution& resolution,
                                                 bool stream, providers::Clock::time_point started,
                                                 std::chrono::seconds budget, EndpointAttempts& attempts,
                                                 ResponseSink& sink);

}  // namespace tresor::server
