#include "server/http_types.h"

#include <boost/beast/core/string.hpp>

namespace tresor::server {

std::vector<std::string_view> RequestHead::values(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : headers)
    if (boost::beast::iequals(k, name)) out.emplace_back(v);
  return out;
}

std::string_view RequestHead::value(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (boost::beast::iequals(k, name)) return v;
  return {};
}

}  // namespace tresor::server
