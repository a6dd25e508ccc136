// The HTTP/1.1 front end: listeners, one io_context per worker thread, sessions.
//
// Threading: N workers, each an io_context run by one thread. One acceptor hands each
// new connection to the next worker in turn; a connection then lives on that worker
// alone (session, upstream pool, timers), so nothing on the request path needs a lock
// or a strand.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "server/runtime.h"

namespace tresor::server {

class Server {
 public:
  explicit Server(RuntimeHolder& runtime);
  ~Server();
  // Binds every configured listen address (throws on failure) and logs
  // "listening on http://HOST:PORT" for each.
  void listen();
  // Runs the workers until stop() or SIGINT/SIGTERM.
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::server
