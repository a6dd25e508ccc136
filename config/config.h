// The gateway's configuration: the YAML schema of ../shared/README.md as plain data.
//
// A Config is loaded once, validated completely, and then shared read-only as a
// `std::shared_ptr<const Config>` snapshot (see ConfigHolder in snapshot.h). Nothing
// else in the program reads YAML.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tresor::config {

struct ListenAddress {
  std::string host;
  uint16_t port = 0;  // 0 = ephemeral (tests)
};

struct ServerConfig {
  std::vector<ListenAddress> listen;
  unsigned threads = 0;  // 0 = one per core
  uint64_t max_body_bytes = 26214400;
  uint64_t max_header_bytes = 16384;
  // Not in the shared schema yet; every limit has a key. A client that sends nothing
  // (idle keep-alive, or trickled headers) is cut off after this long.
  unsigned header_timeout_seconds = 30;
  // Longest silence while a request body is being received.
  unsigned body_timeout_seconds = 60;
  // The slowest average pace of a request body once body_timeout_seconds have passed: a
  // body must have arrived within body_timeout_seconds + bytes / this (Apache's MinRate).
  // Ends clients that trickle a byte just often enough to never be silent. 0 = off.
  uint64_t min_body_bytes_per_second = 1024;
  // Open client connections, split evenly across the worker threads (like nginx's
  // worker_connections). 0 = derived at startup from the file-descriptor limit (3/4 of
  // RLIMIT_NOFILE, the rest left for upstream connections, spool files and the store).
  // At the cap an idle connection (oldest first) is closed to make room; when none is
  // idle the new connection gets 503 server_busy and is closed.
  uint64_t max_connections = 0;
  // Where transcription uploads larger than upload_memory_bytes are spooled (as unlinked
  // temporary files, so failover can replay them). Empty: $TMPDIR, else /tmp.
  std::string upload_spool_dir;
  uint64_t upload_memory_bytes = 256 * 1024;
  // The most all spool files together may hold at once: an upload that would pass it is
  // refused with 503 spool_full (up front from its Content-Length, or the moment a
  // chunked one crosses it, its file removed). Size the spool's volume (a Kubernetes
  // emptyDir sizeLimit, a tmpfs) above it. The default, 1 GiB, is 40 uploads of the
  // default max_body_bytes (25 MiB) at once and fits the usual 2 GiB /tmp or emptyDir with
  // room to spare. Must be at least max_body_bytes (one upload always fits), unless no
  // upload ever spools (max_body_bytes <= upload_memory_bytes).
  uint64_t spool_max_bytes = uint64_t{1} << 30;
  // The most of one upstream answer the router buffers: a non-stream chat body, or a
  // transcript (which also keeps its own lower bound, 16 MiB). An answer over it fails
  // the attempt (bad_response, connection dropped). Streams are relayed, not buffered.
  uint64_t max_upstream_body_bytes = 64ull << 20;
  // SIGTERM: /readyz turns 503 at once; after drain_notice_seconds (time for a load
  // balancer to notice) the listeners close; in-flight requests and streams then have
  // until drain_seconds after the signal to finish before the process exits.
  unsigned drain_seconds = 30;
  unsigned drain_notice_seconds = 0;
  // Optional HTTPS on every listener (PEM files). Its certificate's SPKI is what
  // GET /attestation binds to (tls_spki_sha256).
  struct Tls {
    std::string cert_file;
    std::string key_file;
  } tls;
};

struct TimeoutsConfig {
  unsigned default_seconds = 180;
  unsigned max_seconds = 600;
  unsigned connect_ms = 5000;
  unsigned attempt_first_event_seconds = 10;
  unsigned attempt_first_byte_seconds = 0;
  unsigned stream_idle_seconds = 20;
};

struct RetryConfig {
  unsigned attempts_per_route = 2;
  unsigned backoff_ms = 250;
  unsigned max_retry_after_seconds = 5;
  // A Retry-After above max_retry_after_seconds parks the route for that long, but never
  // longer than this: an upstream's `Retry-After: 999999999` must not take a route away
  // for years. 0 = never park (the request fails over, the next one tries the route).
  unsigned max_route_hold_seconds = 30;
  // false: a final 502 / 503 no_route_available / 504 carries `x-should-retry: false`,
  // which the official OpenAI SDKs obey (they would otherwise replay the whole failover
  // chain up to maxRetries times). true: no such header; the client decides.
  bool client_should_retry = false;
  // A stream that fails after its first event is continued at most this often per
  // request (issue 18; 0 = never).
  unsigned max_stream_recoveries = 1;
};

// How a stream that failed after events reached the client may be continued on another
// attempt (issue 18). replay: send the request again and forward only what goes beyond
// the text the client has, which must be an exact prefix of the new text; a route that
// declares supports_prefill is continued by prefill instead. prefill_only: continue only on
// routes that declare supports_prefill. off: never (the in-band error).
enum class StreamRecovery { replay, prefill_only, off };
// How a prefill continuation is asked for: a trailing assistant message (Anthropic,
// DeepSeek, Mistral, most OpenAI-compatible servers), or that plus vLLM's
// continue_final_message: true, add_generation_prompt: false.
enum class PrefillStyle { assistant_message, continue_final_message };

struct RoutingConfig {
  StreamRecovery stream_recovery = StreamRecovery::replay;
  // Start the next candidate beside one that has shown no first event for this long.
  std::optional<unsigned> hedge_after_ms;
};

struct BreakerConfig {
  unsigned consecutive_failures = 5;
  unsigned cooldown_seconds = 10;
};

struct ProviderConfig {
  std::string name;
  std::string base_url;
  std::string api_key;  // secret: never logged, never in an error body
  std::string ca_file;  // optional extra CA bundle (PEM)
  unsigned max_connections = 256;
};

enum class RouteType { chat, transcription };

// Prices as written (for /v1/models) and the same exactly, in nanos (1e-9 of the currency
// unit; accounts/ computes every charge from these, never from the doubles).
struct Pricing {
  std::optional<double> input_per_mtok;
  std::optional<double> output_per_mtok;
  std::optional<std::string> billing_unit;
  std::optional<double> unit_amount;
  std::string currency;
  std::optional<int64_t> input_nanos_per_mtok;
  std::optional<int64_t> output_nanos_per_mtok;
  std::optional<int64_t> unit_nanos;
  bool operator==(const Pricing&) const = default;
};

struct RouteConfig {
  std::string id;  // region/provider/model_key, region and provider lower-case
  std::string region;
  std::string provider_segment;  // the id's middle segment
  std::string model_key;
  std::string provider;  // key into Config::providers
  std::string upstream_model;
  RouteType type = RouteType::chat;
  std::optional<Pricing> pricing;
  // The most a request may cost, for the credit and token reservation (accounts/): the
  // output tokens of a chat answer whose request sets no max_tokens, and the audio length
  // of a transcription. Unset: accounts' documented defaults.
  std::optional<uint64_t> max_output_tokens;
  std::optional<uint64_t> max_audio_seconds;
  // Recovery and hedging (issue 18): this route's own settings over routing's.
  std::optional<StreamRecovery> stream_recovery;  // for streams continued ON this route
  bool supports_prefill = false;
  PrefillStyle prefill_style = PrefillStyle::assistant_message;
  std::optional<unsigned> hedge_after_ms;  // when this route is the one waited on
  bool operator==(const RouteConfig&) const = default;
};

struct KeyLimits {
  std::optional<uint64_t> per_minute;  // requests
  std::optional<uint64_t> per_day;
  std::optional<uint64_t> tokens_per_minute;  // prompt + completion tokens
  std::optional<uint64_t> tokens_per_day;
};

struct ApiKeyConfig {
  std::string sha256_hex;  // lower-case
  std::string customer;
  KeyLimits limits;
};

struct CustomerConfig {
  double credit = 0;
  int64_t credit_nanos = 0;  // the same, exactly (1e-9 of the currency unit)
  std::string currency;
};

struct AuthConfig {
  std::vector<ApiKeyConfig> keys;
  std::map<std::string, CustomerConfig> customers;
};

struct RetiredKey {
  std::string kid;
  std::string public_key_file;
};

struct ReceiptsConfig {
  std::string signing_key_file = "state/receipt-es256.pem";
  std::string kid = "router-receipt-1";
  std::vector<RetiredKey> retired_keys;
  uint64_t ttl_seconds = 604800;
  // sync: a receipt is durable before the bytes carrying its id leave the router.
  // async: it is written right after (a crash can lose the last group commit, ~ms).
  enum class Durability { sync, async } durability = Durability::sync;
  // on_fetch: the claims (iat = completion time) are stored durably at completion and the
  // JWS is made on the receipt's first fetch, then stored; an ECDSA signature costs more
  // CPU than a whole proxied request, and most receipts are never fetched.
  // at_issue: signed before storing, with the key active at completion.
  enum class Signing { on_fetch, at_issue } signing = Signing::on_fetch;
};

// The receipts transparency log (receipts/transparency_log.h): every stored receipt is a
// leaf; signed checkpoints (C2SP tlog-checkpoint) are published while the tree grows.
struct LogConfig {
  bool enabled = true;
  // The checkpoint's origin line and the log key's name (C2SP: a schema-less URL prefix).
  std::string origin = "tresor-router.local/receipts";
  std::string key_file = "state/log-ed25519.pem";  // Ed25519, created 0600 when missing
  uint64_t checkpoint_interval_ms = 1000;
  // Witnesses whose cosignatures (C2SP tlog-cosignature, Ed25519 v1) the log accepts and
  // serves on its checkpoint: their vkeys, "<name>+<key id>+<base64(0x04 || key)>".
  std::vector<std::string> witnesses;
};

// OpenTelemetry traces (issue 20): one span per request and one per upstream attempt,
// exported as OTLP/HTTP protobuf to `otlp_endpoint` by a thread of their own. Off (no
// endpoint): no trace ids are made and no trace headers are read or sent.
struct TracingConfig {
  std::string otlp_endpoint;        // http(s)://host:port[/path]; "/v1/traces" added without a path
  std::string service_name = "tresor-router";
  double sample_ratio = 1.0;        // for traces this gateway starts; a client's sampled flag wins
  uint64_t max_queue_spans = 8192;  // spans waiting for export; past it new ones are dropped (counted)
  uint64_t max_batch_spans = 512;   // spans per export request
  uint64_t export_interval_ms = 1000;
  uint64_t export_timeout_ms = 5000;
  bool enabled() const { return !otlp_endpoint.empty(); }
  bool operator==(const TracingConfig&) const = default;
};

// How the shared store (Redis) is reached, how long it may take, and what each function
// does while it cannot be reached. An SQLite store is a local file: only `url` applies.
struct StoreTlsConfig {
  std::string ca_file;    // empty: the system CA store (rediss:// only)
  std::string cert_file;  // client certificate and its key, both or neither
  std::string key_file;
  bool operator==(const StoreTlsConfig&) const = default;
};

// While the shared store is unreachable (the breaker is open or an operation ran past its
// deadline): `open` serves without the function (counted in a metric, warned about at
// most once a second), `closed` refuses the request with 503 store_unavailable.
enum class OutageMode { open, closed };

struct StoreOutagePolicy {
  OutageMode rate_limits = OutageMode::open;  // request and token windows
  OutageMode credits = OutageMode::closed;    // no unbounded spending while the ledger is down
  OutageMode receipts = OutageMode::open;     // open: the answer goes without a receipt id
  bool operator==(const StoreOutagePolicy&) const = default;
};

struct StoreConfig {
  std::string url = "sqlite:state/tresor.db";  // sqlite:PATH, redis://… or rediss://…
  StoreTlsConfig tls;
  unsigned connect_timeout_ms = 1000;
  unsigned command_timeout_ms = 1000;  // per command; a request never waits past its budget either
  unsigned connections = 4;            // per function pool (accounts, receipts)
  unsigned breaker_failures = 3;       // consecutive failures that open the breaker
  unsigned breaker_open_ms = 2000;     // how long it stays open before one probe
  StoreOutagePolicy outage;
  bool operator==(const StoreConfig&) const = default;
};

// The operator status page (GET /status, /status/data; server/status_page.h). Off (404)
// unless an admin key is set, normally from the environment: admin_key: ${TRESOR_ADMIN_KEY}.
struct StatusConfig {
  std::string admin_key;  // empty: the page is off
};

struct AttestationConfig {
  std::string mode = "dev";
  std::string trust_bundle_url;
  unsigned max_age_seconds = 600;  // how long a client may cache a verified envelope
};

struct Config {
  std::string source_file;
  ServerConfig server;
  TimeoutsConfig timeouts;
  RetryConfig retry;
  BreakerConfig breaker;
  RoutingConfig routing;
  std::map<std::string, ProviderConfig> providers;
  std::vector<RouteConfig> routes;  // order = auto-resolution preference
  AuthConfig auth;
  ReceiptsConfig receipts;
  LogConfig log;
  TracingConfig tracing;
  std::string store = "sqlite:state/tresor.db";  // the URL, = store_config.url
  StoreConfig store_config;
  AttestationConfig attestation;
  StatusConfig status;
};

// Thrown for any invalid config; what() is "FILE:LINE:COL: message" when a position is
// known, so an operator can jump straight to it.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Loads, substitutes ${ENV} and validates. Throws ConfigError.
std::shared_ptr<const Config> load_config_file(const std::string& path);
// Same, from text (tests, fuzzing); `name` is used in error positions.
std::shared_ptr<const Config> load_config_text(const std::string& text, const std::string& name);

}  // namespace tresor::config
