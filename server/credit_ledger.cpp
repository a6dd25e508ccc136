#include "server/credit_ledger.h"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace tresor::server {

double chat_price(const config::RouteConfig& route, int64_t prompt_tokens, int64_t completion_tokens) {
  if (!route.pricing) return 0;
  const auto& p = *route.pricing;
  return (static_cast<double>(prompt_tokens) * p.input_per_mtok.value_or(0) +
          static_cast<double>(completion_tokens) * p.output_per_mtok.value_or(0)) /
         1e6;
}

TranscriptionBilling transcription_billing(const config::RouteConfig& route) {
  if (!route.pricing) return TranscriptionBilling::free;
  const auto& p = *route.pricing;
  if (p.billing_unit == "audio_minute") return TranscriptionBilling::duration;
  if (p.billing_unit == "request") return TranscriptionBilling::request;
  if (p.input_per_mtok || p.output_per_mtok) return TranscriptionBilling::tokens;
  return TranscriptionBilling::free;
}

double transcription_price(const config::RouteConfig& route, int64_t audio_seconds, int64_t input_tokens,
                           int64_t output_tokens) {
  switch (transcription_billing(route)) {
    case TranscriptionBilling::duration:
      return route.pricing->unit_amount.value_or(0) * static_cast<double>(audio_seconds) / 60.0;
    case TranscriptionBilling::request: return route.pricing->unit_amount.value_or(0);
    case TranscriptionBilling::tokens: return chat_price(route, input_tokens, output_tokens);
    case TranscriptionBilling::free: break;
  }
  return 0;
}

CreditLedger::CreditLedger(const std::vector<receipts::SpendEntry>& persisted) {
  for (const auto& e : persisted) spent_[e.customer][e.route] += e.amount;
}

bool CreditLedger::can_spend(const config::Config& cfg, const std::string& customer) const {
  const auto it = cfg.auth.customers.find(customer);
  if (it == cfg.auth.customers.end()) return true;  // not listed: no credit limit
  double spent = 0;
  {
    std::lock_guard lock(mutex_);
    if (const auto c = spent_.find(customer); c != spent_.end())
      for (const auto& [route, amount] : c->second) spent += amount;
  }
  return it->second.credit - spent > 0;
}

void CreditLedger::charge(const std::string& customer, const std::string& route, double amount) {
  if (amount <= 0) return;
  std::lock_guard lock(mutex_);
  spent_[customer][route] += amount;
}

std::string CreditLedger::usage_json(const config::Config& cfg, const std::string& customer) const {
  std::vector<receipts::SpendEntry> spend;
  {
    std::lock_guard lock(mutex_);
    if (const auto c = spent_.find(customer); c != spent_.end())
      for (const auto& [route, amount] : c->second) spend.push_back(receipts::SpendEntry{customer, route, amount});
  }
  return usage_json(cfg, customer, spend);
}

std::string CreditLedger::usage_json(const config::Config& cfg, const std::string& customer,
                                     const std::vector<receipts::SpendEntry>& spend) {
  boost::json::object by_route;
  double spent = 0;
  for (const auto& e : spend) {
    by_route[e.route] = e.amount;
    spent += e.amount;
  }
  boost::json::object o;
  o["object"] = "usage";
  o["customer"] = customer;
  const auto it = cfg.auth.customers.find(customer);
  if (it != cfg.auth.customers.end()) {
    o["currency"] = it->second.currency;
    o["credit"] = it->second.credit;
    o["remaining"] = it->second.credit - spent;
  } else {
    o["credit"] = nullptr;  // unlimited
    o["remaining"] = nullptr;
  }
  o["spent"] = spent;
  o["by_route"] = std::move(by_route);
  return boost::json::serialize(o);
}

}  // namespace tresor::server
