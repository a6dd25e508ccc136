// X-Tresor-Hedge-After-Ms (issue 18, spec18 "Config"): an integer 0..600000 sent once;
// 0 turns hedging off for the request; anything else is 400 invalid_hedge_override.
// Read through check_control_headers, as the endpoints do.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "config/config.h"
#include "server/endpoint_support.h"
#include "server/http_types.h"
#include "server/runtime.h"

using tresor::server::ApiError;
using tresor::server::ControlHeaders;
using tresor::server::RequestHead;

namespace {

std::variant<ControlHeaders, ApiError> controls(const tresor::server::HeaderList& headers) {
  static const tresor::server::Runtime rt(tresor::config::load_config_text("{}", "hedge.yaml"));
  RequestHead head;
  head.method = "POST";
  head.target = "/v1/chat/completions";
  head.headers = headers;
  return tresor::server::check_control_headers(rt, head, nullptr);
}

std::optional<unsigned> hedge_of(const std::string& value) {
  const auto got = controls({{"X-Tresor-Hedge-After-Ms", value}});
  REQUIRE(std::holds_alternative<ControlHeaders>(got));
  return std::get<ControlHeaders>(got).hedge_after_ms;
}

}  // namespace

TEST_CASE("hedge header: absent → none; digits 0..600000 → that many ms", "[hedge][control_headers]") {
  const auto none = controls({{"X-Tresor-Timeout-Seconds", "30"}});
  REQUIRE(std::holds_alternative<ControlHeaders>(none));
  CHECK_FALSE(std::get<ControlHeaders>(none).hedge_after_ms.has_value());
  CHECK(hedge_of("0") == std::optional<unsigned>(0));  // hedging off for this request
  CHECK(hedge_of("1") == std::optional<unsigned>(1));
  CHECK(hedge_of("250") == std::optional<unsigned>(250));
  CHECK(hedge_of("600000") == std::optional<unsigned>(600000));
  CHECK(hedge_of("000250") == std::optional<unsigned>(250));
  // Header names are case-insensitive.
  const auto lower = controls({{"x-tresor-hedge-after-ms", "75"}});
  REQUIRE(std::holds_alternative<ControlHeaders>(lower));
  CHECK(std::get<ControlHeaders>(lower).hedge_after_ms == std::optional<unsigned>(75));
}

TEST_CASE("hedge header: anything else is 400 invalid_hedge_override naming the header", "[hedge][control_headers]") {
  const std::vector<tresor::server::HeaderList> bad = {
      {{"X-Tresor-Hedge-After-Ms", "600001"}},
      {{"X-Tresor-Hedge-After-Ms", "999999"}},
      {{"X-Tresor-Hedge-After-Ms", "1000000"}},
      {{"X-Tresor-Hedge-After-Ms", "99999999999999999999"}},
      {{"X-Tresor-Hedge-After-Ms", "-1"}},
      {{"X-Tresor-Hedge-After-Ms", "+5"}},
      {{"X-Tresor-Hedge-After-Ms", "1.5"}},
      {{"X-Tresor-Hedge-After-Ms", "1e3"}},
      {{"X-Tresor-Hedge-After-Ms", "0x10"}},
      {{"X-Tresor-Hedge-After-Ms", "abc"}},
      {{"X-Tresor-Hedge-After-Ms", ""}},
      {{"X-Tresor-Hedge-After-Ms", " 5"}},
      {{"X-Tresor-Hedge-After-Ms", "5 "}},
      {{"X-Tresor-Hedge-After-Ms", "5,6"}},
      {{"X-Tresor-Hedge-After-Ms", "5"}, {"X-Tresor-Hedge-After-Ms", "5"}},  // sent twice, even alike
      {{"X-Tresor-Hedge-After-Ms", "5"}, {"x-tresor-hedge-after-ms", "0"}},
  };
  for (const auto& headers : bad) {
    std::string shown;
    for (const auto& [name, value] : headers) shown += name + ": '" + value + "' ";
    INFO(shown);
    const auto got = controls(headers);
    REQUIRE(std::holds_alternative<ApiError>(got));
    const ApiError& e = std::get<ApiError>(got);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.code == "invalid_hedge_override");
    CHECK(e.param == std::optional<std::string>("X-Tresor-Hedge-After-Ms"));
  }
}
