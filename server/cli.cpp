#include "server/cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "receipts/claims.h"
#include "receipts/ed25519_key.h"
#include "receipts/signer.h"
#include "server/http_fetch.h"
#include "server/log_cli.h"

namespace tresor::server {
namespace {

std::string read_all(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_file(const std::string& path) {
  if (path == "-") return read_all(std::cin);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return read_all(in);
}

// The input may be the whole {"id","receipt"} answer of GET /v1/receipts/{id}, or a JWS.
std::string extract_jws(const std::string& input) {
  boost::system::error_code ec;
  const auto value = boost::json::parse(input, ec);
  if (!ec && value.is_object()) {
    const auto* receipt = value.as_object().if_contains("receipt");
    if (!receipt || !receipt->is_string()) throw std::runtime_error("input JSON has no \"receipt\" string");
    return std::string(receipt->as_string());
  }
  std::string jws = input;
  while (!jws.empty() && std::isspace(static_cast<unsigned char>(jws.back()))) jws.pop_back();
  while (!jws.empty() && std::isspace(static_cast<unsigned char>(jws.front()))) jws.erase(jws.begin());
  return jws;
}

std::string claim(const std::string& payload, const char* name) {
  const auto value = boost::json::parse(payload);
  const auto* v = value.as_object().if_contains(name);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

namespace {

// The new key `pem` to stdout, or to a new file argv[0] (mode 0600).
int write_new_key(int argc, char** argv, const std::string& pem, const char* kind) {
  if (argc < 1) {
    std::cout << pem;
    return 0;
  }
  const std::string path = argv[0];
  // O_EXCL: never overwrite a key that signed receipts (or checkpoints) still being verified.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    std::cerr << path << ": cannot create (" << std::strerror(errno) << ")\n";
    return 1;
  }
  const bool ok = ::write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size());
  ::close(fd);
  if (!ok) {
    std::cerr << path << ": write failed\n";
    return 1;
  }
  std::cout << "wrote " << path << " (" << kind << ", mode 0600)\n";
  return 0;
}

}  // namespace

int cli_gen_signing_key(int argc, char** argv) {
  return write_new_key(argc, argv, receipts::generate_private_key_pem(), "P-256");
}

int cli_gen_log_key(int argc, char** argv) {
  return write_new_key(argc, argv, receipts::generate_ed25519_key_pem(), "Ed25519");
}

int cli_verify_receipt(int argc, char** argv) {
  std::string jwks_source, input = "-";
  std::optional<std::string> request_file, response_file, log_key;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--jwks" && i + 1 < argc) jwks_source = argv[++i];
    else if (arg == "--request" && i + 1 < argc) request_file = argv[++i];
    else if (arg == "--response" && i + 1 < argc) response_file = argv[++i];
    else if (arg == "--log-key" && i + 1 < argc) log_key = argv[++i];
    else input = arg;
  }
  if (jwks_source.empty()) {
    std::cerr << "usage: tresor-router verify-receipt --jwks FILE_OR_URL [--log-key VKEY] [-|FILE] [--request FILE] "
                 "[--response FILE]\n";
    return 2;
  }
  try {
    const bool is_url = jwks_source.rfind("http://", 0) == 0 || jwks_source.rfind("https://", 0) == 0;
    const std::string jwks = is_url ? http_fetch::get_ok(jwks_source) : read_file(jwks_source);
    const std::string input_text = read_file(input);
    const auto result = receipts::verify_jws(extract_jws(input_text), jwks);
    if (!result.ok) {
      std::cout << "FAIL\n" << result.error << "\n";
      return 1;
    }
    if (request_file) {
      const auto digest = receipts::sha256_hex(read_file(*request_file));
      if (digest != claim(result.payload, "request_sha256")) {
        std::cout << "FAIL\nrequest_sha256 does not match " << *request_file << "\n";
        return 1;
      }
    }
    if (response_file) {
      const std::string body = read_file(*response_file);
      const bool sse = body.rfind("data:", 0) == 0;
      const auto digest = sse ? receipts::response_sha256_of_sse(body) : receipts::response_sha256_of_json(body);
      if (digest != claim(result.payload, "response_sha256")) {
        std::cout << "FAIL\nresponse_sha256 does not match " << *response_file << "\n";
        return 1;
      }
    }
    // The receipt's leaf in a checkpoint signed by the log key (issue 19).
    const std::string log_lines = log_key ? log_cli::verify_receipt_inclusion(input_text, result.payload, *log_key) : "";
    std::cout << "PASS\n"
              << "Receipt type:  " << claim(result.payload, "receipt_type") << "\n"
              << "Key ID:        " << result.kid << "\n"
              << log_lines;
    return 0;
  } catch (const std::exception& e) {
    std::cout << "FAIL\n" << e.what() << "\n";
    return 1;
  }
}

}  // namespace tresor::server
