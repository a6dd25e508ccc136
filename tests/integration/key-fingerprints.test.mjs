// Replicas agree on keys (issue 17 item 5): gateways sharing one real redis-server publish
// their receipt signing keys' RFC 7638 thumbprints there. A replica whose key differs from
// the recorded one under the same kid refuses to start, naming the kid, both thumbprints and
// the other replica; replicas with the same key file start, and a receipt signed by one
// verifies against the other's JWKS; another kid with another key is no conflict.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, waitFor, tempDir,
  ROUTE_GPT, closedPort, redisPing, runRouterCli, writeConfig, fetchReceipt, fetchJwks, verifyJws,
} from './harness.mjs';

const KID = 'router-receipt-1';
let redis;
let redisPort;
let providerKey;
let fakeUrl;
let key;

// A config for one replica on the shared Redis, signing with `keyFile` under `kid`.
function replicaConfig(keyFile, kid = KID) {
  const config = gatewayConfig({ fakeUrl, keys: [{ sha256: sha256Hex(key), customer: 'acme' }] });
  config.store = `redis://127.0.0.1:${redisPort}/0`;
  config.receipts = { signing_key_file: keyFile, kid };
  return config;
}

// A new P-256 key file made by the CLI, as an operator would.
function newKeyFile(name) {
  const file = `${tempDir('tresor-kf-')}/${name}.pem`;
  const r = runRouterCli(['gen-signing-key', file]);
  assert.equal(r.status, 0, r.stderr);
  return file;
}

// RFC 7638 thumbprint of the public half of a PEM private key, computed here (not by the gateway).
function thumbprintOfKeyFile(file) {
  const { crv, kty, x, y } = createPublicKey(createPrivateKey(readFileSync(file))).export({ format: 'jwk' });
  return createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
}

function redisCli(...args) {
  return execFileSync('redis-cli', ['-p', String(redisPort), '--raw', ...args], { encoding: 'utf8' }).trim();
}

before(async () => {
  redisPort = await closedPort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => redisPing(redisPort), { what: 'redis-server PING' });
  providerKey = makeProviderKey();
  const fake = await startFakeUpstream({ requireKey: providerKey });
  fakeUrl = fake.baseUrl();
  key = makeKey();
});

after(async () => {
  await stopAll();
  if (redis) redis.kill('SIGKILL');
});

describe('signing keys on a shared Redis', { timeout: 90_000 }, () => {
  let gwA;
  let keyA;

  test('the first replica records its key thumbprint under its kid, with a TTL', async () => {
    keyA = newKeyFile('a');
    gwA = await startGateway({ config: replicaConfig(keyA), env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-A' });
    assert.equal(redisCli('HGET', `tresor:keys:${KID}`, 'thumbprint'), thumbprintOfKeyFile(keyA));
    assert.match(redisCli('HGET', `tresor:keys:${KID}`, 'replica'), new RegExp(`pid ${gwA.proc.pid}\\b`));
    const ttl = Number(redisCli('TTL', `tresor:keys:${KID}`));
    assert.ok(ttl > 365 * 86400, `TTL ${ttl} s`);
  });

  test('a replica with another key under the same kid refuses to start, naming the kid, both thumbprints and A',
    () => {
      assert.ok(gwA, 'replica A runs');
      const keyB = newKeyFile('b');
      // Synchronous: the process must exit on its own (a gateway that starts is killed after 20 s: a failure).
      const r = runRouterCli(['--config', writeConfig(replicaConfig(keyB))],
        { env: { ...process.env, FAKE_PROVIDER_KEY: providerKey }, timeoutMs: 20_000 });
      assert.equal(r.signal, null, `the gateway kept running instead of refusing to start:\n${r.stderr.slice(-2000)}`);
      assert.notEqual(r.status, 0, r.stderr);
      assert.match(r.stderr, /signing key conflict for kid "router-receipt-1"/);
      assert.ok(r.stderr.includes(thumbprintOfKeyFile(keyA)), `A's thumbprint in:\n${r.stderr}`);
      assert.ok(r.stderr.includes(thumbprintOfKeyFile(keyB)), `B's thumbprint in:\n${r.stderr}`);
      assert.ok(r.stderr.includes(`pid ${gwA.proc.pid}`), `replica A named in:\n${r.stderr}`);
      assert.ok(r.stderr.includes(keyB), `B's key file named in:\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /listening on https?:/, 'it never served');
      // The record still holds A's key.
      assert.equal(redisCli('HGET', `tresor:keys:${KID}`, 'thumbprint'), thumbprintOfKeyFile(keyA));
    });

  test('a replica with the same key file starts; a receipt signed by A verifies against its JWKS', async () => {
    assert.ok(gwA, 'replica A runs');
    const gwC = await startGateway({ config: replicaConfig(keyA), env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-C' });
    const r = await fetch(gwA.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const answer = await r.json();
    assert.equal(r.status, 200);
    const receipt = await fetchReceipt(gwA, key, answer.tresor.receipt_id);
    assert.equal(receipt.status, 200, receipt.text);
    const jwksC = await fetchJwks(gwC);
    assert.equal(jwksC.status, 200);
    const d = verifyJws(receipt.json.receipt, jwksC.json);
    assert.equal(d.header.kid, KID);
    // C is now the last publisher of the (same) thumbprint.
    assert.equal(redisCli('HGET', `tresor:keys:${KID}`, 'thumbprint'), thumbprintOfKeyFile(keyA));
    assert.match(redisCli('HGET', `tresor:keys:${KID}`, 'replica'), new RegExp(`pid ${gwC.proc.pid}\\b`));
    await gwC.stop();
  });

  test('another key under another kid is no conflict', async () => {
    const keyD = newKeyFile('d');
    const gwD = await startGateway({
      config: replicaConfig(keyD, 'router-receipt-2'), env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-D',
    });
    assert.equal(redisCli('HGET', 'tresor:keys:router-receipt-2', 'thumbprint'), thumbprintOfKeyFile(keyD));
    assert.equal(redisCli('HGET', `tresor:keys:${KID}`, 'thumbprint'), thumbprintOfKeyFile(keyA));
    const metrics = await (await fetch(gwD.url('/metrics'))).text();
    assert.match(metrics, /^tresor_signing_key_conflict 0$/m);
    await gwD.stop();
  });
});
