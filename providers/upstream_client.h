// HTTP(S) client for upstream providers: keep-alive connection pools, verified TLS,
// deadlines on every operation. One UpstreamClient per I/O thread (worker), so pools
// need no locks; a provider's max_connections is split evenly across workers.
//
// Beast and Asio stay out of this header (compile time); it needs only `awaitable`.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/upstream_failure.h"
#include "common/body_source.h"
#include "common/clock.h"
#include "config/config.h"

namespace tresor::providers {

using common::BodySource;
using Clock = common::Clock;

// Why an exchange failed at the transport level (common/: router/ classifies it too).
using TransportError = common::TransportError;
using common::to_string;

// Immutable per-config-snapshot data for all providers: parsed base URLs and TLS
// contexts (loaded CA files). Built once at startup/reload; shared by all workers.
class ProviderSet {
 public:
  // Throws std::runtime_error with a clear message if a base_url or ca_file is unusable.
  explicit ProviderSet(const config::Config& cfg);
  ~ProviderSet();
  struct Entry;
  const Entry* find(const std::string& provider) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A response whose head has been read; the body is read incrementally. Destroying it
// returns the connection to its pool when the body was read completely and the
// upstream allows keep-alive, and closes it otherwise (which cancels the upstream
// request: the way to abandon a stream).
class UpstreamResponse {
 public:
  struct Impl;
  explicit UpstreamResponse(std::unique_ptr<Impl> impl);
  ~UpstreamResponse();
  UpstreamResponse(const UpstreamResponse&) = delete;
  UpstreamResponse& operator=(const UpstreamResponse&) = delete;

  int status() const;
  std::optional<std::string> header(std::string_view name) const;
  bool body_done() const;

  // Next piece of the body (empty string once the body is complete). On failure
  // returns empty and sets `error` (timeout when `deadline` passes first).
  boost::asio::awaitable<std::string> read_some(common::Deadline deadline, TransportError& error);
  // The whole body, failing with too_large above `limit` bytes.
  boost::asio::awaitable<std::string> read_all(size_t limit, common::Deadline deadline,
                                               TransportError& error);
  // For a stream that ended at its last event ([DONE]) before the body did: reads and
  // drops the rest (the chunked terminator, normally already on its way) up to `limit`
  // bytes until `deadline`, so that the connection goes back to the pool instead of
  // being closed. If the rest does not come in time, the connection closes as before.
  boost::asio::awaitable<void> finish_for_reuse(size_t limit, common::Deadline deadline);

 private:
  std::unique_ptr<Impl> impl_;
};

struct UpstreamRequest {
  std::string_view path;  // appended to the provider's base_url path, e.g. "/chat/completions"
  std::string_view content_type;
  std::string_view accept;
  std::string body;
  // When set, the body is streamed from here instead (and `body` is ignored). Not owned:
  // it must outlive the send() call.
  BodySource* streamed_body = nullptr;
  // W3C Trace Context headers for this attempt (empty: not sent).
  std::string_view traceparent;
  std::string_view tracestate;
};

struct UpstreamResult {
  std::unique_ptr<UpstreamResponse> response;  // set on success (any HTTP status)
  TransportError error = TransportError::none;
  std::string detail;  // human-readable cause for the log; never contains secrets
};

class UpstreamClient {
 public:
  explicit UpstreamClient(boost::asio::io_context& ioc, unsigned workers);
  ~UpstreamClient();
  UpstreamClient(const UpstreamClient&) = delete;
  UpstreamClient& operator=(const UpstreamClient&) = delete;

  // Sends the request on a pooled (or new) connection and reads the response head, all
  // before `deadline`. `connect_timeout` bounds a new connection's TCP+TLS setup.
  boost::asio::awaitable<UpstreamResult> send(std::shared_ptr<const ProviderSet> providers,
                                              const config::ProviderConfig& provider,
                                              UpstreamRequest request, common::Deadline deadline,
                                              std::chrono::milliseconds connect_timeout);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::providers
