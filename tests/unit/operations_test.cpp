// Operations pieces without sockets: the models list (filters, detail, pricing numbers),
// X-Request-Id handling, the access log line, the attestation envelope's bindings, and
// the new config keys.
#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <openssl/evp.h>

#include <string>

#include "config/config.h"
#include "receipts/claims.h"
#include "server/attestation.h"
#include "server/models_endpoint.h"
#include "server/request_record.h"

using namespace tresor;

namespace {

const char* kConfig = R"(providers:
  pm: {base_url: "http://127.0.0.1:1/v1"}
  tf: {base_url: "http://127.0.0.1:2/v1"}
routes:
  - {id: eu/privatemode/gpt-oss-120b, provider: pm, upstream_model: m, type: chat,
     pricing: {input_per_mtok: 0.2, output_per_mtok: 0.6, currency: eur}}
  - {id: eu/privatemode/whisper-large-v3, provider: pm, upstream_model: w, type: transcription,
     pricing: {billing_unit: audio_minute, unit_amount: 0.014, currency: eur}}
  - {id: global/tinfoil/voxtral-small-24b, provider: tf, upstream_model: v, type: transcription,
     pricing: {input_per_mtok: 1.5, output_per_mtok: 3, currency: eur}}
  - {id: global/tinfoil/kimi-k2, provider: tf, upstream_model: k, type: chat}
)";

boost::json::array models(std::string_view query) {
  const auto cfg = config::load_config_text(kConfig, "m.yaml");
  const auto r = server::models_response(*cfg, query, 1700000000);
  CHECK(r.status == 200);
  const auto v = boost::json::parse(r.body);
  CHECK(v.at("object") == "list");
  return v.at("data").as_array();
}

std::vector<std::string> ids(const boost::json::array& data) {
  std::vector<std::string> out;
  for (const auto& m : data) out.emplace_back(m.at("id").as_string());
  return out;
}

}  // namespace

TEST_CASE("models: every route in config order, OpenAI shape, no tresor block without detail") {
  const auto data = models("");
  CHECK(ids(data) == std::vector<std::string>{"eu/privatemode/gpt-oss-120b", "eu/privatemode/whisper-large-v3",
                                               "global/tinfoil/voxtral-small-24b", "global/tinfoil/kimi-k2"});
  const auto& first = data[0].as_object();
  CHECK(first.at("object") == "model");
  CHECK(first.at("owned_by") == "privatemode");
  CHECK(first.at("created") == 1700000000);
  CHECK_FALSE(first.contains("tresor"));
}

TEST_CASE("models: detail adds pricing by modality; numbers in their shortest form") {
  const auto cfg = config::load_config_text(kConfig, "m.yaml");
  const auto body = server::models_response(*cfg, "detail=true", 1).body;
  CHECK(body.find("\"unit_amount\":0.014") != std::string::npos);
  CHECK(body.find("\"input_per_mtok\":0.2") != std::string::npos);
  const auto data = models("detail=1");
  const auto& whisper = data[1].at("tresor").as_object();
  CHECK(whisper.at("type") == "transcription");
  CHECK(whisper.at("model_key") == "whisper-large-v3");
  CHECK(whisper.at("pricing").at("billing_unit") == "audio_minute");
  CHECK(data[2].at("tresor").at("pricing").at("output_per_mtok").to_number<double>() == 3.0);
  CHECK_FALSE(data[3].at("tresor").as_object().contains("pricing"));
  CHECK_FALSE(models("detail=false")[0].as_object().contains("tresor"));
}

TEST_CASE("models: filters match exactly; unknown values give an empty list") {
  CHECK(ids(models("type=transcription")) ==
        std::vector<std::string>{"eu/privatemode/whisper-large-v3", "global/tinfoil/voxtral-small-24b"});
  CHECK(ids(models("region=global&type=chat")) == std::vector<std::string>{"global/tinfoil/kimi-k2"});
  CHECK(ids(models("provider=privatemode")).size() == 2);
  CHECK(models("region=EU").empty());          // case-sensitive
  CHECK(models("type=embedding").empty());
  CHECK(models("provider=nobody").empty());
  CHECK(ids(models("region=%65u")).size() == 2);  // percent-decoded
}

TEST_CASE("X-Request-Id: honoured when safe, replaced otherwise") {
  CHECK(server::request_id_from("abc-123_x.y:z") == "abc-123_x.y:z");
  for (const std::string& bad : {std::string(), std::string(129, 'a'), std::string("a b"), std::string("a\r\nX: y"),
                                std::string("\xc3\xa9")}) {
    const auto id = server::request_id_from(bad);
    CHECK(id != bad);
    CHECK(id.size() == 36);  // a UUID
  }
}

TEST_CASE("access log line: JSON with the request's figures, no secrets fields") {
  server::RequestRecord r;
  r.request_id = "rid";
  r.method = "POST";
  r.endpoint = "/v1/chat/completions";
  r.customer = "acme";
  r.status = 200;
  r.inference = true;
  r.requested_route = "auto/auto/m";
  r.routed_model = "eu/p/m";
  r.attempts.push_back(router::AttemptRecord{"eu/p/m", router::AttemptOutcome::ok, 0, 12});
  r.started = providers::Clock::now() - std::chrono::milliseconds(20);
  r.upstream_wait = std::chrono::milliseconds(15);
  const auto v = boost::json::parse(server::access_log_json(r, providers::Clock::now())).as_object();
  CHECK(v.at("request_id") == "rid");
  CHECK(v.at("attempts") == "eu/p/m=ok;12");
  CHECK(v.at("upstream_ms") == 15);
  CHECK(v.at("overhead_us").to_number<int64_t>() >= 4000);
  CHECK(v.at("duration_ms").to_number<int64_t>() >= 20);
}

TEST_CASE("attestation: the envelope's fields and bindings (spec §8.1, §8.3 step 6)") {
  const auto cfg = config::load_config_text("attestation: {trust_bundle_url: \"https://t/b.json\", max_age_seconds: 300}\n",
                                            "a.yaml");
  server::RouterAttestation att(*cfg);
  const auto e = boost::json::parse(att.envelope_json()).as_object();
  CHECK(e.size() == 10);
  CHECK(e.at("schema") == "tresor.attestation/v1");
  CHECK(e.at("workload") == "router");
  CHECK(e.at("vcek_chain_pem") == "");
  CHECK(e.at("max_age_seconds") == 300);
  CHECK(e.at("trust_bundle_url") == "https://t/b.json");
  CHECK(std::string(e.at("tls_spki_sha256").as_string()) == std::string(64, '0'));  // no server.tls
  const std::string jws(e.at("workload_identity_manifest_jws").as_string());
  CHECK(std::string(e.at("workload_identity_tag").as_string()) == receipts::sha256_hex(jws));
  // REPORT_DATA[0:32] == SHA-256(spki bytes || tag bytes)
  const std::string b64(e.at("snp_report_b64").as_string());
  std::string report(b64.size(), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(report.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  REQUIRE(n >= 1184);
  auto unhex = [](const std::string& h) {
    std::string out;
    for (size_t i = 0; i < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return out;
  };
  const std::string bound = unhex(std::string(e.at("tls_spki_sha256").as_string())) +
                            unhex(std::string(e.at("workload_identity_tag").as_string()));
  CHECK(report.substr(0x50, 32) == unhex(receipts::sha256_hex(bound)));
  const auto block = boost::json::parse(att.receipt_block()).as_object();
  CHECK(block.at("workload_identity_tag") == e.at("workload_identity_tag"));
}

TEST_CASE("config: drain and tls keys") {
  const auto c = config::load_config_text("server: {drain_seconds: 5, drain_notice_seconds: 2}\n", "d.yaml");
  CHECK(c->server.drain_seconds == 5);
  CHECK(c->server.drain_notice_seconds == 2);
  CHECK_THROWS_AS(config::load_config_text("server: {drain_seconds: 1, drain_notice_seconds: 2}\n", "d.yaml"),
                  config::ConfigError);
  CHECK_THROWS_AS(config::load_config_text("server: {tls: {cert_file: c.pem}}\n", "t.yaml"), config::ConfigError);
  CHECK_THROWS_AS(config::load_config_text("attestation: {max_age_seconds: 0}\n", "a.yaml"), config::ConfigError);
}
