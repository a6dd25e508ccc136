// What providers/ accepts as an answer (issue: answers validated before they count): a 200
// whose body is an error object, or has no choices/text, is a failure, never a success
// with a receipt; "error": null is not an error; missing id/object/created/model are
// filled in for the SDKs.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "providers/exchange.h"
#include "router/failover.h"

using tresor::common::TransportError;
using tresor::providers::ChatAnswer;
using tresor::providers::TranscriptAnswer;
using tresor::providers::UpstreamFailure;
using tresor::providers::validate_chat_answer;
using tresor::providers::validate_transcript;

namespace {

const char* kComplete =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m-up",)"
    R"("choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}})";

bool is_bad_response(const std::variant<ChatAnswer, UpstreamFailure>& v) {
  const auto* f = std::get_if<UpstreamFailure>(&v);
  return f && f->kind == UpstreamFailure::Kind::bad_response;
}

}  // namespace

TEST_CASE("chat answer: a complete answer passes byte for byte with its usage") {
  const auto v = validate_chat_answer(kComplete, "m-route");
  REQUIRE(std::holds_alternative<ChatAnswer>(v));
  const auto& a = std::get<ChatAnswer>(v);
  CHECK(a.body == kComplete);
  CHECK(a.usage.prompt_tokens == 3);
  CHECK(a.usage.completion_tokens == 5);
}

TEST_CASE("chat answer: an error object inside a 200 is bad_response; error null is not") {
  CHECK(is_bad_response(validate_chat_answer(R"({"error":{"message":"overloaded","code":"x"}})", "m")));
  CHECK(is_bad_response(validate_chat_answer(R"({"error":"boom","choices":[]})", "m")));
  std::string with_null = kComplete;
  with_null.insert(1, R"("error":null,)");
  const auto v = validate_chat_answer(with_null, "m");
  REQUIRE(std::holds_alternative<ChatAnswer>(v));
  CHECK(std::get<ChatAnswer>(v).body == with_null);
}

TEST_CASE("chat answer: not an object, or no choices array, is bad_response") {
  for (const char* body : {"", "[]", "null", "{", R"({"id":"x"})", R"({"choices":{}})", R"({"choices":null})"})
    CHECK(is_bad_response(validate_chat_answer(body, "m")));
}

TEST_CASE("chat answer: missing id, object, created and model are filled in") {
  const auto v = validate_chat_answer(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}]})", "up/model");
  REQUIRE(std::holds_alternative<ChatAnswer>(v));
  const auto o = boost::json::parse(std::get<ChatAnswer>(v).body).as_object();
  CHECK(o.at("id").as_string().starts_with("chatcmpl-"));
  CHECK(o.at("object").as_string() == "chat.completion");
  CHECK(o.at("created").as_int64() > 1700000000);
  CHECK(o.at("model").as_string() == "up/model");
  CHECK(o.at("choices").as_array().size() == 1);
}

TEST_CASE("transcript: text required, error object refused, usage variants read") {
  const auto bad = [](const char* body) {
    const auto v = validate_transcript(body);
    const auto* f = std::get_if<UpstreamFailure>(&v);
    return f && f->kind == UpstreamFailure::Kind::bad_response;
  };
  CHECK(bad(R"({"error":{"message":"no"}})"));
  CHECK(bad(R"({"duration":3})"));
  CHECK(bad(R"({"text":42})"));
  CHECK(bad("text"));
  const auto tokens = validate_transcript(R"({"text":"hi","error":null,"usage":{"type":"tokens","input_tokens":4,"output_tokens":2}})");
  REQUIRE(std::holds_alternative<TranscriptAnswer>(tokens));
  CHECK(std::get<TranscriptAnswer>(tokens).token_usage);
  CHECK(std::get<TranscriptAnswer>(tokens).input_tokens == 4);
  const auto seconds = validate_transcript(R"({"text":"hi","duration":2.5})");
  REQUIRE(std::holds_alternative<TranscriptAnswer>(seconds));
  CHECK(std::get<TranscriptAnswer>(seconds).seconds == 2.5);
  CHECK(std::get<TranscriptAnswer>(seconds).text == "hi");
}

TEST_CASE("router: attempt_result says which timer fired and what a failure is") {
  using tresor::router::AttemptOutcome;
  using tresor::router::attempt_result;
  const auto now = tresor::router::Clock::now();
  tresor::router::AttemptPlan plan;
  plan.first_byte_deadline = tresor::common::Deadline(now - std::chrono::seconds(1));
  plan.request_deadline = tresor::common::Deadline(now + std::chrono::seconds(10));
  UpstreamFailure f;
  f.transport = TransportError::timeout;
  CHECK(attempt_result(f, plan, true, now).outcome == AttemptOutcome::first_event_timeout);
  CHECK(attempt_result(f, plan, false, now).outcome == AttemptOutcome::first_byte_timeout);
  f.before_first_byte = false;  // mid-answer: the request's budget is what counts
  CHECK(attempt_result(f, plan, false, now).outcome == AttemptOutcome::deadline);
  f.before_first_byte = true;
  CHECK(attempt_result(f, plan, false, now + std::chrono::seconds(11)).outcome == AttemptOutcome::deadline);
  f.transport = TransportError::cut;
  CHECK(attempt_result(f, plan, false, now).outcome == AttemptOutcome::reset);
  f.transport = TransportError::protocol;
  CHECK(attempt_result(f, plan, false, now).outcome == AttemptOutcome::bad_response);
  f.transport = TransportError::connect_failed;
  CHECK(attempt_result(f, plan, false, now).outcome == AttemptOutcome::connect_failed);
  UpstreamFailure refused;
  refused.kind = UpstreamFailure::Kind::http_status;
  refused.http_status = 429;
  refused.error_code = "rate_limit";
  refused.retry_after = std::chrono::seconds(3);
  const auto r = attempt_result(refused, plan, false, now);
  CHECK(r.outcome == AttemptOutcome::http_status);
  CHECK(r.http_status == 429);
  CHECK(r.upstream_error_code == "rate_limit");
  CHECK(r.retry_after == std::chrono::seconds(3));
  UpstreamFailure bad;
  bad.kind = UpstreamFailure::Kind::bad_response;
  CHECK(attempt_result(bad, plan, true, now).outcome == AttemptOutcome::bad_response);
}
