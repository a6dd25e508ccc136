// The SQLite store's credit spend (what /v1/usage and the 402 check read after a restart)
// and what it does with a file that is not a receipt database.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "receipts/store.h"

using tresor::receipts::open_sqlite_store;
using tresor::receipts::SpendEntry;

namespace fs = std::filesystem;

namespace {

class TempDir : public tresor::test::TempDir {
 public:
  TempDir() : tresor::test::TempDir("tresor-spend-") {}
};


double spend_of(const std::vector<SpendEntry>& v, const std::string& customer, const std::string& route) {
  const auto it = std::find_if(v.begin(), v.end(), [&](const SpendEntry& e) {
    return e.customer == customer && e.route == route;
  });
  return it == v.end() ? -1 : it->amount;
}

}  // namespace

TEST_CASE("sqlite store: spend accumulates per customer and route and survives reopening", "[receipts]") {
  TempDir dir;
  const auto path = dir.file("r.db");
  {
    auto store = open_sqlite_store(path);
    CHECK(store->load_spend().empty());
    CHECK(store->add_spend({}));
    REQUIRE(store->add_spend({{"acme", "eu/pm/a", 1.5}, {"acme", "eu/pm/b", 2.0}, {"beta", "eu/pm/a", 0.25}}));
    REQUIRE(store->add_spend({{"acme", "eu/pm/a", 1.0}}));
    const auto spend = store->load_spend();
    CHECK(spend.size() == 3);
    CHECK(spend_of(spend, "acme", "eu/pm/a") == Approx(2.5));
  }
  const auto reopened = open_sqlite_store(path)->load_spend();
  CHECK(reopened.size() == 3);
  CHECK(spend_of(reopened, "acme", "eu/pm/a") == Approx(2.5));
  CHECK(spend_of(reopened, "acme", "eu/pm/b") == Approx(2.0));
  CHECK(spend_of(reopened, "beta", "eu/pm/a") == Approx(0.25));
}

TEST_CASE("sqlite store: a file that is not a database is refused at open, naming the path", "[receipts]") {
  TempDir dir;
  const auto path = dir.file("not-a-db");
  std::ofstream(path) << std::string(4096, 'x');
  try {
    open_sqlite_store(path);
    FAIL("opening a garbage file should throw");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("not a database") != std::string::npos);
  }
  // The file is left as it was: a wrong path must not destroy someone's data.
  CHECK(fs::file_size(path) == 4096);
}
