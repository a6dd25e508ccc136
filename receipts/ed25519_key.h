// Ed25519 private keys in files (the transparency log's checkpoint key, a witness's key):
// PKCS#8 PEM ("BEGIN PRIVATE KEY", what `openssl genpkey -algorithm ed25519` writes),
// kept like the receipt key (receipts/key_file.h).
#pragma once

#include <string>

#include "receipts/signed_note.h"

namespace tresor::receipts {

// A fresh Ed25519 private key as PKCS#8 PEM (tresor-router gen-log-key).
std::string generate_ed25519_key_pem();

// The key's 32-byte seed; the file is created (0600) with a fresh key when missing.
// Throws std::runtime_error for an unreadable, non-Ed25519 or exposed key file.
note::Ed25519Seed load_or_create_ed25519_seed(const std::string& path);

}  // namespace tresor::receipts
