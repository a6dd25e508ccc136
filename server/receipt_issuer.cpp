#include "server/receipt_issuer.h"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <functional>
#include <memory>

namespace tresor::server {
namespace asio = boost::asio;

namespace {

// A one-shot rendezvous between the service thread and a coroutine: the callback posts
// the value to the coroutine's executor and cancels the timer the coroutine waits on.
// (A timer rather than async_initiate: g++ 12 double-destroys the initiation lambda's
// captures in use_awaitable's coroutine frame.)
template <typename Result>
struct Rendezvous {
  explicit Rendezvous(asio::any_io_executor exec) : executor(exec), timer(exec) {
    timer.expires_at(asio::steady_timer::time_point::max());
  }
  asio::any_io_executor executor;
  asio::steady_timer timer;
  std::optional<Result> value;
};

template <typename Result>
std::function<void(Result)> resume_on(const std::shared_ptr<Rendezvous<Result>>& r) {
  return [r](Result value) {
    asio::post(r->executor, [r, value = std::move(value)]() mutable {
      r->value = std::move(value);
      r->timer.cancel();
    });
  };
}

template <typename Result>
asio::awaitable<Result> wait_for(std::shared_ptr<Rendezvous<Result>> r) {
  while (!r->value) {
    boost::system::error_code ec;
    co_await r->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return std::move(*r->value);
}

}  // namespace

asio::awaitable<bool> issue_receipt(receipts::ReceiptService& service, const config::ReceiptsConfig& cfg,
                                    std::string customer, receipts::Claims claims) {
  std::string id = claims.id;
  std::string payload = receipts::claims_json(claims);
  if (cfg.durability == config::ReceiptsConfig::Durability::async) {
    service.issue(std::move(id), std::move(customer), std::move(payload), [](bool ok) {
      if (!ok) spdlog::error("a receipt could not be stored (durability: async)");
    });
    co_return true;
  }
  auto rendezvous = std::make_shared<Rendezvous<bool>>(co_await asio::this_coro::executor);
  service.issue(std::move(id), std::move(customer), std::move(payload), resume_on(rendezvous));
  co_return co_await wait_for(rendezvous);
}

asio::awaitable<std::optional<std::string>> fetch_receipt(receipts::ReceiptService& service, std::string id,
                                                          std::string customer) {
  auto rendezvous = std::make_shared<Rendezvous<std::optional<std::string>>>(co_await asio::this_coro::executor);
  service.fetch(std::move(id), std::move(customer), resume_on(rendezvous));
  co_return co_await wait_for(rendezvous);
}

}  // namespace tresor::server
