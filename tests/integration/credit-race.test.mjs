// Issue 16, acceptance 3: 100 simultaneous requests against a credit that covers exactly
// 3 reservations, on SQLite (one gateway) and on two gateways sharing one redis-server:
// at most 3 are answered, every other one is 402 balance_exceeded, and spent ≤ credit
// (exact decimals). The same shape for a key's tokens_per_minute: at most 3 answered, the
// rest 429 with Retry-After and the x-ratelimit-*-tokens headers, refused before anything
// reached the upstream.
//
// The reservation of a chat request (accounts/pricing.h chat_bound): the request body's
// bytes as prompt tokens + max_tokens as output tokens, at the route's prices; every request
// here has the same body, so the same reservation. The fake answers slowly (delay_ms), so
// the winners still hold their reservations while the other requests arrive. The answer's
// completion tokens equal max_tokens and the output price dominates, so each answer costs
// nearly its reservation: a fourth answer would take spent past the credit.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, tempDir,
  delay, ROUTE_GPT,
} from './harness.mjs';
import { chatCostNanos, fakeWords, nanosText, readUsage, startRedis } from './money-support.mjs';

const N = 100;
const WINNERS = 3;
const CONTENT = 'one two three four five six seven eight nine ten';
const MAX_TOKENS = fakeWords(CONTENT); // 10: the answer uses all of it
const PRICES = { inputNanosPerMtok: 1n * 1_000_000_000n, outputNanosPerMtok: 200_000n * 1_000_000_000n };
// Slow enough that all 100 requests are admitted or refused while the winners are held.
const UPSTREAM_DELAY_MS = 6000;
const BODY = JSON.stringify({
  model: ROUTE_GPT, max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: 'race' }],
  fake: { delay_ms: UPSTREAM_DELAY_MS },
});
const BODY_BYTES = Buffer.byteLength(BODY);
const RESERVATION = chatCostNanos(PRICES, BODY_BYTES, MAX_TOKENS);
const CREDIT = RESERVATION * BigInt(WINNERS);
const ANSWER_COST = chatCostNanos(PRICES, fakeWords('race'), MAX_TOKENS);
const TOKEN_BOUND = BODY_BYTES + MAX_TOKENS;
const TPM = TOKEN_BOUND * WINNERS;

let redis;
let providerKey;
let fake;

before(async () => {
  providerKey = makeProviderKey();
  fake = await startFakeUpstream({ requireKey: providerKey, content: CONTENT });
  redis = await startRedis();
});
after(async () => {
  await stopAll();
  redis?.stop();
});

// A config with one credit-limited customer and one token-limited key; `store` optional.
function raceConfig({ creditKey, tokenKey, store, credit = nanosText(CREDIT) }) {
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    server: { max_connections: 1024 },
    keys: [
      { sha256: sha256Hex(creditKey), customer: 'acme' },
      { sha256: sha256Hex(tokenKey), customer: 'tokens', limits: { tokens_per_minute: TPM } },
    ],
  });
  config.providers.fake.max_connections = 128;
  config.routes[0].pricing = { input_per_mtok: 1, output_per_mtok: 200000, currency: 'eur' };
  config.auth.customers = { acme: { credit: Number(credit), currency: 'eur' } };
  if (store) {
    config.store = store;
    config.receipts = { signing_key_file: `${tempDir('tresor-race-key-')}/receipt-es256.pem`, kid: 'race-1' };
  }
  return config;
}

// Fires N identical requests at once, spread over `gateways`; resolves with every answer.
async function burst(gateways, key) {
  const all = Array.from({ length: N }, (_, i) => fetch(gateways[i % gateways.length].url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: BODY,
  }).then(async (res) => ({ status: res.status, headers: res.headers, text: await res.text() })));
  return Promise.all(all);
}

function tally(answers) {
  const counts = {};
  for (const a of answers) counts[a.status] = (counts[a.status] || 0) + 1;
  return counts;
}

// With fewer than 20 s left in the current UTC minute, waits for the next one, so that a
// burst of a few seconds stays inside one tokens_per_minute window (pacing, not sync).
async function awayFromMinuteEnd() {
  const left = 60 - (Math.floor(Date.now() / 1000) % 60);
  if (left < 20) await delay(left * 1000 + 200);
}

async function creditRace(gateways, key) {
  await fake.reset();
  const answers = await burst(gateways, key);
  const counts = tally(answers);
  const ok = answers.filter((a) => a.status === 200);
  assert.ok(ok.length >= 1 && ok.length <= WINNERS, `at most ${WINNERS} answered (and at least one): ${JSON.stringify(counts)}`);
  for (const a of answers.filter((x) => x.status !== 200)) {
    assert.equal(a.status, 402, `every other answer is 402: ${JSON.stringify(counts)} e.g. ${a.text.slice(0, 200)}`);
    assert.equal(JSON.parse(a.text).error.code, 'balance_exceeded');
  }
  const upstream = (await fake.stats()).requests;
  assert.equal(upstream, ok.length, 'only the answered requests reached the upstream');
  const usages = await Promise.all(gateways.map((gw) => readUsage(gw, key)));
  for (const u of usages) {
    assert.equal(u.credit, CREDIT);
    assert.ok(u.spent <= u.credit, `spent ${nanosText(u.spent)} ≤ credit ${nanosText(u.credit)}`);
    assert.equal(u.spent, ANSWER_COST * BigInt(ok.length), 'spent = the answers\' costs, exactly');
    assert.equal(u.reserved, 0n, 'no hold left');
  }
  return counts;
}

async function tokenRace(gateways, key) {
  await fake.reset();
  await awayFromMinuteEnd();
  const answers = await burst(gateways, key);
  const counts = tally(answers);
  const ok = answers.filter((a) => a.status === 200);
  assert.ok(ok.length >= 1 && ok.length <= WINNERS, `at most ${WINNERS} answered: ${JSON.stringify(counts)}`);
  for (const a of answers.filter((x) => x.status !== 200)) {
    assert.equal(a.status, 429, `every other answer is 429: ${JSON.stringify(counts)} e.g. ${a.text.slice(0, 200)}`);
    assert.equal(JSON.parse(a.text).error.code, 'rate_limit_exceeded');
    assert.match(a.headers.get('retry-after') ?? '', /^[1-9]\d*$/, 'Retry-After');
    assert.equal(a.headers.get('x-ratelimit-limit-tokens'), String(TPM));
    assert.match(a.headers.get('x-ratelimit-remaining-tokens') ?? '', /^\d+$/);
    assert.ok(Number(a.headers.get('x-ratelimit-remaining-tokens')) < TOKEN_BOUND, 'what remains does not fit one request');
    assert.match(a.headers.get('x-ratelimit-reset-tokens') ?? '', /^(\d+h)?(\d+m)?\d+s$/);
  }
  for (const a of ok) assert.equal(a.headers.get('x-ratelimit-limit-tokens'), String(TPM), 'announced on answers too');
  assert.equal((await fake.stats()).requests, ok.length, 'refused before anything reached the upstream');
  return counts;
}

describe('credit and token races', { timeout: 240_000 }, () => {
  test('fixture: a fourth answer would overspend the credit', () => {
    assert.ok(ANSWER_COST * BigInt(WINNERS + 1) > CREDIT,
      `answer ${nanosText(ANSWER_COST)} × 4 > credit ${nanosText(CREDIT)}`);
  });

  test('SQLite, one gateway: 100 simultaneous requests, a credit for 3', async (t) => {
    const creditKey = makeKey();
    const tokenKey = makeKey();
    const gw = await startGateway({ config: raceConfig({ creditKey, tokenKey }), env: { FAKE_PROVIDER_KEY: providerKey } });
    t.diagnostic(`credit: ${JSON.stringify(await creditRace([gw], creditKey))}`);
    t.diagnostic(`tokens_per_minute: ${JSON.stringify(await tokenRace([gw], tokenKey))}`);
    await gw.stop();
  });

  test('Redis, two gateways: 100 simultaneous requests, a credit for 3', async (t) => {
    const creditKey = makeKey();
    const tokenKey = makeKey();
    const config = raceConfig({ creditKey, tokenKey, store: redis.url });
    const env = { FAKE_PROVIDER_KEY: providerKey };
    const gwA = await startGateway({ config, env, name: 'gateway-A' });
    const gwB = await startGateway({ config, env, name: 'gateway-B' });
    t.diagnostic(`credit: ${JSON.stringify(await creditRace([gwA, gwB], creditKey))}`);
    t.diagnostic(`tokens_per_minute: ${JSON.stringify(await tokenRace([gwA, gwB], tokenKey))}`);
  });
});
