// Bridges the ReceiptService thread and the I/O coroutines: issue/fetch complete on the
// service thread and resume the caller on its own executor.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "config/config.h"
#include "receipts/claims.h"
#include "receipts/receipt_service.h"

namespace tresor::server {

// With durability sync, resumes once the receipt is stored (false if storing failed);
// with async, queues it and resumes at once.
// Waits for the store no later than `deadline` (the request's): false then, and the
// receipt, if it is stored after all, is never announced.
boost::asio::awaitable<bool> issue_receipt(receipts::ReceiptService& service, const config::ReceiptsConfig& cfg,
                                           std::string customer, receipts::Claims claims,
                                           std::chrono::steady_clock::time_point deadline);

boost::asio::awaitable<receipts::FetchResult> fetch_receipt(receipts::ReceiptService& service, std::string id,
                                                            std::string customer);

}  // namespace tresor::server
