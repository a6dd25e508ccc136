#include "server/metrics.h"

#include "receipts/transparency_log.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string_view>
#include <unordered_map>

namespace tresor::server {
namespace {

using prometheus::Histogram;

const Histogram::BucketBoundaries& duration_buckets() {
  static const Histogram::BucketBoundaries b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,    1,     2.5,    5,     10,   30,    60,   120, 300};
  return b;
}

// The router's own time per request is microseconds: finer buckets.
const Histogram::BucketBoundaries& overhead_buckets() {
  static const Histogram::BucketBoundaries b = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                                0.001,   0.0025,   0.005,   0.01,   0.05,    0.25};
  return b;
}

double seconds(providers::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The attempt outcome as a bounded label: HTTP statuses grouped by class, the rest by name.
std::string outcome_label(const router::AttemptRecord& a) {
  if (a.outcome == router::AttemptOutcome::http_status) {
    if (a.http_status == 429) return "http_429";
    if (a.http_status >= 500) return "http_5xx";
    return "http_4xx";
  }
  return std::string(router::outcome_name(a.outcome));
}

// process_* metrics (the names every Prometheus client library exports), from /proc.
std::string process_metrics() {
  std::ostringstream out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  // Fields after the command name (which may contain spaces) start after ") ".
  const auto close = line.rfind(')');
  std::istringstream fields(close == std::string::npos ? std::string() : line.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0, starttime = 0, rss_pages = 0;
  for (int i = 3; fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stod(f);
    if (i == 15) stime = std::stod(f);
    if (i == 22) starttime = std::stod(f);
    if (i == 24) rss_pages = std::stod(f);
  }
  double boot_time = 0;
  std::ifstream procstat("/proc/stat");
  while (std::getline(procstat, line))
    if (line.rfind("btime ", 0) == 0) boot_time = std::stod(line.substr(6));
  size_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::end(it);
       it.increment(ec))
    ++fds;
  out << "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
      << "# TYPE process_cpu_seconds_total counter\n"
      << "process_cpu_seconds_total " << (utime + stime) / ticks << "\n"
      << "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
      << "# TYPE process_resident_memory_bytes gauge\n"
      << "process_resident_memory_bytes " << static_cast<uint64_t>(rss_pages * page) << "\n"
      << "# HELP process_open_fds Number of open file descriptors.\n"
      << "# TYPE process_open_fds gauge\n"
      << "process_open_fds " << fds << "\n"
      << "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
      << "# TYPE process_start_time_seconds gauge\n"
      << "process_start_time_seconds " << static_cast<uint64_t>(boot_time + starttime / ticks) << "\n";
  return out.str();
}

std::string_view refusal_label(accounts::Refusal::Kind k) {
  switch (k) {
    case accounts::Refusal::Kind::balance_exceeded: return "balance_exceeded";
    case accounts::Refusal::Kind::rate_limited: return "rate_limited";
    case accounts::Refusal::Kind::tokens_limited: return "tokens_limited";
    case accounts::Refusal::Kind::store_unavailable: return "store_unavailable";
  }
  return "rate_limited";
}

// Money totals, exact: prometheus-cpp counters are doubles (integers exact only to 2^53
// nanos, about 9 million currency units), so these are integers rendered by hand.
struct MoneyTotals {
  uint64_t settled = 0;
  uint64_t estimated = 0;
};
using ByCurrency = std::map<std::string, MoneyTotals, std::less<>>;

// Adds without wrapping: a counter that saturates is wrong later than one that wraps.
void add_saturating(uint64_t& total, uint64_t n) { total = n > UINT64_MAX - total ? UINT64_MAX : total + n; }

// A label value in the text format: currencies are free text in the config.
std::string escape_label(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void write_family(std::ostringstream& out, std::string_view name, std::string_view help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n";
}


// ---- Issue 20: per-route stream and GenAI series -------------------------------------------
// Names follow the OpenTelemetry GenAI metric conventions as OTel's Prometheus exporter writes
// them (dots to underscores, the unit "s" as _seconds, "{token}" dropped); what they lack
// has a tresor_ name. Kept per configured route id and rendered for the routes of the
// config only, every series present from the start (a rate() works before the first
// request; a client's model string can never add one).

// Bucket bounds the conventions recommend (gen-ai-metrics.md, ExplicitBucketBoundaries).
constexpr std::array<double, 16> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
constexpr std::array<double, 13> kTpotBounds = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                0.3,  0.4,   0.5,  0.75,  1.0, 2.5};
constexpr std::array<double, 14> kTokenBounds = {1,     4,      16,      64,      256,      1024,     4096,
                                                 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};
constexpr std::array<double, 14> kOperationBounds = {0.01, 0.02, 0.04,  0.08,  0.16,  0.32,  0.64,
                                                     1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};

// A histogram's buckets (not cumulative; the last one is +Inf) and sum.
template <size_t N>
struct Buckets {
  std::array<uint64_t, N + 1> counts{};
  double sum = 0;

  void observe(const std::array<double, N>& bounds, double v) {
    size_t i = 0;
    while (i < N && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
  }
  // Counts already bucketed on the same bounds (StreamPace's gaps): prometheus-cpp's
  // ObserveMultiple, without the vector.
  void add(const std::array<uint64_t, N + 1>& more, double more_sum) {
    for (size_t i = 0; i <= N; ++i) counts[i] += more[i];
    sum += more_sum;
  }
};

// Attempt outcomes of a stream that failed after its 200, as tresor_stream_upstream_failures_total's reason.
constexpr router::AttemptOutcome kStreamFailures[] = {router::AttemptOutcome::stream_cut,
                                                      router::AttemptOutcome::stream_stalled,
                                                      router::AttemptOutcome::recovery_diverged};

struct RouteStats {
  Buckets<kTtftBounds.size()> ttft;
  Buckets<StreamPace::kGapBounds.size()> gaps;
  Buckets<kTpotBounds.size()> tpot;
  Buckets<kTokenBounds.size()> tokens[2];  // input, output
  std::array<uint64_t, std::size(kStreamFailures)> stream_failures{};
  // Upstream attempts by error type ("" = succeeded): outcome labels, a fixed set.
  std::map<std::string, Buckets<kOperationBounds.size()>, std::less<>> operations;
};

// The attempt that first reached the client with content: the route that gave the first
// token (later attempts of the same stream are recoveries; a cancelled hedge never wrote).
const router::AttemptRecord* committed_attempt(const RequestRecord& r) {
  for (const auto& a : r.attempts)
    if (a.outcome == router::AttemptOutcome::ok || router::stream_broke_after_commit(a.outcome)) return &a;
  return nullptr;
}

// A number as the text format wants it: the shortest text that reads back the same.
std::string number(double v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  if (res.ec != std::errc()) return std::to_string(v);
  return std::string(buf, res.ptr);
}

void write_header(std::ostringstream& out, std::string_view name, std::string_view type, std::string_view help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << "\n";
}

// One histogram series: cumulative buckets, +Inf, sum and count. `labels` is the inside
// of the braces without le ("a=\"x\",b=\"y\"").
template <size_t N>
void write_histogram(std::ostringstream& out, std::string_view name, const std::string& labels,
                     const std::array<double, N>& bounds, const Buckets<N>& b) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= N; ++i) {
    cumulative += b.counts[i];
    out << name << "_bucket{" << labels << ",le=\"" << (i < N ? number(bounds[i]) : "+Inf") << "\"} " << cumulative
        << "\n";
  }
  out << name << "_sum{" << labels << "} " << number(b.sum) << "\n"
      << name << "_count{" << labels << "} " << cumulative << "\n";
}
}  // namespace

struct Metrics::Impl {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& requests = prometheus::BuildCounter()
      .Name("tresor_requests_total").Help("Requests answered, by endpoint and HTTP status").Register(registry);
  prometheus::Family<prometheus::Counter>& route_requests = prometheus::BuildCounter()
      .Name("tresor_route_requests_total").Help("Inference requests by the route that served them (\"\" when none did) and status")
      .Register(registry);
  prometheus::Family<prometheus::Counter>& attempts = prometheus::BuildCounter()
      .Name("tresor_upstream_attempts_total").Help("Upstream attempts by route and outcome").Register(registry);
  prometheus::Family<prometheus::Counter>& failovers = prometheus::BuildCounter()
      .Name("tresor_failovers_total").Help("Requests served by a route other than their first candidate").Register(registry);
  prometheus::Family<prometheus::Counter>& reloads = prometheus::BuildCounter()
      .Name("tresor_config_reloads_total").Help("Config reloads (SIGHUP) by result").Register(registry);
  prometheus::Family<prometheus::Gauge>& connections = prometheus::BuildGauge()
      .Name("tresor_active_connections").Help("Client connections open now").Register(registry);
  prometheus::Family<prometheus::Counter>& connection_limit = prometheus::BuildCounter()
      .Name("tresor_connection_limit_total")
      .Help("Connections at server.max_connections, by action: an idle one closed for a new one, or the new one refused (503)")
      .Register(registry);
  prometheus::Family<prometheus::Gauge>& streams = prometheus::BuildGauge()
      .Name("tresor_active_streams").Help("SSE streams being relayed now").Register(registry);
  prometheus::Family<prometheus::Histogram>& duration = prometheus::BuildHistogram()
      .Name("tresor_request_duration_seconds").Help("Time from request head to the end of the answer").Register(registry);
  prometheus::Family<prometheus::Histogram>& upstream = prometheus::BuildHistogram()
      .Name("tresor_upstream_duration_seconds").Help("Time spent waiting on upstreams (and backoff between attempts)")
      .Register(registry);
  prometheus::Family<prometheus::Histogram>& overhead = prometheus::BuildHistogram()
      .Name("tresor_overhead_seconds").Help("The router's own time: total minus the upstream wait").Register(registry);
  prometheus::Family<prometheus::Gauge>& key_conflict_family = prometheus::BuildGauge()
      .Name("tresor_signing_key_conflict")
      .Help("1 while another replica on the shared store records a different key under one of this replica's kids")
      .Register(registry);
  prometheus::Gauge& key_conflict = key_conflict_family.Add({});
  prometheus::Gauge& active_connections = connections.Add({});
  prometheus::Gauge& active_streams = streams.Add({});
  prometheus::Counter& idle_closed = connection_limit.Add({{"action", "idle_closed"}});
  prometheus::Counter& refused = connection_limit.Add({{"action", "refused"}});

  // Refusals: three reasons, all present from the start (a rate() works before the first).
  std::atomic<uint64_t> refusals[4] = {};
  // Served without a function during a store outage: rate_limits, credits, receipts.
  std::atomic<uint64_t> outage_served[3] = {};
  std::shared_ptr<const storage::StoreBreaker> store_breaker;

  // Money by route, then currency, and cut streams by route (std::less<>: looked up by
  // string_view). Keys are configured route ids and currencies, so the maps stay small.
  std::mutex money_mutex;
  std::map<std::string, ByCurrency, std::less<>> money;
  std::map<std::string, uint64_t, std::less<>> cut_streams;
  std::map<std::string, std::array<uint64_t, 3>, std::less<>> recoveries;  // by route: recovered, diverged, failed
  std::atomic<uint64_t> hedges[3] = {};  // won, lost, failed

  // Issue 20: stream pace, tokens, upstream operations and stream failures by route id.
  std::mutex route_mutex;
  std::map<std::string, RouteStats, std::less<>> route_stats;
  void record_route_stats(const RequestRecord& r, providers::Clock::time_point now);
  std::string render_route_stats(const config::Config& cfg);

  template <typename Map>
  static typename Map::mapped_type& at(Map& map, std::string_view key) {
    auto it = map.find(key);
    if (it == map.end()) it = map.emplace(std::string(key), typename Map::mapped_type{}).first;
    return it->second;
  }

  std::string render_money(const config::Config& cfg);

  // Family::Add builds a label map, hashes it and takes the family's lock on every call
  // (and a histogram's bucket vector besides): per request that cost more than the proxy
  // hop itself. The children are looked up here instead, by family and label values; the
  // label sets are bounded (see the header), so the cache is too.
  std::mutex cache_mutex;
  std::unordered_map<std::string, void*> cache;

  template <typename Metric, typename MakeLabels, typename... Args>
  Metric& child(prometheus::Family<Metric>& family, std::string_view a, std::string_view b, MakeLabels make_labels,
                Args&&... args) {
    thread_local std::string key;
    const void* family_id = &family;  // the family's address, as bytes
    key.assign(reinterpret_cast<const char*>(&family_id), sizeof family_id);
    key.append(a).push_back('\0');
    key.append(b);
    std::lock_guard lock(cache_mutex);
    if (auto it = cache.find(key); it != cache.end()) return *static_cast<Metric*>(it->second);
    Metric& m = family.Add(make_labels(), std::forward<Args>(args)...);
    cache.emplace(key, &m);
    return m;
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {
  // Both results exist from the start, so a rate() over them works before the first reload.
  impl_->reloads.Add({{"result", "success"}});
  impl_->reloads.Add({{"result", "failure"}});
}

Metrics::~Metrics() = default;

void Metrics::request_done(const RequestRecord& r, providers::Clock::time_point now) {
  auto& m = *impl_;
  const std::string_view endpoint = r.endpoint;
  char status_text[8];
  const int n = std::snprintf(status_text, sizeof status_text, "%u", r.status);
  const std::string_view status(status_text, static_cast<size_t>(std::max(n, 0)));
  m.child(m.requests, endpoint, status, [&] {
     return prometheus::Labels{{"endpoint", std::string(endpoint)}, {"status", std::string(status)}};
   }).Increment();
  const auto by_endpoint = [&] { return prometheus::Labels{{"endpoint", std::string(endpoint)}}; };
  m.child(m.duration, endpoint, "", by_endpoint, duration_buckets()).Observe(seconds(now - r.started));
  if (!r.inference) return;
  m.child(m.route_requests, r.routed_model, status, [&] {
     return prometheus::Labels{{"route", r.routed_model}, {"status", std::string(status)}};
   }).Increment();
  for (const auto& a : r.attempts) {
    if (!router::was_attempted(a.outcome)) continue;
    const std::string outcome = outcome_label(a);
    m.child(m.attempts, a.route, outcome, [&] {
       return prometheus::Labels{{"route", a.route}, {"outcome", outcome}};
     }).Increment();
  }
  if (r.failover) m.child(m.failovers, endpoint, "", by_endpoint).Increment();
  m.child(m.upstream, endpoint, "", by_endpoint, duration_buckets()).Observe(seconds(r.upstream_wait));
  m.child(m.overhead, endpoint, "", by_endpoint, overhead_buckets()).Observe(seconds(r.overhead(now)));

  m.record_route_stats(r, now);
}

void Metrics::connection_opened() { impl_->active_connections.Increment(); }
void Metrics::connection_closed() { impl_->active_connections.Decrement(); }
void Metrics::idle_connection_closed() { impl_->idle_closed.Increment(); }
void Metrics::connection_refused() { impl_->refused.Increment(); }
void Metrics::stream_started() { impl_->active_streams.Increment(); }
void Metrics::stream_ended() { impl_->active_streams.Decrement(); }
void Metrics::config_reload(bool ok) { impl_->reloads.Add({{"result", ok ? "success" : "failure"}}).Increment(); }

void Metrics::signing_key_conflict(bool conflict) { impl_->key_conflict.Set(conflict ? 1 : 0); }

void Metrics::spend(std::string_view route, std::string_view currency, int64_t nanos, bool estimated) {
  if (nanos <= 0) return;  // nothing to add (an unpriced route would add a currency "" series)
  std::lock_guard lock(impl_->money_mutex);
  MoneyTotals& t = Impl::at(Impl::at(impl_->money, route), currency);
  add_saturating(t.settled, static_cast<uint64_t>(nanos));
  if (estimated) add_saturating(t.estimated, static_cast<uint64_t>(nanos));
}

void Metrics::reservation_refused(accounts::Refusal::Kind reason) {
  impl_->refusals[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

namespace {
constexpr std::string_view kOutageFunctions[] = {"rate_limits", "credits", "receipts"};
}  // namespace

void Metrics::set_store_breaker(std::shared_ptr<const storage::StoreBreaker> breaker) {
  impl_->store_breaker = std::move(breaker);
}

void Metrics::store_outage_served(std::string_view function) {
  for (size_t i = 0; i < std::size(kOutageFunctions); ++i)
    if (kOutageFunctions[i] == function) impl_->outage_served[i].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::hedge(router::FailoverResult::Hedge outcome) {
  using Hedge = router::FailoverResult::Hedge;
  if (outcome == Hedge::none) return;
  const size_t i = outcome == Hedge::won ? 0 : outcome == Hedge::lost ? 1 : 2;
  impl_->hedges[i].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::stream_recovery(std::string_view route, Recovery result) {
  std::lock_guard lock(impl_->money_mutex);
  ++Impl::at(impl_->recoveries, route)[static_cast<size_t>(result)];
}

void Metrics::cut_stream_billed(std::string_view route) {
  std::lock_guard lock(impl_->money_mutex);
  ++Impl::at(impl_->cut_streams, route);
}

// Series for the routes of `cfg` only (the bound on the route label): every priced route
// with its currency from the start (0 until it spends), and any other currency a configured
// route has spent in (its pricing changed by a reload). Cut streams: every route.
std::string Metrics::Impl::render_money(const config::Config& cfg) {
  std::map<std::string, ByCurrency> shown;
  std::map<std::string, uint64_t> cut;
  std::map<std::string, std::array<uint64_t, 3>> recovered;
  {
    std::lock_guard lock(money_mutex);
    for (const auto& route : cfg.routes) {
      auto& currencies = shown[route.id];
      if (route.pricing) currencies[route.pricing->currency];
      if (auto it = money.find(route.id); it != money.end())
        for (const auto& [currency, t] : it->second) currencies[currency] = t;
      const auto c = cut_streams.find(route.id);
      cut[route.id] = c == cut_streams.end() ? 0 : c->second;
      const auto r = recoveries.find(route.id);
      recovered[route.id] = r == recoveries.end() ? std::array<uint64_t, 3>{} : r->second;
    }
  }
  std::ostringstream out;
  const auto by_currency = [&](std::string_view name, std::string_view help, uint64_t MoneyTotals::*field) {
    write_family(out, name, help);
    for (const auto& [route, currencies] : shown)
      for (const auto& [currency, t] : currencies)
        out << name << "{route=\"" << escape_label(route) << "\",currency=\"" << escape_label(currency) << "\"} "
            << t.*field << "\n";
  };
  by_currency("tresor_spend_nanos_total", "Charges settled, in 1e-9 of the currency unit, by the route that served",
              &MoneyTotals::settled);
  by_currency("tresor_spend_estimated_nanos_total",
              "The part of tresor_spend_nanos_total settled on estimated usage (the upstream reported none)",
              &MoneyTotals::estimated);
  write_family(out, "tresor_cut_streams_billed_total", "Streams cut before their end and billed all the same");
  for (const auto& [route, n] : cut)
    out << "tresor_cut_streams_billed_total{route=\"" << escape_label(route) << "\"} " << n << "\n";
  write_family(out, "tresor_stream_recoveries_total",
               "Streams whose upstream failed after events reached the client, by the route that failed and "
               "whether another attempt continued them");
  for (const auto& [route, n] : recovered) {
    static constexpr const char* kResults[] = {"recovered", "diverged", "failed"};
    for (size_t i = 0; i < 3; ++i)
      out << "tresor_stream_recoveries_total{route=\"" << escape_label(route) << "\",result=\"" << kResults[i]
          << "\"} " << n[i] << "\n";
  }
  write_family(out, "tresor_hedges_total",
               "Hedged attempts started beside a slow first attempt: won (answered), lost (cancelled), failed");
  {
    static constexpr const char* kResults[] = {"won", "lost", "failed"};
    for (size_t i = 0; i < 3; ++i)
      out << "tresor_hedges_total{result=\"" << kResults[i] << "\"} " << hedges[i].load(std::memory_order_relaxed)
          << "\n";
  }
  write_family(out, "tresor_reservation_refusals_total", "Requests refused before dispatch, by reason");
  for (const auto reason : {accounts::Refusal::Kind::balance_exceeded, accounts::Refusal::Kind::rate_limited,
                            accounts::Refusal::Kind::tokens_limited, accounts::Refusal::Kind::store_unavailable})
    out << "tresor_reservation_refusals_total{reason=\"" << refusal_label(reason) << "\"} "
        << refusals[static_cast<size_t>(reason)].load(std::memory_order_relaxed) << "\n";
  write_family(out, "tresor_store_outage_served_total",
               "Requests served without a function because the shared store was unreachable (store.outage: open)");
  for (size_t i = 0; i < std::size(kOutageFunctions); ++i)
    out << "tresor_store_outage_served_total{function=\"" << kOutageFunctions[i] << "\"} "
        << outage_served[i].load(std::memory_order_relaxed) << "\n";
  if (store_breaker) {
    out << "# HELP tresor_store_up 1 while the shared store answers, 0 while its breaker is open\n"
        << "# TYPE tresor_store_up gauge\n";
    out << "tresor_store_up " << (store_breaker->down() ? 0 : 1) << "\n";
    write_family(out, "tresor_store_breaker_openings_total", "Times the shared store's breaker opened");
    out << "tresor_store_breaker_openings_total " << store_breaker->openings() << "\n";
  }
  return out.str();
}

// What the request says about its routes: every attempt's duration (by its outcome when it
// failed) and the stream failures after a 200 on the attempt's route; the stream's time to
// first token, gaps and time per output token on the route that gave the first token; the
// billed tokens on the route that served. Keys are route ids from the attempts (configured
// routes), never the client's model string.
void Metrics::Impl::record_route_stats(const RequestRecord& r, providers::Clock::time_point now) {
  const router::AttemptRecord* committed = committed_attempt(r);
  std::lock_guard lock(route_mutex);
  for (const auto& a : r.attempts) {
    if (!router::was_attempted(a.outcome)) continue;
    RouteStats& st = at(route_stats, a.route);
    const std::string error_type = a.outcome == router::AttemptOutcome::ok ? std::string() : outcome_label(a);
    at(st.operations, error_type).observe(kOperationBounds, static_cast<double>(a.ms) / 1000.0);
    for (size_t i = 0; i < std::size(kStreamFailures); ++i)
      if (a.outcome == kStreamFailures[i]) ++st.stream_failures[i];
  }
  if (committed && r.pace.first_write) {
    RouteStats& st = at(route_stats, committed->route);
    st.ttft.observe(kTtftBounds, seconds(*r.pace.first_write - r.started));
    st.gaps.add(r.pace.gap_counts, r.pace.gap_seconds_sum);
    // Per token after the first, for a stream that ended well: an attempt finished it (the
    // first or a recovery; a hedge that lost may come after it) and the client stayed. As the
    // conventions define it: (request duration - time to first token) / (output tokens - 1).
    const bool completed = r.status == 200 && std::any_of(r.attempts.begin(), r.attempts.end(), [](const auto& a) {
      return a.outcome == router::AttemptOutcome::ok;
    });
    if (completed && r.billed && r.billed->completion_tokens > 1)
      st.tpot.observe(kTpotBounds, seconds(now - *r.pace.first_write) /
                                       static_cast<double>(r.billed->completion_tokens - 1));
  }
  const std::string_view served = !r.routed_model.empty() ? std::string_view(r.routed_model)
                                  : committed                ? std::string_view(committed->route)
                                                             : std::string_view();
  if (r.billed && !served.empty()) {
    RouteStats& st = at(route_stats, served);
    st.tokens[0].observe(kTokenBounds, static_cast<double>(std::max<int64_t>(r.billed->prompt_tokens, 0)));
    st.tokens[1].observe(kTokenBounds, static_cast<double>(std::max<int64_t>(r.billed->completion_tokens, 0)));
  }
}

namespace {

// The conventions' attributes of a route, plus tresor_route (its configured id). The
// request model is the model the gateway asked the upstream for (config), not the client's.
std::string genai_labels(const config::RouteConfig& route) {
  return "gen_ai_operation_name=\"" + std::string(route.type == config::RouteType::chat ? "chat" : "transcription") +
         "\",gen_ai_provider_name=\"" + escape_label(route.provider) + "\",gen_ai_request_model=\"" +
         escape_label(route.upstream_model) + "\",tresor_route=\"" + escape_label(route.id) + "\"";
}

}  // namespace

// Every configured route's series, zero until its first request; stream series (time to
// first token, gaps, time per output token, failures after the 200) and tokens for chat
// routes only. Stats of routes no longer configured are kept (a reload may bring them
// back) but not shown.
std::string Metrics::Impl::render_route_stats(const config::Config& cfg) {
  std::vector<std::pair<const config::RouteConfig*, RouteStats>> shown;
  {
    std::lock_guard lock(route_mutex);
    for (const auto& route : cfg.routes) {
      const auto it = route_stats.find(route.id);
      shown.emplace_back(&route, it == route_stats.end() ? RouteStats{} : it->second);
    }
  }
  const auto is_chat = [](const config::RouteConfig* route) { return route->type == config::RouteType::chat; };
  std::ostringstream out;
  write_header(out, "gen_ai_server_time_to_first_token_seconds", "histogram",
               "Time from a stream's request to its first content written to the client, by the route that gave it");
  for (const auto& [route, st] : shown)
    if (is_chat(route))
      write_histogram(out, "gen_ai_server_time_to_first_token_seconds", genai_labels(*route), kTtftBounds, st.ttft);
  write_header(out, "gen_ai_server_time_per_output_token_seconds", "histogram",
               "Per completed stream: (request duration - time to first token) / (output tokens - 1), by the route of the first token");
  for (const auto& [route, st] : shown)
    if (is_chat(route))
      write_histogram(out, "gen_ai_server_time_per_output_token_seconds", genai_labels(*route), kTpotBounds, st.tpot);
  write_header(out, "tresor_stream_chunk_gap_seconds", "histogram",
               "Gaps between writes of content to a streaming client, by the route that gave the first token");
  for (const auto& [route, st] : shown)
    if (is_chat(route))
      write_histogram(out, "tresor_stream_chunk_gap_seconds", "route=\"" + escape_label(route->id) + "\"",
                      StreamPace::kGapBounds, st.gaps);
  write_header(out, "gen_ai_client_token_usage", "histogram",
               "Tokens billed per request (input: prompt, output: completion), by the route that served");
  for (const auto& [route, st] : shown) {
    if (!is_chat(route)) continue;
    for (size_t t = 0; t < 2; ++t)
      write_histogram(out, "gen_ai_client_token_usage",
                      genai_labels(*route) + ",gen_ai_token_type=\"" + (t == 0 ? "input" : "output") + "\"",
                      kTokenBounds, st.tokens[t]);
  }
  write_header(out, "gen_ai_client_operation_duration_seconds", "histogram",
               "Upstream attempts' durations by route; error_type: the outcome of a failed attempt");
  for (auto& [route, st] : shown) {
    st.operations[""];  // the success series, from the start
    for (const auto& [error_type, b] : st.operations)
      write_histogram(out, "gen_ai_client_operation_duration_seconds",
                      genai_labels(*route) + (error_type.empty() ? "" : ",error_type=\"" + error_type + "\""),
                      kOperationBounds, b);
  }
  write_family(out, "tresor_stream_upstream_failures_total",
               "Streams whose upstream failed after the 200 and first content reached the client, by the route "
               "that failed and reason");
  for (const auto& [route, st] : shown) {
    if (!is_chat(route)) continue;
    for (size_t i = 0; i < std::size(kStreamFailures); ++i)
      out << "tresor_stream_upstream_failures_total{route=\"" << escape_label(route->id) << "\",reason=\""
          << router::outcome_name(kStreamFailures[i]) << "\"} " << st.stream_failures[i] << "\n";
  }
  return out.str();
}

namespace {

// The receipts log: alert on tresor_log_consistent 0 (the stored entries no longer match a
// checkpoint: nothing is signed any more) and on tree size - checkpoint size growing (the
// checkpoints stopped while receipts are still logged).
void render_log(const receipts::TransparencyLog& log, std::ostringstream& out) {
  const auto checkpoint = log.checkpoint();
  const size_t cosignatures = checkpoint ? checkpoint->cosignatures() : 0;
  out << "# HELP tresor_log_tree_size Leaves of the receipts transparency log read from the store.\n"
      << "# TYPE tresor_log_tree_size gauge\n"
      << "tresor_log_tree_size " << log.tree_size() << "\n"
      << "# HELP tresor_log_checkpoint_size Tree size of the latest signed checkpoint served.\n"
      << "# TYPE tresor_log_checkpoint_size gauge\n"
      << "tresor_log_checkpoint_size " << (checkpoint ? checkpoint->size : 0) << "\n"
      << "# HELP tresor_log_checkpoint_cosignatures Witness cosignatures on the latest checkpoint.\n"
      << "# TYPE tresor_log_checkpoint_cosignatures gauge\n"
      << "tresor_log_checkpoint_cosignatures " << cosignatures << "\n"
      << "# HELP tresor_log_consistent 1 while the stored log entries match every checkpoint; 0: signing stopped.\n"
      << "# TYPE tresor_log_consistent gauge\n"
      << "tresor_log_consistent " << (log.consistent() ? 1 : 0) << "\n";
}

}  // namespace

std::string Metrics::render(const config::Config& cfg, const router::RouteHealth& health,
                            const receipts::ReceiptService::Counts& receipts, const SpoolCounts& spool,
                            const receipts::TransparencyLog* log) const {
  std::string out = prometheus::TextSerializer().Serialize(impl_->registry.Collect());
  std::ostringstream extra;
  extra << "# HELP tresor_route_breaker_state Circuit breaker per route: 0 closed, 1 open, 2 half-open.\n"
        << "# TYPE tresor_route_breaker_state gauge\n";
  const auto now = providers::Clock::now();
  for (const auto& route : cfg.routes)
    extra << "tresor_route_breaker_state{route=\"" << route.id << "\"} "
          << static_cast<int>(health.breaker_state(route.id, now)) << "\n";
  extra << "# HELP tresor_receipts_issued_total Receipts issued (claims accepted for storing).\n"
        << "# TYPE tresor_receipts_issued_total counter\n"
        << "tresor_receipts_issued_total " << receipts.issued << "\n"
        << "# HELP tresor_receipts_signed_total Receipt signatures made (at issue or at first fetch).\n"
        << "# TYPE tresor_receipts_signed_total counter\n"
        << "tresor_receipts_signed_total " << receipts.signed_ << "\n"
        << "# HELP tresor_receipts_stored_total Receipts stored durably.\n# TYPE tresor_receipts_stored_total counter\n"
        << "tresor_receipts_stored_total " << receipts.stored << "\n"
        << "# HELP tresor_receipt_store_failures_total Receipts that could not be signed or stored.\n"
        << "# TYPE tresor_receipt_store_failures_total counter\n"
        << "tresor_receipt_store_failures_total " << receipts.failed << "\n";
  // The spool against its cap: alert on bytes / max before the volume would fill.
  extra << "# HELP tresor_spool_bytes Upload spool bytes reserved by the uploads in flight.\n"
        << "# TYPE tresor_spool_bytes gauge\n"
        << "tresor_spool_bytes " << spool.bytes_in_use << "\n"
        << "# HELP tresor_spool_max_bytes The spool cap (server.spool_max_bytes).\n"
        << "# TYPE tresor_spool_max_bytes gauge\n"
        << "tresor_spool_max_bytes " << cfg.server.spool_max_bytes << "\n"
        << "# HELP tresor_spool_refusals_total Uploads refused with 503 spool_full (the spool cap was reached).\n"
        << "# TYPE tresor_spool_refusals_total counter\n"
        << "tresor_spool_refusals_total " << spool.refusals << "\n";
  if (log) render_log(*log, extra);
  return out + extra.str() + impl_->render_money(cfg) + impl_->render_route_stats(cfg) + process_metrics();
}

}  // namespace tresor::server
