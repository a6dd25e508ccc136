// Customer credit balances (spec §9.4, §6: 402 balance_exceeded). A customer listed in
// auth.customers has `credit`; every successful answer is priced from its route's
// pricing and charged. The running totals live here (checked on the request path with no
// I/O) and are persisted by the store's thread; a customer not listed is unlimited.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "receipts/store.h"

namespace tresor::server {

// Price of an answer from the route's per-million-token prices (0 when unpriced).
double chat_price(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens);

// How a transcription route bills (spec §7.5): by audio duration (billing_unit
// audio_minute), per request (billing_unit request), or by tokens (per-mtok prices).
enum class TranscriptionBilling { duration, request, tokens, free };
TranscriptionBilling transcription_billing(const config::RouteConfig& route);

// Price of a transcription: unit_amount per started second's share of a minute
// (audio_minute), unit_amount per request, or the token prices.
double transcription_price(const config::RouteConfig& route, int64_t audio_seconds, int64_t input_tokens,
                           int64_t output_tokens);

class CreditLedger {
 public:
  explicit CreditLedger(const std::vector<receipts::SpendEntry>& persisted);

  // False when the customer has a credit and it is used up (at or below zero). A request
  // in flight may still take the balance below zero once.
  bool can_spend(const config::Config& cfg, const std::string& customer) const;
  void charge(const std::string& customer, const std::string& route, double amount);
  // GET /v1/usage: {"customer","currency","credit","spent","remaining","by_route":{…}}
  std::string usage_json(const config::Config& cfg, const std::string& customer) const;
  // The same from spend read out of a shared store.
  static std::string usage_json(const config::Config& cfg, const std::string& customer,
                                const std::vector<receipts::SpendEntry>& spend);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::map<std::string, double>> spent_;  // customer → route → amount
};

}  // namespace tresor::server
