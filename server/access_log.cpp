#include "server/access_log.h"

#include <spdlog/details/console_globals.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace tresor::server {
namespace {

constexpr size_t kFlushBytes = 64 * 1024;

// "2026-11-25T02:00:58.403+00:00 info access ": spdlog's pattern of the other lines
// ("%Y-%m-%dT%H:%M:%S.%e%z %l %v", local time), so a log reader sees one format. The part
// up to the second is formatted once per second per thread.
void append_prefix(std::string& out) {
  thread_local std::time_t cached_second = -1;
  thread_local char date[32];
  thread_local char zone[32];
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  if (t != cached_second) {
    std::tm tm{};
    localtime_r(&t, &tm);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    const long off = tm.tm_gmtoff / 60;
    std::snprintf(zone, sizeof zone, "%c%02ld:%02ld", off < 0 ? '-' : '+', std::labs(off) / 60, std::labs(off) % 60);
    cached_second = t;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  char millis[16];
  std::snprintf(millis, sizeof millis, ".%03d", static_cast<int>(ms));
  out.append(date).append(millis).append(zone).append(" info access ");
}

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
  append_prefix(b.text);
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

void flush_access_log() { thread_buffer().flush(); }

}  // namespace tresor::server
