// Routing failover as an unmodified OpenAI JS SDK sees it: the Tresor-only `failover` field as
// an extra body field, X-Tresor-Timeout-Seconds as a request-option header, `tresor` on the
// response; and an in-band stream error surfacing as an exception while iterating the stream.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startRoutingStack, stopAll, expectAttempts, performance } from '../integration/harness.mjs';

const CONTENT = 'Hallo! Wie kann ich helfen?';
const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
let s;
let client;

before(async () => {
  s = await startRoutingStack({
    providers: ['prova', 'provb'],
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
    retry: { backoff_ms: 50 },
    // Each test counts upstream requests: the breaker must not carry one test's failures
    // (a cut stream and its recovery count as two) into the next.
    breaker: { consecutive_failures: 1000 },
    content: CONTENT,
    fakeOpts: { chunks: 4 },
  });
  // maxRetries 0: every retry and failover seen here is the gateway's, not the SDK's.
  client = new OpenAI({ apiKey: s.key, baseURL: `http://127.0.0.1:${s.gw.port}/v1`, maxRetries: 0 });
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

describe('OpenAI JS SDK: routing failover', { timeout: 60_000 }, () => {
  test('failover via extra body field + timeout via request headers → served by the failover route', async () => {
    await s.fakes.prova.behaviour({ status: 503 });
    const t0 = performance.now();
    const { data: resp, response } = await client.chat.completions.create(
      {
        model: A,
        messages: [{ role: 'user', content: 'Hello!' }],
        failover: [B],
      },
      { headers: { 'X-Tresor-Timeout-Seconds': '30' } },
    ).withResponse();
    const ms = performance.now() - t0;
    console.log(`SDK failover: ${ms.toFixed(0)} ms, X-Tresor-Attempts: ${response.headers.get('x-tresor-attempts')}`);
    assert.equal(resp.choices[0].message.content, CONTENT);
    assert.equal(resp.tresor.failover, true);
    assert.equal(resp.tresor.routed_model, B);
    assert.equal(resp.tresor.requested_route, A);
    assert.equal(resp.model, 'provb-m1');
    expectAttempts(response.headers.get('x-tresor-attempts'), [[A, 503], [A, 503], [B, 'ok']]);
    // The gateway strips its own fields before forwarding.
    const [reqB] = await s.fakes.provb.requests();
    const fwd = JSON.parse(reqB.body);
    assert.ok(!('failover' in fwd), 'failover must not be forwarded');
    assert.equal(reqB.headers['x-tresor-timeout-seconds'], undefined, 'the timeout header must not be forwarded');
  });

  test('the timeout header set through request options takes effect: silent route, 1 s → 504 upstream_timeout', async () => {
    await s.fakes.prova.behaviour({ silent: 1 });
    const t0 = performance.now();
    await assert.rejects(
      client.chat.completions.create(
        { model: A, messages: [{ role: 'user', content: 'Hello!' }] },
        { headers: { 'X-Tresor-Timeout-Seconds': '1' } },
      ),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 504);
        assert.equal(err.code, 'upstream_timeout');
        assert.equal(err.type, 'timeout_error');
        return true;
      },
    );
    const ms = performance.now() - t0;
    console.log(`SDK 504 after ${ms.toFixed(0)} ms (budget 1000 ms)`);
    assert.ok(ms >= 1000 - 50 && ms <= 1000 + 100, `504 after ${ms.toFixed(0)} ms, budget 1 s`);
  });

  test('stream failover before the first event: the SDK sees one clean stream from the failover route', async () => {
    await s.fakes.prova.behaviour({ reset: 1 });
    const stream = await client.chat.completions.create({
      model: A, messages: [{ role: 'user', content: 'Hello!' }], stream: true, failover: [B],
    });
    let text = '';
    let finish;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.choices[0]?.finish_reason) finish = chunk;
    }
    assert.equal(text, CONTENT);
    assert.equal(finish?.tresor?.routed_model, B);
    assert.equal(finish?.tresor?.failover, true);
  });

  test('an in-band stream error (upstream cut mid-answer, only route) is thrown while iterating', async () => {
    await s.fakes.prova.behaviour({ cut_after: 2 });
    const stream = await client.chat.completions.create({
      model: A, messages: [{ role: 'user', content: 'Hello!' }], stream: true,
    });
    let text = '';
    let chunks = 0;
    let finished = false;
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) {
          chunks++;
          text += chunk.choices[0]?.delta?.content ?? '';
          if (chunk.choices[0]?.finish_reason) finished = true;
        }
      })(),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.ok(err.message.length > 0);
        return true;
      },
      'the stream must end in an exception, not as a complete answer',
    );
    console.log(`SDK stream error after ${chunks} chunks (${JSON.stringify(text)})`);
    assert.ok(chunks >= 1, 'the chunks before the cut were delivered');
    assert.equal(finished, false, 'no finish_reason on a broken stream');
    assert.notEqual(text, CONTENT);
  });
});

/** An SDK client with the default maxRetries (2) whose HTTP calls are counted. */
function countingClient(stack) {
  const calls = [];
  const sdk = new OpenAI({
    apiKey: stack.key,
    baseURL: `http://127.0.0.1:${stack.gw.port}/v1`,
    fetch: async (url, init) => {
      const res = await fetch(url, init);
      calls.push({ status: res.status, shouldRetry: res.headers.get('x-should-retry') });
      return res;
    },
  });
  return { sdk, calls };
}

const ask = (sdk, model) => sdk.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello!' }] });

describe('OpenAI JS SDK (default maxRetries): x-should-retry: false after the gateway\'s own retries', { timeout: 60_000 }, () => {
  test('a route that always answers 503: one SDK call, so the upstream sees exactly the gateway\'s attempts (not ×3)', async () => {
    await s.fakes.prova.behaviour({ status: 503 });
    const { sdk, calls } = countingClient(s);
    await assert.rejects(ask(sdk, A), (err) => {
      assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.status, 502);
      assert.equal(err.code, 'upstream_error');
      return true;
    });
    assert.deepEqual(calls, [{ status: 502, shouldRetry: 'false' }], 'the SDK did not retry');
    // attempts_per_route = 2 (the harness default): the gateway's own retry, and no more.
    assert.equal((await s.fakes.prova.requests()).length, 2, 'upstream requests');
  });

  test('503 no_route_available (the only route held by Retry-After): not retried by the SDK either', async () => {
    await s.fakes.provb.behaviour({ status: 429, retry_after: 30, times: 1 });
    const { sdk, calls } = countingClient(s);
    await assert.rejects(ask(sdk, B), (err) => err.status === 502);
    await assert.rejects(ask(sdk, B), (err) => {
      assert.equal(err.status, 503);
      assert.equal(err.code, 'no_route_available');
      return true;
    });
    assert.deepEqual(calls, [{ status: 502, shouldRetry: 'false' }, { status: 503, shouldRetry: 'false' }]);
    assert.equal((await s.fakes.provb.requests()).length, 1, 'the held route was asked once');
  });
});

describe('retry.client_should_retry: true leaves the retry decision to the SDK', { timeout: 60_000 }, () => {
  test('the same dead route: no x-should-retry header; the SDK retries twice, replaying the gateway\'s attempts', async () => {
    const t = await startRoutingStack({
      providers: ['provc'],
      routes: [{ id: 'eu/provc/m1', provider: 'provc' }],
      retry: { backoff_ms: 50, client_should_retry: true },
      breaker: { consecutive_failures: 1000 }, // the 5th failure would open it and spare the 6th attempt
    });
    await t.fakes.provc.behaviour({ status: 503 });
    const { sdk, calls } = countingClient(t);
    await assert.rejects(ask(sdk, 'eu/provc/m1'), (err) => err.status === 502);
    assert.deepEqual(calls, Array(3).fill({ status: 502, shouldRetry: null }));
    assert.equal((await t.fakes.provc.requests()).length, 6, '3 SDK calls × 2 gateway attempts');
  });
});
