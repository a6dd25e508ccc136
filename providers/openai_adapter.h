// The OpenAI-compatible adapter: what goes on the wire to an upstream chat endpoint.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/json_members.h"

namespace tresor::providers {

using common::JsonMember;  // one member of the client's object, raw bytes

// The members the router consumes and never forwards (spec §1.1, Tresor-only fields).
bool is_tresor_only_field(std::string_view key);

// Body for POST {base_url}/chat/completions: every member of the client's object in
// order and byte-for-byte, except `model` (replaced by `upstream_model`) and the
// Tresor-only fields (dropped). Only whitespace between members changes. A non-empty
// `stream_options` replaces the client's member of that name (or is added at the end):
// streams always ask the upstream for usage, so that every stream can be billed.
std::string build_chat_body(const std::vector<JsonMember>& members, std::string_view upstream_model,
                            std::string_view stream_options = {});

// A prefill continuation (issue 18): build_chat_body with one more message at the end of
// `messages`, {"role":"assistant","content":<assistant_text>}, asking the upstream to
// continue that text. `continue_final_message` also sets vLLM's
// "continue_final_message": true and "add_generation_prompt": false (replacing the
// client's members of those names).
std::string build_prefill_body(const std::vector<JsonMember>& members, std::string_view upstream_model,
                               std::string_view stream_options, std::string_view assistant_text,
                               bool continue_final_message);

// The path appended to a provider's base_url for chat completions.
inline constexpr std::string_view kChatCompletionsPath = "/chat/completions";

}  // namespace tresor::providers
