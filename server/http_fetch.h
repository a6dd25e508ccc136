// A small blocking HTTP/1.1 client for the operator subcommands (verify-receipt's JWKS,
// verify-log, witness): one request per connection, http:// or https:// (TLS verified
// against the system store, with SNI and host name check), bounded by a timeout.
// Not for the gateway's request path (that is providers/' pooled async client).
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace tresor::server::http_fetch {

struct Response {
  int status = 0;
  std::string body;
};

// The answer whatever its status, so that callers can report a 4xx/5xx with its body.
// Throws std::runtime_error when there is no answer: a bad URL, a refused or timed-out
// connection, a TLS failure, a malformed response.
Response get(const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(15));
Response post(const std::string& url, const std::string& body, const std::string& content_type,
              std::chrono::milliseconds timeout = std::chrono::seconds(15));

// Repeated POSTs to one URL over one kept-alive connection, for a caller that sends often
// (the span exporter, server/tracer.h): the TLS context (the system CA store) is loaded once
// and the connection is reused until the server closes it or a request fails. A request
// that fails on a reused connection before any answer came is tried once more on a fresh
// one (the server may have closed it while it was idle). One thread at a time.
class Poster {
 public:
  explicit Poster(std::string url);  // throws on a URL that is not http:// or https://
  ~Poster();
  Poster(const Poster&) = delete;
  Poster& operator=(const Poster&) = delete;
  // Throws std::runtime_error when there is no answer, like post().
  Response post(const std::string& body, const std::string& content_type, std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// get() that wants a 200: throws "<url> answered HTTP <status>: <start of body>" otherwise.
std::string get_ok(const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(15));

}  // namespace tresor::server::http_fetch
