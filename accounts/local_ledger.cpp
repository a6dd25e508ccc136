// The ledger of one replica: everything in memory under one mutex, which makes each step
// atomic. Holds die with the process (a restart has no request in flight), settlements
// are made durable by the Accounts service through the SpendLog and read back at start-up.
#include <mutex>
#include <unordered_map>

#include "accounts/ledger.h"

namespace tresor::accounts {
namespace {

// Expired counters and holds are swept at most this often (each sweep walks the maps).
constexpr int64_t kSweepEverySeconds = 5;

class LocalLedger final : public LedgerStore {
 public:
  explicit LocalLedger(const std::map<std::string, Balance>& persisted) : accounts_(persisted.begin(), persisted.end()) {
    for (auto& [customer, balance] : accounts_) balance.reserved = 0;
  }

  bool shared() const override { return false; }

  Decision count(const CountRequest& request) override {
    std::lock_guard lock(mutex_);
    sweep(request.now);
    Decision d;
    if (request.credit) {
      const Balance& b = accounts_[request.customer];
      d.available = *request.credit - b.spent - b.reserved;
      if (d.available <= 0) {
        d.verdict = Verdict::over_credit;
        return d;
      }
    }
    draw(request.windows, request.now, d);
    return d;
  }

  Decision hold(const Hold& hold) override {
    std::lock_guard lock(mutex_);
    sweep(hold.now);
    Decision d;
    Balance& b = accounts_[hold.customer];
    if (hold.credit) {
      d.available = *hold.credit - b.spent - b.reserved;
      if (hold.amount > d.available) {
        d.verdict = Verdict::over_credit;
        return d;
      }
    }
    if (!draw(hold.windows, hold.now, d)) return d;
    HoldRecord record{hold.customer, hold.credit ? hold.amount : 0, {}, hold.expires_at};
    for (const auto& w : hold.windows) record.windows.emplace_back(w.counter, w.amount);
    b.reserved += record.amount;
    holds_[hold.request_id] = std::move(record);
    return d;
  }

  bool settle(const Settlement& s) override {
    std::lock_guard lock(mutex_);
    if (const auto it = holds_.find(s.request_id); it != holds_.end()) {
      for (const auto& [counter, held] : it->second.windows) {
        int64_t actual = 0;
        for (const auto& w : s.windows)
          if (w.counter == counter) actual = w.amount;
        move_counter(counter, actual - held);
      }
      accounts_[it->second.customer].reserved -= it->second.amount;
      holds_.erase(it);
    } else {
      // No hold (expired and given back, or never made): the actual tokens are drawn all
      // the same, as the Redis ledger does, on the counters that still exist.
      for (const auto& w : s.windows) move_counter(w.counter, w.amount);
    }
    Balance& b = accounts_[s.customer];
    b.spent += s.cost;
    auto& route = b.by_route[s.route];
    auto& day = b.by_day[s.day];
    route.amount += s.cost;
    day.amount += s.cost;
    if (s.estimated) {
      b.estimated += s.cost;
      route.estimated += s.cost;
      day.estimated += s.cost;
    }
    return true;
  }

  void release(const std::string& /*customer*/, const std::string& request_id) override {
    std::lock_guard lock(mutex_);
    if (const auto it = holds_.find(request_id); it != holds_.end()) give_back(it);
  }

  std::optional<Balance> balance(const std::string& customer, int64_t now) override {
    std::lock_guard lock(mutex_);
    sweep(now);
    if (const auto it = accounts_.find(customer); it != accounts_.end()) return it->second;
    return Balance{};
  }

 private:
  struct HoldRecord {
    std::string customer;
    Nanos amount = 0;
    std::vector<std::pair<std::string, int64_t>> windows;  // counter, amount drawn
    int64_t expires_at = 0;
  };
  struct Counter {
    int64_t value = 0;
    int64_t expires_at = 0;
  };
  using Holds = std::unordered_map<std::string, HoldRecord>;

  // All or nothing: every window takes its amount, or none does (d says which refused).
  bool draw(const std::vector<WindowDraw>& windows, int64_t now, Decision& d) {
    d.used.clear();
    for (size_t i = 0; i < windows.size(); ++i) {
      const auto& w = windows[i];
      const auto it = counters_.find(w.counter);
      const int64_t used = it == counters_.end() || it->second.expires_at <= now ? 0 : it->second.value;
      if (used + w.amount > w.limit) {
        d.verdict = Verdict::over_window;
        d.window = i;
        d.used.clear();
        for (const auto& v : windows) d.used.push_back(current(v.counter, now));
        return false;
      }
      d.used.push_back(used + w.amount);
    }
    for (const auto& w : windows) {
      auto& c = counters_[w.counter];
      if (c.expires_at <= now) c = Counter{0, now + w.ttl_seconds};
      c.value += w.amount;
    }
    return true;
  }

  int64_t current(const std::string& counter, int64_t now) const {
    const auto it = counters_.find(counter);
    return it == counters_.end() || it->second.expires_at <= now ? 0 : it->second.value;
  }

  // A counter that expired (its window is over) is left alone.
  void move_counter(const std::string& counter, int64_t delta) {
    if (const auto it = counters_.find(counter); it != counters_.end()) it->second.value += delta;
  }

  void give_back(Holds::iterator it) {
    for (const auto& [counter, held] : it->second.windows) move_counter(counter, -held);
    accounts_[it->second.customer].reserved -= it->second.amount;
    holds_.erase(it);
  }

  void sweep(int64_t now) {
    if (now < next_sweep_) return;
    next_sweep_ = now + kSweepEverySeconds;
    for (auto it = holds_.begin(); it != holds_.end();) {
      auto next = std::next(it);
      if (it->second.expires_at <= now) give_back(it);
      it = next;
    }
    std::erase_if(counters_, [now](const auto& kv) { return kv.second.expires_at <= now; });
  }

  std::mutex mutex_;
  std::unordered_map<std::string, Balance> accounts_;
  std::unordered_map<std::string, Counter> counters_;
  Holds holds_;
  int64_t next_sweep_ = 0;
};

}  // namespace

std::unique_ptr<LedgerStore> open_local_ledger(const std::map<std::string, Balance>& persisted) {
  return std::make_unique<LocalLedger>(persisted);
}

}  // namespace tresor::accounts
