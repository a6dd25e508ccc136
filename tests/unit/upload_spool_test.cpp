// The upload spool: small uploads in memory, large ones in an anonymous file that never
// has a name in the directory, a streaming SHA-256, a hard cap, and replayable readers.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "server/upload_spool.h"

using tresor::server::open_unlinked_temp_file;
using tresor::server::UploadSpool;

namespace {

namespace fs = std::filesystem;

// A private directory per test, so "no new entries" is not disturbed by other processes.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "tresor-spool-test-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  size_t entries() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(path), fs::directory_iterator()));
  }
};

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(byte(rng));
  return s;
}

void append_in_pieces(UploadSpool& spool, std::string_view data, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> len(1, 20000);
  while (!data.empty()) {
    const size_t n = std::min(len(rng), data.size());
    REQUIRE(spool.append(data.substr(0, n)));
    data.remove_prefix(n);
  }
}

std::string read_all(UploadSpool::Reader reader, size_t chunk) {
  std::string out;
  std::vector<char> buf(chunk);
  while (size_t n = reader.read(buf.data(), buf.size())) out.append(buf.data(), n);
  return out;
}

}  // namespace

TEST_CASE("spool: an upload below the threshold stays in memory", "[multipart]") {
  TempDir dir;
  const std::string data = random_bytes(1000, 1);
  UploadSpool spool(1 << 20, 1024, dir.path);
  append_in_pieces(spool, data, 2);
  REQUIRE(spool.append(std::string(24, 'x')));  // exactly at the threshold: still memory
  spool.seal();
  CHECK_FALSE(spool.on_disk());
  CHECK(dir.entries() == 0);
  CHECK(spool.size() == 1024);
  const std::string all = data + std::string(24, 'x');
  CHECK(read_all(spool.reader(), 100) == all);
  CHECK(read_all(spool.reader(), 1) == all);  // readers are replayable
}

TEST_CASE("spool: an upload above the threshold goes to a nameless file", "[multipart]") {
  TempDir dir;
  const std::string data = random_bytes(300 * 1024, 3);
  {
    UploadSpool spool(1 << 20, 64 * 1024, dir.path);
    append_in_pieces(spool, data, 4);
    CHECK(spool.on_disk());
    CHECK(dir.entries() == 0);
    spool.seal();
    CHECK_FALSE(spool.append("x"));  // sealed
    CHECK(spool.size() == data.size());
    CHECK(read_all(spool.reader(), 4096) == data);

    // Interleaved readers on one thread keep their own offsets.
    auto a = spool.reader();
    auto b = spool.reader();
    std::string ra, rb;
    char buf[7000];
    while (true) {
      const size_t na = a.read(buf, 4096);
      ra.append(buf, na);
      const size_t nb = b.read(buf, sizeof buf);
      rb.append(buf, nb);
      if (na == 0 && nb == 0) break;
    }
    CHECK(ra == data);
    CHECK(rb == data);

    // Two threads replaying at once produce identical full copies.
    std::string t1, t2;
    std::thread th1([&] { t1 = read_all(spool.reader(), 1500); });
    std::thread th2([&] { t2 = read_all(spool.reader(), 65536); });
    th1.join();
    th2.join();
    CHECK(t1 == data);
    CHECK(t2 == data);
    CHECK(dir.entries() == 0);
  }
  CHECK(dir.entries() == 0);
}

TEST_CASE("spool: the mkstemp fallback leaves no name behind either", "[multipart]") {
  TempDir dir;
  const int fd = open_unlinked_temp_file(dir.path, false);
  REQUIRE(fd >= 0);
  CHECK(dir.entries() == 0);
  REQUIRE(::write(fd, "abc", 3) == 3);
  char buf[3];
  CHECK(::pread(fd, buf, 3, 0) == 3);
  CHECK(std::string_view(buf, 3) == "abc");
  ::close(fd);
  CHECK(dir.entries() == 0);
}

TEST_CASE("spool: a missing spool directory is an error once the file is needed", "[multipart]") {
  UploadSpool spool(1 << 20, 10, "/nonexistent-tresor-spool-dir");
  CHECK(spool.append("0123456789"));  // memory only: the directory is not touched yet
  CHECK_THROWS_AS(spool.append("x"), std::system_error);
}

TEST_CASE("spool: the cap rejects the append that crosses it", "[multipart]") {
  TempDir dir;
  SECTION("in memory") {
    UploadSpool spool(10, 1024, dir.path);
    CHECK(spool.append("12345"));
    CHECK(spool.append("67890"));  // exactly at the cap
    CHECK_FALSE(spool.rejected());
    CHECK_FALSE(spool.append("x"));  // the byte that crosses it
    CHECK(spool.rejected());
    CHECK_FALSE(spool.append(""));  // stopped accepting
    CHECK(spool.size() == 10);
  }
  SECTION("on disk, a piece straddling the cap stores nothing of it") {
    UploadSpool spool(100, 16, dir.path);
    CHECK(spool.append(std::string(99, 'a')));
    CHECK(spool.on_disk());
    CHECK_FALSE(spool.append("bc"));
    CHECK(spool.size() == 99);
    spool.seal();
    CHECK(read_all(spool.reader(), 64) == std::string(99, 'a'));
    CHECK(dir.entries() == 0);
  }
}

TEST_CASE("spool: an empty upload", "[multipart]") {
  TempDir dir;
  UploadSpool spool(10, 1024, dir.path);
  CHECK(spool.append(""));
  spool.seal();
  spool.seal();  // idempotent
  CHECK(spool.size() == 0);
  char buf[4];
  CHECK(spool.reader().read(buf, sizeof buf) == 0);
  CHECK(dir.entries() == 0);
}

// server.spool_max_bytes: the bytes on disk of every upload in flight share one budget.
TEST_CASE("spool budget: the file bytes of all uploads share the cap, given back when each ends", "[multipart][spool]") {
  using tresor::server::SpoolBudget;
  using tresor::server::SpoolReservation;
  TempDir dir;
  SpoolBudget budget;
  constexpr uint64_t kCap = 1000;
  {
    UploadSpool a(1 << 20, 100, dir.path, SpoolReservation(budget, kCap));
    CHECK(a.append(std::string(100, 'a')));  // in memory: reserves nothing
    CHECK(budget.in_use() == 0);
    CHECK(a.append(std::string(500, 'a')));  // to disk: the 100 moved there count too
    CHECK(a.on_disk());
    CHECK(budget.in_use() == 600);
    UploadSpool b(1 << 20, 100, dir.path, SpoolReservation(budget, kCap));
    CHECK(b.append(std::string(300, 'b')));
    CHECK(budget.in_use() == 900);
    // The append that would take the total past the cap is refused, b's file is dropped
    // and its share given back at once (a keeps its own).
    CHECK_FALSE(b.append(std::string(101, 'b')));
    CHECK(b.spool_full());
    CHECK_FALSE(b.rejected());
    CHECK_FALSE(b.on_disk());
    CHECK(budget.in_use() == 600);
    CHECK(budget.refusals() == 1);
    CHECK_FALSE(b.append("b"));  // stopped accepting
    CHECK(a.append(std::string(400, 'a')));  // exactly at the cap
    CHECK(budget.in_use() == 1000);
  }
  CHECK(budget.in_use() == 0);  // both ended
  CHECK(dir.entries() == 0);
}

TEST_CASE("spool budget: a reservation made up front covers the upload; a move keeps one share", "[multipart][spool]") {
  using tresor::server::SpoolBudget;
  using tresor::server::SpoolReservation;
  TempDir dir;
  SpoolBudget budget;
  SpoolReservation up_front(budget, 1000);
  REQUIRE(up_front.cover(700));  // from Content-Length
  CHECK(budget.in_use() == 700);
  SpoolReservation refused(budget, 1000);
  CHECK_FALSE(refused.cover(301));
  CHECK(budget.in_use() == 700);
  CHECK(budget.refusals() == 1);
  {
    UploadSpool spool(1 << 20, 16, dir.path, std::move(up_front));
    CHECK(up_front.bytes() == 0);
    CHECK(spool.append(std::string(650, 'x')));
    CHECK(budget.in_use() == 700);  // within what was reserved: nothing more
  }
  CHECK(budget.in_use() == 0);
  SpoolReservation unlimited;  // no budget: tests and tools
  CHECK(unlimited.cover(uint64_t{1} << 40));
}
