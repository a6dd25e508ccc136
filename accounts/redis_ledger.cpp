// LedgerStore on Redis (hiredis, blocking API), shared by every gateway replica. Used from
// the accounts thread only (one connection, never an I/O thread). Each step is ONE Lua
// script, so it is atomic on the server: replicas cannot interleave between a check and
// its increment, hence cannot overspend together.
//
// Layout (every key under tresor:acct:; <c> = customer, as given):
//   tresor:acct:money:<c>       hash {spent, estimated, reserved}: integer nanos (HINCRBY)
//   tresor:acct:route:<c>       hash {<route>: nanos spent}
//   tresor:acct:route-est:<c>   hash {<route>: the estimated part of it}
//   tresor:acct:day:<c>         hash {<YYYY-MM-DD>: nanos spent}
//   tresor:acct:day-est:<c>     hash {<YYYY-MM-DD>: the estimated part of it}
//   tresor:acct:holds:<c>       hash {<request id>: hold record, JSON {"m": nanos reserved,
//                               "w": [[counter key, tokens], ...]}, numbers as strings}
//   tresor:acct:expiry:<c>      sorted set {<request id>: expires_at}
//   tresor:acct:win:<counter>   a window counter (WindowDraw::counter), INCRBY; EXPIRE
//                               ttl_seconds when the script creates it, so every counter
//                               dies with its window
//   tresor:acct:entry:<len(c)>:<c>:<request id>
//                               the ledger entry of one settlement, hash {customer, route,
//                               day, cost, estimated, prompt_tokens, completion_tokens, at};
//                               its existence makes a repeated settle a no-op. Kept 400
//                               days (kEntryTtlSeconds): far beyond any retry, and a year of
//                               per-request records for statements and disputes
//   tresor:acct:op:<instance>   one per RedisLedger object (a random UUID): the sequence
//                               number and reply of its last count(), kept a day; a retry
//                               after a lost reply finds its own number there and returns
//                               that reply instead of counting twice. One key per replica,
//                               not one per request, since a ledger runs one call at a time
// The prefixes before <c> are fixed and none is a prefix of another, so two customers'
// keys never collide whatever their names hold; the entry key carries the customer's
// length for the same reason.
//
// TTLs: every key has one, set by the script that writes it (see kPrelude's keep()):
// counters their window, the op keys a day, entries 400 days, and a customer's hashes 400
// days after the customer's last step. Run Redis with maxmemory-policy noeviction: an
// evicted money hash would forget what a customer spent.
//
// Expiry: every script on a customer first gives back that customer's holds whose
// expires_at <= now (ZRANGEBYSCORE on the expiry set), exactly as release() does, so a
// hold whose replica died (kill -9) is returned by the next operation on the customer.
// `now` is the caller's system clock (Redis TIME is not used): replicas must keep their
// clocks in sync (NTP); a skew of s seconds moves expiry by s seconds, nothing else.
//
// Money is integer nanos. Every write is HINCRBY/INCRBY of a decimal string that came
// from the caller or from a stored record, so totals are exact over int64. The checks
// (amount > credit − spent − reserved) run in Lua numbers (doubles): exact up to 2^53
// nanos (~9 million currency units), beyond that off by at most a few nanos. Amounts the
// caller sees (spent, reserved, available) are computed here in int64 from the strings.
//
// The scripts touch keys they derive from stored records (a hold's counters), so this
// needs one Redis (with replicas if wanted), not Redis Cluster.
#include <spdlog/spdlog.h>

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "accounts/ledger.h"
#include "common/ids.h"
#include "storage/redis_connection.h"

namespace tresor::accounts {
namespace {

using storage::Attempt;
using storage::RedisConnection;
using storage::reply_text;
using Reply = storage::RedisReply;

constexpr std::string_view kPrefix = "tresor:acct:";
constexpr int64_t kEntryTtlSeconds = 400LL * 86400;
constexpr int64_t kOpTtlSeconds = 86400;

// Shared by every script: KEYS[1] money hash, KEYS[2] holds hash, KEYS[3] expiry set.
constexpr std::string_view kPrelude = R"lua(
local money, holds, expiry = KEYS[1], KEYS[2], KEYS[3]
-- Every key has a TTL, set in the step that writes it: a customer's hashes live 400 days
-- (kEntryTtlSeconds) past the customer's last step. EXPIRE on a missing key is a no-op.
local ACCOUNT_TTL = 34560000
local function keep(first, last)
  for i = first, last do redis.call('EXPIRE', KEYS[i], ACCOUNT_TTL) end
end
-- Gives a hold back (money and the window amounts of counters that still exist); the
-- removed record, or nil when there was none.
local function give_back(rid)
  redis.call('ZREM', expiry, rid)
  local raw = redis.call('HGET', holds, rid)
  if not raw then return nil end
  redis.call('HDEL', holds, rid)
  local h = cjson.decode(raw)
  if h.m ~= '0' then redis.call('HINCRBY', money, 'reserved', '-' .. h.m) end
  for _, w in ipairs(h.w) do
    if redis.call('EXISTS', w[1]) == 1 then redis.call('DECRBY', w[1], w[2]) end
  end
  return h
end
local function purge(now)
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do give_back(rid) end
end
local function money_now()
  local m = redis.call('HMGET', money, 'spent', 'reserved')
  return m[1] or '0', m[2] or '0'
end
local function count_of(key) return tonumber(redis.call('GET', key) or '0') end
-- INCRBY, giving a counter its lifetime when this creates it (never extending it).
local function draw(key, amount, ttl)
  local new = redis.call('EXISTS', key) == 0
  local v = redis.call('INCRBY', key, amount)
  if new then redis.call('EXPIRE', key, ttl) end
  return v
end
-- The decision: {verdict, window index (0-based), spent, reserved, reserved by this
-- request before this call, used...}. Verdicts: 0 granted, 1 over_credit, 2 over_window.
local function decision(code, window, spent, reserved, mine, used)
  local out = {code, window, spent, reserved, mine}
  for i = 1, #used do out[#out + 1] = used[i] end
  return out
end
)lua";

// count: KEYS[4] op key, KEYS[5..] counters; ARGV now, credit ('' = none), op ttl, call
// sequence number, then limit, amount, ttl per counter.
constexpr std::string_view kCount = R"lua(
local prior = redis.call('GET', KEYS[4])
if prior then
  prior = cjson.decode(prior)
  if prior.seq == ARGV[4] then return prior.out end
end
purge(ARGV[1])
local credit = ARGV[2]
local spent, reserved = money_now()
local n = #KEYS - 4
local used = {}
for i = 1, n do used[i] = count_of(KEYS[4 + i]) end
local out
if credit ~= '' and tonumber(spent) + tonumber(reserved) >= tonumber(credit) then
  out = decision(1, 0, spent, reserved, '0', used)
else
  for i = 1, n do
    local a = 5 + 3 * (i - 1)
    if used[i] + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then
      out = decision(2, i - 1, spent, reserved, '0', used)
      break
    end
  end
  if not out then
    for i = 1, n do
      local a = 5 + 3 * (i - 1)
      used[i] = draw(KEYS[4 + i], ARGV[a + 1], ARGV[a + 2])
    end
    out = decision(0, 0, spent, reserved, '0', used)
  end
end
keep(1, 3)
redis.call('SET', KEYS[4], cjson.encode({seq = ARGV[4], out = out}), 'EX', ARGV[3])
return out
)lua";

// hold: KEYS[4..] counters; ARGV now, request id, credit ('' = none), amount, expires_at,
// then limit, amount, ttl per counter.
constexpr std::string_view kHold = R"lua(
purge(ARGV[1])
local rid, credit, amount = ARGV[2], ARGV[3], ARGV[4]
local spent, reserved = money_now()
local n = #KEYS - 3
local used = {}
for i = 1, n do used[i] = count_of(KEYS[3 + i]) end
-- A retry after a lost reply: the hold is there, granted once.
local existing = redis.call('HGET', holds, rid)
if existing then return decision(0, 0, spent, reserved, cjson.decode(existing).m, used) end
if credit ~= '' and tonumber(amount) > tonumber(credit) - tonumber(spent) - tonumber(reserved) then
  return decision(1, 0, spent, reserved, '0', used)
end
for i = 1, n do
  local a = 6 + 3 * (i - 1)
  if used[i] + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then
    return decision(2, i - 1, spent, reserved, '0', used)
  end
end
local record = {m = '0', w = {}}
if credit ~= '' and amount ~= '0' then
  redis.call('HINCRBY', money, 'reserved', amount)
  record.m = amount
end
for i = 1, n do
  local a = 6 + 3 * (i - 1)
  if ARGV[a + 1] ~= '0' then
    used[i] = draw(KEYS[3 + i], ARGV[a + 1], ARGV[a + 2])
    record.w[#record.w + 1] = {KEYS[3 + i], ARGV[a + 1]}
  end
end
redis.call('HSET', holds, rid, cjson.encode(record))
redis.call('ZADD', expiry, ARGV[5], rid)
keep(1, 3)
return decision(0, 0, spent, reserved, '0', used)
)lua";

// settle: KEYS[4..7] route, route-est, day, day-est hashes, KEYS[8] entry, KEYS[9..]
// counters; ARGV at, request id, customer, route, day, cost, estimated ('1'/'0'),
// prompt tokens, completion tokens, entry ttl, then the actual tokens per counter.
// 1 when applied now, 0 when applied before.
constexpr std::string_view kSettle = R"lua(
purge(ARGV[1])
local entry = KEYS[8]
if redis.call('HSETNX', entry, 'customer', ARGV[3]) == 0 then return 0 end
-- The hold's money and tokens go back; the actual tokens are drawn instead, so each
-- counter that still exists moves by actual - held. Without a hold (expired and given
-- back already, or never made) the actual tokens are drawn all the same.
give_back(ARGV[2])
for i = 9, #KEYS do
  local actual = ARGV[10 + (i - 8)]
  if actual ~= '0' and redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], actual) end
end
local cost, route, day = ARGV[6], ARGV[4], ARGV[5]
redis.call('HINCRBY', money, 'spent', cost)
redis.call('HINCRBY', KEYS[4], route, cost)
redis.call('HINCRBY', KEYS[6], day, cost)
if ARGV[7] == '1' then
  redis.call('HINCRBY', money, 'estimated', cost)
  redis.call('HINCRBY', KEYS[5], route, cost)
  redis.call('HINCRBY', KEYS[7], day, cost)
end
redis.call('HSET', entry, 'route', route, 'day', day, 'cost', cost, 'estimated', ARGV[7],
           'prompt_tokens', ARGV[8], 'completion_tokens', ARGV[9], 'at', ARGV[1])
redis.call('EXPIRE', entry, ARGV[10])
keep(1, 7)
return 1
)lua";

// release: ARGV request id. 1 when a hold was given back.
constexpr std::string_view kRelease = R"lua(
if give_back(ARGV[1]) then
  keep(1, 3)
  return 1
end
return 0
)lua";

// balance: KEYS[4..7] route, route-est, day, day-est hashes; ARGV now.
constexpr std::string_view kBalance = R"lua(
purge(ARGV[1])
return {redis.call('HMGET', money, 'spent', 'estimated', 'reserved'), redis.call('HGETALL', KEYS[4]),
        redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7])}
)lua";

// A script and the SHA1 Redis gave it (SCRIPT LOAD); empty until loaded.
struct Script {
  const char* name;
  std::string body;
  std::string sha;
};

std::string key(std::string_view kind, const std::string& name) {
  std::string out(kPrefix);
  out.append(kind).append(":").append(name);
  return out;
}

std::string entry_key(const std::string& customer, const std::string& request_id) {
  return key("entry", std::to_string(customer.size()) + ":" + customer + ":" + request_id);
}

std::string counter_key(const std::string& counter) { return key("win", counter); }

// An integer reply, or a string reply holding one (money comes back as strings, exact).
std::optional<int64_t> as_int(const redisReply* r) {
  if (!r) return std::nullopt;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_NIL) return 0;
  if (r->type != REDIS_REPLY_STRING) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(r->str, r->str + r->len, v);
  if (ec != std::errc() || p != r->str + r->len) return std::nullopt;
  return v;
}

std::string credit_arg(const std::optional<Nanos>& credit) { return credit ? std::to_string(*credit) : ""; }

Decision unavailable() {
  Decision d;
  d.verdict = Verdict::unavailable;
  return d;
}

class RedisLedger final : public LedgerStore {
 public:
  explicit RedisLedger(const config::StoreConfig& store)
      : conn_("ledger", store), op_key_(key("op", common::new_random_uuid())) {}

  bool shared() const override { return true; }

  Decision count(const CountRequest& request) override {
    std::vector<std::string> keys = customer_keys(request.customer);
    keys.push_back(op_key_);
    // The retry sends the same number: it is how the script recognises its own call.
    std::vector<std::string> args{std::to_string(request.now), credit_arg(request.credit),
                                  std::to_string(kOpTtlSeconds), std::to_string(++op_seq_)};
    add_windows(request.windows, keys, args);
    return decide("count", count_, keys, args, request.credit, request.windows.size());
  }

  Decision hold(const Hold& hold) override {
    std::vector<std::string> keys = customer_keys(hold.customer);
    std::vector<std::string> args{std::to_string(hold.now), hold.request_id, credit_arg(hold.credit),
                                  std::to_string(hold.amount), std::to_string(hold.expires_at)};
    add_windows(hold.windows, keys, args);
    return decide("hold", hold_, keys, args, hold.credit, hold.windows.size());
  }

  bool settle(const Settlement& s) override {
    std::vector<std::string> keys = customer_keys(s.customer);
    append_total_keys(s.customer, keys);
    keys.push_back(entry_key(s.customer, s.request_id));
    std::vector<std::string> args{std::to_string(s.at),
                                  s.request_id,
                                  s.customer,
                                  s.route,
                                  s.day,
                                  std::to_string(s.cost),
                                  s.estimated ? "1" : "0",
                                  std::to_string(s.prompt_tokens),
                                  std::to_string(s.completion_tokens),
                                  std::to_string(kEntryTtlSeconds)};
    for (const auto& w : s.windows) {
      keys.push_back(counter_key(w.counter));
      args.push_back(std::to_string(w.amount));
    }
    // Safe to retry: the entry written with the first application makes a second one a
    // no-op that still answers "applied".
    return conn_.run<bool>("settle", false, [&](bool) -> Attempt<bool> {
      auto r = eval(settle_, keys, args);
      if (r.connection_lost) return Attempt<bool>::lost();
      if (!r.value || r.value->type != REDIS_REPLY_INTEGER) {
        conn_.log_unexpected("settle", r.value.get());
        return Attempt<bool>::ok(false);
      }
      return Attempt<bool>::ok(true);
    });
  }

  void release(const std::string& customer, const std::string& request_id) override {
    const std::vector<std::string> keys = customer_keys(customer);
    const std::vector<std::string> args{request_id};
    // Safe to retry: a hold given back is gone, so the retry finds nothing.
    conn_.run<bool>("release", false, [&](bool) -> Attempt<bool> {
      auto r = eval(release_, keys, args);
      if (r.connection_lost) return Attempt<bool>::lost();
      if (!r.value || r.value->type != REDIS_REPLY_INTEGER) conn_.log_unexpected("release", r.value.get());
      return Attempt<bool>::ok(true);
    });
  }

  std::optional<Balance> balance(const std::string& customer, int64_t now) override {
    std::vector<std::string> keys = customer_keys(customer);
    append_total_keys(customer, keys);
    const std::vector<std::string> args{std::to_string(now)};
    using Result = std::optional<Balance>;
    return conn_.run<Result>("balance", std::nullopt, [&](bool) -> Attempt<Result> {
      auto r = eval(balance_, keys, args);
      if (r.connection_lost) return Attempt<Result>::lost();
      Result b = parse_balance(r.value.get());
      if (!b) conn_.log_unexpected("balance", r.value.get());
      return Attempt<Result>::ok(std::move(b));
    });
  }

  bool reachable() override { return conn_.ping(); }

 private:
  static std::vector<std::string> customer_keys(const std::string& customer) {
    return {key("money", customer), key("holds", customer), key("expiry", customer)};
  }

  static void append_total_keys(const std::string& customer, std::vector<std::string>& keys) {
    for (const char* kind : {"route", "route-est", "day", "day-est"}) keys.push_back(key(kind, customer));
  }

  static void add_windows(const std::vector<WindowDraw>& windows, std::vector<std::string>& keys,
                          std::vector<std::string>& args) {
    for (const auto& w : windows) {
      keys.push_back(counter_key(w.counter));
      args.push_back(std::to_string(w.limit));
      args.push_back(std::to_string(w.amount));
      args.push_back(std::to_string(w.ttl_seconds));
    }
  }

  // count() and hold(): run the script (count's retry answers from its op key, hold's
  // finds its own hold), then read the decision.
  Decision decide(const char* what, Script& script, const std::vector<std::string>& keys,
                  const std::vector<std::string>& args, const std::optional<Nanos>& credit, size_t windows) {
    return conn_.run<Decision>(what, unavailable(), [&](bool) -> Attempt<Decision> {
      auto r = eval(script, keys, args);
      if (r.connection_lost) return Attempt<Decision>::lost();
      std::optional<Decision> d = parse_decision(r.value.get(), credit, windows);
      if (!d) {
        conn_.log_unexpected(what, r.value.get());
        return Attempt<Decision>::ok(unavailable());
      }
      return Attempt<Decision>::ok(std::move(*d));
    });
  }

  // EVALSHA of the script loaded once (SCRIPT LOAD); EVAL when Redis lost its script
  // cache (NOSCRIPT: a restart, SCRIPT FLUSH), which caches it again.
  Attempt<Reply> eval(Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args) {
    if (script.sha.empty()) {
      Reply loaded = conn_.command({"SCRIPT", "LOAD", script.body});
      if (!loaded) return Attempt<Reply>::lost();
      if (loaded->type == REDIS_REPLY_STRING)
        script.sha = reply_text(loaded.get());
      else
        conn_.log_unexpected(std::string("SCRIPT LOAD ") + script.name, loaded.get());
    }
    std::vector<std::string> argv{script.sha.empty() ? "EVAL" : "EVALSHA",
                                  script.sha.empty() ? script.body : script.sha, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    Reply r = conn_.command(argv);
    if (!r) return Attempt<Reply>::lost();
    if (r->type == REDIS_REPLY_ERROR && reply_text(r.get()).rfind("NOSCRIPT", 0) == 0) {
      argv[0] = "EVAL";
      argv[1] = script.body;
      r = conn_.command(argv);
      if (!r) return Attempt<Reply>::lost();
    }
    return Attempt<Reply>::ok(std::move(r));
  }

  // {verdict, window, spent, reserved, mine, used...} (see kPrelude's decision()).
  static std::optional<Decision> parse_decision(const redisReply* r, const std::optional<Nanos>& credit,
                                                size_t windows) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 5 + windows) return std::nullopt;
    std::optional<int64_t> fields[5];
    for (size_t i = 0; i < 5; ++i) {
      fields[i] = as_int(r->element[i]);
      if (!fields[i]) return std::nullopt;
    }
    Decision d;
    switch (*fields[0]) {
      case 0: d.verdict = Verdict::granted; break;
      case 1: d.verdict = Verdict::over_credit; break;
      case 2: d.verdict = Verdict::over_window; break;
      default: return std::nullopt;
    }
    d.window = static_cast<size_t>(*fields[1]);
    // Before this draw: a repeated hold's own reservation is not counted against it.
    if (credit) d.available = *credit - *fields[2] - (*fields[3] - *fields[4]);
    for (size_t i = 0; i < windows; ++i) {
      auto used = as_int(r->element[5 + i]);
      if (!used) return std::nullopt;
      d.used.push_back(*used);
    }
    return d;
  }

  // {{spent, estimated, reserved}, route, route-est, day, day-est (HGETALL each)}.
  static std::optional<Balance> parse_balance(const redisReply* r) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 5) return std::nullopt;
    const redisReply* money = r->element[0];
    if (money->type != REDIS_REPLY_ARRAY || money->elements != 3) return std::nullopt;
    Balance b;
    Nanos* totals[3] = {&b.spent, &b.estimated, &b.reserved};
    for (size_t i = 0; i < 3; ++i) {
      auto v = as_int(money->element[i]);
      if (!v) return std::nullopt;
      *totals[i] = *v;
    }
    if (!add_totals(r->element[1], b.by_route, &SpendTotal::amount) ||
        !add_totals(r->element[2], b.by_route, &SpendTotal::estimated) ||
        !add_totals(r->element[3], b.by_day, &SpendTotal::amount) ||
        !add_totals(r->element[4], b.by_day, &SpendTotal::estimated))
      return std::nullopt;
    return b;
  }

  // An HGETALL reply {name, nanos, ...} into `field` of out[name].
  static bool add_totals(const redisReply* r, std::map<std::string, SpendTotal>& out, Nanos SpendTotal::*field) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) return false;
    for (size_t i = 0; i < r->elements; i += 2) {
      auto v = as_int(r->element[i + 1]);
      if (!v) return false;
      out[reply_text(r->element[i])].*field = *v;
    }
    return true;
  }

  RedisConnection conn_;
  std::string op_key_;   // this ledger's count() marker
  uint64_t op_seq_ = 0;  // numbers its count() calls
  Script count_{"count", std::string(kPrelude) + std::string(kCount), {}};
  Script hold_{"hold", std::string(kPrelude) + std::string(kHold), {}};
  Script settle_{"settle", std::string(kPrelude) + std::string(kSettle), {}};
  Script release_{"release", std::string(kPrelude) + std::string(kRelease), {}};
  Script balance_{"balance", std::string(kPrelude) + std::string(kBalance), {}};
};

}  // namespace

std::unique_ptr<LedgerStore> open_redis_ledger(const config::StoreConfig& store) {
  return std::make_unique<RedisLedger>(store);
}

std::unique_ptr<LedgerStore> open_redis_ledger(const std::string& url) {
  config::StoreConfig store;
  store.url = url;
  return open_redis_ledger(store);
}

}  // namespace tresor::accounts
