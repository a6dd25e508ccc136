// A scripted HTTP/1.1 upstream on a real loopback socket, run on the caller's io_context
// (no threads): it reads each request (head and Content-Length body) and answers request
// number i, counted across all its connections, with replies[i]'s raw bytes, written in
// the pieces the reply asks for. Used by the [upstream_client] unit tests and the
// upstream_exchange fuzz target to drive the real UpstreamClient.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace tresor::testing {

struct ScriptedReply {
  ScriptedReply() = default;
  ScriptedReply(std::string b, std::vector<size_t> p = {}, bool close = false)  // NOLINT: implicit on purpose
      : bytes(std::move(b)), pieces(std::move(p)), close_after(close) {}

  std::string bytes;           // written back as they are
  std::vector<size_t> pieces;  // write sizes, in a cycle (empty or all 0: one write)
  bool close_after = false;    // then shut down the sending side (the client reads EOF)
  bool reset_after = false;    // then reset the connection (RST, SO_LINGER 0)
  // The piece that reaches this offset takes all the rest with it: bytes after the end of
  // a message arrive with its last byte, as from an upstream that sent them together.
  size_t rest_with_piece_at = std::string::npos;
};

class ScriptedUpstream {
 public:
  explicit ScriptedUpstream(boost::asio::io_context& ioc)
      : acceptor_(ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {}

  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

  void start() {
    boost::asio::co_spawn(acceptor_.get_executor(), accept_loop(), boost::asio::detached);
  }

  // Closes the listener and every connection: pending reads end, run() can return.
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& s : sockets_) s->close(ignored);
  }

  std::vector<ScriptedReply> replies;  // by request number; a request beyond them: close
  int accepts = 0;
  std::vector<std::string> request_bodies;  // every request's body, in arrival order
  std::vector<int> request_connection;      // the accepted connection (1, 2, ...) of each

 private:
  using tcp = boost::asio::ip::tcp;

  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      auto socket = std::make_shared<tcp::socket>(
          co_await acceptor_.async_accept(boost::asio::redirect_error(boost::asio::use_awaitable, ec)));
      if (ec) co_return;
      sockets_.push_back(socket);
      const int id = ++accepts;
      boost::asio::co_spawn(acceptor_.get_executor(), serve(socket, id), boost::asio::detached);
    }
  }

  static size_t content_length(const std::string& head) {
    std::string lower(head);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto at = lower.find("\r\ncontent-length:");
    if (at == std::string::npos) return 0;
    return std::strtoul(lower.c_str() + at + 17, nullptr, 10);
  }

  static boost::asio::awaitable<bool> read_more(tcp::socket& s, std::string& buffer) {
    char tmp[4096];
    boost::system::error_code ec;
    const size_t n = co_await s.async_read_some(boost::asio::buffer(tmp),
                                                boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    buffer.append(tmp, n);
    co_return !ec;
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<tcp::socket> socket, int id) {
    std::string buffer;
    boost::system::error_code ec;
    for (;;) {
      size_t head_end;
      while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos)
        if (!co_await read_more(*socket, buffer)) co_return;
      const size_t body_start = head_end + 4;
      const size_t length = content_length(buffer.substr(0, body_start));
      while (buffer.size() < body_start + length)
        if (!co_await read_more(*socket, buffer)) co_return;
      request_bodies.push_back(buffer.substr(body_start, length));
      request_connection.push_back(id);
      buffer.erase(0, body_start + length);
      const size_t index = request_bodies.size() - 1;
      if (index >= replies.size()) {
        socket->close(ec);
        co_return;
      }
      const ScriptedReply reply = replies[index];  // a copy: the script may grow meanwhile
      co_await write_pieces(*socket, reply);
      if (reply.reset_after) {
        socket->set_option(tcp::socket::linger(true, 0), ec);
        socket->close(ec);
        co_return;
      }
      if (reply.close_after) {
        socket->shutdown(tcp::socket::shutdown_send, ec);
        // Drain until the client closes (a request written on this connection meanwhile
        // counts, so a wrongly reused connection is seen), then close.
        while (co_await read_more(*socket, buffer)) {
          if (buffer.find("\r\n\r\n") != std::string::npos) {
            request_bodies.push_back("(on a closed connection)");
            request_connection.push_back(id);
            buffer.clear();
          }
        }
        socket->close(ec);
        co_return;
      }
    }
  }

  static boost::asio::awaitable<void> write_pieces(tcp::socket& s, const ScriptedReply& reply) {
    boost::system::error_code ec;
    size_t at = 0;
    size_t i = 0;
    const bool split = std::any_of(reply.pieces.begin(), reply.pieces.end(), [](size_t n) { return n > 0; });
    while (at < reply.bytes.size()) {
      size_t n = split ? reply.pieces[i++ % reply.pieces.size()] : reply.bytes.size();
      if (n == 0) continue;
      n = std::min(n, reply.bytes.size() - at);
      if (reply.rest_with_piece_at != std::string::npos && at + n >= reply.rest_with_piece_at)
        n = reply.bytes.size() - at;
      co_await boost::asio::async_write(s, boost::asio::buffer(reply.bytes.data() + at, n),
                                        boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      at += n;
      // Let the client run between pieces, so that it sees them in separate reads.
      co_await boost::asio::post(s.get_executor(), boost::asio::use_awaitable);
    }
  }

  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
};

}  // namespace tresor::testing
