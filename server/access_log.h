// The access log: one line per request on stderr, in the same form as the other log
// lines ("<time> info access {json}"), but written in batches. Each worker thread appends
// to its own buffer and writes it out once the handlers that are ready now have run (one
// asio::post per batch), or at 64 KiB. Under load that is one write(2) for many requests
// instead of one per request (nginx's `access_log … buffer=`), and an idle gateway writes
// each line at once: nothing waits for a timer.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <string_view>

namespace tresor::server {

// Queues `json` as this thread's next access line; the flush runs on `executor`, which
// must run on this thread (the session's worker). A thread's buffer is also flushed when
// the thread exits.
void write_access_line(std::string_view json, const boost::asio::any_io_executor& executor);

}  // namespace tresor::server
