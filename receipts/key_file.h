// Private key files of the gateway (the receipt ES256 key, the transparency log's Ed25519
// key) and of the witness: created 0600 when missing, refused when others can read them.
#pragma once

#include <functional>
#include <string>

namespace tresor::receipts::key_file {

struct Contents {
  std::string pem;
  bool created = false;  // written just now by this process (mode 0600, nothing to check)
};

// The file at `path`; when it does not exist, `make_pem()` is written there first (parent
// folders created; O_EXCL, so a file another process created meanwhile wins and is read).
// Throws std::runtime_error with the path in the message.
Contents read_or_create(const std::string& path, const std::function<std::string()>& make_pem);
std::string read(const std::string& path);

// Like ssh with an identity file, refuse a private key that other users can read or that
// anyone but the owner's group can change (group read stays allowed: Kubernetes Secrets
// are mounted 0440 with an fsGroup). Throws std::runtime_error naming the mode.
void refuse_if_exposed(const std::string& path);

}  // namespace tresor::receipts::key_file
