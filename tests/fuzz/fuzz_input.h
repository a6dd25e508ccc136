// Helpers shared by the fuzz targets: the fuzzer's bytes as a string, and a way to cut
// them into pieces at points the input itself chooses, so that chunk boundaries (a
// delimiter or a CRLF split across two socket reads) are fuzzed along with the content.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string_view>
#include <vector>

namespace tresor::fuzz {

// Takes the first byte of `in` (0 when empty) and advances past it.
inline uint8_t take_byte(std::string_view& in) {
  if (in.empty()) return 0;
  const auto b = static_cast<uint8_t>(in.front());
  in.remove_prefix(1);
  return b;
}

// Splits `in` into consecutive pieces whose sizes cycle through `sizes` (0 = an empty
// piece, which parsers must also accept). The pieces cover `in` exactly, in order.
inline std::vector<std::string_view> split_cyclic(std::string_view in, const std::vector<size_t>& sizes) {
  std::vector<std::string_view> pieces;
  if (sizes.empty()) {
    pieces.push_back(in);
    return pieces;
  }
  size_t i = 0;
  size_t empties = 0;
  while (!in.empty()) {
    const size_t n = sizes[i++ % sizes.size()];
    if (n == 0 && ++empties > 64) {  // all-zero sizes: do not loop for ever
      pieces.push_back(in);
      break;
    }
    pieces.push_back(in.substr(0, n));
    in.remove_prefix(std::min(n, in.size()));
  }
  return pieces;
}

// Reads a split plan from the front of `in`: one byte k (0..3 sizes follow), then k
// bytes, each a piece size 0..255; `in` is advanced past the plan.
inline std::vector<size_t> take_split_plan(std::string_view& in) {
  const size_t k = take_byte(in) % 4;
  std::vector<size_t> sizes;
  for (size_t j = 0; j < k; ++j) sizes.push_back(take_byte(in));
  return sizes;
}

// A property the code under test must keep: abort() so both libFuzzer and the replay
// runner report the input.
#define FUZZ_CHECK(cond)                                                                         \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond);         \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)

}  // namespace tresor::fuzz
