// GET /attestation (spec §8.1, §8.5) in dev mode, and HTTPS listeners (server.tls):
//   * the envelope has exactly the §8.1 fields, lowercase hex, issued_at now, max_age_seconds
//     and trust_bundle_url from config, an empty vcek_chain_pem;
//   * workload_identity_tag = SHA-256 of the manifest JWS: an EdDSA JWS (dev mode signs it with
//     a key made at start-up and publishes none, so the signature is checked for shape) whose
//     payload is workload-identity/v1;
//   * REPORT_DATA[0:32] of the placeholder report = SHA-256(spki ‖ tag) (§8.3 step 6);
//   * without TLS tls_spki_sha256 is 64 zeros; with server.tls it is the SHA-256 of the served
//     certificate's SubjectPublicKeyInfo, and equals what the client sees on the live
//     connection (§8.3 step 7);
//   * every receipt embeds the envelope's stable fields as router_attestation.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import https from 'node:https';
import path from 'node:path';
import {
  startStack, startGateway, gatewayConfig, startFakeUpstream, stopAll, selfSignedCert, makeKey, makeProviderKey, sha256Hex,
  chatBody, fetchReceipt, decodeJws, ROUTE_GPT,
} from './harness.mjs';

const FIELDS = ['schema', 'workload', 'snp_report_b64', 'vcek_chain_pem', 'tls_spki_sha256', 'workload_identity_tag',
  'workload_identity_manifest_jws', 'trust_bundle_url', 'issued_at', 'max_age_seconds'];
const HEX64 = /^[0-9a-f]{64}$/;
const b64url = (s) => Buffer.from(s, 'base64url');

function checkBindings(env) {
  assert.deepEqual(Object.keys(env), FIELDS, 'exactly the §8.1 fields, in order');
  assert.equal(env.schema, 'tresor.attestation/v1');
  assert.equal(env.workload, 'router');
  assert.equal(env.vcek_chain_pem, '', 'dev mode: no VCEK chain');
  assert.match(env.tls_spki_sha256, HEX64);
  assert.match(env.workload_identity_tag, HEX64);
  const issued = Date.parse(env.issued_at);
  assert.ok(Math.abs(issued - Date.now()) < 60_000, `issued_at ${env.issued_at} is now`);
  assert.match(env.issued_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(createHash('sha256').update(env.workload_identity_manifest_jws).digest('hex'), env.workload_identity_tag,
    'tag = SHA-256 of the manifest JWS bytes');
  const [h, p, sig] = env.workload_identity_manifest_jws.split('.');
  const header = JSON.parse(b64url(h).toString());
  assert.equal(header.alg, 'EdDSA');
  assert.equal(header.typ, 'JWT');
  assert.match(header.kid, /^dev-[0-9a-f]{16}$/);
  assert.equal(b64url(sig).length, 64, 'an Ed25519 signature');
  const manifest = JSON.parse(b64url(p).toString());
  assert.equal(manifest.schema, 'workload-identity/v1');
  assert.equal(manifest.workload, 'router');
  assert.match(manifest.version, /^v\d+\.\d+\.\d+$/);
  assert.match(manifest.binary_digest, /^sha256:[0-9a-f]{64}$/);
  const report = Buffer.from(env.snp_report_b64, 'base64');
  assert.equal(report.length, 1184, 'an SEV-SNP report is 1184 bytes');
  const bound = createHash('sha256')
    .update(Buffer.concat([Buffer.from(env.tls_spki_sha256, 'hex'), Buffer.from(env.workload_identity_tag, 'hex')]))
    .digest();
  assert.deepEqual(report.subarray(0x50, 0x70), bound, 'REPORT_DATA[0:32] = SHA-256(spki || tag)');
  return manifest;
}

after(async () => { await stopAll(); });

describe('GET /attestation, plain HTTP', () => {
  let s;
  before(async () => {
    s = await startStack({
      configHook: (c) => ({ ...c, attestation: { mode: 'dev', trust_bundle_url: 'https://trust.example/router.json', max_age_seconds: 120 } }),
    });
  });

  test('the §8.1 envelope with its bindings; no TLS → tls_spki_sha256 is 64 zeros; no auth', async () => {
    const res = await fetch(s.gw.url('/attestation'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /application\/json/);
    const env = await res.json();
    checkBindings(env);
    assert.equal(env.tls_spki_sha256, '0'.repeat(64));
    assert.equal(env.trust_bundle_url, 'https://trust.example/router.json');
    assert.equal(env.max_age_seconds, 120);
  });

  test('the identity is stable across fetches; issued_at moves', async () => {
    const a = await (await fetch(s.gw.url('/attestation'))).json();
    const b = await (await fetch(s.gw.url('/attestation'))).json();
    assert.equal(a.workload_identity_tag, b.workload_identity_tag);
    assert.equal(a.snp_report_b64, b.snp_report_b64);
  });

  test('a receipt embeds router_attestation matching the envelope', async () => {
    const env = await (await fetch(s.gw.url('/attestation'))).json();
    const res = await s.chat(chatBody(ROUTE_GPT));
    const body = await res.json();
    const id = body.tresor.receipt_id;
    const { json } = await fetchReceipt(s.gw, s.key, id);
    const claims = decodeJws(json.receipt).payload;
    assert.deepEqual(claims.router_attestation, {
      schema: 'tresor.attestation/v1',
      mode: 'dev',
      workload_identity_tag: env.workload_identity_tag,
      tls_spki_sha256: env.tls_spki_sha256,
      snp_report_sha256: createHash('sha256').update(Buffer.from(env.snp_report_b64, 'base64')).digest('hex'),
      trust_bundle_url: env.trust_bundle_url,
    });
  });
});

describe('HTTPS listener (server.tls)', () => {
  let gw; let key; let certPem; let dir;
  before(async () => {
    ({ dir, ca: certPem } = selfSignedCert({ cn: 'localhost', san: 'DNS:localhost,IP:127.0.0.1' }));
    const providerKey = makeProviderKey();
    key = makeKey();
    const fake = await startFakeUpstream({ requireKey: providerKey });
    const config = gatewayConfig({
      fakeUrl: fake.baseUrl(), keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
      server: { tls: { cert_file: path.join(dir, 'cert.pem'), key_file: path.join(dir, 'key.pem') } },
    });
    gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
  });

  /** A request over verified TLS (our CA = the self-signed cert); also returns the peer's certificate. */
  function request(p, { method = 'GET', body, headers = {} } = {}) {
    return new Promise((resolve, reject) => {
      const req = https.request(`${gw.origin}${p}`, { method, ca: certPem, headers, servername: 'localhost', agent: false }, (res) => {
        const raw = res.socket.getPeerCertificate(true)?.raw;
        const peer = raw ? new X509Certificate(raw) : undefined;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode, text, peer }));
      });
      req.on('error', reject);
      if (body) req.write(body);
      req.end();
    });
  }

  test('the gateway logs an https:// listener and serves a chat completion over verified TLS', async () => {
    assert.match(gw.origin, /^https:\/\//);
    const r = await request('/v1/chat/completions', {
      method: 'POST', body: JSON.stringify(chatBody(ROUTE_GPT)),
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    });
    assert.equal(r.status, 200, r.text);
    assert.ok(JSON.parse(r.text).tresor.receipt_id);
  });

  test('tls_spki_sha256 is the SPKI of the certificate on the live connection (§8.3 step 7)', async () => {
    const r = await request('/attestation');
    assert.equal(r.status, 200);
    const env = JSON.parse(r.text);
    checkBindings(env);
    const spki = r.peer.publicKey.export({ type: 'spki', format: 'der' });
    assert.equal(env.tls_spki_sha256, createHash('sha256').update(spki).digest('hex'));
    const configured = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
    assert.deepEqual(spki, configured);
  });

  test('plain HTTP to the TLS listener gets no answer (closed), and the gateway keeps serving', async () => {
    const plain = gw.origin.replace('https://', 'http://');
    await assert.rejects(fetch(`${plain}/healthz`));
    assert.equal((await request('/healthz')).status, 200);
  });
});
