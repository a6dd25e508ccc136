// A Beast message head written out as the bytes that go on the wire, into one string.
//
// Why not http::async_write: Beast's serializer walks a buffers_cat_view of the start
// line, every field and the body one buffer at a time, and handing the socket that
// sequence cost ~5% of the gateway's CPU per proxied request. One contiguous string (head
// plus a small body, copied once) is a single-buffer send. Only for messages whose fields
// are final (prepare_payload done) and whose body is a string; streamed bodies and chunked
// answers keep Beast's serializer.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>

#include <string>
#include <string_view>

namespace tresor::common {

template <class Fields>
void append_start_line(std::string& out, const boost::beast::http::header<true, Fields>& h) {
  out.append(h.method_string()).push_back(' ');
  out.append(h.target());
  out.append(h.version() == 10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
}

template <class Fields>
void append_start_line(std::string& out, const boost::beast::http::header<false, Fields>& h) {
  out.append(h.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  out.append(std::to_string(h.result_int())).push_back(' ');
  const std::string_view reason = h.reason();
  out.append(reason.empty() ? std::string_view(boost::beast::http::obsolete_reason(h.result())) : reason);
  out.append("\r\n");
}

// The start line, every field ("Name: value\r\n") and the blank line.
template <bool isRequest, class Fields>
void append_head(std::string& out, const boost::beast::http::header<isRequest, Fields>& h) {
  append_start_line(out, h);
  for (const auto& field : h) {
    out.append(field.name_string()).append(": ");
    out.append(field.value()).append("\r\n");
  }
  out.append("\r\n");
}

// Head and (unless `head_only`, for HEAD requests) the string body.
template <bool isRequest, class Body, class Fields>
std::string wire_bytes(const boost::beast::http::message<isRequest, Body, Fields>& m, bool head_only = false) {
  std::string out;
  out.reserve(512 + (head_only ? 0 : m.body().size()));
  append_head(out, m.base());
  if (!head_only) out.append(m.body());
  return out;
}

}  // namespace tresor::common
