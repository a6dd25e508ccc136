// HTTPS upstream: a test CA made with the openssl CLI. With ca_file → 200; without it (or with
// a certificate for another host name) → 502, no provider key in the body, a clear TLS
// verification error in the gateway log.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, tempDir, makeKey, makeProviderKey, sha256Hex,
  chatBody, readErrorEnvelope, waitFor, UPSTREAM_GPT,
} from './harness.mjs';

const CONTENT = 'Served over verified TLS.';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** CA + leaf certs for the given SANs, all in dir. Returns file paths. */
function makePki(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Tresor Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const leaf = (name, san) => {
    writeFileSync(path.join(dir, `${name}.ext`),
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`);
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
    return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  };
  return {
    ca: path.join(dir, 'ca.pem'),
    localhost: leaf('localhost', 'DNS:localhost,IP:127.0.0.1'),
    other: leaf('other.example', 'DNS:other.example'),
  };
}

let gw; let fake; let wrongName; let key; let providerKey; let pki;

before(async () => {
  pki = makePki(tempDir('tresor-pki-'));
  providerKey = makeProviderKey();
  key = makeKey();
  const ca = readFileSync(pki.ca, 'utf8');
  fake = await startFakeUpstream({ tlsCert: pki.localhost.cert, tlsKey: pki.localhost.key, ca, requireKey: providerKey, content: CONTENT });
  wrongName = await startFakeUpstream({ name: 'fake-wrong-name', tlsCert: pki.other.cert, tlsKey: pki.other.key, ca, requireKey: providerKey, content: CONTENT });
  const provider = (url, caFile) => ({ base_url: url, api_key: '${FAKE_PROVIDER_KEY}', ca_file: caFile, max_connections: 4 });
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl('localhost'),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
    providerFake: { ca_file: pki.ca },
    extraProviders: {
      tls_no_ca: provider(fake.baseUrl('localhost'), ''),
      tls_wrong_name: provider(wrongName.baseUrl('localhost'), pki.ca),
    },
    extraRoutes: [
      { id: 'eu/noca/gpt-oss-120b', provider: 'tls_no_ca', upstream_model: UPSTREAM_GPT, type: 'chat' },
      { id: 'eu/wrongname/gpt-oss-120b', provider: 'tls_wrong_name', upstream_model: UPSTREAM_GPT, type: 'chat' },
    ],
  });
  gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
});
after(stopAll);

const chat = (model) => fetch(gw.url('/v1/chat/completions'), {
  method: 'POST',
  headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
  body: JSON.stringify(chatBody(model)),
});

/** Log lines that report a TLS verification failure and name the provider or its URL. */
function tlsErrorLines(providerName, port) {
  return gw.proc.stderr.split('\n').filter((l) => /certificate verify failed|verif|tls|ssl|certificate|hostname/i.test(l) &&
    (l.includes(providerName) || l.includes(`localhost:${port}`)));
}

describe('TLS to the upstream', { timeout: 60_000 }, () => {
  test('ca_file with the test CA → 200 over https://localhost', async () => {
    const r = await chat('eu/fake/gpt-oss-120b');
    const text = await r.text();
    assert.equal(r.status, 200, text);
    assert.equal(JSON.parse(text).choices[0].message.content, CONTENT);
    const reqs = await fake.requests();
    assert.ok(reqs.length >= 1);
    assert.equal(reqs.at(-1).headers.authorization, `Bearer ${providerKey}`);
  });

  test('no ca_file (system CAs only) → 502, no provider key, TLS verification error logged', async () => {
    const before = (await fake.requests()).length;
    const r = await chat('eu/noca/gpt-oss-120b');
    const err = await readErrorEnvelope(r, { status: 502, code: 'upstream_error' });
    assert.ok(!err._text.includes(providerKey), 'provider key in error body');
    assert.equal((await fake.requests()).length, before, 'no request may reach an unverified upstream');
    // The log line may trail the response slightly: poll the captured stderr.
    const lines = await waitFor(() => { const l = tlsErrorLines('tls_no_ca', fake.port); return l.length ? l : null; },
      { timeoutMs: 3000, what: 'TLS error log line' }).catch(() => []);
    console.log(`gateway TLS error log line: ${lines[0] ?? '(none)'}`);
    assert.ok(lines.length > 0, `no TLS verification error naming tls_no_ca or localhost:${fake.port} in the gateway log:\n${gw.proc.stderr.slice(-3000)}`);
    assert.ok(lines.every((l) => !l.includes(providerKey)), 'provider key in the log line');
  });

  test('certificate for another host name (trusted CA) → 502', async () => {
    const r = await chat('eu/wrongname/gpt-oss-120b');
    const err = await readErrorEnvelope(r, { status: 502, code: 'upstream_error' });
    assert.ok(!err._text.includes(providerKey));
    assert.equal((await wrongName.requests()).length, 0, 'no request may reach an upstream with the wrong name');
    // The process is unharmed: healthy, and the verified provider still serves.
    const h = await fetch(gw.url('/healthz'));
    await h.arrayBuffer();
    assert.equal(h.status, 200);
    const ok = await chat('eu/fake/gpt-oss-120b');
    assert.equal(ok.status, 200, await ok.text());
  });
});
