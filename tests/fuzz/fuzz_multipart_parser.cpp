// The multipart/form-data upload parser (server/multipart_parser.h), with its
// Content-Type boundary extraction.
// Input: a split plan (see fuzz_input.h), byte L picking small limits, then the request
// Content-Type up to the first '\n', then the body.
// Properties: events nest (begin, data..., end); file data is never accumulated (the
// lookbehind stays shorter than the delimiter); a field never exceeds max_field_bytes;
// and cutting the body into pieces changes nothing: same parts, same bytes (but see
// FieldTooLong below), same verdict.
#include <string>
#include <vector>

#include "server/multipart_parser.h"
#include "tests/fuzz/fuzz_input.h"

using namespace tresor::server;

namespace {

struct Recorder final : MultipartHandler {
  explicit Recorder(size_t max_field_bytes) : max_field_bytes(max_field_bytes) {}
  void on_part_begin(const PartHeaders& h) override {
    FUZZ_CHECK(!in_part);
    FUZZ_CHECK(!h.name.empty());
    in_part = true;
    is_file = h.filename.has_value();
    log += "begin:" + h.name + "|" + h.filename.value_or("<none>") + "|" + h.content_type + "\n";
    part_bytes = 0;
  }
  void on_part_data(std::string_view bytes) override {
    FUZZ_CHECK(in_part);
    part_bytes += bytes.size();
    if (!is_file) FUZZ_CHECK(part_bytes <= max_field_bytes);
    data += bytes;  // compared across splits (pieces may differ, the bytes may not)
  }
  void on_part_end() override {
    FUZZ_CHECK(in_part);
    in_part = false;
    log += "end:" + std::to_string(data.size()) + "\n";
  }
  size_t max_field_bytes;
  bool in_part = false;
  bool is_file = false;
  size_t part_bytes = 0;
  std::string log;
  std::string data;
};

struct Outcome {
  std::string log;
  std::string data;
  bool ok = false;
  std::optional<MultipartError> error;
  size_t parts = 0;
};

Outcome run(const std::string& boundary, const MultipartLimits& limits, const std::vector<std::string_view>& pieces) {
  Recorder rec(limits.max_field_bytes);
  MultipartParser parser(boundary, rec, limits);
  for (const auto piece : pieces) {
    if (!parser.feed(piece)) break;
    // Only a partial delimiter is ever held back, never file data.
    FUZZ_CHECK(parser.peak_lookbehind_bytes() < parser.delimiter_size());
  }
  Outcome out;
  out.ok = parser.finish();
  FUZZ_CHECK(out.ok == !parser.error().has_value());
  if (parser.error()) out.error = parser.error()->code;
  FUZZ_CHECK(parser.parts() <= limits.max_parts);
  out.log = std::move(rec.log);
  out.data = std::move(rec.data);
  out.parts = parser.parts();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto plan = tresor::fuzz::take_split_plan(in);
  const uint8_t l = tresor::fuzz::take_byte(in);
  MultipartLimits limits;
  if (l & 1) {  // small limits, to reach their error paths with short inputs
    limits.max_header_bytes = 16 + (l >> 1);
    limits.max_parts = 1 + (l >> 5);
    limits.max_field_bytes = (l >> 2);
  }
  const size_t nl = in.find('\n');
  const std::string_view content_type = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);

  const auto boundary = boundary_from_content_type(content_type);
  if (!boundary) return 0;
  FUZZ_CHECK(!boundary->empty() && boundary->size() <= 70);

  const Outcome whole = run(*boundary, limits, {in});
  const Outcome split = run(*boundary, limits, tresor::fuzz::split_cyclic(in, plan));
  FUZZ_CHECK(whole.ok == split.ok);
  FUZZ_CHECK(whole.error == split.error);
  FUZZ_CHECK(whole.parts == split.parts);
  FUZZ_CHECK(whole.log == split.log);
  // Over max_field_bytes, a piece that would cross the limit is refused whole, so how much
  // of the failing field was delivered first depends on the cut (harmless: the upload is
  // refused). Everything else must be the same bytes.
  if (whole.error != MultipartError::FieldTooLong) FUZZ_CHECK(whole.data == split.data);
  return 0;
}
