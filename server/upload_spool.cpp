#include "server/upload_spool.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

namespace tresor::server {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

int open_unlinked_temp_file(const std::filesystem::path& dir, bool try_o_tmpfile) {
  if (try_o_tmpfile) {
    const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    // These mean "no O_TMPFILE here" (old kernel, or a file system without it such as
    // some FUSE/overlay setups); anything else (ENOENT, EACCES...) is a real error.
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) throw_errno("open(O_TMPFILE) in " + dir.string());
  }
  std::string path = (dir / "tresor-upload-XXXXXX").string();
  std::vector<char> templ(path.begin(), path.end());
  templ.push_back('\0');
  const int fd = ::mkostemp(templ.data(), O_CLOEXEC);  // mkstemp creates it 0600
  if (fd < 0) throw_errno("mkstemp in " + dir.string());
  if (::unlink(templ.data()) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "unlink temporary upload file");
  }
  return fd;
}

bool SpoolBudget::try_reserve(uint64_t n, uint64_t cap) {
  uint64_t used = in_use_.load(std::memory_order_relaxed);
  do {
    if (n > cap || used > cap - n) {
      refusals_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!in_use_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  return true;
}

void SpoolBudget::release(uint64_t n) { in_use_.fetch_sub(n, std::memory_order_relaxed); }

SpoolReservation::SpoolReservation(SpoolReservation&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)), cap_(other.cap_), bytes_(std::exchange(other.bytes_, 0)) {}

SpoolReservation& SpoolReservation::operator=(SpoolReservation&& other) noexcept {
  if (this != &other) {
    release();
    budget_ = std::exchange(other.budget_, nullptr);
    cap_ = other.cap_;
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

bool SpoolReservation::cover(uint64_t total) {
  if (!budget_ || total <= bytes_) return true;
  if (!budget_->try_reserve(total - bytes_, cap_)) return false;
  bytes_ = total;
  return true;
}

void SpoolReservation::release() {
  if (budget_ && bytes_ > 0) budget_->release(bytes_);
  bytes_ = 0;
}

UploadSpool::UploadSpool(size_t max_bytes, size_t memory_threshold, std::filesystem::path dir,
                         SpoolReservation reservation)
    : max_bytes_(max_bytes),
      memory_threshold_(memory_threshold),
      dir_(std::move(dir)),
      reservation_(std::move(reservation)) {}

UploadSpool::~UploadSpool() {
  if (fd_ >= 0) ::close(fd_);
}

// The spool budget is exhausted: nothing of this upload is kept (its file, unlinked from
// the start, goes with the close) and its share of the budget is free for others now,
// not when the refused request's connection has finished lingering.
void UploadSpool::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::string().swap(memory_);
  size_ = 0;
  reservation_.release();
}

void UploadSpool::write_all(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write temporary upload file");
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

bool UploadSpool::append(std::string_view bytes) {
  if (sealed_ || rejected_ || spool_full_) return false;
  if (bytes.size() > max_bytes_ - size_) {  // size_ <= max_bytes_ always, so no overflow
    rejected_ = true;
    return false;
  }
  if (bytes.empty()) return true;
  // Bytes on disk (those moved there when the threshold is crossed included) must fit
  // the spool budget; bytes in memory are bounded by connections × memory_threshold.
  const bool to_disk = fd_ >= 0 || size_ + bytes.size() > memory_threshold_;
  if (to_disk && !reservation_.cover(size_ + bytes.size())) {
    spool_full_ = true;
    discard();
    return false;
  }
  if (fd_ < 0 && size_ + bytes.size() > memory_threshold_) {
    // Crossing the threshold: move what is in memory to the file once, then stream.
    fd_ = open_unlinked_temp_file(dir_);
    write_all(memory_);
    std::string().swap(memory_);  // give the memory back, not just clear()
  }
  if (fd_ >= 0) {
    write_all(bytes);
  } else {
    memory_.append(bytes);
  }
  size_ += bytes.size();
  return true;
}

void UploadSpool::seal() {
  sealed_ = true;
}

size_t UploadSpool::Reader::read(char* buf, size_t n) {
  const UploadSpool& s = *spool_;
  if (offset_ >= s.size_ || n == 0) return 0;
  n = std::min(n, s.size_ - offset_);
  if (s.fd_ < 0) {
    std::memcpy(buf, s.memory_.data() + offset_, n);
    offset_ += n;
    return n;
  }
  while (true) {
    const ssize_t got = ::pread(s.fd_, buf, n, static_cast<off_t>(offset_));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("pread temporary upload file");
    }
    if (got == 0) {
      // The file is shorter than what we wrote: someone truncated it. Fail loudly rather
      // than replaying a short upload.
      throw std::runtime_error("temporary upload file shrank");
    }
    offset_ += static_cast<size_t>(got);
    return static_cast<size_t>(got);
  }
}

}  // namespace tresor::server
