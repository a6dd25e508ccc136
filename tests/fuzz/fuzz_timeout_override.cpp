// X-Tresor-Timeout-Seconds (router/timeout_override.h).
// Input: byte 0 picks max_seconds (1..256, or 600 as configured by default), then the
// header values separated by '\n' (several lines = the header sent several times).
// Properties: an accepted budget is within 1..max_seconds; a repeated header is refused.
#include <string_view>
#include <vector>

#include "router/timeout_override.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t m = tresor::fuzz::take_byte(in);
  const unsigned max_seconds = m == 0 ? 600 : m;
  const unsigned default_seconds = max_seconds < 180 ? max_seconds : 180;
  std::vector<std::string_view> values;
  while (!in.empty()) {
    const size_t nl = in.find('\n');
    values.push_back(in.substr(0, nl));
    in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  }
  const auto budget = tresor::router::parse_timeout_override(values, default_seconds, max_seconds);
  if (values.empty()) FUZZ_CHECK(budget && budget->count() == default_seconds);
  if (values.size() > 1) FUZZ_CHECK(!budget);
  if (budget) FUZZ_CHECK(budget->count() >= 1 && budget->count() <= max_seconds);
  return 0;
}
