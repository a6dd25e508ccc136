#include "server/log_cli.h"

#include "receipts/checkpoint.h"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "receipts/cosignature.h"
#include "receipts/ed25519_key.h"
#include "receipts/signed_note.h"
#include "server/http_fetch.h"

namespace tresor::server {
namespace {

namespace merkle = receipts::merkle;
namespace note = receipts::note;
using log_cli::Checkpoint;

constexpr uint64_t kTileWidth = 256;  // C2SP tlog-tiles: height 8

std::string b64(const merkle::Hash& h) { return receipts::hash_base64(h); }

std::string three_digits(uint64_t v) {
  std::string g = std::to_string(v % 1000);
  g.insert(0, 3 - g.size(), '0');
  return g;
}

// "x001/x234/067" for 1234067 (tlog-tiles: three-digit groups, all but the last prefixed x).
std::string index_path(uint64_t index) {
  std::string path = three_digits(index);
  for (index /= 1000; index > 0; index /= 1000) path = "x" + three_digits(index) + "/" + path;
  return path;
}

// The "proof" array of a proof answer (inclusion_proof of a receipt): 32-byte base64 hashes.
std::vector<merkle::Hash> proof_hashes(const boost::json::value* proof, const std::string& what) {
  if (!proof || !proof->is_array()) throw std::runtime_error(what + " has no proof array");
  std::vector<merkle::Hash> hashes;
  for (const auto& item : proof->as_array()) {
    const auto h = item.is_string() ? receipts::hash_from_base64(std::string_view(item.as_string())) : std::nullopt;
    if (!h) throw std::runtime_error(what + ": a proof hash is not base64 of 32 bytes");
    hashes.push_back(*h);
  }
  return hashes;
}

// A checkpoint note verified by `log_key`, parsed; throws with the operator's message.
Checkpoint verified_checkpoint(std::string_view note_text, std::string_view log_key) {
  const auto text = note::verify(note_text, log_key);
  if (!text) throw std::runtime_error("checkpoint signature does not verify with the given log key");
  auto cp = log_cli::parse_checkpoint(*text);
  if (!cp) throw std::runtime_error("malformed checkpoint");
  return *cp;
}

}  // namespace

namespace log_cli {

std::optional<Checkpoint> parse_checkpoint(std::string_view text) { return receipts::parse_checkpoint(text); }

std::string tile_path(int level, uint64_t index, uint64_t width) {
  std::string path = level < 0 ? "tile/entries/" : "tile/" + std::to_string(level) + "/";
  path += index_path(index);
  if (width < kTileWidth) path += ".p/" + std::to_string(width);
  return path;
}

std::optional<std::string> refusal(const Checkpoint& old, const Checkpoint& next, std::span<const merkle::Hash> proof) {
  if (next.origin != old.origin) return "origin changed from " + old.origin + " to " + next.origin;
  if (next.size < old.size)
    return "log rolled back from size " + std::to_string(old.size) + " to " + std::to_string(next.size);
  if (next.size == old.size) {
    if (next.root == old.root) return std::nullopt;
    return "checkpoint for size " + std::to_string(next.size) + " has root " + b64(next.root) +
           " but the witnessed root was " + b64(old.root) + " (fork)";
  }
  if (old.size == 0) return std::nullopt;  // every tree extends the empty one
  if (!merkle::verify_consistency(old.size, next.size, old.root, next.root, proof))
    return "consistency proof " + std::to_string(old.size) + " -> " + std::to_string(next.size) +
           " does not verify (the log was rewritten)";
  return std::nullopt;
}

std::string verify_receipt_inclusion(std::string_view receipt_json, std::string_view payload, std::string_view log_key) {
  boost::system::error_code ec;
  const auto value = boost::json::parse(receipt_json, ec);
  if (ec || !value.is_object())
    throw std::runtime_error("--log-key needs the whole JSON answer of GET /v1/receipts/{id}, not a bare JWS");
  const auto& obj = value.as_object();
  const auto* index = obj.if_contains("log_index");
  const auto* checkpoint = obj.if_contains("checkpoint");
  if (!index || !checkpoint || !checkpoint->is_string() || !obj.if_contains("inclusion_proof"))
    throw std::runtime_error(
        "the receipt has no log_index, checkpoint and inclusion_proof (not yet covered by a checkpoint, "
        "or the log is disabled)");
  ec.clear();
  const uint64_t i = index->is_number() ? index->to_number<uint64_t>(ec) : 0;
  if (!index->is_number() || ec) throw std::runtime_error("log_index is not a non-negative integer");
  const Checkpoint cp = verified_checkpoint(std::string_view(checkpoint->as_string()), log_key);
  const auto proof = proof_hashes(obj.if_contains("inclusion_proof"), "inclusion_proof");
  if (i >= cp.size)
    throw std::runtime_error("log_index " + std::to_string(i) + " is outside the checkpoint of size " +
                             std::to_string(cp.size));
  common::Sha256 sha;
  sha.update(payload);
  const auto entry = sha.digest();
  const auto leaf = merkle::leaf_hash({reinterpret_cast<const char*>(entry.data()), entry.size()});
  if (!merkle::verify_inclusion(i, cp.size, leaf, proof, cp.root))
    throw std::runtime_error("inclusion proof of the receipt at log index " + std::to_string(i) +
                             " does not verify against the checkpoint of size " + std::to_string(cp.size));
  return "Log index: " + std::to_string(i) + "\nCheckpoint: " + cp.origin + " size " + std::to_string(cp.size) + "\n";
}

}  // namespace log_cli

namespace {

// The log could not be reached or answered with an error: no evidence against it.
struct Unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string trim_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

std::optional<std::string> read_optional_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Written to a temporary file then renamed: a crash never leaves half a checkpoint.
void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

std::string fetch(const std::string& url) {
  http_fetch::Response res;
  try {
    res = http_fetch::get(url);
  } catch (const std::exception& e) {
    throw Unreachable(e.what());
  }
  if (res.status != 200)
    throw Unreachable(url + " answered HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300));
  return std::move(res.body);
}

// The log's consistency proof old -> next, when refusal() needs one.
std::vector<merkle::Hash> fetch_consistency(const std::string& base, const Checkpoint& old, const Checkpoint& next) {
  if (old.size == 0 || next.size <= old.size || next.origin != old.origin) return {};
  const std::string url =
      base + "/v1/log/proof/consistency?old=" + std::to_string(old.size) + "&new=" + std::to_string(next.size);
  boost::system::error_code ec;
  const auto value = boost::json::parse(fetch(url), ec);
  if (ec || !value.is_object()) throw std::runtime_error(url + " did not answer a JSON object");
  return proof_hashes(value.as_object().if_contains("proof"), url);
}

// --full: the leaf hashes of the level-0 tiles of the first `size` leaves, each checked
// against its entry in the entry bundles; throws with the first mismatch.
std::vector<merkle::Hash> fetch_leaves(const std::string& base, uint64_t size) {
  std::vector<merkle::Hash> leaves;
  leaves.reserve(size);
  for (uint64_t tile = 0; tile * kTileWidth < size; ++tile) {
    const uint64_t width = std::min(kTileWidth, size - tile * kTileWidth);
    const std::string hashes = fetch(base + "/v1/log/" + log_cli::tile_path(0, tile, width));
    const std::string bundle = fetch(base + "/v1/log/" + log_cli::tile_path(-1, tile, width));
    if (hashes.size() != 32 * width)
      throw std::runtime_error("level-0 tile " + std::to_string(tile) + " has " + std::to_string(hashes.size()) +
                               " bytes, not " + std::to_string(32 * width));
    size_t at = 0;
    for (uint64_t i = 0; i < width; ++i) {
      const uint64_t index = tile * kTileWidth + i;
      if (at + 2 > bundle.size()) throw std::runtime_error("entry bundle " + std::to_string(tile) + " is too short");
      const size_t len = (static_cast<uint8_t>(bundle[at]) << 8) | static_cast<uint8_t>(bundle[at + 1]);
      if (at + 2 + len > bundle.size()) throw std::runtime_error("entry bundle " + std::to_string(tile) + " is cut");
      const auto leaf = merkle::leaf_hash(std::string_view(bundle).substr(at + 2, len));
      at += 2 + len;
      if (std::memcmp(leaf.data(), hashes.data() + 32 * i, leaf.size()) != 0)
        throw std::runtime_error("entry " + std::to_string(index) + " does not match its hash in the level-0 tile");
      leaves.push_back(leaf);
    }
    if (at != bundle.size()) throw std::runtime_error("entry bundle " + std::to_string(tile) + " has extra bytes");
  }
  return leaves;
}

// --full: every tile above level 0 (each hash the root of 256 hashes of the level below)
// against the hashes computed from the verified level-0 tiles; other tlog-tiles clients
// read these, so a log that serves wrong ones misleads them even with a right root.
void check_upper_tiles(const std::string& base, std::vector<merkle::Hash> below) {
  for (int level = 1; below.size() >= kTileWidth; ++level) {
    std::vector<merkle::Hash> here;
    for (size_t k = 0; (k + 1) * kTileWidth <= below.size(); ++k)
      here.push_back(merkle::root(std::span<const merkle::Hash>(below).subspan(k * kTileWidth, kTileWidth)));
    for (uint64_t tile = 0; tile * kTileWidth < here.size(); ++tile) {
      const uint64_t width = std::min<uint64_t>(kTileWidth, here.size() - tile * kTileWidth);
      const std::string data = fetch(base + "/v1/log/" + log_cli::tile_path(level, tile, width));
      if (data.size() != 32 * width ||
          std::memcmp(data.data(), here[tile * kTileWidth].data(), 32 * width) != 0)
        throw std::runtime_error("level-" + std::to_string(level) + " tile " + std::to_string(tile) +
                                 " does not match the hashes of the entries below it");
    }
    below = std::move(here);
  }
}

struct Args {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> flags;

  std::string get(const std::string& name) const {
    for (const auto& [k, v] : options)
      if (k == name) return v;
    return "";
  }
  bool has(const std::string& flag) const { return std::find(flags.begin(), flags.end(), flag) != flags.end(); }
};

// "--name value" options; the names in `flags` take no value.
Args parse_args(int argc, char** argv, std::initializer_list<std::string_view> flags) {
  Args args;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (std::find(flags.begin(), flags.end(), arg) != flags.end()) args.flags.push_back(arg);
    else if (arg.rfind("--", 0) == 0 && i + 1 < argc) args.options.emplace_back(arg, argv[++i]);
    else args.positional.push_back(arg);
  }
  return args;
}

// verify-log's work: the PASS line, or throws with the reason.
std::string verify_log(const std::string& base, const std::string& log_key, const std::string& old_file,
                       const std::string& save, bool full) {
  const auto old_note = read_optional_file(old_file);
  const bool first_audit = !old_note || old_note->empty();
  if (first_audit && !full)
    throw std::runtime_error(old_file + " is missing or empty: a first audit needs --full");
  std::optional<Checkpoint> old;
  if (!first_audit) {
    try {
      old = verified_checkpoint(*old_note, log_key);
    } catch (const std::exception& e) {
      throw std::runtime_error(old_file + ": " + e.what());
    }
  }
  const std::string new_note = fetch(base + "/v1/log/checkpoint");
  const Checkpoint next = verified_checkpoint(new_note, log_key);
  std::string pass = "PASS: " + next.origin + " size " + std::to_string(next.size);
  if (old) {
    const auto proof = fetch_consistency(base, *old, next);
    if (const auto why = log_cli::refusal(*old, next, proof)) throw std::runtime_error(*why);
    pass += next.size == old->size ? " unchanged" : " extends size " + std::to_string(old->size) + " (consistent)";
  }
  if (full) {
    const auto leaves = fetch_leaves(base, next.size);
    check_upper_tiles(base, leaves);
    const auto root = merkle::root(leaves);
    if (root != next.root)
      throw std::runtime_error("the tiles give root " + b64(root) + " for size " + std::to_string(next.size) +
                               " but the checkpoint says " + b64(next.root));
    pass += "; root recomputed from " + std::to_string(leaves.size()) + " entries";
  }
  if (!save.empty()) write_file_atomically(save, new_note);
  return pass;
}

// One witness's view of one log.
struct Witness {
  std::string base, log_key, state_file, name;
  note::Ed25519Seed seed{};
  std::string last_refusal;  // printed once per distinct reason
};

enum class Poll { ok, refused, unreachable };

Poll refuse(Witness& w, const std::string& origin, const std::string& reason) {
  if (reason != w.last_refusal) std::cerr << "witness: REFUSED " << origin << ": " << reason << "\n";
  w.last_refusal = reason;
  return Poll::refused;
}

// The note without its cosignature lines by other witnesses is not needed: the gateway
// takes the note as served followed by our line.
Poll deliver(const Witness& w, const std::string& served, const Checkpoint& cp, const std::string& line) {
  http_fetch::Response res;
  try {
    res = http_fetch::post(w.base + "/v1/log/cosignature", served + line, "text/plain; charset=utf-8");
  } catch (const std::exception& e) {
    std::cerr << "witness: cannot deliver the cosignature: " << e.what() << "\n";
    return Poll::unreachable;
  }
  if (res.status == 409) {  // the log moved on meanwhile: the next poll cosigns the newer one
    std::cerr << "witness: " << cp.origin << " size " << cp.size << " was superseded before the cosignature arrived\n";
    return Poll::ok;
  }
  if (res.status != 200) {
    std::cerr << "witness: the log did not accept the cosignature: HTTP " << res.status << ": "
              << res.body.substr(0, 300) << "\n";
    return Poll::unreachable;
  }
  std::cerr << "witness: cosigned " << cp.origin << " size " << cp.size << "\n";
  return Poll::ok;
}

Poll poll_once(Witness& w) {
  const std::string origin = note::parse_verifier_key(w.log_key)->name;
  try {
    const std::string served = fetch(w.base + "/v1/log/checkpoint");
    const auto text = note::verify(served, w.log_key);
    if (!text) return refuse(w, origin, "checkpoint signature does not verify with the given log key");
    const auto next = log_cli::parse_checkpoint(*text);
    if (!next) return refuse(w, origin, "malformed checkpoint");
    if (next->origin != origin) return refuse(w, origin, "origin changed from " + origin + " to " + next->origin);
    if (const auto saved = read_optional_file(w.state_file)) {
      const auto old = log_cli::parse_checkpoint(note::verify(*saved, w.log_key).value_or(""));
      if (!old) return refuse(w, origin, w.state_file + " is not a checkpoint signed by the given log key");
      const auto proof = fetch_consistency(w.base, *old, *next);
      if (const auto why = log_cli::refusal(*old, *next, proof)) return refuse(w, origin, *why);
    }
    const auto line = receipts::cosignature::cosign(*text, w.name, w.seed, static_cast<uint64_t>(std::time(nullptr)));
    if (!line) return refuse(w, origin, "the checkpoint text cannot be cosigned");
    write_file_atomically(w.state_file, served);
    w.last_refusal.clear();
    return deliver(w, served, *next, *line);
  } catch (const Unreachable& e) {
    std::cerr << "witness: cannot reach the log: " << e.what() << "\n";
    return Poll::unreachable;
  } catch (const std::exception& e) {
    return refuse(w, origin, e.what());
  }
}

std::string state_file_name(std::string origin) {
  std::replace(origin.begin(), origin.end(), '/', '_');
  return origin + ".checkpoint";
}

}  // namespace

int cli_verify_log(int argc, char** argv) {
  const Args args = parse_args(argc, argv, {"--full"});
  const std::string url = trim_slash(args.get("--url")), key = args.get("--log-key"),
                    old_file = args.get("--checkpoint");
  if (url.empty() || key.empty() || old_file.empty() || !args.positional.empty()) {
    std::cerr << "usage: tresor-router verify-log --url BASE_URL --log-key VKEY --checkpoint OLD_FILE "
                 "[--save NEW_FILE] [--full]\n";
    return 2;
  }
  if (!note::parse_verifier_key(key)) {
    std::cout << "FAIL: --log-key is not a verifier key NAME+HASH+BASE64 of type Ed25519 (0x01)\n";
    return 1;
  }
  try {
    std::cout << verify_log(url, key, old_file, args.get("--save"), args.has("--full")) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cout << "FAIL: " << e.what() << "\n";
    return 1;
  }
}

int cli_witness(int argc, char** argv) {
  const Args args = parse_args(argc, argv, {"--once"});
  Witness w;
  w.base = trim_slash(args.get("--log"));
  w.log_key = args.get("--log-key");
  w.name = args.get("--name");
  const std::string state_dir = args.get("--state"), key_file = args.get("--key");
  const std::string interval_text = args.get("--interval-ms");
  const auto interval = interval_text.empty() ? std::optional<uint64_t>(1000) : receipts::parse_decimal(interval_text);
  if (w.base.empty() || w.log_key.empty() || w.name.empty() || state_dir.empty() || key_file.empty() || !interval ||
      *interval == 0 || !args.positional.empty()) {
    std::cerr << "usage: tresor-router witness --log BASE_URL --log-key VKEY --state DIR --key FILE --name NAME "
                 "[--interval-ms 1000] [--once]\n";
    return 2;
  }
  const auto log = note::parse_verifier_key(w.log_key);
  if (!log || !note::valid_name(w.name)) {
    std::cerr << "witness: " << (log ? "--name is not a valid key name" : "--log-key is not an Ed25519 verifier key")
              << "\n";
    return 2;
  }
  try {
    w.seed = receipts::load_or_create_ed25519_seed(key_file);
    std::filesystem::create_directories(state_dir);
  } catch (const std::exception& e) {
    std::cerr << "witness: " << e.what() << "\n";
    return 2;
  }
  w.state_file = (std::filesystem::path(state_dir) / state_file_name(log->name)).string();
  std::cerr << "witness: key " << receipts::cosignature::vkey(w.name, note::public_key(w.seed)) << "\n";
  if (args.has("--once")) {
    const Poll result = poll_once(w);
    return result == Poll::ok ? 0 : result == Poll::refused ? 1 : 2;
  }
  for (;;) {
    poll_once(w);
    std::this_thread::sleep_for(std::chrono::milliseconds(*interval));  // the polling period, not a sync
  }
}

int cli_witness_key(int argc, char** argv) {
  const Args args = parse_args(argc, argv, {});
  const std::string key_file = args.get("--key"), name = args.get("--name");
  if (key_file.empty() || name.empty() || !args.positional.empty()) {
    std::cerr << "usage: tresor-router witness-key --key FILE --name NAME\n";
    return 2;
  }
  if (!note::valid_name(name)) {
    std::cerr << "witness-key: --name is not a valid key name (no spaces or '+')\n";
    return 2;
  }
  try {
    std::cout << receipts::cosignature::vkey(name, note::public_key(receipts::load_or_create_ed25519_seed(key_file)))
              << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "witness-key: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tresor::server
