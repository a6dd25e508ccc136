#include "receipts/ed25519_key.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#include <stdexcept>

#include "receipts/key_file.h"

namespace tresor::receipts {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// Never prompt on a terminal for a passphrase: encrypted keys are simply refused.
int no_password(char*, int, int, void*) { return -1; }

std::string fresh_key_pem_impl() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!pkey || !bio || PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    throw std::runtime_error("generating an Ed25519 key failed");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

note::Ed25519Seed seed_from_pem(const std::string& pem, const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr pkey(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr) : nullptr);
  ERR_clear_error();
  if (!pkey) throw std::runtime_error("key file " + path + " does not hold a readable (unencrypted) PEM private key");
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519)
    throw std::runtime_error("key file " + path + " is not an Ed25519 private key");
  note::Ed25519Seed seed{};
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(pkey.get(), seed.data(), &len) != 1 || len != seed.size()) {
    ERR_clear_error();
    throw std::runtime_error("key file " + path + ": cannot read the Ed25519 key");
  }
  return seed;
}

}  // namespace

std::string generate_ed25519_key_pem() { return fresh_key_pem_impl(); }

note::Ed25519Seed load_or_create_ed25519_seed(const std::string& path) {
  const auto file = key_file::read_or_create(path, generate_ed25519_key_pem);
  auto seed = seed_from_pem(file.pem, path);
  if (!file.created) key_file::refuse_if_exposed(path);
  return seed;
}

}  // namespace tresor::receipts
