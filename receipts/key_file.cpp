#include "receipts/key_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace tresor::receipts::key_file {
namespace {

// Writes `data` to a new file at `path`: O_CREAT|O_EXCL with 0600, so it is never
// readable by others and never clobbers an existing key. Returns false on EEXIST.
bool write_new_private_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw std::runtime_error("cannot create key file " + path + ": " + std::strerror(errno));
  }
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      throw std::runtime_error("cannot write key file " + path + ": " + std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw std::runtime_error("cannot write key file " + path + ": " + std::strerror(err));
  }
  return true;
}

}  // namespace

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read key file " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read key file " + path);
  return ss.str();
}

Contents read_or_create(const std::string& path, const std::function<std::string()>& make_pem) {
  std::error_code fs_ec;
  if (!std::filesystem::exists(path, fs_ec) && !fs_ec) {
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::filesystem::create_directories(parent, fs_ec);
      if (fs_ec)
        throw std::runtime_error("cannot create directory " + parent.string() + " for key file " + path + ": " +
                                 fs_ec.message());
    }
    std::string pem = make_pem();
    if (write_new_private_file(path, pem)) return {std::move(pem), true};
    // else: another process created it first; read theirs.
  }
  return {read(path), false};
}

void refuse_if_exposed(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat key file " + path + ": " + std::strerror(errno));
  const unsigned mode = st.st_mode & 07777;
  if ((mode & (S_IRWXO | S_IWGRP)) == 0) return;
  char octal[8];
  std::snprintf(octal, sizeof octal, "%04o", mode);
  throw std::runtime_error("key file " + path + " has mode " + octal +
                           ": other users can read or change it; chmod 600 it (or 640/440 for a group)");
}

}  // namespace tresor::receipts::key_file
