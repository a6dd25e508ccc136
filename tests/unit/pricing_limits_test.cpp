// accounts/pricing and accounts/limits: what an answer costs to the nano, what a request
// reserves at most, the UTC windows a key's limits draw on, and the rate-limit headers a
// client reads.
#include <catch2/catch.hpp>

#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "accounts/limits.h"
#include "accounts/pricing.h"

using namespace tresor::accounts;
using tresor::config::ApiKeyConfig;
using tresor::config::Pricing;
using tresor::config::RouteConfig;

namespace {

RouteConfig priced_chat(std::optional<int64_t> input, std::optional<int64_t> output,
                        std::optional<uint64_t> max_output = std::nullopt) {
  RouteConfig r;
  r.id = "eu/pm/chat";
  Pricing p;
  p.input_nanos_per_mtok = input;
  p.output_nanos_per_mtok = output;
  r.pricing = p;
  r.max_output_tokens = max_output;
  return r;
}

RouteConfig billed(const std::string& unit, int64_t unit_nanos, std::optional<uint64_t> max_audio = std::nullopt) {
  RouteConfig r;
  r.id = "eu/pm/whisper";
  r.type = tresor::config::RouteType::transcription;
  Pricing p;
  p.billing_unit = unit;
  p.unit_nanos = unit_nanos;
  r.pricing = p;
  r.max_audio_seconds = max_audio;
  return r;
}

ApiKeyConfig key_with(std::optional<uint64_t> rpm, std::optional<uint64_t> rpd, std::optional<uint64_t> tpm,
                      std::optional<uint64_t> tpd) {
  ApiKeyConfig k;
  k.sha256_hex = "ab12";
  k.customer = "acme";
  k.limits.per_minute = rpm;
  k.limits.per_day = rpd;
  k.limits.tokens_per_minute = tpm;
  k.limits.tokens_per_day = tpd;
  return k;
}

}  // namespace

TEST_CASE("pricing: chat_cost is exact integer nanos", "[accounts][pricing]") {
  // 0.2 and 0.6 per million tokens: 9 × 200000000 + 7 × 600000000 = 6e9 → / 1e6 = 6000.
  const auto r = priced_chat(200'000'000, 600'000'000);
  CHECK(chat_cost(r, 9, 7) == 6000);
  CHECK(chat_cost(r, 0, 0) == 0);
  CHECK(chat_cost(r, 1'000'000, 0) == 200'000'000);
  CHECK(chat_cost(r, 0, 1'000'000) == 600'000'000);
  // Negative token counts (a broken upstream) cost nothing rather than a refund.
  CHECK(chat_cost(r, -5, 7) == 4200);
  // Only one side priced.
  CHECK(chat_cost(priced_chat(std::nullopt, 600'000'000), 9, 7) == 4200);
}

TEST_CASE("pricing: chat_cost rounds half up to the nano", "[accounts][pricing]") {
  CHECK(chat_cost(priced_chat(499'999, std::nullopt), 1, 0) == 0);  // 0.499999
  CHECK(chat_cost(priced_chat(500'000, std::nullopt), 1, 0) == 1);  // 0.5
  CHECK(chat_cost(priced_chat(1'500'000, std::nullopt), 1, 0) == 2);
  CHECK(chat_cost(priced_chat(2'500'000, std::nullopt), 1, 0) == 3);  // half up, not to even
  CHECK(chat_cost(priced_chat(2'499'999, std::nullopt), 1, 0) == 2);
}

TEST_CASE("pricing: an unpriced route costs nothing", "[accounts][pricing]") {
  RouteConfig r;
  CHECK(chat_cost(r, 1000, 1000) == 0);
  CHECK(transcription_billing(r) == TranscriptionBilling::free);
  CHECK(transcription_cost(r, 600, 10, 10) == 0);
  r.pricing = Pricing{};  // a currency and nothing else
  CHECK(chat_cost(r, 1000, 1000) == 0);
  CHECK(transcription_billing(r) == TranscriptionBilling::free);
}

TEST_CASE("pricing: transcription by duration, request or tokens", "[accounts][pricing]") {
  // 0.014 per minute × 61 s = 0.0142333… → 14233333 nanos.
  const auto minute = billed("audio_minute", 14'000'000);
  CHECK(transcription_billing(minute) == TranscriptionBilling::duration);
  CHECK(transcription_cost(minute, 61, 0, 0) == 14'233'333);
  CHECK(transcription_cost(minute, 60, 0, 0) == 14'000'000);
  CHECK(transcription_cost(minute, 0, 0, 0) == 0);
  // Half up: 1 nano a minute for 30 s is 0.5.
  CHECK(transcription_cost(billed("audio_minute", 1), 30, 0, 0) == 1);
  CHECK(transcription_cost(billed("audio_minute", 1), 29, 0, 0) == 0);
  const auto request = billed("request", 2'000'000);
  CHECK(transcription_billing(request) == TranscriptionBilling::request);
  CHECK(transcription_cost(request, 0, 0, 0) == 2'000'000);
  CHECK(transcription_cost(request, 3600, 500, 500) == 2'000'000);
  const auto tokens = priced_chat(200'000'000, 600'000'000);
  CHECK(transcription_billing(tokens) == TranscriptionBilling::tokens);
  CHECK(transcription_cost(tokens, 61, 9, 7) == 6000);
}

TEST_CASE("pricing: estimate_tokens is ceil(bytes / 4)", "[accounts][pricing]") {
  CHECK(estimate_tokens(0) == 0);
  CHECK(estimate_tokens(1) == 1);
  CHECK(estimate_tokens(4) == 1);
  CHECK(estimate_tokens(5) == 2);
  CHECK(estimate_tokens(8) == 2);
  CHECK(estimate_tokens(9) == 3);
}

TEST_CASE("pricing: chat_bound is the most expensive candidate route", "[accounts][pricing]") {
  const auto cheap_long = priced_chat(200'000'000, 600'000'000);                  // default 4096 output
  const auto dear_short = priced_chat(1'000'000'000, 2'000'000'000, uint64_t{100});  // its own max
  const std::vector<const RouteConfig*> routes{&cheap_long, &dear_short};
  // No max_output: cheap_long reserves 1000 × 0.2 + 4096 × 0.6 per mtok = 2657600 nanos and
  // 5096 tokens; dear_short 1000 × 1 + 100 × 2 = 1200000 nanos and 1100 tokens.
  CostBound b = chat_bound(routes, 1000, std::nullopt);
  CHECK(b.money == 2'657'600);
  CHECK(b.tokens == 1000 + kDefaultMaxOutputTokens);
  // max_output 10 applies to both: cheap_long 206000, dear_short 1020000 (now the dearer).
  b = chat_bound(routes, 1000, 10);
  CHECK(b.money == 1'020'000);
  CHECK(b.tokens == 1010);
  // The route's own max_output_tokens when the request sets none.
  b = chat_bound({&dear_short}, 1000, std::nullopt);
  CHECK(b.money == 1'200'000);
  CHECK(b.tokens == 1100);
  // Unpriced: no money, still tokens.
  RouteConfig free_route;
  b = chat_bound({&free_route}, 40, std::nullopt);
  CHECK(b.money == 0);
  CHECK(b.tokens == 40 + kDefaultMaxOutputTokens);
}

TEST_CASE("pricing: chat_bound saturates instead of overflowing on an absurd max_tokens", "[accounts][pricing]") {
  // The server accepts any positive int64 max_tokens; prompt + output must not wrap to a
  // negative hold, which would lower the key's token counters instead of drawing on them.
  const auto priced = priced_chat(200'000'000, 600'000'000);
  RouteConfig free_route;
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  CostBound b = chat_bound({&priced, &free_route}, 1000, kMax);
  CHECK(b.tokens == kMax);
  CHECK(b.money == kMax);
  b = chat_bound({&free_route}, 1000, kMax - 10);
  CHECK(b.tokens == kMax);
  CHECK(b.money == 0);
}

TEST_CASE("pricing: transcription_bound uses max_audio_seconds or an hour", "[accounts][pricing]") {
  const auto capped = billed("audio_minute", 14'000'000, uint64_t{120});
  CostBound b = transcription_bound({&capped});
  CHECK(b.money == 28'000'000);  // 2 minutes
  const auto uncapped = billed("audio_minute", 14'000'000);
  b = transcription_bound({&uncapped});
  CHECK(b.money == 14'000'000 * (kDefaultMaxAudioSeconds / 60));
  b = transcription_bound({&capped, &uncapped});
  CHECK(b.money == 14'000'000 * (kDefaultMaxAudioSeconds / 60));
  const auto request = billed("request", 2'000'000);
  CHECK(transcription_bound({&request}).money == 2'000'000);
  // Token-priced: max_output_tokens of output (the default without one).
  const auto tokens = priced_chat(1'000'000'000, 2'000'000'000, uint64_t{1000});
  b = transcription_bound({&tokens});
  CHECK(b.money == 2'000'000);
  CHECK(b.tokens == 1000);
  const auto tokens_default = priced_chat(1'000'000'000, 2'000'000'000);
  b = transcription_bound({&tokens_default, &capped});
  CHECK(b.money == 28'000'000);
  CHECK(b.tokens == kDefaultMaxOutputTokens);
}

TEST_CASE("limits: one window per configured limit, counters distinct per kind and index", "[accounts][limits]") {
  const auto key = key_with(10, 1000, 5000, 100000);
  const int64_t now = 86400 * 20000 + 3 * 60 + 7;  // 3 min 7 s into a UTC day
  const auto req = request_windows(key, now);
  const auto tok = token_windows(key, now, 321);
  REQUIRE(req.size() == 2);
  REQUIRE(tok.size() == 2);
  CHECK(req[0].limit == 10);
  CHECK(req[1].limit == 1000);
  CHECK(tok[0].limit == 5000);
  CHECK(tok[1].limit == 100000);
  CHECK(req[0].amount == 1);
  CHECK(req[1].amount == 1);
  CHECK(tok[0].amount == 321);
  CHECK(tok[1].amount == 321);
  // ttl = window length + 60 s of slack.
  CHECK(req[0].ttl_seconds == 120);
  CHECK(req[1].ttl_seconds == 86460);
  CHECK(tok[0].ttl_seconds == 120);
  CHECK(tok[1].ttl_seconds == 86460);
  std::set<std::string> names{req[0].counter, req[1].counter, tok[0].counter, tok[1].counter};
  CHECK(names.size() == 4);
  for (const auto& n : names) CHECK(n.rfind(key.sha256_hex, 0) == 0);
  // The next minute is a new minute counter but the same day counter.
  const auto later = request_windows(key, now + 60);
  CHECK(later[0].counter != req[0].counter);
  CHECK(later[1].counter == req[1].counter);
  // Still within the same minute: the same counters.
  CHECK(request_windows(key, now + 52)[0].counter == req[0].counter);
  CHECK(token_windows(key, now + 1, 1)[0].counter == tok[0].counter);
  // Another key: other counters.
  auto other = key;
  other.sha256_hex = "cd34";
  CHECK(request_windows(other, now)[0].counter != req[0].counter);
  // Only the limits that are set.
  CHECK(request_windows(key_with(std::nullopt, 5, std::nullopt, std::nullopt), now).size() == 1);
  CHECK(request_windows(key_with(std::nullopt, 5, std::nullopt, std::nullopt), now)[0].ttl_seconds == 86460);
  CHECK(token_windows(key_with(5, 5, std::nullopt, std::nullopt), now, 1).empty());
  CHECK(request_windows(key_with(std::nullopt, std::nullopt, 7, 7), now).empty());
}

TEST_CASE("limits: seconds_to_reset counts to the window's UTC end", "[accounts][limits]") {
  const auto key = key_with(10, 1000, std::nullopt, std::nullopt);
  const int64_t day = 86400 * 20000;
  const auto w = request_windows(key, day + 125);
  CHECK(seconds_to_reset(w[0], day + 125) == 55);
  CHECK(seconds_to_reset(w[1], day + 125) == 86400 - 125);
  CHECK(seconds_to_reset(w[0], day + 120) == 60);
  CHECK(seconds_to_reset(w[0], day + 179) == 1);
  CHECK(seconds_to_reset(w[1], day + 86399) == 1);
}

TEST_CASE("limits: tightest reports the refusing window, else the least remaining", "[accounts][limits]") {
  const auto key = key_with(10, 100, std::nullopt, std::nullopt);
  const int64_t now = 86400 * 20000 + 30;
  const auto w = request_windows(key, now);
  Decision granted;
  granted.used = {3, 99};
  auto r = tightest(w, granted, now);
  REQUIRE(r);
  CHECK(r->limit == 100);
  CHECK(r->remaining == 1);
  CHECK(r->reset_seconds == 86400 - 30);
  granted.used = {9, 20};
  r = tightest(w, granted, now);
  REQUIRE(r);
  CHECK(r->limit == 10);
  CHECK(r->remaining == 1);
  CHECK(r->reset_seconds == 30);
  // Refused by the day window although the minute window has less left.
  Decision refused;
  refused.verdict = Verdict::over_window;
  refused.window = 1;
  refused.used = {10, 99};
  r = tightest(w, refused, now);
  REQUIRE(r);
  CHECK(r->limit == 100);
  CHECK(r->remaining == 1);
  CHECK(r->reset_seconds == 86400 - 30);
  // Over-full counters report 0 remaining, never negative.
  granted.used = {12, 5};
  CHECK(tightest(w, granted, now)->remaining == 0);
  CHECK_FALSE(tightest({}, granted, now).has_value());
}

TEST_CASE("limits: reset_text is OpenAI's duration text", "[accounts][limits]") {
  CHECK(reset_text(45) == "45s");
  CHECK(reset_text(360) == "6m0s");
  CHECK(reset_text(3723) == "1h2m3s");
  CHECK(reset_text(3600) == "1h0m0s");
  CHECK(reset_text(1) == "1s");
  CHECK(reset_text(60) == "1m0s");
}

TEST_CASE("limits: the rate-limit headers have exactly the documented names", "[accounts][limits]") {
  WindowReport w;
  w.limit = 600;
  w.remaining = 598;
  w.reset_seconds = 42;
  HeaderList h;
  add_request_headers(h, w);
  const HeaderList requests{{"X-RateLimit-Limit", "600"},
                            {"X-RateLimit-Remaining", "598"},
                            {"x-ratelimit-limit-requests", "600"},
                            {"x-ratelimit-remaining-requests", "598"},
                            {"x-ratelimit-reset-requests", "42s"}};
  CHECK(h == requests);
  HeaderList t;
  w.limit = 50000;
  w.remaining = 0;
  w.reset_seconds = 61;
  add_token_headers(t, w);
  const HeaderList tokens{{"x-ratelimit-limit-tokens", "50000"},
                          {"x-ratelimit-remaining-tokens", "0"},
                          {"x-ratelimit-reset-tokens", "1m1s"}};
  CHECK(t == tokens);
}
