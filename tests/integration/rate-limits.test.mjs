// Per-key rate limits (spec §9.2) against the real gateway: headers on every
// authenticated answer, 429 rate_limit_exceeded with an integer Retry-After past the limit.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, stopAll, makeKey, sha256Hex, ROUTE_GPT } from './harness.mjs';

const LIMIT = 5;
let s;
let otherKey;

before(async () => {
  otherKey = makeKey();
  s = await startStack({
    configHook: (config) => {
      config.auth.keys[0].limits = { per_minute: LIMIT, per_day: 1000 };
      config.auth.keys.push({ sha256: sha256Hex(otherKey), customer: 'acme' });  // no limits
      return config;
    },
  });
});
after(stopAll);

const body = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] };

describe('rate limits', { timeout: 30_000 }, () => {
  test('the limit is counted down in X-RateLimit-* and the request past it gets 429', async (t) => {
    // A minute boundary in the middle would reset the window and the count with it.
    const secondsLeft = 60 - (Math.floor(Date.now() / 1000) % 60);
    if (secondsLeft < 5) await new Promise((r) => setTimeout(r, secondsLeft * 1000 + 100)); // pacing, not sync
    for (let i = 1; i <= LIMIT; i++) {
      const r = await s.chat(body);
      await r.arrayBuffer();
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-ratelimit-limit'), String(LIMIT));
      assert.equal(r.headers.get('x-ratelimit-remaining'), String(LIMIT - i));
    }
    const upstreamBefore = (await s.fake.requests()).length;
    const r = await s.chat(body);
    const json = await r.json();
    assert.equal(r.status, 429);
    assert.equal(json.error.code, 'rate_limit_exceeded');
    assert.equal(json.error.type, 'rate_limit_error');
    const retryAfter = r.headers.get('retry-after');
    assert.match(retryAfter, /^\d+$/);
    assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, `Retry-After ${retryAfter}`);
    assert.equal(r.headers.get('x-ratelimit-remaining'), '0');
    assert.equal((await s.fake.requests()).length, upstreamBefore, 'a limited request never reaches the upstream');
    t.diagnostic(`429 after ${LIMIT} requests, Retry-After ${retryAfter}`);
  });

  test('another key (same customer, no limits) is not affected and gets no rate-limit headers', async () => {
    const r = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${otherKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    await r.arrayBuffer();
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-ratelimit-limit'), null);
  });
});
