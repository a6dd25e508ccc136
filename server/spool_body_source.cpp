#include "server/spool_body_source.h"

namespace tresor::server {

// Built outside the coroutine: g++ 12 miscompiles lambdas with captures inside
// coroutines (double destruction).
std::function<void()> SpoolBodySource::read_job(char* buf, size_t n, size_t& got) {
  return [this, buf, n, &got] { got = reader_.read(buf, n); };
}

boost::asio::awaitable<size_t> SpoolBodySource::read(char* buf, size_t n) {
  size_t got = 0;
  if (file_io_ && spool_.on_disk()) co_await file_io_->run(read_job(buf, n, got));
  else got = reader_.read(buf, n);
  co_return got;
}

}  // namespace tresor::server
