// A request body the upstream client pulls piece by piece instead of holding it as one
// string: a transcription upload is sent from its spool, at most one buffer at a time.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <cstdint>

namespace tresor::common {

class BodySource {
 public:
  virtual ~BodySource() = default;
  // The exact number of bytes read() yields from the start (the Content-Length).
  virtual uint64_t size() const = 0;
  // Back to the first byte: a request is re-sent on a fresh connection when a reused one
  // turned out to be closed.
  virtual void rewind() = 0;
  // Copies up to n bytes into buf; 0 at the end. Throws std::exception on a local read
  // failure (the attempt then fails like a broken connection). A coroutine, so a source
  // backed by a file can read it off the I/O thread.
  virtual boost::asio::awaitable<size_t> read(char* buf, size_t n) = 0;
};

}  // namespace tresor::common
