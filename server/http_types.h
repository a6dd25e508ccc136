// Socket-free request/response types between the session (Beast) and the endpoint
// handlers, so handlers can be tested without a socket (as in Beast's examples, where
// handle_request() knows nothing about the connection).
#pragma once

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tresor::server {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct RequestHead {
  std::string method;
  std::string target;
  HeaderList headers;  // in arrival order, names as sent

  // Every value of a header (case-insensitive name).
  std::vector<std::string_view> values(std::string_view name) const;
  // First value, or empty.
  std::string_view value(std::string_view name) const;
  bool has(std::string_view name) const { return !values(name).empty(); }
};

struct Response {
  unsigned status = 200;
  std::string content_type = "application/json";
  HeaderList headers;
  std::string body;
};

// Where a handler writes its answer: either one whole response, or an event stream.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // An answer is in hand and is about to be billed and sent: from here on a client that
  // resets no longer cancels the request (the session's watch), it just misses the answer.
  virtual void commit() {}
  virtual boost::asio::awaitable<void> send(Response response) = 0;
  // Starts a text/event-stream response; false when the client is gone.
  virtual boost::asio::awaitable<bool> begin_stream(HeaderList headers) = 0;
  // Writes bytes of the stream and flushes them; false when the client is gone.
  virtual boost::asio::awaitable<bool> write_stream(std::string_view bytes) = 0;
  virtual boost::asio::awaitable<void> end_stream() = 0;
  // The client has closed or reset its connection (looked at without reading from it):
  // a failed stream is never recovered for it.
  virtual bool client_left() { return false; }
};

}  // namespace tresor::server
