// Holds one uploaded file (the audio part of a transcription request) so that it can be
// sent upstream more than once (failover replays) without keeping 25 MiB per request in
// RAM: small uploads stay in memory, larger ones go to an anonymous temporary file that
// is unlinked from the moment it exists, so a crash or kill never leaves audio on disk.
// Plain synchronous code. (The receipt's request digest is of the whole multipart body,
// taken by the caller, so the spool hashes nothing.)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace tresor::server {

// Opens an anonymous read-write file in `dir` that has no name from the start
// (O_TMPFILE). When O_TMPFILE is not supported by the kernel or file system (or
// try_o_tmpfile is false, for tests) it falls back to mkstemp + immediate unlink, which
// leaves a name for a few microseconds. Returns the fd; throws std::system_error.
int open_unlinked_temp_file(const std::filesystem::path& dir, bool try_o_tmpfile = true);

// What every spool file of the process may hold at once (server.spool_max_bytes): the
// spool's volume (a Kubernetes emptyDir with a sizeLimit, a tmpfs) must never fill, or
// the kubelet evicts the pod, or every upload in flight fails with ENOSPC. Thread-safe:
// reservations grow on the file I/O pool and are given back on the I/O threads.
class SpoolBudget {
 public:
  // Adds n bytes when the total stays within cap; otherwise adds nothing, counts a
  // refusal and returns false. The cap is passed per call: a reload may change it.
  bool try_reserve(uint64_t n, uint64_t cap);
  void release(uint64_t n);
  uint64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  uint64_t refusals() const { return refusals_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> in_use_{0};
  std::atomic<uint64_t> refusals_{0};
};

// One upload's share of a SpoolBudget, given back when it is destroyed (the request
// ended) or released. Default-constructed it has no budget and covers anything (tests,
// tools).
class SpoolReservation {
 public:
  SpoolReservation() = default;
  SpoolReservation(SpoolBudget& budget, uint64_t cap) : budget_(&budget), cap_(cap) {}
  SpoolReservation(SpoolReservation&& other) noexcept;
  SpoolReservation& operator=(SpoolReservation&& other) noexcept;
  SpoolReservation(const SpoolReservation&) = delete;
  SpoolReservation& operator=(const SpoolReservation&) = delete;
  ~SpoolReservation() { release(); }

  // Makes the reservation at least `total` bytes. False, reserving nothing more, when
  // that would take the budget past its cap.
  bool cover(uint64_t total);
  void release();
  uint64_t bytes() const { return bytes_; }

 private:
  SpoolBudget* budget_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t bytes_ = 0;
};

class UploadSpool {
 public:
  static constexpr size_t kDefaultMemoryThreshold = 256 * 1024;

  // max_bytes: the upload cap (bytes beyond it are refused). memory_threshold: uploads
  // up to this size never touch the disk. reservation: the share of the process's spool
  // budget the file's bytes must fit in (bytes kept in memory need none); it may already
  // cover the whole upload (reserved from Content-Length before the body was read).
  explicit UploadSpool(size_t max_bytes, size_t memory_threshold = kDefaultMemoryThreshold,
                       std::filesystem::path dir = std::filesystem::temp_directory_path(),
                       SpoolReservation reservation = SpoolReservation());
  ~UploadSpool();
  UploadSpool(const UploadSpool&) = delete;  // readers point at the spool
  UploadSpool& operator=(const UploadSpool&) = delete;

  // Appends bytes. Returns false, storing none of them, when they would take the size
  // past max_bytes (rejected(): the caller answers 413) or the file past what the spool
  // budget grants (spool_full(): the caller answers 503; the file is closed, so removed,
  // and its reservation given back at once); from then on, or after seal(), every
  // append returns false. Throws std::system_error on a file-system failure.
  bool append(std::string_view bytes);
  // Ends the upload. Idempotent.
  void seal();

  size_t size() const { return size_; }
  bool sealed() const { return sealed_; }
  bool rejected() const { return rejected_; }  // the cap was hit
  bool spool_full() const { return spool_full_; }  // the spool budget was
  bool on_disk() const { return fd_ >= 0; }

  // An independent cursor over the stored bytes. Any number may exist and run at once
  // (on other threads too, once sealed): file reads use pread, so no shared offset.
  // Must not outlive the spool.
  class Reader {
   public:
    // Copies up to n bytes into buf; returns 0 at the end. Throws std::system_error.
    size_t read(char* buf, size_t n);
    size_t offset() const { return offset_; }

   private:
    friend class UploadSpool;
    explicit Reader(const UploadSpool& spool) : spool_(&spool) {}
    const UploadSpool* spool_;
    size_t offset_ = 0;
  };
  Reader reader() const { return Reader(*this); }

 private:
  void write_all(std::string_view bytes);
  void discard();

  size_t max_bytes_;
  size_t memory_threshold_;
  std::filesystem::path dir_;
  std::string memory_;
  int fd_ = -1;
  size_t size_ = 0;
  bool sealed_ = false;
  bool rejected_ = false;
  bool spool_full_ = false;
  SpoolReservation reservation_;
};

}  // namespace tresor::server
