#include "server/shared_limits.h"

#include <boost/asio/this_coro.hpp>

#include <algorithm>

#include "server/service_call.h"

namespace tresor::server {
namespace {

struct WindowSpec {
  std::optional<uint64_t> limit;
  int64_t length;  // seconds
  const char* tag;
};

// Runs on the store's thread: increments every limited window, and undoes them all when
// one is over its limit.
RateDecision count_request(receipts::ReceiptStore& store, const config::ApiKeyConfig& key, int64_t t) {
  RateDecision d;
  d.limited = true;
  const WindowSpec specs[2] = {{key.limits.per_minute, 60, "m"}, {key.limits.per_day, 86400, "d"}};
  std::string names[2];
  int64_t counts[2] = {0, 0};
  bool incremented[2] = {false, false};
  bool first = true;
  for (int i = 0; i < 2; ++i) {
    if (!specs[i].limit) continue;
    const int64_t index = t / specs[i].length;
    names[i] = "tresor:rl:" + key.sha256_hex + ":" + specs[i].tag + ":" + std::to_string(index);
    const auto value = store.add_to_counter(names[i], 1, specs[i].length + 60);
    if (!value) continue;  // store unreachable: fail open rather than refuse everyone
    incremented[i] = true;
    counts[i] = *value;
    const auto limit = static_cast<int64_t>(*specs[i].limit);
    if (counts[i] > limit) {
      for (int j = 0; j <= i; ++j)
        if (incremented[j]) store.add_to_counter(names[j], -1, specs[j].length + 60);
      d.allowed = false;
      d.limit = *specs[i].limit;
      d.remaining = 0;
      d.retry_after = static_cast<unsigned>(std::max<int64_t>(1, (index + 1) * specs[i].length - t));
      return d;
    }
    const uint64_t remaining = static_cast<uint64_t>(limit - counts[i]);
    if (first || remaining < d.remaining) {
      d.limit = *specs[i].limit;
      d.remaining = remaining;
      first = false;
    }
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
