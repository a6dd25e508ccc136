// Upstream failures as the client sees them: 4xx passed through as upstream_rejected,
// 5xx / refused / reset → 502, budget exhausted → 504; no provider key in any error body.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, readErrorEnvelope, closedPort, performance, ROUTE_GPT, UPSTREAM_GPT,
} from './harness.mjs';

let s;
before(async () => {
  const dead = await closedPort();
  s = await startStack({
    configOverrides: {
      extraProviders: {
        dead: { base_url: `http://127.0.0.1:${dead}/v1`, api_key: '${FAKE_PROVIDER_KEY}', ca_file: '', max_connections: 4 },
      },
      extraRoutes: [
        { id: 'eu/dead/gpt-oss-120b', provider: 'dead', upstream_model: UPSTREAM_GPT, type: 'chat' },
        { id: 'eu/flaky/gpt-oss-120b', provider: 'fake', upstream_model: `${UPSTREAM_GPT}?status=503&delay_ms=200`, type: 'chat' },
      ],
    },
  });
});
after(stopAll);

async function expectError(res, expect) {
  const err = await readErrorEnvelope(res, expect);
  assert.ok(!err._text.includes(s.providerKey), `provider api key leaked in the error body: ${err._text}`);
  return err;
}

/** What the fake itself answers for a given fault, to compare messages. */
async function direct(fake) {
  const r = await fetch(`${s.fake.baseUrl()}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s.providerKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(chatBody(UPSTREAM_GPT, { fake })),
  });
  return { status: r.status, body: await r.json() };
}

describe('upstream errors', { timeout: 60_000 }, () => {
  for (const status of [400, 404, 422]) {
    test(`upstream ${status} → ${status} upstream_rejected with the upstream's message`, async () => {
      const fake = { status, error_code: 'context_length_exceeded' };
      const d = await direct(fake);
      assert.equal(d.status, status);
      const upstreamMessage = d.body.error.message;
      assert.ok(upstreamMessage, 'the fake sends an error message');
      const err = await expectError(await s.chat(chatBody(ROUTE_GPT, { fake })),
        { status, type: 'invalid_request_error', code: 'upstream_rejected' });
      assert.ok(err.message.includes(upstreamMessage), `message ${JSON.stringify(err.message)} lacks the upstream's ${JSON.stringify(upstreamMessage)}`);
    });
  }

  for (const status of [500, 502, 503]) {
    test(`upstream ${status} → 502 upstream_error`, async () => {
      await expectError(await s.chat(chatBody(ROUTE_GPT, { fake: { status, retry_after: 1 } })), { status: 502, code: 'upstream_error' });
    });
  }

  test('fault from the route config (upstream_model "?status=503&delay_ms=200") → 502', async () => {
    await expectError(await s.chat(chatBody('eu/flaky/gpt-oss-120b')), { status: 502, code: 'upstream_error' });
  });

  test('connection refused → 502 promptly', async () => {
    const t0 = performance.now();
    await expectError(await s.chat(chatBody('eu/dead/gpt-oss-120b')), { status: 502, code: 'upstream_error' });
    const ms = performance.now() - t0;
    assert.ok(ms < 2000 + 3000, `connection refused took ${ms.toFixed(0)} ms (connect_ms 2000)`);
  });

  test('connection reset by the upstream → 502', async () => {
    await expectError(await s.chat(chatBody(ROUTE_GPT, { fake: { reset: true } })), { status: 502, code: 'upstream_error' });
  });

  test('X-Tresor-Timeout-Seconds: 1 with a 5 s upstream delay → 504 upstream_timeout within the budget', async () => {
    const t0 = performance.now();
    const res = await s.chat(chatBody(ROUTE_GPT, { fake: { delay_ms: 5000 } }), { headers: { 'X-Tresor-Timeout-Seconds': '1' } });
    const ms = performance.now() - t0;
    await expectError(res, { status: 504, code: 'upstream_timeout' });
    console.log(`504 after ${ms.toFixed(0)} ms (budget 1000 ms)`);
    assert.ok(ms >= 900, `504 after ${ms.toFixed(0)} ms: before the 1 s budget ran out`);
    assert.ok(ms < 1000 + 2500, `504 after ${ms.toFixed(0)} ms: budget 1 s`);
  });

  test('a slow upstream inside the default budget still succeeds', async () => {
    const res = await s.chat(chatBody(ROUTE_GPT, { fake: { delay_ms: 1500 } }));
    assert.equal(res.status, 200, await res.text());
  });

  test('gateway healthy after all upstream failures', async () => {
    assert.ok(await s.healthy());
    const res = await s.chat(chatBody(ROUTE_GPT));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).tresor.routed_model, ROUTE_GPT);
  });
});
