#include "server/access_log.h"

#include <spdlog/details/console_globals.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>

#include "common/clock_text.h"

namespace tresor::server {
namespace {

constexpr size_t kFlushBytes = 64 * 1024;

void write_out(const std::string& text) {
  // The console mutex spdlog's stderr sinks hold: a batch never interleaves with another
  // thread's batch or with a warning line mid-write.
  std::lock_guard lock(spdlog::details::console_mutex::mutex());
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // stderr is gone (closed pipe): nothing better to do with an access line
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

struct ThreadBuffer {
  std::string text;
  bool flush_posted = false;

  void flush() {
    if (!text.empty()) write_out(text);
    text.clear();
    if (text.capacity() > 4 * kFlushBytes) std::string().swap(text);
  }
  ~ThreadBuffer() { flush(); }
};

ThreadBuffer& thread_buffer() {
  thread_local ThreadBuffer buffer;
  return buffer;
}

}  // namespace

void write_access_line(std::string_view json, const boost::asio::any_io_executor& executor) {
  ThreadBuffer& b = thread_buffer();
  // The form of the other log lines (spdlog, local time), so a log reader sees one format.
  common::append_timestamp(b.text, std::chrono::system_clock::now(), common::ClockZone::local);
  b.text.append(" info access ");
  b.text.append(json).push_back('\n');
  if (b.text.size() >= kFlushBytes) {
    b.flush();
    return;
  }
  if (b.flush_posted) return;
  b.flush_posted = true;
  boost::asio::post(executor, [] {
    ThreadBuffer& mine = thread_buffer();
    mine.flush_posted = false;
    mine.flush();
  });
}

}  // namespace tresor::server
