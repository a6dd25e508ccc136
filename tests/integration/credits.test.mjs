// Customer credits (spec §9.4): a balance worth three answers gives three answers, then
// 402 balance_exceeded with no upstream attempt; GET /v1/usage reports the spend.
//
// Each request reserves its most expensive outcome before the first upstream attempt (body
// bytes as the prompt bound + max_tokens of output); the credit is sized so that the third
// request's reservation still fits after two answers but the fourth's does not after three.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, ROUTE_GPT, getUsage, nanosDecimal, toNanos, fetchReceipt, fetchJwks, verifyJws,
  RECEIPT_CLAIMS_PRICED,
} from './harness.mjs';

// Prices per million tokens, scaled up for the test: 0.1 per prompt token, 0.2 per
// completion token, i.e. 100_000_000 and 200_000_000 nanos per token.
const INPUT_NANOS = 100_000_000n;
const OUTPUT_NANOS = 200_000_000n;
const MAX_TOKENS = 5;
const body = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }], max_tokens: MAX_TOKENS };
// The fake answers with usage {prompt_tokens: 1, completion_tokens: 5} for this body:
// 1 × 0.1 + 5 × 0.2 = 1.1 per answer.
const PRICE_PER_ANSWER = 1n * INPUT_NANOS + 5n * OUTPUT_NANOS;
const RESERVATION = BigInt(Buffer.byteLength(JSON.stringify(body))) * INPUT_NANOS + BigInt(MAX_TOKENS) * OUTPUT_NANOS;
// Two answers spent, the third's reservation fits; three spent, a fourth's does not.
const CREDIT = 2n * PRICE_PER_ANSWER + RESERVATION + 500_000_000n;
let s;

before(async () => {
  s = await startStack({
    configHook: (config) => {
      config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
      config.auth.customers = { acme: { credit: Number(nanosDecimal(CREDIT)), currency: 'eur' } };
      return config;
    },
  });
});
after(stopAll);

describe('credits', { timeout: 30_000 }, () => {
  test('three answers, then 402 balance_exceeded before any upstream call', async () => {
    const first = await s.chat(body);
    const answer = await first.json();
    assert.equal(first.status, 200);
    assert.deepEqual([answer.usage.prompt_tokens, answer.usage.completion_tokens], [1, 5], 'fixture usage');
    // The receipt of a priced answer states what it cost, exactly.
    const receipt = await fetchReceipt(s.gw, s.key, answer.tresor.receipt_id);
    assert.equal(receipt.status, 200, receipt.text);
    const claims = verifyJws(receipt.json.receipt, (await fetchJwks(s.gw)).json).payload;
    assert.deepEqual(Object.keys(claims), RECEIPT_CLAIMS_PRICED);
    assert.equal(claims.usage_estimated, false);
    assert.equal(typeof claims.cost, 'string');
    assert.equal(toNanos(claims.cost), PRICE_PER_ANSWER, `cost ${claims.cost}`);
    assert.equal(claims.currency, 'eur');
    for (let i = 2; i <= 3; i++) {
      const r = await s.chat(body);
      await r.arrayBuffer();
      assert.equal(r.status, 200, `answer ${i}`);
    }
    const upstreamBefore = (await s.fake.requests()).length;
    const r = await s.chat(body);
    const json = await r.json();
    assert.equal(r.status, 402);
    assert.equal(json.error.type, 'insufficient_funds');
    assert.equal(json.error.code, 'balance_exceeded');
    assert.equal((await s.fake.requests()).length, upstreamBefore, 'no upstream attempt once the balance is gone');
  });

  test('GET /v1/usage reports credit, spend per route and day, and the remaining balance', async () => {
    const { status, text, usage } = await getUsage(s.gw, s.key);
    assert.equal(status, 200, text);
    assert.equal(usage.object, 'usage');
    assert.equal(usage.customer, 'acme');
    assert.equal(usage.currency, 'eur');
    const spent = 3n * PRICE_PER_ANSWER;
    const amounts = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toNanos(v)]));
    assert.equal(toNanos(usage.credit), CREDIT, text);
    assert.equal(toNanos(usage.spent), spent, text);
    assert.equal(toNanos(usage.estimated), 0n, 'the upstream reported usage: nothing estimated');
    assert.equal(toNanos(usage.reserved), 0n, 'nothing in flight');
    assert.equal(toNanos(usage.remaining), CREDIT - spent, text);
    assert.ok(CREDIT - spent < RESERVATION, 'what remains does not cover a fourth reservation');
    assert.deepEqual(Object.keys(usage.by_route), [ROUTE_GPT], text);
    assert.deepEqual(amounts(usage.by_route[ROUTE_GPT]), { spent, estimated: 0n });
    const days = Object.keys(usage.by_day);
    assert.equal(days.length, 1, text);
    assert.equal(days[0], new Date().toISOString().slice(0, 10), 'today (UTC)');
    assert.deepEqual(amounts(usage.by_day[days[0]]), { spent, estimated: 0n });
    const unauth = await getUsage(s.gw);
    assert.equal(unauth.status, 401);
  });
});
