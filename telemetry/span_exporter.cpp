#include "telemetry/span_exporter.h"

#include <algorithm>
#include <iterator>

namespace tresor::telemetry {

SpanExporter::SpanExporter(ExporterOptions options, ExportResource resource, Transport transport)
    : options_(options),
      resource_(std::move(resource)),
      transport_(std::move(transport)),
      thread_([this] { run(); }) {}

SpanExporter::~SpanExporter() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void SpanExporter::submit(std::vector<Span> spans) {
  if (spans.empty()) return;
  bool batch_ready = false;
  {
    const std::lock_guard lock(mutex_);
    if (queue_.size() + spans.size() > options_.max_queue_spans) {
      dropped_queue_full_ += spans.size();
      return;
    }
    std::move(spans.begin(), spans.end(), std::back_inserter(queue_));
    batch_ready = queue_.size() >= options_.max_batch_spans;
  }
  if (batch_ready) wake_.notify_one();
}

bool SpanExporter::reserve_or_drop(size_t n) {
  const std::lock_guard lock(mutex_);
  if (queue_.size() + n <= options_.max_queue_spans) return true;
  dropped_queue_full_ += n;
  return false;
}

SpanExporter::Counts SpanExporter::counts() const {
  Counts c;
  c.exported = exported_;
  c.dropped_queue_full = dropped_queue_full_;
  c.dropped_export_failed = dropped_export_failed_;
  c.export_failures = export_failures_;
  const std::lock_guard lock(mutex_);
  c.queued = queue_.size();
  return c;
}

void SpanExporter::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // A full batch goes at once; a partial one after the interval; all of it at stop.
    wake_.wait_for(lock, options_.interval,
                   [this] { return stopping_ || queue_.size() >= options_.max_batch_spans; });
    if (queue_.empty()) {
      if (stopping_) return;
      continue;
    }
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (stopping_) deadline = std::chrono::steady_clock::now() + options_.shutdown_timeout;
    do {
      if (deadline && std::chrono::steady_clock::now() >= *deadline) {
        dropped_export_failed_ += queue_.size();  // out of time at stop
        queue_.clear();
        break;
      }
      const size_t n = std::min(queue_.size(), options_.max_batch_spans);
      std::vector<Span> batch(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      lock.unlock();  // submit() never waits for the network
      export_batch(batch, deadline);
      lock.lock();
    } while (deadline && !queue_.empty());
    if (deadline) return;
  }
}

void SpanExporter::export_batch(std::vector<Span>& batch,
                                std::optional<std::chrono::steady_clock::time_point> deadline) {
  const std::string body = encode_export_request(resource_, batch);
  auto timeout = options_.export_timeout;
  if (deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
    timeout = std::clamp(left, std::chrono::milliseconds(1), timeout);
  }
  ExportOutcome outcome = transport_(body, timeout);
  if (outcome == ExportOutcome::retryable && !deadline) {
    std::unique_lock lock(mutex_);
    // At stop there is no time for a second try.
    if (!wake_.wait_for(lock, options_.retry_after, [this] { return stopping_; })) {
      lock.unlock();
      outcome = transport_(body, options_.export_timeout);
    }
  }
  if (outcome == ExportOutcome::ok) {
    exported_ += batch.size();
  } else {
    ++export_failures_;
    dropped_export_failed_ += batch.size();
  }
}

}  // namespace tresor::telemetry
