// Receipts shared across replicas through Redis: two gateway processes on one real
// redis-server (started here, on loopback) — a receipt issued by one is fetched from
// the other, and stays scoped to its customer there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, waitFor, tempDir,
  ROUTE_GPT,
} from './harness.mjs';

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('error', () => resolve(false));
    sock.once('data', (d) => { sock.destroy(); resolve(d.toString().startsWith('+PONG')); });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}

let redis;
let gwA;
let gwB;
let key;
let otherCustomerKey;

before(async () => {
  const port = await freePort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => redisPing(port), { what: 'redis-server PING' });
  const providerKey = makeProviderKey();
  const fake = await startFakeUpstream({ requireKey: providerKey });
  key = makeKey();
  otherCustomerKey = makeKey();
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }, { sha256: sha256Hex(otherCustomerKey), customer: 'globex' }],
  });
  config.store = `redis://127.0.0.1:${port}/0`;
  // Both replicas sign with the same key file, as replicas of one deployment do.
  const shared = { signing_key_file: `${tempDir('tresor-redis-key-')}/receipt-es256.pem`, kid: 'router-receipt-1' };
  config.receipts = shared;
  gwA = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-A' });
  gwB = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-B' });
});

after(async () => {
  await stopAll();
  if (redis) redis.kill('SIGKILL');
});

describe('receipts on Redis, two replicas', { timeout: 30_000 }, () => {
  test('a receipt issued by one gateway is fetched from the other; another customer gets 404', async () => {
    const r = await fetch(gwA.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const answer = await r.json();
    assert.equal(r.status, 200);
    const id = answer.tresor.receipt_id;
    assert.ok(id, 'a receipt id');
    const fromB = await fetch(gwB.url(`/v1/receipts/${id}`), { headers: { authorization: `Bearer ${key}` } });
    const body = await fromB.json();
    assert.equal(fromB.status, 200);
    assert.equal(body.id, id);
    assert.equal(body.receipt.split('.').length, 3);
    const stranger = await fetch(gwB.url(`/v1/receipts/${id}`),
      { headers: { authorization: `Bearer ${otherCustomerKey}` } });
    const err = await stranger.json();
    assert.equal(stranger.status, 404);
    assert.equal(err.error.code, 'receipt_not_found');
  });
});
