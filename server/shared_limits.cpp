#include "server/shared_limits.h"

#include <boost/asio/this_coro.hpp>

#include <algorithm>

#include "common/rendezvous.h"

namespace tresor::server {

using common::Rendezvous;
using common::resume_on;
using common::wait_for;
namespace asio = boost::asio;
namespace {

// Runs on the store's thread: increments every limited window, and undoes them all when
// one is over its limit.
RateDecision count_request(receipts::ReceiptStore& store, const config::ApiKeyConfig& key, int64_t t) {
  RateDecision d;
  d.limited = true;
  std::vector<std::string> incremented;
  for (const auto& w : rate_windows(key)) {
    const std::string name =
        "tresor:rl:" + key.sha256_hex + ":" + w.tag + ":" + std::to_string(t / w.length);
    const int64_t ttl = w.length + 60;
    const auto value = store.add_to_counter(name, 1, ttl);
    if (!value) continue;  // store unreachable: fail open rather than refuse everyone
    incremented.push_back(name);
    if (*value > static_cast<int64_t>(w.limit)) {
      for (const auto& n : incremented) store.add_to_counter(n, -1, ttl);
      return refused_by(w, t);
    }
    note_remaining(d, w, w.limit - static_cast<uint64_t>(*value));
  }
  return d;
}

}  // namespace

asio::awaitable<RateDecision> shared_rate_admit(receipts::ReceiptService& service, const config::ApiKeyConfig& key,
                                                std::chrono::system_clock::time_point now) {
  if (!key.limits.per_minute && !key.limits.per_day) co_return RateDecision{};
  const int64_t t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  auto rendezvous = std::make_shared<Rendezvous<RateDecision>>(co_await asio::this_coro::executor);
  auto done = resume_on(rendezvous);
  service.with_store([key, t, done](receipts::ReceiptStore& store) { done(count_request(store, key, t)); });
  co_return co_await wait_for(rendezvous);
}

asio::awaitable<bool> shared_can_spend(receipts::ReceiptService& service, const config::Config& cfg,
                                       const std::string& customer) {
  const auto it = cfg.auth.customers.find(customer);
  if (it == cfg.auth.customers.end()) co_return true;
  const double credit = it->second.credit;
  auto rendezvous = std::make_shared<Rendezvous<bool>>(co_await asio::this_coro::executor);
  auto done = resume_on(rendezvous);
  service.with_store([customer, credit, done](receipts::ReceiptStore& store) {
    const auto spend = store.customer_spend(customer);
    double spent = 0;
    if (spend)
      for (const auto& e : *spend) spent += e.amount;
    done(!spend || credit - spent > 0);  // unreachable store: fail open
  });
  co_return co_await wait_for(rendezvous);
}

asio::awaitable<std::optional<std::vector<receipts::SpendEntry>>> shared_spend(receipts::ReceiptService& service,
                                                                               const std::string& customer) {
  using Result = std::optional<std::vector<receipts::SpendEntry>>;
  auto rendezvous = std::make_shared<Rendezvous<Result>>(co_await asio::this_coro::executor);
  auto done = resume_on(rendezvous);
  service.with_store([customer, done](receipts::ReceiptStore& store) { done(store.customer_spend(customer)); });
  co_return co_await wait_for(rendezvous);
}

}  // namespace tresor::server
