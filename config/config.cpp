// YAML → Config. Strict: every map is checked against the keys it may hold, so a typo
// is an error with its file:line instead of a silently ignored setting.
#include "config/config.h"

#include "common/decimal.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <filesystem>
#include <set>
#include <sstream>

namespace tresor::config {
namespace {

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& msg) const {
    std::ostringstream out;
    out << file_;
    if (node.IsDefined() && !node.Mark().is_null())
      out << ':' << node.Mark().line + 1 << ':' << node.Mark().column + 1;
    out << ": " << msg;
    throw ConfigError(out.str());
  }

  // Every key of `map` must be in `allowed`.
  void expect_map(const YAML::Node& map, const std::string& where,
                  std::initializer_list<const char*> allowed) const {
    if (!map.IsMap()) fail(map, where + " must be a mapping");
    std::set<std::string> seen;
    for (const auto& kv : map) {
      const auto key = key_text(kv.first, where);
      // yaml-cpp keeps the first of two equal keys; an operator would expect the last.
      if (!seen.insert(key).second) fail(kv.first, "duplicate key '" + key + "' in " + where);
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; }))
        fail(kv.first, "unknown key '" + key + "' in " + where);
    }
  }

  // A mapping key; keys that are themselves lists or maps are errors, not crashes.
  std::string key_text(const YAML::Node& key, const std::string& where) const {
    if (!key.IsScalar()) fail(key, "keys in " + where + " must be plain strings");
    return key.Scalar();
  }

  // Scalar text with ${VAR} substituted from the environment.
  std::string text(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail(node, what + " must be a scalar");
    const std::string raw = node.Scalar();
    std::string out;
    for (size_t i = 0; i < raw.size();) {
      if (raw.compare(i, 2, "${") == 0) {
        const auto end = raw.find('}', i + 2);
        if (end == std::string::npos) fail(node, what + ": unterminated ${ in value");
        const std::string var = raw.substr(i + 2, end - i - 2);
        if (var.empty()) fail(node, what + ": empty ${} in value");
        const char* value = std::getenv(var.c_str());
        if (!value) fail(node, what + ": environment variable " + var + " is not set");
        out += env_value(node, what, var, value);
        i = end + 1;
      } else {
        out += raw[i++];
      }
    }
    return out;
  }

  // A value from the environment, with one trailing newline trimmed (a secret mounted
  // from a file usually ends with one). Any other CR or LF would end up inside an HTTP
  // header (api_key) or a URL and split it, so it is refused; a NUL cannot come through
  // getenv (C strings), but a value is checked for one all the same.
  std::string env_value(const YAML::Node& node, const std::string& what, const std::string& var,
                        std::string value) const {
    if (!value.empty() && value.back() == '\n') value.pop_back();
    if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos)
      fail(node, what + ": environment variable " + var +
                     " contains a line break (CR or LF) or NUL; only one trailing newline is trimmed");
    return value;
  }

  // yaml-cpp keeps both entries of a key given twice in a mapping and answers lookups with
  // the first: every mapping in the document (providers, customers, any other) is checked
  // here once, so a second entry is an error at its file:line instead of silently lost.
  void refuse_duplicate_keys(const YAML::Node& node, const std::string& where) const {
    if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) refuse_duplicate_keys(node[i], where + "[" + std::to_string(i) + "]");
      return;
    }
    if (!node.IsMap()) return;
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) continue;  // reported with its position by key_text
      const std::string key = kv.first.Scalar();
      const std::string path = where.empty() ? key : where + "." + key;
      if (!seen.insert(key).second)
        fail(kv.first, "duplicate key '" + key + "' in " + (where.empty() ? "the top level" : where));
      refuse_duplicate_keys(kv.second, path);
    }
  }

  template <typename T>
  T integer(const YAML::Node& node, const std::string& what, T min, T max) const {
    const std::string s = text(node, what);
    T value{};
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc() || ptr != s.data() + s.size() || value < min || value > max)
      fail(node, what + " must be an integer in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got '" + s + "'");
    return value;
  }

  // YAML 1.2 core booleans only (true/false, any of the three capitalisations): "yes",
  // "on" or 1 are errors rather than guesses.
  bool boolean(const YAML::Node& node, const std::string& what) const {
    const std::string s = text(node, what);
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    fail(node, what + " must be true or false, got '" + s + "'");
  }

  double number(const YAML::Node& node, const std::string& what) const {
    const std::string s = text(node, what);
    double value{};
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(value))
      fail(node, what + " must be a finite number, got '" + s + "'");
    return value;
  }

  // A money amount, exactly (common/decimal.h): at most nine decimals, no sign.
  int64_t nanos(const YAML::Node& node, const std::string& what) const {
    const std::string s = text(node, what);
    const auto value = common::parse_nanos(s);
    if (!value)
      fail(node, what + " must be a non-negative amount with at most 9 decimals (below 9.2e9), got '" + s + "'");
    return *value;
  }

 private:
  std::string file_;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isxdigit(c);
         });
}

bool is_segment(const std::string& s) {
  return !s.empty() && std::none_of(s.begin(), s.end(), [](unsigned char c) {
    return c == '/' || std::isspace(c) || std::iscntrl(c);
  });
}

ListenAddress parse_listen(const Reader& r, const YAML::Node& node) {
  const std::string s = r.text(node, "server.listen");
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    r.fail(node, "server.listen must be host:port, got '" + s + "'");
  ListenAddress a;
  a.host = s.substr(0, colon);
  if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']')
    a.host = a.host.substr(1, a.host.size() - 2);
  const std::string port = s.substr(colon + 1);
  unsigned value = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535)
    r.fail(node, "server.listen has an invalid port: '" + s + "'");
  a.port = static_cast<uint16_t>(value);
  return a;
}

// One upload of the largest allowed size must fit the spool when it is empty, or such an
// upload would be refused with 503 spool_full for ever (a retry could never succeed).
void check_spool_cap(const Reader& r, const YAML::Node& n, ServerConfig& s) {
  if (auto v = n["spool_max_bytes"])
    s.spool_max_bytes = r.integer<uint64_t>(v, "server.spool_max_bytes", 0, uint64_t{1} << 50);
  const bool spools = s.max_body_bytes > s.upload_memory_bytes;
  if (!spools || s.spool_max_bytes >= s.max_body_bytes) return;
  const bool set = static_cast<bool>(n["spool_max_bytes"]);
  r.fail(set ? n["spool_max_bytes"] : n["max_body_bytes"],
         "server.spool_max_bytes (" + std::to_string(s.spool_max_bytes) + (set ? "" : ", the default") +
             ") is below server.max_body_bytes (" + std::to_string(s.max_body_bytes) +
             "): an upload of the allowed size could never be spooled; raise server.spool_max_bytes (and the "
             "spool volume with it) or lower server.max_body_bytes");
}

void load_server(const Reader& r, const YAML::Node& n, ServerConfig& s) {
  r.expect_map(n, "server",
               {"listen", "threads", "max_body_bytes", "max_header_bytes",
                "header_timeout_seconds", "body_timeout_seconds", "min_body_bytes_per_second", "max_connections", "upload_spool_dir",
                "upload_memory_bytes", "spool_max_bytes", "max_upstream_body_bytes", "drain_seconds",
                "drain_notice_seconds", "tls"});
  if (auto l = n["listen"]) {
    if (l.IsSequence()) {
      for (const auto& item : l) s.listen.push_back(parse_listen(r, item));
      if (s.listen.empty()) r.fail(l, "server.listen must not be empty");
    } else {
      s.listen.push_back(parse_listen(r, l));
    }
  }
  if (auto v = n["threads"]) s.threads = r.integer<unsigned>(v, "server.threads", 0, 256);
  if (auto v = n["max_body_bytes"])
    s.max_body_bytes = r.integer<uint64_t>(v, "server.max_body_bytes", 1, uint64_t{1} << 40);
  if (auto v = n["max_header_bytes"])
    s.max_header_bytes = r.integer<uint64_t>(v, "server.max_header_bytes", 512, 1 << 24);
  if (auto v = n["header_timeout_seconds"])
    s.header_timeout_seconds = r.integer<unsigned>(v, "server.header_timeout_seconds", 1, 3600);
  if (auto v = n["body_timeout_seconds"])
    s.body_timeout_seconds = r.integer<unsigned>(v, "server.body_timeout_seconds", 1, 3600);
  if (auto v = n["min_body_bytes_per_second"])
    s.min_body_bytes_per_second = r.integer<uint64_t>(v, "server.min_body_bytes_per_second", 0, uint64_t{1} << 30);
  if (auto v = n["max_connections"])
    s.max_connections = r.integer<uint64_t>(v, "server.max_connections", 0, 1u << 24);
  if (auto v = n["upload_spool_dir"]) {
    s.upload_spool_dir = r.text(v, "server.upload_spool_dir");
    std::error_code ec;
    if (!s.upload_spool_dir.empty() && !std::filesystem::is_directory(s.upload_spool_dir, ec))
      r.fail(v, "server.upload_spool_dir '" + s.upload_spool_dir + "' is not a directory");
  }
  if (auto t = n["tls"]) {
    r.expect_map(t, "server.tls", {"cert_file", "key_file"});
    if (auto v = t["cert_file"]) s.tls.cert_file = r.text(v, "server.tls.cert_file");
    if (auto v = t["key_file"]) s.tls.key_file = r.text(v, "server.tls.key_file");
    if (s.tls.cert_file.empty() != s.tls.key_file.empty())
      r.fail(t, "server.tls needs both cert_file and key_file");
  }
  if (auto v = n["drain_seconds"]) s.drain_seconds = r.integer<unsigned>(v, "server.drain_seconds", 0, 3600);
  if (auto v = n["drain_notice_seconds"])
    s.drain_notice_seconds = r.integer<unsigned>(v, "server.drain_notice_seconds", 0, 3600);
  if (s.drain_notice_seconds > s.drain_seconds)
    r.fail(n, "server.drain_notice_seconds may not exceed server.drain_seconds");
  if (auto v = n["upload_memory_bytes"])
    s.upload_memory_bytes = r.integer<uint64_t>(v, "server.upload_memory_bytes", 0, 64ull << 20);
  // At least 64 KiB (an ordinary answer must fit); at most 1 GiB (per request, in memory).
  if (auto v = n["max_upstream_body_bytes"])
    s.max_upstream_body_bytes = r.integer<uint64_t>(v, "server.max_upstream_body_bytes", 64ull << 10, 1ull << 30);
  check_spool_cap(r, n, s);
}

void load_timeouts(const Reader& r, const YAML::Node& n, TimeoutsConfig& t) {
  r.expect_map(n, "timeouts",
               {"default_seconds", "max_seconds", "connect_ms", "attempt_first_event_seconds",
                "attempt_first_byte_seconds", "stream_idle_seconds"});
  if (auto v = n["default_seconds"])
    t.default_seconds = r.integer<unsigned>(v, "timeouts.default_seconds", 1, 86400);
  if (auto v = n["max_seconds"])
    t.max_seconds = r.integer<unsigned>(v, "timeouts.max_seconds", 1, 86400);
  if (auto v = n["connect_ms"]) t.connect_ms = r.integer<unsigned>(v, "timeouts.connect_ms", 1, 600000);
  if (auto v = n["attempt_first_event_seconds"])
    t.attempt_first_event_seconds =
        r.integer<unsigned>(v, "timeouts.attempt_first_event_seconds", 0, 86400);
  if (auto v = n["attempt_first_byte_seconds"])
    t.attempt_first_byte_seconds =
        r.integer<unsigned>(v, "timeouts.attempt_first_byte_seconds", 0, 86400);
  if (auto v = n["stream_idle_seconds"])
    t.stream_idle_seconds = r.integer<unsigned>(v, "timeouts.stream_idle_seconds", 1, 86400);
  if (t.default_seconds > t.max_seconds)
    r.fail(n, "timeouts.default_seconds must not exceed timeouts.max_seconds");
}

void load_retry(const Reader& r, const YAML::Node& n, RetryConfig& c) {
  r.expect_map(n, "retry", {"attempts_per_route", "backoff_ms", "max_retry_after_seconds", "max_route_hold_seconds",
                            "client_should_retry", "max_stream_recoveries"});
  if (auto v = n["attempts_per_route"])
    c.attempts_per_route = r.integer<unsigned>(v, "retry.attempts_per_route", 1, 10);
  if (auto v = n["backoff_ms"]) c.backoff_ms = r.integer<unsigned>(v, "retry.backoff_ms", 0, 60000);
  if (auto v = n["max_retry_after_seconds"])
    c.max_retry_after_seconds = r.integer<unsigned>(v, "retry.max_retry_after_seconds", 0, 3600);
  if (auto v = n["max_route_hold_seconds"])
    c.max_route_hold_seconds = r.integer<unsigned>(v, "retry.max_route_hold_seconds", 0, 86400);
  if (auto v = n["client_should_retry"]) c.client_should_retry = r.boolean(v, "retry.client_should_retry");
  if (auto v = n["max_stream_recoveries"])
    c.max_stream_recoveries = r.integer<unsigned>(v, "retry.max_stream_recoveries", 0, 5);
}

StreamRecovery stream_recovery_of(const Reader& r, const YAML::Node& v, const std::string& where) {
  const auto t = r.text(v, where);
  if (t == "replay") return StreamRecovery::replay;
  if (t == "prefill_only") return StreamRecovery::prefill_only;
  if (t == "off") return StreamRecovery::off;
  r.fail(v, where + " must be replay, prefill_only or off, got '" + t + "'");
}

// 1 ms to 10 minutes (the longest budget).
unsigned hedge_after_of(const Reader& r, const YAML::Node& v, const std::string& where) {
  return r.integer<unsigned>(v, where, 1, 600000);
}

void load_routing(const Reader& r, const YAML::Node& n, RoutingConfig& c) {
  r.expect_map(n, "routing", {"stream_recovery", "hedge_after_ms"});
  if (auto v = n["stream_recovery"]) c.stream_recovery = stream_recovery_of(r, v, "routing.stream_recovery");
  if (auto v = n["hedge_after_ms"]) c.hedge_after_ms = hedge_after_of(r, v, "routing.hedge_after_ms");
}

void load_breaker(const Reader& r, const YAML::Node& n, BreakerConfig& c) {
  r.expect_map(n, "breaker", {"consecutive_failures", "cooldown_seconds"});
  if (auto v = n["consecutive_failures"])
    c.consecutive_failures = r.integer<unsigned>(v, "breaker.consecutive_failures", 1, 1000);
  if (auto v = n["cooldown_seconds"])
    c.cooldown_seconds = r.integer<unsigned>(v, "breaker.cooldown_seconds", 0, 86400);
}

// scheme://host[:port][/path] and nothing else. The router appends /chat/completions (and
// the like) to it and sends its own Authorization header, so a query or fragment would be
// cut off or end up in the middle of the path, and user info would be sent nowhere:
// refused rather than silently mangled (no Azure-style ?api-version= support).
void check_base_url(const Reader& r, const YAML::Node& node, const std::string& what, const std::string& url) {
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
    r.fail(node, what + " must start with http:// or https://");
  if (url.find('?') != std::string::npos)
    r.fail(node, what + " must not have a query ('?…'); the router appends the endpoint path to it");
  if (url.find('#') != std::string::npos) r.fail(node, what + " must not have a fragment ('#…')");
  const std::string rest = url.substr(url.find("://") + 3);
  const std::string authority = rest.substr(0, rest.find('/'));
  if (authority.find('@') != std::string::npos)
    r.fail(node, what + " must not hold user info ('user@'); put the credential in api_key");
  if (authority.empty()) r.fail(node, what + " has no host");
}

void load_providers(const Reader& r, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) r.fail(n, "providers must be a mapping of name → provider");
  for (const auto& kv : n) {
    const auto name = r.key_text(kv.first, "providers");
    if (!is_segment(name) || name == "auto") r.fail(kv.first, "invalid provider name '" + name + "'");
    const auto& p = kv.second;
    const std::string where = "providers." + name;
    r.expect_map(p, where, {"base_url", "api_key", "ca_file", "max_connections"});
    ProviderConfig pc;
    pc.name = name;
    if (!p["base_url"]) r.fail(p, where + ".base_url is required");
    pc.base_url = r.text(p["base_url"], where + ".base_url");
    check_base_url(r, p["base_url"], where + ".base_url", pc.base_url);
    if (auto v = p["api_key"]) pc.api_key = r.text(v, where + ".api_key");
    if (auto v = p["ca_file"]) {
      pc.ca_file = r.text(v, where + ".ca_file");
      if (!pc.ca_file.empty() && !std::ifstream(pc.ca_file))
        r.fail(v, where + ".ca_file: cannot read '" + pc.ca_file + "'");
    }
    if (auto v = p["max_connections"])
      pc.max_connections = r.integer<unsigned>(v, where + ".max_connections", 1, 100000);
    c.providers.emplace(name, std::move(pc));
  }
}

Pricing load_pricing(const Reader& r, const YAML::Node& n, const std::string& where) {
  r.expect_map(n, where,
               {"input_per_mtok", "output_per_mtok", "billing_unit", "unit_amount", "currency"});
  Pricing p;
  if (auto v = n["input_per_mtok"]) {
    p.input_per_mtok = r.number(v, where + ".input_per_mtok");
    p.input_nanos_per_mtok = r.nanos(v, where + ".input_per_mtok");
  }
  if (auto v = n["output_per_mtok"]) {
    p.output_per_mtok = r.number(v, where + ".output_per_mtok");
    p.output_nanos_per_mtok = r.nanos(v, where + ".output_per_mtok");
  }
  if (auto v = n["billing_unit"]) {
    p.billing_unit = r.text(v, where + ".billing_unit");
    if (*p.billing_unit != "audio_minute" && *p.billing_unit != "request")
      r.fail(v, where + ".billing_unit must be audio_minute or request, got '" + *p.billing_unit + "'");
    if (!n["unit_amount"]) r.fail(n, where + ".billing_unit needs unit_amount");
  }
  if (auto v = n["unit_amount"]) {
    p.unit_amount = r.number(v, where + ".unit_amount");
    p.unit_nanos = r.nanos(v, where + ".unit_amount");
  }
  if (auto v = n["currency"]) p.currency = r.text(v, where + ".currency");
  return p;
}

void load_routes(const Reader& r, const YAML::Node& n, Config& c) {
  if (!n.IsSequence()) r.fail(n, "routes must be a list");
  std::set<std::string> seen;
  for (size_t i = 0; i < n.size(); ++i) {
    const auto& item = n[i];
    const std::string where = "routes[" + std::to_string(i) + "]";
    r.expect_map(item, where,
                 {"id", "provider", "upstream_model", "type", "pricing", "max_output_tokens", "max_audio_seconds",
                  "stream_recovery", "supports_prefill", "prefill_style", "hedge_after_ms"});
    RouteConfig rc;
    if (!item["id"]) r.fail(item, where + ".id is required");
    const std::string id = r.text(item["id"], where + ".id");
    const auto a = id.find('/');
    const auto b = a == std::string::npos ? a : id.find('/', a + 1);
    if (b == std::string::npos || id.find('/', b + 1) != std::string::npos)
      r.fail(item["id"], where + ".id must be region/provider/model_key, got '" + id + "'");
    rc.region = lower(id.substr(0, a));
    rc.provider_segment = lower(id.substr(a + 1, b - a - 1));
    rc.model_key = id.substr(b + 1);
    if (!is_segment(rc.region) || !is_segment(rc.provider_segment) || !is_segment(rc.model_key) ||
        rc.region == "auto" || rc.provider_segment == "auto" || rc.model_key == "auto")
      r.fail(item["id"], where + ".id has an empty, reserved ('auto') or invalid segment: '" + id + "'");
    rc.id = rc.region + '/' + rc.provider_segment + '/' + rc.model_key;
    if (!seen.insert(rc.id).second) r.fail(item["id"], "duplicate route id '" + rc.id + "'");
    if (!item["provider"]) r.fail(item, where + ".provider is required");
    rc.provider = r.text(item["provider"], where + ".provider");
    if (!c.providers.count(rc.provider))
      r.fail(item["provider"], where + ".provider '" + rc.provider + "' is not in providers");
    if (!item["upstream_model"]) r.fail(item, where + ".upstream_model is required");
    rc.upstream_model = r.text(item["upstream_model"], where + ".upstream_model");
    if (auto v = item["type"]) {
      const auto t = r.text(v, where + ".type");
      if (t == "chat") rc.type = RouteType::chat;
      else if (t == "transcription") rc.type = RouteType::transcription;
      else r.fail(v, where + ".type must be chat or transcription, got '" + t + "'");
    }
    if (auto v = item["pricing"]) rc.pricing = load_pricing(r, v, where + ".pricing");
    if (auto v = item["max_output_tokens"])
      rc.max_output_tokens = r.integer<uint64_t>(v, where + ".max_output_tokens", 1, 10'000'000);
    if (auto v = item["max_audio_seconds"])
      rc.max_audio_seconds = r.integer<uint64_t>(v, where + ".max_audio_seconds", 1, 1'000'000);
    if (auto v = item["stream_recovery"]) rc.stream_recovery = stream_recovery_of(r, v, where + ".stream_recovery");
    if (auto v = item["supports_prefill"]) rc.supports_prefill = r.boolean(v, where + ".supports_prefill");
    if (auto v = item["prefill_style"]) {
      const auto t = r.text(v, where + ".prefill_style");
      if (t == "assistant_message") rc.prefill_style = PrefillStyle::assistant_message;
      else if (t == "continue_final_message") rc.prefill_style = PrefillStyle::continue_final_message;
      else r.fail(v, where + ".prefill_style must be assistant_message or continue_final_message, got '" + t + "'");
    }
    if (auto v = item["hedge_after_ms"]) rc.hedge_after_ms = hedge_after_of(r, v, where + ".hedge_after_ms");
    c.routes.push_back(std::move(rc));
  }
}

void load_auth(const Reader& r, const YAML::Node& n, Config& c) {
  r.expect_map(n, "auth", {"keys", "customers"});
  if (auto keys = n["keys"]) {
    if (!keys.IsSequence()) r.fail(keys, "auth.keys must be a list");
    std::set<std::string> seen;
    for (size_t i = 0; i < keys.size(); ++i) {
      const auto& k = keys[i];
      const std::string where = "auth.keys[" + std::to_string(i) + "]";
      r.expect_map(k, where, {"sha256", "customer", "limits"});
      ApiKeyConfig key;
      if (!k["sha256"]) r.fail(k, where + ".sha256 is required");
      key.sha256_hex = lower(r.text(k["sha256"], where + ".sha256"));
      if (!is_hex64(key.sha256_hex))
        r.fail(k["sha256"], where + ".sha256 must be 64 hex characters (tresor-router hash-key tr-…)");
      if (!seen.insert(key.sha256_hex).second) r.fail(k["sha256"], "duplicate key hash in " + where);
      if (!k["customer"]) r.fail(k, where + ".customer is required");
      key.customer = r.text(k["customer"], where + ".customer");
      if (auto l = k["limits"]) {
        r.expect_map(l, where + ".limits", {"per_minute", "per_day", "tokens_per_minute", "tokens_per_day"});
        if (auto v = l["per_minute"])
          key.limits.per_minute = r.integer<uint64_t>(v, where + ".limits.per_minute", 1, UINT32_MAX);
        if (auto v = l["per_day"])
          key.limits.per_day = r.integer<uint64_t>(v, where + ".limits.per_day", 1, UINT32_MAX);
        if (auto v = l["tokens_per_minute"])
          key.limits.tokens_per_minute =
              r.integer<uint64_t>(v, where + ".limits.tokens_per_minute", 1, 1'000'000'000'000ULL);
        if (auto v = l["tokens_per_day"])
          key.limits.tokens_per_day = r.integer<uint64_t>(v, where + ".limits.tokens_per_day", 1, 1'000'000'000'000ULL);
      }
      c.auth.keys.push_back(std::move(key));
    }
  }
  if (auto customers = n["customers"]) {
    if (!customers.IsMap()) r.fail(customers, "auth.customers must be a mapping");
    for (const auto& kv : customers) {
      const auto name = r.key_text(kv.first, "auth.customers");
      const std::string where = "auth.customers." + name;
      r.expect_map(kv.second, where, {"credit", "currency"});
      CustomerConfig cc;
      if (auto v = kv.second["credit"]) {
        cc.credit = r.number(v, where + ".credit");
        cc.credit_nanos = r.nanos(v, where + ".credit");
      }
      if (auto v = kv.second["currency"]) cc.currency = r.text(v, where + ".currency");
      c.auth.customers.emplace(name, cc);
    }
  }
}

void load_receipts(const Reader& r, const YAML::Node& n, ReceiptsConfig& c) {
  r.expect_map(n, "receipts", {"signing_key_file", "kid", "retired_keys", "ttl_seconds", "durability", "signing"});
  if (auto v = n["durability"]) {
    const auto d = r.text(v, "receipts.durability");
    if (d == "sync") c.durability = ReceiptsConfig::Durability::sync;
    else if (d == "async") c.durability = ReceiptsConfig::Durability::async;
    else r.fail(v, "receipts.durability must be sync or async, got '" + d + "'");
  }
  if (auto v = n["signing"]) {
    const auto d = r.text(v, "receipts.signing");
    if (d == "on_fetch") c.signing = ReceiptsConfig::Signing::on_fetch;
    else if (d == "at_issue") c.signing = ReceiptsConfig::Signing::at_issue;
    else r.fail(v, "receipts.signing must be on_fetch or at_issue, got '" + d + "'");
  }
  if (auto v = n["signing_key_file"]) c.signing_key_file = r.text(v, "receipts.signing_key_file");
  if (auto v = n["kid"]) c.kid = r.text(v, "receipts.kid");
  if (auto v = n["ttl_seconds"])
    c.ttl_seconds = r.integer<uint64_t>(v, "receipts.ttl_seconds", 1, uint64_t{10} * 365 * 86400);
  if (auto list = n["retired_keys"]) {
    if (!list.IsSequence()) r.fail(list, "receipts.retired_keys must be a list");
    for (const auto& item : list) {
      r.expect_map(item, "receipts.retired_keys[]", {"kid", "public_key_file"});
      if (!item["kid"] || !item["public_key_file"])
        r.fail(item, "receipts.retired_keys[] needs kid and public_key_file");
      c.retired_keys.push_back({r.text(item["kid"], "kid"),
                                r.text(item["public_key_file"], "public_key_file")});
    }
  }
}

void load_log(const Reader& r, const YAML::Node& n, LogConfig& c) {
  r.expect_map(n, "log", {"enabled", "origin", "key_file", "checkpoint_interval_ms", "witnesses"});
  if (auto v = n["enabled"]) c.enabled = r.boolean(v, "log.enabled");
  if (auto v = n["origin"]) {
    c.origin = r.text(v, "log.origin");
    // The origin names the log key in every signature line (C2SP signed-note).
    if (c.origin.empty() || c.origin.find_first_of(" \t\n+") != std::string::npos)
      r.fail(v, "log.origin must be non-empty, without spaces or '+', got '" + c.origin + "'");
  }
  if (auto v = n["key_file"]) c.key_file = r.text(v, "log.key_file");
  if (auto v = n["checkpoint_interval_ms"])
    c.checkpoint_interval_ms = r.integer<uint64_t>(v, "log.checkpoint_interval_ms", 50, 60000);
  if (auto list = n["witnesses"]) {
    if (!list.IsSequence()) r.fail(list, "log.witnesses must be a list of witness keys");
    for (const auto& item : list) c.witnesses.push_back(r.text(item, "log.witnesses[]"));
  }
}

void load_tracing(const Reader& r, const YAML::Node& n, TracingConfig& c) {
  r.expect_map(n, "tracing", {"otlp_endpoint", "service_name", "sample_ratio", "max_queue_spans", "max_batch_spans",
                              "export_interval_ms", "export_timeout_ms"});
  if (auto v = n["otlp_endpoint"]) {
    c.otlp_endpoint = r.text(v, "tracing.otlp_endpoint");
    if (c.otlp_endpoint.rfind("http://", 0) != 0 && c.otlp_endpoint.rfind("https://", 0) != 0)
      r.fail(v, "tracing.otlp_endpoint must be an http:// or https:// URL, got '" + c.otlp_endpoint + "'");
    const auto host_start = c.otlp_endpoint.find("//") + 2;
    if (c.otlp_endpoint.find('/', host_start) == std::string::npos) c.otlp_endpoint += "/v1/traces";
  }
  if (auto v = n["service_name"]) {
    c.service_name = r.text(v, "tracing.service_name");
    if (c.service_name.empty()) r.fail(v, "tracing.service_name must not be empty");
  }
  if (auto v = n["sample_ratio"]) {
    c.sample_ratio = r.number(v, "tracing.sample_ratio");
    if (!(c.sample_ratio >= 0 && c.sample_ratio <= 1)) r.fail(v, "tracing.sample_ratio must be within [0, 1]");
  }
  if (auto v = n["max_queue_spans"]) c.max_queue_spans = r.integer<uint64_t>(v, "tracing.max_queue_spans", 1, 1000000);
  if (auto v = n["max_batch_spans"]) c.max_batch_spans = r.integer<uint64_t>(v, "tracing.max_batch_spans", 1, 10000);
  if (auto v = n["export_interval_ms"])
    c.export_interval_ms = r.integer<uint64_t>(v, "tracing.export_interval_ms", 10, 60000);
  if (auto v = n["export_timeout_ms"])
    c.export_timeout_ms = r.integer<uint64_t>(v, "tracing.export_timeout_ms", 100, 60000);
}

OutageMode outage_mode(const Reader& r, const YAML::Node& n, const std::string& what) {
  const auto v = r.text(n, what);
  if (v == "open") return OutageMode::open;
  if (v == "closed") return OutageMode::closed;
  r.fail(n, what + " must be open or closed, got '" + v + "'");
}

// `store: URL`, or a mapping with `url` and the shared store's options.
void load_store(const Reader& r, const YAML::Node& n, StoreConfig& c) {
  if (n.IsMap()) {
    r.expect_map(n, "store",
                 {"url", "tls", "connect_timeout_ms", "command_timeout_ms", "connections", "breaker", "outage"});
    if (!n["url"]) r.fail(n, "store needs url (sqlite:PATH, redis://… or rediss://…)");
    c.url = r.text(n["url"], "store.url");
    if (auto t = n["tls"]) {
      r.expect_map(t, "store.tls", {"ca_file", "cert_file", "key_file"});
      if (auto v = t["ca_file"]) c.tls.ca_file = r.text(v, "store.tls.ca_file");
      if (auto v = t["cert_file"]) c.tls.cert_file = r.text(v, "store.tls.cert_file");
      if (auto v = t["key_file"]) c.tls.key_file = r.text(v, "store.tls.key_file");
      if (c.tls.cert_file.empty() != c.tls.key_file.empty())
        r.fail(t, "store.tls needs both cert_file and key_file, or neither");
    }
    if (auto v = n["connect_timeout_ms"])
      c.connect_timeout_ms = r.integer<unsigned>(v, "store.connect_timeout_ms", 1, 60000);
    if (auto v = n["command_timeout_ms"])
      c.command_timeout_ms = r.integer<unsigned>(v, "store.command_timeout_ms", 1, 60000);
    if (auto v = n["connections"]) c.connections = r.integer<unsigned>(v, "store.connections", 1, 64);
    if (auto b = n["breaker"]) {
      r.expect_map(b, "store.breaker", {"consecutive_failures", "open_ms"});
      if (auto v = b["consecutive_failures"])
        c.breaker_failures = r.integer<unsigned>(v, "store.breaker.consecutive_failures", 1, 1000);
      if (auto v = b["open_ms"]) c.breaker_open_ms = r.integer<unsigned>(v, "store.breaker.open_ms", 1, 600000);
    }
    if (auto o = n["outage"]) {
      r.expect_map(o, "store.outage", {"rate_limits", "credits", "receipts"});
      if (auto v = o["rate_limits"]) c.outage.rate_limits = outage_mode(r, v, "store.outage.rate_limits");
      if (auto v = o["credits"]) c.outage.credits = outage_mode(r, v, "store.outage.credits");
      if (auto v = o["receipts"]) c.outage.receipts = outage_mode(r, v, "store.outage.receipts");
    }
  } else {
    c.url = r.text(n, "store");
  }
  const bool redis = c.url.rfind("redis://", 0) == 0 || c.url.rfind("rediss://", 0) == 0;
  if (c.url.rfind("sqlite:", 0) != 0 && !redis)
    r.fail(n, "store must be sqlite:PATH, redis://[USER:PASSWORD@]HOST:PORT/DB or rediss://…");
  if (c.url.rfind("rediss://", 0) != 0 && n.IsMap() && n["tls"])
    r.fail(n["tls"], "store.tls applies to a rediss:// store only");
}

void load_attestation(const Reader& r, const YAML::Node& n, AttestationConfig& c) {
  r.expect_map(n, "attestation", {"mode", "trust_bundle_url", "max_age_seconds"});
  if (auto v = n["mode"]) {
    c.mode = r.text(v, "attestation.mode");
    if (c.mode != "dev") r.fail(v, "attestation.mode: only 'dev' is supported");
  }
  if (auto v = n["trust_bundle_url"]) c.trust_bundle_url = r.text(v, "attestation.trust_bundle_url");
  if (auto v = n["max_age_seconds"])
    c.max_age_seconds = r.integer<unsigned>(v, "attestation.max_age_seconds", 1, 86400);
}

// status.admin_key: a secret the operator's browser sends as a password, so a short or
// empty one (an unset default in a template) is refused rather than guarded by nothing.
void load_status(const Reader& r, const YAML::Node& n, StatusConfig& c) {
  r.expect_map(n, "status", {"admin_key"});
  if (auto v = n["admin_key"]) {
    c.admin_key = r.text(v, "status.admin_key");
    if (c.admin_key.size() < 16 || c.admin_key.size() > 1024)
      r.fail(v, "status.admin_key must be 16 to 1024 characters (it was " + std::to_string(c.admin_key.size()) + ")");
    for (const unsigned char ch : c.admin_key)
      if (ch <= 0x20 || ch >= 0x7f) r.fail(v, "status.admin_key must be printable ASCII without spaces");
  }
}

std::shared_ptr<const Config> load(const YAML::Node& root, const std::string& name) {
  const Reader r(name);
  if (!root.IsDefined() || root.IsNull()) r.fail(root, "config is empty");
  r.expect_map(root, "the top level",
               {"server", "timeouts", "retry", "breaker", "routing", "providers", "routes", "auth",
                "receipts", "log", "store", "attestation", "tracing", "status"});
  r.refuse_duplicate_keys(root, "");
  auto c = std::make_shared<Config>();
  c->source_file = name;
  if (auto n = root["server"]) load_server(r, n, c->server);
  if (c->server.listen.empty()) c->server.listen.push_back({"127.0.0.1", 8080});
  if (auto n = root["timeouts"]) load_timeouts(r, n, c->timeouts);
  if (auto n = root["retry"]) load_retry(r, n, c->retry);
  if (auto n = root["breaker"]) load_breaker(r, n, c->breaker);
  if (auto n = root["routing"]) load_routing(r, n, c->routing);
  if (auto n = root["providers"]) load_providers(r, n, *c);
  if (auto n = root["routes"]) load_routes(r, n, *c);
  if (auto n = root["auth"]) load_auth(r, n, *c);
  if (auto n = root["receipts"]) load_receipts(r, n, c->receipts);
  if (auto n = root["log"]) load_log(r, n, c->log);
  if (auto n = root["tracing"]) load_tracing(r, n, c->tracing);
  if (auto n = root["store"]) load_store(r, n, c->store_config);
  c->store = c->store_config.url;
  if (auto n = root["attestation"]) load_attestation(r, n, c->attestation);
  if (auto n = root["status"]) load_status(r, n, c->status);
  return c;
}

std::shared_ptr<const Config> parse(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::ostringstream out;
    out << name;
    if (!e.mark.is_null()) out << ':' << e.mark.line + 1 << ':' << e.mark.column + 1;
    out << ": " << e.msg;
    throw ConfigError(out.str());
  }
  try {
    return load(root, name);
  } catch (const YAML::Exception& e) {  // e.g. a key that is itself a map
    throw ConfigError(name + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

}  // namespace

std::shared_ptr<const Config> load_config_text(const std::string& text, const std::string& name) {
  return parse(text, name);
}

std::shared_ptr<const Config> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

}  // namespace tresor::config
