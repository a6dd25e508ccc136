// What a request runs against: one immutable config snapshot plus the objects derived
// from it (key index, provider TLS contexts). Swapped atomically as a whole on reload;
// a request keeps the snapshot it started with.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>

#include "config/config.h"
#include "providers/upstream_client.h"
#include "server/auth.h"

namespace tresor::server {

struct Runtime {
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<const providers::ProviderSet> providers;
  KeyIndex keys;
  std::chrono::system_clock::time_point loaded_at;  // /v1/models' `created`

  explicit Runtime(std::shared_ptr<const config::Config> cfg)
      : config(cfg),
        providers(std::make_shared<providers::ProviderSet>(*cfg)),
        keys(*cfg),
        loaded_at(std::chrono::system_clock::now()) {}
};

// The one holder of the current snapshot (the only singleton-like object besides the
// metrics registry; passed by reference, not global).
class RuntimeHolder {
 public:
  explicit RuntimeHolder(std::shared_ptr<const Runtime> initial) : current_(std::move(initial)) {}
  std::shared_ptr<const Runtime> current() const { return current_.load(std::memory_order_acquire); }
  void replace(std::shared_ptr<const Runtime> next) { current_.store(std::move(next), std::memory_order_release); }

 private:
  std::atomic<std::shared_ptr<const Runtime>> current_;
};

}  // namespace tresor::server
