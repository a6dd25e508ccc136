#include "server/receipt_issuer.h"
#include "common/rendezvous.h"

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

using common::Rendezvous;
using common::resume_on;
using common::wait_for;
namespace asio = boost::asio;


asio::awaitable<bool> issue_receipt(receipts::ReceiptService& service, const config::ReceiptsConfig& cfg,
                                    std::string customer, receipts::Claims claims,
                                    std::chrono::steady_clock::time_point deadline) {
  std::string id = claims.id;
  std::string payload = receipts::claims_json(claims);
  if (cfg.durability == config::ReceiptsConfig::Durability::async) {
    service.issue(std::move(id), std::move(customer), std::move(payload), [](bool ok) {
      if (!ok) spdlog::error("a receipt could not be stored (durability: async)");
    });
    co_return true;
  }
  auto handoff = std::make_shared<common::Handoff<bool>>(co_await asio::this_coro::executor);
  auto deliver = resume_on<bool>(handoff);
  std::function<void(bool)> done = [handoff, deliver](bool ok) {
    if (handoff->claim()) deliver(ok);
  };
  service.issue(std::move(id), std::move(customer), std::move(payload), std::move(done));
  const auto stored = co_await common::wait_until(handoff, deadline);
  if (!stored) spdlog::warn("a receipt was not stored within the request's budget; answering without it");
  co_return stored.value_or(false);
}

asio::awaitable<receipts::FetchResult> fetch_receipt(receipts::ReceiptService& service, std::string id,
                                                     std::string customer) {
  auto rendezvous = std::make_shared<Rendezvous<receipts::FetchResult>>(co_await asio::this_coro::executor);
  service.fetch(std::move(id), std::move(customer), resume_on(rendezvous));
  co_return co_await wait_for(rendezvous);
}

}  // namespace tresor::server
