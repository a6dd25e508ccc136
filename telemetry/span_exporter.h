// Exports finished spans off the I/O threads (as OpenTelemetry's BatchSpanProcessor): the
// request path hands a request's spans to a bounded queue and returns; one thread of its
// own encodes them (otlp_encoding.h) in batches and sends each through a Transport. A
// collector that is down, slow or refusing costs requests nothing: when the queue is full
// new spans are dropped, and every drop is counted.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "telemetry/otlp_encoding.h"
#include "telemetry/span.h"

namespace tresor::telemetry {

// How one export request went (OTLP/HTTP §"Failures": 429, 502, 503, 504 and no answer at
// all may be retried; any other failure may not).
enum class ExportOutcome { ok, retryable, rejected };
// Sends one encoded export request, giving up after `timeout`.
using Transport = std::function<ExportOutcome(const std::string& body, std::chrono::milliseconds timeout)>;

struct ExporterOptions {
  size_t max_queue_spans = 8192;
  size_t max_batch_spans = 512;
  std::chrono::milliseconds interval{1000};  // a partial batch waits at most this long
  std::chrono::milliseconds retry_after{500};  // one retry of a retryable failure, after this
  std::chrono::milliseconds export_timeout{5000};  // one export request
  // At stop, what is queued is sent for at most this long in all (a collector that hangs
  // must not hold a draining gateway); the rest is dropped and counted.
  std::chrono::milliseconds shutdown_timeout{2000};
};

class SpanExporter {
 public:
  SpanExporter(ExporterOptions options, ExportResource resource, Transport transport);
  // Sends what is queued within options.shutdown_timeout, then stops the thread.
  ~SpanExporter();
  SpanExporter(const SpanExporter&) = delete;
  SpanExporter& operator=(const SpanExporter&) = delete;

  // Any thread; never waits on the network. All of `spans` are queued, or (the queue would
  // overflow) all are dropped and counted: a trace is not exported in pieces.
  void submit(std::vector<Span> spans);
  // Whether `n` more spans would fit now; when not, they are counted as dropped (so a
  // caller can skip building spans a stuck collector would drop anyway).
  bool reserve_or_drop(size_t n);

  struct Counts {
    uint64_t exported = 0;          // spans a collector accepted
    uint64_t dropped_queue_full = 0;
    uint64_t dropped_export_failed = 0;  // in a batch the collector refused or never answered
    uint64_t export_failures = 0;        // export requests that failed (after their retry)
    uint64_t queued = 0;                 // waiting now
  };
  Counts counts() const;

 private:
  void run();
  // `deadline`: at stop, the end of the shutdown flush (no retry then).
  void export_batch(std::vector<Span>& batch, std::optional<std::chrono::steady_clock::time_point> deadline);

  const ExporterOptions options_;
  const ExportResource resource_;
  const Transport transport_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Span> queue_;
  bool stopping_ = false;
  std::atomic<uint64_t> exported_{0};
  std::atomic<uint64_t> dropped_queue_full_{0};
  std::atomic<uint64_t> dropped_export_failed_{0};
  std::atomic<uint64_t> export_failures_{0};
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tresor::telemetry
