// POST /v1/audio/transcriptions (spec §7): validate the spooled upload → resolve the
// automatic candidates over transcription routes → failover loop, each attempt sending a
// fresh multipart body streamed from the spool → JSON (tresor object, normalised usage)
// or plain text, with the route and receipt also in X-Tresor-* headers.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "server/endpoint_support.h"
#include "server/http_types.h"
#include "server/runtime.h"
#include "server/transcription_request.h"

namespace tresor::server {

inline constexpr std::string_view kTranscriptionsPath = "/v1/audio/transcriptions";

// `upload` has finished without error. `started` is when it did: the budget counts from
// there (the upload's own pace is bounded by server.body_timeout_seconds and
// server.min_body_bytes_per_second).
boost::asio::awaitable<void> handle_transcription(const Runtime& rt, EndpointServices services,
                                                  const ControlHeaders& head, const TranscriptionUpload& upload,
                                                  providers::Clock::time_point started, ResponseSink& sink);

}  // namespace tresor::server
