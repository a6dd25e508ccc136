// GET /v1/models (spec §1.3): the routes table as OpenAI's model list. No auth. Filters
// `region`, `provider`, `type` match exactly (an unknown value gives an empty list);
// `detail=true|1` adds the `tresor` block with pricing.
// GET /v1/models/{id} (the SDKs' models.retrieve): one element of that list.
#pragma once

#include <cstdint>
#include <string_view>

#include "config/config.h"
#include "server/http_types.h"

namespace tresor::server {

// `query` is the target's query string without '?'. `created` is when this config was
// loaded (unix seconds): the routes exist since then.
Response models_response(const config::Config& cfg, std::string_view query, int64_t created);

// `encoded_id` is the path after `/v1/models/`: the route id with its slashes as sent
// (`eu/prova/m1`) or percent-encoded (`eu%2Fprova%2Fm1`, what the SDKs send). The model
// object (`detail=true|1` in `query` adds the `tresor` block), or 404 model_not_found.
Response model_response(const config::Config& cfg, std::string_view encoded_id, std::string_view query,
                        int64_t created);

}  // namespace tresor::server
