// A sealed UploadSpool as the common::BodySource that providers' multipart body pulls the
// file part from, so providers never see the spool. Reads of a spool on disk run on the
// FileIoPool (an I/O thread never waits on the disk); from memory they run inline.
#pragma once

#include "common/body_source.h"
#include "server/file_io_pool.h"
#include "server/upload_spool.h"

namespace tresor::server {

class SpoolBodySource final : public common::BodySource {
 public:
  // `spool` must be sealed and outlive this object; so must `file_io` when given (no
  // pool: every read runs on the calling thread, for tests).
  explicit SpoolBodySource(const UploadSpool& spool, FileIoPool* file_io = nullptr)
      : spool_(spool), file_io_(file_io), reader_(spool.reader()) {}

  uint64_t size() const override { return spool_.size(); }
  void rewind() override { reader_ = spool_.reader(); }
  boost::asio::awaitable<size_t> read(char* buf, size_t n) override;

 private:
  std::function<void()> read_job(char* buf, size_t n, size_t& got);

  const UploadSpool& spool_;
  FileIoPool* file_io_;
  UploadSpool::Reader reader_;
};

}  // namespace tresor::server
