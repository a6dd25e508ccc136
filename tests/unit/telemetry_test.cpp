// Traces (issue 20): W3C traceparent parsing (telemetry/trace_context), the exporter's bounded
// queue, batching, retry and drop counts (telemetry/span_exporter), and why each attempt ran
// (server/request_trace).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "server/request_trace.h"
#include "telemetry/span_exporter.h"
#include "telemetry/trace_context.h"

namespace {

using namespace tresor::telemetry;
using std::chrono::milliseconds;

constexpr const char* kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kParent = "00f067aa0ba902b7";

std::string parent_header(const std::string& version, const std::string& trace, const std::string& parent,
                          const std::string& flags) {
  return version + "-" + trace + "-" + parent + "-" + flags;
}

}  // namespace

TEST_CASE("traceparent: the W3C example is continued, sampled flag and ids kept", "[telemetry]") {
  const auto p = parse_traceparent(parent_header("00", kTrace, kParent, "01"));
  REQUIRE(p);
  CHECK(hex(p->trace_id) == kTrace);
  CHECK(hex(p->parent_id) == kParent);
  CHECK(p->sampled);
  const auto unsampled = parse_traceparent(parent_header("00", kTrace, kParent, "00"));
  REQUIRE(unsampled);
  CHECK_FALSE(unsampled->sampled);
  // Only bit 0 is "sampled"; other flag bits are not ours to judge.
  CHECK(parse_traceparent(parent_header("00", kTrace, kParent, "03"))->sampled);
  CHECK(format_traceparent(p->trace_id, p->parent_id, true) == parent_header("00", kTrace, kParent, "01"));
}

TEST_CASE("traceparent: every malformed form is refused", "[telemetry]") {
  const std::string zeros32(32, '0');
  const std::string zeros16(16, '0');
  for (const std::string& bad : {
           std::string(),
           parent_header("00", "4BF92F3577B34DA6A3CE929D0E0E4736", kParent, "01"),  // uppercase
           parent_header("ff", kTrace, kParent, "01"),                              // version ff
           parent_header("00", zeros32, kParent, "01"),                             // zero trace id
           parent_header("00", kTrace, zeros16, "01"),                              // zero parent id
           parent_header("00", kTrace, kParent, "01") + "-00",                      // 00 with more
           parent_header("00", kTrace, kParent, "1"),                               // short flags
           parent_header("0", kTrace, kParent, "01"),                               // short version
           parent_header("00", std::string(kTrace).substr(1) + "g", kParent, "01"),  // not hex
           std::string("00_") + kTrace + "-" + kParent + "-01",                     // wrong separator
           parent_header("00", kTrace, kParent, "01") + " ",                        // trailing space
       }) {
    INFO(bad);
    CHECK_FALSE(parse_traceparent(bad));
  }
}

TEST_CASE("traceparent: a later version is read by its first four fields", "[telemetry]") {
  CHECK(parse_traceparent(parent_header("01", kTrace, kParent, "01")));
  CHECK(parse_traceparent(parent_header("cc", kTrace, kParent, "01") + "-what-comes-next"));
  CHECK_FALSE(parse_traceparent(parent_header("cc", kTrace, kParent, "01") + "x"));
}

TEST_CASE("a request's trace: continued, new, and the sampling decision", "[telemetry]") {
  const std::string header = parent_header("00", kTrace, kParent, "00");
  const RequestTrace continued = start_request_trace(header, 1, "a=1,b=2", 1.0);
  CHECK(hex(continued.trace_id) == kTrace);
  REQUIRE(continued.parent_id);
  CHECK(hex(*continued.parent_id) == kParent);
  CHECK_FALSE(continued.sampled);  // the client's decision wins over our ratio
  CHECK(continued.tracestate == "a=1,b=2");
  CHECK(hex(continued.span_id) != kParent);

  const RequestTrace twice = start_request_trace(header, 2, "a=1", 1.0);
  CHECK(hex(twice.trace_id) != kTrace);
  CHECK_FALSE(twice.parent_id);
  CHECK(twice.tracestate.empty());  // tracestate only with a valid traceparent

  int sampled = 0;
  for (int i = 0; i < 2000; ++i) sampled += start_request_trace("", 0, "", 0.25).sampled ? 1 : 0;
  CHECK(sampled > 350);
  CHECK(sampled < 650);
  CHECK_FALSE(start_request_trace("", 0, "", 0.0).sampled);
  CHECK(start_request_trace("", 0, "", 1.0).sampled);
}

TEST_CASE("tracestate is passed on when it is what every participant must carry", "[telemetry]") {
  CHECK(usable_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
  CHECK_FALSE(usable_tracestate(std::string(513, 'a')));
  CHECK_FALSE(usable_tracestate("a=b\r\nx: y"));
  CHECK_FALSE(usable_tracestate(""));
}

TEST_CASE("span ids survive the round trip through the attempt's runner tag", "[telemetry]") {
  const SpanId id = new_span_id();
  CHECK(span_id_from(span_id_value(id)) == id);
  CHECK(span_id_value(id) != 0);
}

namespace {

Span span_named(const std::string& name) {
  Span s;
  s.trace_id = new_trace_id();
  s.span_id = new_span_id();
  s.name = name;
  return s;
}

std::vector<Span> spans(size_t n) {
  std::vector<Span> out;
  for (size_t i = 0; i < n; ++i) out.push_back(span_named("s" + std::to_string(i)));
  return out;
}

// A transport that blocks until released, counting calls.
struct GatedTransport {
  std::mutex mutex;
  std::condition_variable changed;
  bool open = false;
  int calls = 0;
  ExportOutcome outcome = ExportOutcome::ok;
  Transport transport() {
    return [this](const std::string&, std::chrono::milliseconds) {
      std::unique_lock lock(mutex);
      ++calls;
      changed.notify_all();
      changed.wait(lock, [this] { return open; });
      return outcome;
    };
  }
  void release() {
    const std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
  void wait_calls(int n) {
    std::unique_lock lock(mutex);
    REQUIRE(changed.wait_for(lock, std::chrono::seconds(10), [&] { return calls >= n; }));
  }
};

template <typename Predicate>
bool eventually(Predicate p) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    if (p()) return true;
    std::this_thread::yield();
  }
  return p();
}

}  // namespace

TEST_CASE("exporter: a stuck collector never blocks submit; the overflow is dropped whole and counted",
          "[telemetry]") {
  GatedTransport gate;
  ExporterOptions options;
  options.max_queue_spans = 6;
  options.max_batch_spans = 2;
  options.interval = milliseconds(10);
  SpanExporter exporter(options, ExportResource{}, gate.transport());
  exporter.submit(spans(2));  // a full batch: taken at once, and stuck in the transport
  gate.wait_calls(1);
  const auto t0 = std::chrono::steady_clock::now();
  exporter.submit(spans(4));  // fits: 4 of 6
  exporter.submit(spans(3));  // would make 7: all 3 dropped
  exporter.submit(spans(2));  // fits: 6 of 6
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  auto c = exporter.counts();
  CHECK(c.dropped_queue_full == 3);
  CHECK(c.queued == 6);
  gate.release();
  CHECK(eventually([&] { return exporter.counts().exported == 8; }));
  c = exporter.counts();
  CHECK(c.queued == 0);
  CHECK(c.dropped_export_failed == 0);
}

TEST_CASE("exporter: a retryable failure is tried once more, then its spans count as dropped", "[telemetry]") {
  std::atomic<int> calls{0};
  ExporterOptions options;
  options.max_batch_spans = 3;
  options.interval = milliseconds(10);
  options.retry_after = milliseconds(5);
  {
    SpanExporter exporter(options, ExportResource{}, [&](const std::string&, std::chrono::milliseconds) {
      ++calls;
      return ExportOutcome::retryable;
    });
    exporter.submit(spans(3));
    CHECK(eventually([&] { return exporter.counts().dropped_export_failed == 3; }));
    CHECK(calls == 2);
    CHECK(exporter.counts().export_failures == 1);
  }
  calls = 0;
  SpanExporter refused(options, ExportResource{}, [&](const std::string&, std::chrono::milliseconds) {
    ++calls;
    return ExportOutcome::rejected;  // e.g. 400: retrying cannot help
  });
  refused.submit(spans(3));
  CHECK(eventually([&] { return refused.counts().dropped_export_failed == 3; }));
  CHECK(calls == 1);
}

TEST_CASE("exporter: what is queued at shutdown is sent, not lost", "[telemetry]") {
  std::atomic<size_t> bodies{0};
  ExporterOptions options;
  options.max_batch_spans = 100;
  options.interval = std::chrono::hours(1);  // only the stop flushes
  {
    SpanExporter exporter(options, ExportResource{}, [&](const std::string&, std::chrono::milliseconds) {
      ++bodies;
      return ExportOutcome::ok;
    });
    exporter.submit(spans(5));
  }
  CHECK(bodies == 1);
}

TEST_CASE("why each attempt ran: initial, retry, failover, hedge, recovery", "[telemetry]") {
  using tresor::router::AttemptOutcome;
  using tresor::router::AttemptRecord;
  const auto t0 = std::chrono::steady_clock::now();
  const auto at = [&](const std::string& route, int start_ms, int ms, AttemptOutcome o) {
    AttemptRecord a;
    a.route = route;
    a.started = t0 + milliseconds(start_ms);
    a.ms = ms;
    a.outcome = o;
    return a;
  };
  AttemptRecord skipped;
  skipped.route = "b";
  skipped.outcome = AttemptOutcome::skipped_breaker;
  const std::vector<AttemptRecord> attempts = {
      at("a", 0, 10, AttemptOutcome::http_status),  at("a", 20, 10, AttemptOutcome::connect_failed),
      skipped,                                       at("c", 40, 100, AttemptOutcome::hedged_cancelled),
      at("d", 60, 50, AttemptOutcome::stream_cut),   at("e", 120, 30, AttemptOutcome::ok),
  };
  using tresor::server::attempt_reason;
  CHECK(attempt_reason(attempts, 0) == "initial");
  CHECK(attempt_reason(attempts, 1) == "retry");
  CHECK(attempt_reason(attempts, 3) == "failover");
  CHECK(attempt_reason(attempts, 4) == "hedge");
  CHECK(attempt_reason(attempts, 5) == "recovery");
}

TEST_CASE("request spans: one per request plus one per tried attempt, counted before they are built",
          "[telemetry]") {
  using tresor::router::AttemptOutcome;
  using tresor::router::AttemptRecord;
  const auto t0 = tresor::providers::Clock::now();
  tresor::server::RequestRecord r;
  r.inference = true;
  r.started = t0;
  r.trace = tresor::telemetry::start_request_trace("", 0, "", 1.0);
  const auto tried = [&](const char* route, AttemptOutcome o, uint64_t tag) {
    AttemptRecord a;
    a.route = route;
    a.outcome = o;
    a.started = t0;
    a.runner_tag = tag;
    return a;
  };
  AttemptRecord skipped;  // a breaker open: no timings, no span id
  skipped.route = "b";
  skipped.outcome = AttemptOutcome::skipped_breaker;
  r.attempts = {tried("a", AttemptOutcome::http_status, 11), skipped, tried("c", AttemptOutcome::stream_cut, 12),
                tried("d", AttemptOutcome::ok, 13)};
  const tresor::config::Config cfg;
  const auto spans = tresor::server::request_spans(r, cfg, t0, std::chrono::system_clock::now());
  CHECK(tresor::server::request_span_count(r) == 4);
  CHECK(spans.size() == tresor::server::request_span_count(r));
  // The skipped route is an event on the request's span, not a span of its own.
  REQUIRE_FALSE(spans.empty());
  CHECK(spans.front().events.size() == 1);
}

TEST_CASE("attempts: the shared predicates of tried, broken and failed-after-commit attempts", "[telemetry]") {
  using tresor::router::AttemptOutcome;
  namespace router = tresor::router;
  CHECK_FALSE(router::was_attempted(AttemptOutcome::skipped_breaker));
  CHECK_FALSE(router::was_attempted(AttemptOutcome::skipped_retry_after));
  CHECK_FALSE(router::was_attempted(AttemptOutcome::recovery_skipped));
  CHECK(router::was_attempted(AttemptOutcome::hedged_cancelled));
  CHECK(router::was_attempted(AttemptOutcome::http_status));
  CHECK(router::stream_broke_after_commit(AttemptOutcome::stream_cut));
  CHECK(router::stream_broke_after_commit(AttemptOutcome::stream_stalled));
  CHECK_FALSE(router::stream_broke_after_commit(AttemptOutcome::recovery_diverged));
  CHECK(router::stream_failed_after_commit(AttemptOutcome::recovery_diverged));
  CHECK_FALSE(router::stream_failed_after_commit(AttemptOutcome::reset));
}

TEST_CASE("exporter: a collector that hangs holds a stopping gateway no longer than the shutdown timeout",
          "[telemetry]") {
  std::atomic<int> calls{0};
  ExporterOptions options;
  options.max_batch_spans = 100;
  options.interval = std::chrono::hours(1);  // nothing is sent before the stop
  options.export_timeout = std::chrono::seconds(30);
  options.shutdown_timeout = milliseconds(300);
  // The hung collector: each export lasts its whole timeout, as a transport does when
  // nothing answers.
  auto exporter = std::make_unique<SpanExporter>(options, ExportResource{}, [&](const std::string&, milliseconds timeout) {
    ++calls;
    std::this_thread::sleep_for(timeout);
    return ExportOutcome::retryable;
  });
  exporter->submit(spans(5));
  const auto t0 = std::chrono::steady_clock::now();
  exporter.reset();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < std::chrono::seconds(2));  // 300 ms, not 30 s; generous for a loaded machine
  CHECK(calls == 1);                      // no retry at stop
}

TEST_CASE("exporter: reserve_or_drop answers for the queue and counts what will not fit", "[telemetry]") {
  GatedTransport gate;
  ExporterOptions options;
  options.max_queue_spans = 3;
  options.max_batch_spans = 100;
  options.interval = std::chrono::hours(1);
  SpanExporter exporter(options, ExportResource{}, gate.transport());
  CHECK(exporter.reserve_or_drop(3));
  exporter.submit(spans(3));
  CHECK_FALSE(exporter.reserve_or_drop(2));
  CHECK(exporter.counts().dropped_queue_full == 2);
  gate.release();
}
