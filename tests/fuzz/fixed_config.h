// The small fixed config the route and request targets resolve against: two regions,
// three providers, chat and transcription routes, a key with a customer (its key is kFixedKey).
#pragma once

#include <memory>

#include "config/config.h"

namespace tresor::fuzz {

// The one client key of fixed_config(): its SHA-256 is the config's auth.keys[0].sha256.
inline constexpr const char* kFixedKey =
    "tr-abababababababababababababababababababababababababababababababababababababababababababababababab";

inline const config::Config& fixed_config() {
  static const std::shared_ptr<const config::Config> cfg = config::load_config_text(R"(
providers:
  pm: {base_url: "http://127.0.0.1:1/v1", api_key: "sk-canary-provider"}
  tf: {base_url: "http://127.0.0.1:2/v1"}
  ch: {base_url: "http://127.0.0.1:3/v1"}
routes:
  - {id: "eu/privatemode/gpt-oss-120b", provider: pm, upstream_model: "openai/gpt-oss-120b"}
  - {id: "global/tinfoil/gpt-oss-120b", provider: tf, upstream_model: "gpt-oss-120b"}
  - {id: "EU/Tinfoil/gpt-oss-120b", provider: tf, upstream_model: "gpt-oss-120b-eu"}
  - {id: "global/chutes/kimi-k2.6", provider: ch, upstream_model: "kimi"}
  - {id: "eu/privatemode/Kimi-Big", provider: pm, upstream_model: "kimi-big"}
  - {id: "eu/privatemode/whisper-large-v3", provider: pm, upstream_model: "whisper", type: transcription}
  - {id: "global/tinfoil/dual", provider: tf, upstream_model: "dual-chat"}
  - {id: "eu/tinfoil/dual", provider: tf, upstream_model: "dual-audio", type: transcription}
auth:
  keys:
    - {sha256: "dcef1310c3d5e1b1e4aba898aa994323a14325670c5a62f1cf4629dac5a1737d", customer: acme}
  customers:
    acme: {credit: 10, currency: EUR}
)",
                                                                                      "fuzz-fixed.yaml");
  return *cfg;
}

}  // namespace tresor::fuzz
