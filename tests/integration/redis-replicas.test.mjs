// Receipts shared across replicas through Redis: two gateway processes on one real
// redis-server (started here, on loopback) — a receipt issued by one is fetched from
// the other, and stays scoped to its customer there; a per-minute limit and a credit
// balance hold across both replicas.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, waitFor, tempDir,
  ROUTE_GPT, closedPort, redisPing, getUsage, nanosDecimal, toNanos,
} from './harness.mjs';

let redis;
let gwA;
let gwB;
let key;
let otherCustomerKey;
let limitedKey;
let payingKey;
let redisPort;
const LIMIT = 6;
// Credit: the fake's usage (1 prompt, 5 completion tokens) costs 1.1 per answer at 0.1 per
// prompt and 0.2 per completion token. Each request first reserves its most expensive outcome
// (body bytes as prompt tokens + max_tokens of output); the credit is sized so that after two
// answers the third's reservation fits, and after three a fourth's does not.
const PAID_BODY = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 };
const PRICE_PER_ANSWER = 1_100_000_000n; // nanos
const RESERVATION = BigInt(Buffer.byteLength(JSON.stringify(PAID_BODY))) * 100_000_000n + 5n * 200_000_000n;
const CREDIT = 2n * PRICE_PER_ANSWER + RESERVATION + 500_000_000n;

before(async () => {
  const port = await closedPort();
  redisPort = port;
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => redisPing(port), { what: 'redis-server PING' });
  const providerKey = makeProviderKey();
  const fake = await startFakeUpstream({ requireKey: providerKey });
  key = makeKey();
  otherCustomerKey = makeKey();
  limitedKey = makeKey();
  payingKey = makeKey();
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [
      { sha256: sha256Hex(key), customer: 'acme' },
      { sha256: sha256Hex(otherCustomerKey), customer: 'globex' },
      { sha256: sha256Hex(limitedKey), customer: 'initech', limits: { per_minute: LIMIT } },
      { sha256: sha256Hex(payingKey), customer: 'hooli' },
    ],
  });
  config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
  config.auth.customers = { hooli: { credit: Number(nanosDecimal(CREDIT)), currency: 'eur' } };
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

  const chatVia = (gw, k, body = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] }) =>
    fetch(gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  test('a per-minute limit holds across both replicas', async () => {
    const secondsLeft = 60 - (Math.floor(Date.now() / 1000) % 60);
    if (secondsLeft < 5) await new Promise((r) => setTimeout(r, secondsLeft * 1000 + 100)); // pacing, not sync
    for (let i = 1; i <= LIMIT; i++) {
      const r = await chatVia(i % 2 ? gwA : gwB, limitedKey);
      await r.arrayBuffer();
      assert.equal(r.status, 200, `request ${i}`);
      assert.equal(r.headers.get('x-ratelimit-remaining'), String(LIMIT - i));
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), String(LIMIT - i), 'OpenAI header name too');
    }
    for (const gw of [gwA, gwB]) {
      const r = await chatVia(gw, limitedKey);
      const json = await r.json();
      assert.equal(r.status, 429, 'over the limit on either replica');
      assert.equal(json.error.code, 'rate_limit_exceeded');
      assert.match(r.headers.get('retry-after'), /^\d+$/);
    }
  });

  test('two replicas draw down one credit balance', async () => {
    const usageVia = async (gw) => {
      const { status, text, usage } = await getUsage(gw, payingKey);
      assert.equal(status, 200, text);
      return usage;
    };
    for (let i = 1; i <= 3; i++) {
      const gw = i % 2 ? gwA : gwB;
      const other = i % 2 ? gwB : gwA;
      const r = await chatVia(gw, payingKey, PAID_BODY);
      await r.arrayBuffer();
      assert.equal(r.status, 200, `answer ${i}`);
      // The other replica sees the charge settled (not merely reserved) once it reaches Redis.
      await waitFor(async () => {
        const u = await usageVia(other);
        return toNanos(u.spent) === BigInt(i) * PRICE_PER_ANSWER && toNanos(u.reserved) === 0n;
      }, { what: `charge ${i} seen by the other replica` });
    }
    for (const gw of [gwA, gwB]) {
      const r = await chatVia(gw, payingKey, PAID_BODY);
      const json = await r.json();
      assert.equal(r.status, 402, 'the balance is gone on both replicas');
      assert.equal(json.error.code, 'balance_exceeded');
    }
    // Either replica reports the spend of both, exactly.
    for (const gw of [gwA, gwB]) {
      const u = await usageVia(gw);
      const spent = 3n * PRICE_PER_ANSWER;
      assert.equal(toNanos(u.credit), CREDIT);
      assert.equal(toNanos(u.spent), spent, `spent ${u.spent}`);
      assert.equal(toNanos(u.reserved), 0n, 'the refused requests hold nothing');
      assert.equal(toNanos(u.remaining), CREDIT - spent);
      assert.equal(toNanos(u.by_route[ROUTE_GPT].spent), spent);
    }
  });
});
