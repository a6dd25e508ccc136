// The vocabulary of a failed upstream exchange, shared by providers/ (which produces it
// from the bytes it read) and router/ (which decides what it means for the failover loop).
// It lives here because those two modules must not include each other.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tresor::common {

// Why an exchange with an upstream failed at the transport level.
enum class TransportError {
  none,
  connect_failed,  // DNS, refused, unreachable, connect timeout
  tls_failed,      // handshake or certificate verification
  timeout,         // the deadline passed while waiting on the upstream
  reset,           // connection reset / closed before a complete response head
  cut,             // the body ended early (EOF or reset mid-body)
  protocol,        // unparseable HTTP from the upstream (a 101, a bad head, an unasked encoding)
  too_large,       // response body over our limit
};

constexpr std::string_view to_string(TransportError e) {
  switch (e) {
    case TransportError::none: return "none";
    case TransportError::connect_failed: return "connect_failed";
    case TransportError::tls_failed: return "tls_failed";
    case TransportError::timeout: return "timeout";
    case TransportError::reset: return "reset";
    case TransportError::cut: return "cut";
    case TransportError::protocol: return "protocol";
    case TransportError::too_large: return "too_large";
  }
  return "unknown";
}

// One attempt that produced no usable answer. Exactly one of the three kinds applies.
struct UpstreamFailure {
  enum class Kind {
    transport,     // the exchange broke: see `transport`
    http_status,   // the upstream answered with a status other than 200: see `http_status`
    bad_response,  // a 200 that is not a valid answer (not JSON, an error object, no choices, …)
  };
  Kind kind = Kind::transport;
  TransportError transport = TransportError::none;
  // For a timeout: whether it struck before any byte of the answer (then the attempt's
  // own first-byte/first-event timer may be the one that fired).
  bool before_first_byte = true;
  int http_status = 0;
  std::string error_code;  // error.code of the upstream's error body, the provider's key scrubbed out
  std::string message;     // error.message, scrubbed, at most 1000 bytes
  std::optional<std::chrono::seconds> retry_after;  // from a 429/503
  std::string detail;      // for the log; never holds a secret
};

}  // namespace tresor::common
