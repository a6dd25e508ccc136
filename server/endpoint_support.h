// What the two inference endpoints (chat completions, audio transcriptions) share: the
// control headers read before the body, the services they run against, and the one
// inference path of an attempt (EndpointAttempts): run the exchange (providers/), let the
// router judge a failure, and for an answer: bill, receipt, answer the client.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "accounts/accounts.h"
#include "providers/exchange.h"
#include "providers/upstream_client.h"
#include "receipts/claims.h"
#include "receipts/receipt_service.h"
#include "router/failover.h"
#include "router/route_resolution.h"
#include "router/route_health.h"
#include "server/api_error.h"
#include "server/attestation.h"
#include "server/file_io_pool.h"
#include "server/http_types.h"
#include "server/metrics.h"
#include "server/request_record.h"
#include "server/runtime.h"
#include "server/tresor_member.h"
#include "storage/store_breaker.h"

namespace tresor::server {

inline constexpr std::string_view kAttemptsHeader = "X-Tresor-Attempts";

// What the header phase settles before any body byte is read.
struct ControlHeaders {
  const config::ApiKeyConfig* key = nullptr;
  std::chrono::seconds budget{0};    // X-Tresor-Timeout-Seconds or the default
  bool receipt_opt_out = false;      // X-Tresor-Receipt: false|0
  std::optional<std::string> nonce;  // X-Tresor-Nonce, copied into the receipt
  providers::Clock::time_point deadline{};  // the request's head + budget
  std::optional<unsigned> hedge_after_ms;  // X-Tresor-Hedge-After-Ms (0: no hedging)

  std::string customer() const { return key ? key->customer : std::string(); }
};

std::variant<ControlHeaders, ApiError> check_control_headers(const Runtime& rt, const RequestHead& head,
                                                             const config::ApiKeyConfig* key);

// Process-wide state the endpoints share across workers and reloads.
struct EndpointServices {
  providers::UpstreamClient& upstream;  // this worker's
  router::RouteHealth& health;          // the process's
  receipts::ReceiptService& receipts;   // the process's
  accounts::Accounts& accounts;         // the process's
  accounts::Grant& grant;               // this request's: its hold, settled or released
  FileIoPool& file_io;                  // the process's: spool reads off the I/O threads
  RequestRecord& record;                // this request's: routes, attempts, upstream wait
  Metrics& metrics;                     // the process's: spend, refusals, cut streams
  const RouterAttestation& attestation; // the process's: embedded in receipts
  const storage::StoreBreaker* store_breaker = nullptr;  // a shared store's; null for SQLite
};

// 400 / 404 for a model that does not resolve (spec §2.2).
ApiError resolve_error(const router::ResolveResult& resolved);

TresorInfo tresor_info(const std::string& requested_route, const router::AttemptPlan& plan);

// The X-Tresor-Attempts value as it stands when this attempt succeeds.
std::string attempts_with_success(const router::AttemptPlan& plan, providers::Clock::time_point attempt_start);

router::AttemptResult outcome_only(router::AttemptOutcome outcome);

// The answer when the failover loop did not serve the request.
Response failure_response(const router::FailoverResult& result, const std::optional<ApiError>& pass_through);

router::FailoverPolicy failover_policy(const config::Config& cfg, bool stream);

struct ClaimFigures {
  std::string endpoint;  // "/v1/chat/completions", "/v1/audio/transcriptions"
  bool usage_estimated = false;
  std::string request_sha256;
  std::string response_sha256;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<int64_t> audio_seconds;
  std::string router_attestation;  // RouterAttestation::receipt_block()
  std::vector<receipts::Claims::Recovery> recoveries;  // a recovered stream's (issue 18)
};
receipts::Claims make_claims(const std::string& id, const TresorInfo& info, ClaimFigures figures,
                             const std::optional<std::string>& nonce);

// The error a refused reservation or admission gets (402 balance_exceeded, 429).
ApiError refusal_error(const accounts::Refusal& refusal);
Response refusal_response(const accounts::Refusal& refusal);

// Before the first attempt: holds the request's most expensive outcome (accounts/); when
// it does not fit, answers the refusal and returns false. The hold lives as long as the
// budget plus a margin (then the ledger gives it back by itself).
boost::asio::awaitable<bool> reserve_or_refuse(EndpointServices services, accounts::CostBound bound,
                                               providers::Clock::time_point started, std::chrono::seconds budget,
                                               ResponseSink& sink);

// A chat answer's charge: the upstream's usage, else the estimate (accounts::estimate_tokens)
// over the prompt's bytes and the text generated.
accounts::Charge chat_charge(const config::RouteConfig& route, const std::optional<providers::TokenUsage>& usage,
                             uint64_t prompt_bytes, uint64_t generated_bytes);

// An endpoint's AttemptRunner. Both endpoints run attempts through it the same way: the
// exchange is providers/' (a validated answer or an UpstreamFailure), what a failure
// means is router/'s (attempt_result), and a whole answer goes to the client through
// deliver() (bill, receipt, answer) — streams bill and record through bill_and_record().
// It also remembers which plan served and the upstream 4xx to relay if the loop ends in
// pass_through, and adds the time spent waiting on upstreams (and between attempts) to
// the request's record as it goes, so an answer sent from inside an attempt already
// reports the right X-Tresor-Overhead-Us.
class EndpointAttempts : public router::AttemptRunner {
 public:
  EndpointAttempts(const Runtime& rt, EndpointServices services, const ControlHeaders& head,
                   std::string requested_route, ResponseSink& sink)
      : rt_(rt), services_(services), head_(head), requested_route_(std::move(requested_route)), sink_(sink) {}
  boost::asio::awaitable<router::AttemptResult> attempt(const router::AttemptPlan& plan) final;

  const std::optional<ApiError>& pass_through() const { return pass_through_; }
  const ControlHeaders& control() const { return head_; }
  // A committed stream whose upstream failed and that no attempt recovered: ends the
  // client's stream (the in-band error) and bills it. False when there is none.
  virtual boost::asio::awaitable<bool> abandon_stream() { co_return false; }
  const std::optional<router::AttemptPlan>& served_by() const { return served_by_; }

 protected:
  virtual boost::asio::awaitable<router::AttemptResult> run_attempt(const router::AttemptPlan& plan) = 0;

  // Where this attempt goes, under its timers.
  providers::ExchangeTarget target(const router::AttemptPlan& plan, size_t max_body_bytes) const;
  // An attempt without an answer: logged, an upstream 4xx kept for pass-through, and the
  // router's verdict on it.
  router::AttemptResult failed(const router::AttemptPlan& plan, const providers::UpstreamFailure& failure, bool stream);

  // A whole answer for the client (before the tresor member).
  struct WholeAnswer {
    std::string body;
    std::string content_type = "application/json";
    accounts::Charge charge;  // what it costs the customer
    ClaimFigures figures; // for the receipt; response_sha256 is computed here from `body`
    bool route_headers = false;  // X-Tresor-Receipt-Id, -Requested-Route, -Routed-Model, -Failover too
  };
  // The one inference path of a whole answer: this plan served; bill; receipt (durable
  // before its id leaves, unless opted out); answer with the tresor member (JSON) and the
  // X-Tresor-Attempts header (and the route headers when asked).
  boost::asio::awaitable<router::AttemptResult> deliver(const router::AttemptPlan& plan,
                                                        providers::Clock::time_point attempt_start, WholeAnswer answer);
  // Settles the answer's cost (accounts/) and, when `info` carries a receipt id, stores its
  // receipt; false when that receipt could not be stored (the answer then goes out
  // without the id, counted in tresor_store_outage_served_total{function="receipts"}).
  boost::asio::awaitable<bool> bill_and_record(const config::RouteConfig& route, const TresorInfo& info,
                                               accounts::Charge charge, ClaimFigures figures);
  // A stream cut after events reached the client: billed for what was delivered, no receipt.
  boost::asio::awaitable<void> bill_cut(accounts::Charge charge);

  // Adds the time since `since` to the upstream wait (the overhead figures subtract it).
  void waited(providers::Clock::time_point since) { services_.record.upstream_wait += providers::Clock::now() - since; }

  const Runtime& rt_;
  EndpointServices services_;
  const ControlHeaders& head_;
  std::string requested_route_;
  ResponseSink& sink_;
  std::optional<ApiError> pass_through_;
  std::optional<router::AttemptPlan> served_by_;

 private:
  std::optional<providers::Clock::time_point> last_attempt_end_;
  // The span id of each attempt running now (traced requests), by its plan.
  std::map<const router::AttemptPlan*, uint64_t> attempt_spans_;
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
