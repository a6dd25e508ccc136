// Threads for blocking file I/O (the upload spool's writes and reads), so that an I/O
// thread never waits on the disk: a coroutine hands a job over and resumes on its own
// executor when the job is done. nginx does the same with its thread pools for
// `aio threads`.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>

namespace tresor::server {

class FileIoPool {
 public:
  explicit FileIoPool(unsigned threads);
  ~FileIoPool();  // runs what is queued, then joins
  FileIoPool(const FileIoPool&) = delete;
  FileIoPool& operator=(const FileIoPool&) = delete;

  // Runs `job` on a pool thread. An exception thrown by the job is rethrown here, on the
  // caller's executor. The job must not touch the caller's executor-bound objects.
  boost::asio::awaitable<void> run(std::function<void()> job);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tresor::server
