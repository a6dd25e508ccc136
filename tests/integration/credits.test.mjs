// Customer credits (spec §9.4): a balance worth three answers gives three answers, then
// 402 balance_exceeded with no upstream attempt; GET /v1/usage reports the spend.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, stopAll, ROUTE_GPT } from './harness.mjs';

// The fake answers with usage {prompt_tokens: 1, completion_tokens: 5} for this body:
// 1 × 0.1 + 5 × 0.2 = 1.1 per answer (prices per million tokens, scaled up for the test).
const PRICE_PER_ANSWER = 1.1;
let s;

before(async () => {
  s = await startStack({
    configHook: (config) => {
      config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
      config.auth.customers = { acme: { credit: 3.0, currency: 'eur' } };
      return config;
    },
  });
});
after(stopAll);

const body = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] };

describe('credits', { timeout: 30_000 }, () => {
  test('three answers, then 402 balance_exceeded before any upstream call', async () => {
    const first = await s.chat(body);
    const answer = await first.json();
    assert.equal(first.status, 200);
    assert.deepEqual([answer.usage.prompt_tokens, answer.usage.completion_tokens], [1, 5], 'fixture usage');
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

  test('GET /v1/usage reports credit, spend per route and the remaining balance', async () => {
    const r = await fetch(s.gw.url('/v1/usage'), { headers: { authorization: `Bearer ${s.key}` } });
    const usage = await r.json();
    assert.equal(r.status, 200);
    assert.equal(usage.customer, 'acme');
    assert.equal(usage.currency, 'eur');
    assert.equal(usage.credit, 3);
    assert.ok(Math.abs(usage.spent - 3 * PRICE_PER_ANSWER) < 1e-9, `spent ${usage.spent}`);
    assert.ok(Math.abs(usage.by_route[ROUTE_GPT] - 3 * PRICE_PER_ANSWER) < 1e-9);
    assert.ok(usage.remaining < 0, 'the request in flight may take the balance below zero once');
    const unauth = await fetch(s.gw.url('/v1/usage'));
    await unauth.arrayBuffer();
    assert.equal(unauth.status, 401);
  });
});
