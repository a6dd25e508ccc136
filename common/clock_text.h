// Timestamps as text for lines written on every request (access log): the part up to the
// second is formatted once per second per thread (gmtime/localtime + strftime per request
// were ~5% of a proxied request's instructions), the milliseconds each time.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

namespace tresor::common {

enum class ClockZone {
  utc,    // "2026-11-25T02:00:58.403Z"
  local,  // "2026-11-25T02:00:58.403+00:00" (spdlog's "%Y-%m-%dT%H:%M:%S.%e%z")
};

inline void append_timestamp(std::string& out, std::chrono::system_clock::time_point now, ClockZone zone) {
  struct Cache {
    std::time_t second = -1;
    char date[32] = {};
    char suffix[32] = {};
  };
  thread_local Cache caches[2];
  Cache& c = caches[zone == ClockZone::utc ? 0 : 1];
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  if (t != c.second) {
    std::tm tm{};
    if (zone == ClockZone::utc) {
      gmtime_r(&t, &tm);
      std::snprintf(c.suffix, sizeof c.suffix, "Z");
    } else {
      localtime_r(&t, &tm);
      const long off = tm.tm_gmtoff / 60;
      std::snprintf(c.suffix, sizeof c.suffix, "%c%02ld:%02ld", off < 0 ? '-' : '+', std::labs(off) / 60,
                    std::labs(off) % 60);
    }
    std::strftime(c.date, sizeof c.date, "%Y-%m-%dT%H:%M:%S", &tm);
    c.second = t;
  }
  const auto ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  out.append(c.date);
  out += '.';
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out.append(c.suffix);
}

}  // namespace tresor::common
