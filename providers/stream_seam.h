// Continuing a client's chat stream from another attempt without splicing two answers
// (issue 18, spec §1.1). Pure: no I/O, no clock; the server feeds it the chunks as the
// client gets them (ChatChunk::json: choice 0 only, with id/created/model filled in).
//
// DeliveredAnswer keeps what the client has of the answer: its generated text per field.
// StreamSeam takes the chunks of the attempt that continues the stream:
// - replay (the original request again): the new text must reproduce what the client has,
//   field by field, as an exact prefix; only what goes beyond it is forwarded, and any
//   difference is `diverged` (the caller ends the stream with the in-band error);
// - prefill (the request with the delivered text as a trailing assistant message): the new
//   text is the continuation, forwarded as it comes.
// Either way every forwarded chunk carries the first attempt's id, created and model, so
// the seam is invisible to an SDK. Memory: the delivered text plus the chunk at hand.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace tresor::providers {

class DeliveredAnswer {
 public:
  // Notes a chunk as it goes to the client (after any rewrite).
  void note(std::string_view chunk_json);

  bool finished() const { return finished_; }  // a finish_reason reached the client
  uint64_t text_bytes() const;                 // generated text the client has, every field
  // The client has only `content` text (no reasoning, refusal or tool call): what a prefill
  // continuation can express as an assistant message.
  bool plain_content() const;
  std::string content() const;

 private:
  friend class StreamSeam;
  // "content", "reasoning_content", "reasoning", "refusal", "tool_calls.<i>.name",
  // "tool_calls.<i>.arguments", "function_call.name", "function_call.arguments".
  std::map<std::string, std::string> text_;
  std::set<int64_t> tool_calls_;  // tool-call indexes whose first delta (with its id) was sent
  bool finished_ = false;
  // The first chunk's id, created and model, as minified JSON values.
  std::string id_, created_, model_;
};

class StreamSeam {
 public:
  enum class Mode { replay, prefill };
  enum class Verdict {
    drop,      // the client has all of it
    forward,   // the chunk (rewritten to what the client lacks) goes to the client
    diverged,  // the new text differs from what the client has: stop, never splice
  };

  // `delivered` must outlive the seam and stay unchanged while chunks are accepted
  // (the caller notes forwarded chunks into it only once caught_up()).
  StreamSeam(const DeliveredAnswer& delivered, Mode mode);

  // Takes one chunk of the continuing attempt; on `forward`, `chunk_json` is what the
  // client gets.
  Verdict accept(std::string& chunk_json);
  // A chunk the gateway writes itself (the tresor carrier), with the first attempt's
  // identity.
  std::string with_identity(std::string_view chunk_json) const;
  // The new attempt has reproduced everything the client had and gone beyond it.
  bool caught_up() const { return caught_up_; }

 private:
  bool covered() const;

  const DeliveredAnswer& delivered_;
  std::map<std::string, uint64_t> seen_;  // bytes of each field the new attempt produced
  bool caught_up_ = false;
};

}  // namespace tresor::providers
