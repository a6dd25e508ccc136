// Identifiers we generate: receipt ids (time-ordered UUIDs) and request ids.
#pragma once

#include <string>
#include <string_view>

namespace tresor::common {

// A fresh time-ordered (v7, RFC 9562) UUID: the receipt id and the JWS's jti. 48 bits of
// Unix milliseconds, then 74 random bits. Time order makes the store's inserts land at
// the right edge of its B-tree (a few pages written per group commit instead of one
// random page per receipt); the random part keeps ids unguessable.
std::string new_receipt_id();
// A fresh random (v4) UUID, e.g. a generated X-Request-Id.
std::string new_random_uuid();
// Any lowercase 8-4-4-4-12 hex UUID (older receipts are v4).
bool is_receipt_id(std::string_view id);

// X-Request-Id as the client sent it when it is 1..128 characters of [A-Za-z0-9._:-];
// otherwise a new random (v4) UUID.
std::string request_id_from(std::string_view header);

}  // namespace tresor::common
