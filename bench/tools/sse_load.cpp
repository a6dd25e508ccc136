// sse_load: a small HTTP/1.1 load client for bench/run.sh, precise to a few µs.
//
// Why not wrk or node: wrk cannot time the first SSE event inside a response, and node's
// event loop adds jitter of the order of what we measure (added TTFE target: 0.3 ms).
// One thread, Boost.Asio (C++20 coroutines), a hand-written response reader: status
// line, Content-Length or chunked body, and SSE events ("data: …" lines, blank line
// between events) timed as they complete.
//
//   sse_load run  --port P --path /v1/chat/completions --body-file F [--header 'K: V']...
//                 [--conns C] [--per-conn M] [--expect-content S] [--expect-deltas N]
//                 [--connect-parallel K] [--timeout-s T] [--samples FILE] [--content-type T]
//       C connections, each sends M requests one after the other over keep-alive.
//       Prints one line of key=value figures (see print_summary).
//   sse_load hold --port P --path … --body-file F [--header …] --conns N --release-file PATH
//       Opens N connections, sends one request on each and reads the answer, keeps them
//       all open, prints "HELD ok=… failed=…", waits until PATH exists, then checks how many
//       the server closed meanwhile, prints "RELEASED still_open=… closed_by_peer=…", exits.
//
// Per request: ttfb = request written → first response byte; ttfe = request written →
// first complete SSE event (for a non-SSE answer: the whole response); total = request
// written → end of the response. A stream is "ok" when the status is 200, the response
// ended properly, it carried data: [DONE] (SSE), and, if asked, its content deltas
// (non-empty choices[0].delta.content) number --expect-deltas and concatenate to --expect-content.
// dropped = fewer deltas than expected or no [DONE]; reordered = right count, wrong text.
#include <boost/asio.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <vector>

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

struct Options {
  std::string mode;
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  std::string path = "/v1/chat/completions";
  std::string content_type = "application/json";  // --content-type: multipart for the transcription workload
  std::string body;
  std::vector<std::string> headers;
  int conns = 1, per_conn = 1, connect_parallel = 256;
  double timeout_s = 60;
  std::optional<std::string> expect_content;
  std::optional<long> expect_deltas;
  std::string samples, release_file;
};

struct Result {
  bool io_ok = false, complete = false, sse = false, done = false;
  int status = 0;
  long deltas = 0, events = 0;
  std::string content;
  double ttfb_us = -1, ttfe_us = -1, total_us = -1;
};

// Reads one JSON string starting at s[i] == '"'; returns the decoded text (\uXXXX is
// kept as-is: the bench's contents are ASCII) and moves i past the closing quote.
std::optional<std::string> json_string(std::string_view s, size_t& i) {
  if (i >= s.size() || s[i] != '"') return std::nullopt;
  std::string out;
  for (++i; i < s.size(); ++i) {
    char c = s[i];
    if (c == '"') { ++i; return out; }
    if (c == '\\' && i + 1 < s.size()) {
      char e = s[++i];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': out += "\\u"; break;
        default: out += e;
      }
    } else {
      out += c;
    }
  }
  return std::nullopt;
}

// choices[0].delta.content of a chat.completion.chunk, found textually: the first
// "delta" key, then the first "content" key after it inside that object. Good enough for
// the OpenAI-shaped chunks the bench's upstream makes (null content counts as none).
std::optional<std::string> delta_content(std::string_view ev) {
  size_t d = ev.find("\"delta\"");
  if (d == std::string_view::npos) return std::nullopt;
  size_t c = ev.find("\"content\"", d);
  if (c == std::string_view::npos) return std::nullopt;
  size_t close = ev.find('}', d);
  if (close != std::string_view::npos && close < c) return std::nullopt;  // delta:{} without content
  size_t i = c + 9;
  while (i < ev.size() && (ev[i] == ' ' || ev[i] == ':')) ++i;
  return json_string(ev, i);
}

// Incremental HTTP/1.1 response reader with SSE event timing.
class ResponseReader {
 public:
  explicit ResponseReader(Clock::time_point t0) : t0_(t0) {}
  // Feeds bytes received at time `now`. Returns false on a protocol error.
  bool feed(const char* p, size_t n, Clock::time_point now, Result& r) {
    if (r.ttfb_us < 0) r.ttfb_us = us(now);
    in_.append(p, n);
    for (;;) {
      if (state_ == State::head) {
        size_t e = in_.find("\r\n\r\n");
        if (e == std::string::npos) return in_.size() < 65536;
        if (!parse_head(std::string_view(in_).substr(0, e), r)) return false;
        in_.erase(0, e + 4);
        state_ = chunked_ ? State::chunk_size : State::body;
        if (!chunked_ && length_ == 0 && has_length_) return finish(now, r);
        continue;
      }
      if (state_ == State::body) {
        if (has_length_) {
          size_t take = std::min<size_t>(in_.size(), length_ - got_);
          body_bytes(std::string_view(in_).substr(0, take), now, r);
          got_ += take;
          in_.erase(0, take);
          if (got_ == length_) return finish(now, r);
          return true;
        }
        body_bytes(in_, now, r);  // until EOF
        in_.clear();
        return true;
      }
      if (state_ == State::chunk_size) {
        size_t e = in_.find("\r\n");
        if (e == std::string::npos) return in_.size() < 1024;
        length_ = std::strtoull(in_.c_str(), nullptr, 16);
        in_.erase(0, e + 2);
        got_ = 0;
        state_ = length_ == 0 ? State::trailer : State::chunk_data;
        continue;
      }
      if (state_ == State::chunk_data) {
        if (in_.empty()) return true;
        size_t take = std::min<size_t>(in_.size(), length_ - got_);
        body_bytes(std::string_view(in_).substr(0, take), now, r);
        got_ += take;
        in_.erase(0, take);
        if (got_ < length_) return true;
        state_ = State::chunk_crlf;
        continue;
      }
      if (state_ == State::chunk_crlf) {
        if (in_.size() < 2) return true;
        if (in_.compare(0, 2, "\r\n") != 0) return false;
        in_.erase(0, 2);
        state_ = State::chunk_size;
        continue;
      }
      if (state_ == State::trailer) {
        size_t e = in_.find("\r\n");
        if (e == std::string::npos) return true;
        in_.erase(0, e + 2);
        if (e == 0) return finish(now, r);
        continue;
      }
      return true;  // State::end: nothing more is expected (pipelining is not used)
    }
  }
  bool ended() const { return state_ == State::end; }
  bool until_eof() const { return state_ == State::body && !has_length_; }
  bool close_after() const { return close_; }
  void eof(Clock::time_point now, Result& r) {
    if (until_eof()) finish(now, r);
  }

 private:
  enum class State { head, body, chunk_size, chunk_data, chunk_crlf, trailer, end };
  double us(Clock::time_point t) const { return std::chrono::duration<double, std::micro>(t - t0_).count(); }

  bool parse_head(std::string_view h, Result& r) {
    if (h.size() < 12 || h.substr(0, 5) != "HTTP/") return false;
    r.status = std::atoi(std::string(h.substr(9, 3)).c_str());
    size_t pos = h.find("\r\n");
    while (pos != std::string_view::npos) {
      size_t next = h.find("\r\n", pos + 2);
      std::string line(h.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2));
      pos = next;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon), value = line.substr(colon + 1);
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      value.erase(0, value.find_first_not_of(" \t"));
      std::string lvalue = value;
      std::transform(lvalue.begin(), lvalue.end(), lvalue.begin(), ::tolower);
      if (name == "content-length") { has_length_ = true; length_ = std::strtoull(value.c_str(), nullptr, 10); }
      if (name == "transfer-encoding" && lvalue.find("chunked") != std::string::npos) chunked_ = true;
      if (name == "connection" && lvalue.find("close") != std::string::npos) close_ = true;
      if (name == "content-type" && lvalue.find("text/event-stream") != std::string::npos) r.sse = true;
    }
    if (h.substr(0, 8) == "HTTP/1.0" && !has_length_) close_ = true;
    return true;
  }

  void body_bytes(std::string_view b, Clock::time_point now, Result& r) {
    if (!r.sse) return;
    sse_.append(b);
    for (;;) {
      size_t e = sse_.find("\n\n");
      if (e == std::string::npos) return;
      std::string_view ev(sse_.data(), e);
      ++r.events;
      if (r.ttfe_us < 0) r.ttfe_us = us(now);
      // data: lines of the event (one per event from every target the bench uses)
      size_t d = ev.find("data:");
      if (d != std::string_view::npos) {
        std::string_view payload = ev.substr(d + 5);
        while (!payload.empty() && payload.front() == ' ') payload.remove_prefix(1);
        if (payload.substr(0, 6) == "[DONE]") {
          r.done = true;
        } else if (auto c = delta_content(payload); c && !c->empty()) {  // not the role chunk's ""
          ++r.deltas;
          r.content += *c;
        }
      }
      sse_.erase(0, e + 2);
    }
  }

  bool finish(Clock::time_point now, Result& r) {
    state_ = State::end;
    r.complete = true;
    r.total_us = us(now);
    if (r.ttfe_us < 0) r.ttfe_us = r.total_us;  // not SSE: the whole answer is the "event"
    return true;
  }

  Clock::time_point t0_;
  State state_ = State::head;
  std::string in_, sse_;
  bool chunked_ = false, has_length_ = false, close_ = false;
  unsigned long long length_ = 0, got_ = 0;
};

struct Shared {
  Options opt;
  std::string request;
  std::vector<Result> results;
  int connecting = 0;
  int held_ok = 0, held_failed = 0, finished_conns = 0;
  std::vector<std::shared_ptr<tcp::socket>> sockets;
  bool timed_out = false;
};

awaitable<void> sleep_us(long us) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(std::chrono::microseconds(us));
  co_await t.async_wait(asio::use_awaitable);
}

// Connects (at most connect_parallel connects at a time) and disables Nagle.
awaitable<bool> connect(Shared& sh, tcp::socket& s) {
  while (sh.connecting >= sh.opt.connect_parallel) co_await sleep_us(200);
  ++sh.connecting;
  error_code ec;
  tcp::endpoint ep(asio::ip::make_address(sh.opt.host), sh.opt.port);
  co_await s.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
  --sh.connecting;
  if (ec) co_return false;
  s.set_option(tcp::no_delay(true), ec);
  co_return true;
}

// One request/response on an open socket. Returns false if the connection is unusable.
awaitable<bool> exchange(Shared& sh, tcp::socket& s, Result& r) {
  error_code ec;
  const auto t0 = Clock::now();
  co_await asio::async_write(s, asio::buffer(sh.request), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  ResponseReader rd(t0);
  char buf[16384];
  for (;;) {
    size_t n = co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    const auto now = Clock::now();
    if (ec) {
      rd.eof(now, r);
      r.io_ok = rd.ended();
      co_return false;
    }
    if (!rd.feed(buf, n, now, r)) co_return false;
    if (rd.ended()) {
      r.io_ok = true;
      co_return !rd.close_after();
    }
  }
}

awaitable<void> run_conn(Shared& sh, int idx) {
  auto s = std::make_shared<tcp::socket>(co_await asio::this_coro::executor);
  sh.sockets[idx] = s;
  bool open = false;
  for (int m = 0; m < sh.opt.per_conn && !sh.timed_out; ++m) {
    Result& r = sh.results[static_cast<size_t>(idx) * sh.opt.per_conn + m];
    if (!open) {
      error_code ec;
      s->close(ec);
      *s = tcp::socket(co_await asio::this_coro::executor);
      if (!(open = co_await connect(sh, *s))) continue;
    }
    open = co_await exchange(sh, *s, r);
  }
  error_code ec;
  s->close(ec);
  ++sh.finished_conns;
}

awaitable<void> hold_conn(Shared& sh, int idx) {
  auto s = std::make_shared<tcp::socket>(co_await asio::this_coro::executor);
  sh.sockets[idx] = s;
  Result& r = sh.results[idx];
  bool ok = co_await connect(sh, *s) && co_await exchange(sh, *s, r) && r.status == 200;
  ok ? ++sh.held_ok : ++sh.held_failed;
  ++sh.finished_conns;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::max(0.0, std::min<double>(v.size() - 1, p / 100.0 * v.size() - 1e-9)));
  return v[i];
}

void print_summary(const Shared& sh, double wall_ms) {
  long ok = 0, errors = 0, dropped = 0, reordered = 0, events = 0;
  std::vector<double> ttfe, ttfb, total;
  for (const Result& r : sh.results) {
    if (!r.io_ok || r.status != 200) { ++errors; continue; }
    events += r.events;
    bool good = true;
    if (r.sse) {
      bool short_ = !r.done || (sh.opt.expect_deltas && r.deltas < *sh.opt.expect_deltas);
      bool wrong = !short_ && ((sh.opt.expect_deltas && r.deltas != *sh.opt.expect_deltas) ||
                               (sh.opt.expect_content && r.content != *sh.opt.expect_content));
      if (short_) ++dropped;
      if (wrong) ++reordered;
      good = !short_ && !wrong;
    }
    if (good) ++ok;
    ttfe.push_back(r.ttfe_us);
    ttfb.push_back(r.ttfb_us);
    total.push_back(r.total_us);
  }
  std::printf(
      "requests=%zu ok=%ld errors=%ld dropped=%ld reordered=%ld events=%ld ttfb_p50_us=%.1f ttfe_p50_us=%.1f "
      "ttfe_p99_us=%.1f total_p50_us=%.1f total_p99_us=%.1f wall_ms=%.1f timed_out=%d\n",
      sh.results.size(), ok, errors, dropped, reordered, events, pct(ttfb, 50), pct(ttfe, 50), pct(ttfe, 99),
      pct(total, 50), pct(total, 99), wall_ms, sh.timed_out ? 1 : 0);
  if (!sh.opt.samples.empty()) {
    std::ofstream f(sh.opt.samples);
    f << "status\tok_io\tevents\tdeltas\tdone\tttfb_us\tttfe_us\ttotal_us\n";
    for (const Result& r : sh.results)
      f << r.status << '\t' << r.io_ok << '\t' << r.events << '\t' << r.deltas << '\t' << r.done << '\t' << r.ttfb_us
        << '\t' << r.ttfe_us << '\t' << r.total_us << '\n';
  }
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "sse_load: " << why << "\nusage: sse_load run|hold --port P [--path P] --body-file F [--header 'K: V']..."
            << " [--conns C] [--per-conn M] [--expect-content S] [--expect-deltas N] [--connect-parallel K] [--content-type T]"
            << " [--timeout-s T] [--samples FILE] [--release-file PATH]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) usage("no mode");
  o.mode = argv[1];
  if (o.mode != "run" && o.mode != "hold") usage("mode must be run or hold");
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--host") o.host = val();
    else if (a == "--port") o.port = static_cast<unsigned short>(std::stoi(val()));
    else if (a == "--path") o.path = val();
    else if (a == "--content-type") o.content_type = val();
    else if (a == "--body-file") {
      std::ifstream f(val(), std::ios::binary);
      if (!f) usage("cannot read body file");
      std::stringstream ss;
      ss << f.rdbuf();
      o.body = ss.str();
    } else if (a == "--header") o.headers.push_back(val());
    else if (a == "--conns") o.conns = std::stoi(val());
    else if (a == "--per-conn") o.per_conn = std::stoi(val());
    else if (a == "--connect-parallel") o.connect_parallel = std::max(1, std::stoi(val()));
    else if (a == "--timeout-s") o.timeout_s = std::stod(val());
    else if (a == "--expect-content") o.expect_content = val();
    else if (a == "--expect-deltas") o.expect_deltas = std::stol(val());
    else if (a == "--samples") o.samples = val();
    else if (a == "--release-file") o.release_file = val();
    else usage("unknown option " + a);
  }
  if (!o.port) usage("--port is required");
  if (o.mode == "hold" && o.release_file.empty()) usage("hold needs --release-file");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Shared sh;
  sh.opt = parse(argc, argv);
  const Options& o = sh.opt;
  sh.request = "POST " + o.path + " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) +
               "\r\nContent-Type: " + o.content_type + "\r\nContent-Length: " + std::to_string(o.body.size()) + "\r\n";
  for (const auto& h : o.headers) sh.request += h + "\r\n";
  sh.request += "\r\n" + o.body;

  asio::io_context ioc(1);
  const int n = o.conns;
  sh.results.resize(o.mode == "run" ? static_cast<size_t>(n) * o.per_conn : static_cast<size_t>(n));
  sh.sockets.resize(n);
  asio::steady_timer deadline(ioc);
  deadline.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s)));
  deadline.async_wait([&](error_code ec) {
    if (ec) return;
    sh.timed_out = true;
    for (auto& s : sh.sockets)
      if (s) { error_code e; s->close(e); }
  });
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i)
    asio::co_spawn(ioc, o.mode == "run" ? run_conn(sh, i) : hold_conn(sh, i), asio::detached);

  if (o.mode == "run") {
    // stop the deadline once every connection is done, so run() returns
    asio::co_spawn(ioc, [&]() -> awaitable<void> {
      while (sh.finished_conns < n && !sh.timed_out) co_await sleep_us(1000);
      deadline.cancel();
    }, asio::detached);
    ioc.run();
    print_summary(sh, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    return sh.timed_out ? 3 : 0;
  }

  // hold: wait for all answers, report, wait for the release file, count survivors.
  long still_open = 0, closed_by_peer = 0;
  asio::co_spawn(ioc, [&]() -> awaitable<void> {
    while (sh.finished_conns < n && !sh.timed_out) co_await sleep_us(1000);
    deadline.cancel();
    std::printf("HELD ok=%d failed=%d wall_ms=%.1f\n", sh.held_ok, sh.held_failed,
                std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    std::fflush(stdout);
    struct stat st {};
    while (::stat(o.release_file.c_str(), &st) != 0) co_await sleep_us(20000);
    // A socket the server closed meanwhile is readable (EOF) right away.
    for (auto& s : sh.sockets) {
      if (!s || !s->is_open()) continue;
      error_code ec;
      s->non_blocking(true, ec);
      char c;
      size_t got = s->read_some(asio::buffer(&c, 1), ec);
      if (ec == asio::error::would_block) ++still_open;
      else if (ec || got == 0) ++closed_by_peer;
      else ++still_open;  // unexpected bytes: still open
      s->close(ec);
    }
    std::printf("RELEASED still_open=%ld closed_by_peer=%ld\n", still_open, closed_by_peer);
    std::fflush(stdout);
  }, asio::detached);
  ioc.run();
  return 0;
}
