// Routing failover (spec §3, routing issue): candidate lists, same-route retries for transient
// failures, failover to the next candidate, 4xx pass-through, context_length_exceeded, the
// `tresor` routing fields and the X-Tresor-Attempts header. Non-stream and pre-first-event
// stream failures. One fake upstream process per provider; faults are set per process via
// POST /_fake/behaviour, so the tests in this file run one after the other on a shared stack.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, timedChat, expectAttempts, parseEventJson,
  selfSignedCert,
} from './harness.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const C = 'global/provc/m1';
const C2 = 'global/provc/m2';
const A2 = 'eu/prova/m2';
const DEAD = 'lux/provdead/m1';
const TLS = 'lux/provtls/m1'; // HTTPS with a certificate the gateway does not trust
const BACKOFF_MS = 50;
// Jittered doubling from backoff_ms: the n-th backoff is at most backoff_ms * 2^(n-1) * 1.5.
const backoffBudget = (n) => Array.from({ length: n }, (_, k) => BACKOFF_MS * 2 ** k * 1.5).reduce((a, b) => a + b, 0);
const SLACK_MS = 1000; // "< backoff budget + 1 s": the fakes themselves answer in a few ms
const UPSTREAM_COUNT_MSG = 'requests the fakes received (/_fake/stats) must equal the attempts in X-Tresor-Attempts ' +
  '(attempts_per_route = 2 on the primary)';

let s;
let fa;
let fb;
let fc;

before(async () => {
  s = await startRoutingStack({
    providers: { prova: {}, provb: {}, provc: {}, provdead: { dead: true }, provtls: { fakeOpts: selfSignedCert() } },
    routes: [
      { id: A, provider: 'prova' },
      { id: B, provider: 'provb' },
      { id: C, provider: 'provc' },
      { id: DEAD, provider: 'provdead' },
      { id: TLS, provider: 'provtls' },
      { id: A2, provider: 'prova' },
      { id: C2, provider: 'provc' },
    ],
    retry: { attempts_per_route: 2, backoff_ms: BACKOFF_MS, max_retry_after_seconds: 5 },
    // The tests here fail the primary over and over; keep its breaker out of the way (the breaker
    // has its own file, routing-breaker.test.mjs).
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    fakeOpts: { chunks: 4 },
  });
  ({ prova: fa, provb: fb, provc: fc } = s.fakes);
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

const counts = async () => {
  const [a, b, c] = await Promise.all([fa.stats(), fb.stats(), fc.stats()]);
  return { a: a.requests, b: b.requests, c: c.requests };
};

function assertServed(r, { requested, routed, failover }) {
  assert.equal(r.status, 200, `status ${r.status}: ${r.text ?? r.raw}`);
  const tr = r.json.tresor;
  assert.ok(tr, `no tresor object: ${r.text}`);
  assert.equal(tr.requested_route, requested, 'tresor.requested_route');
  assert.equal(tr.routed_model, routed, 'tresor.routed_model');
  assert.equal(tr.failover, failover, 'tresor.failover');
  // Top-level model: the serving upstream's own model string (routes use `<provider>-<key>`).
  const [, prov, key] = routed.split('/');
  assert.equal(r.json.model, `${prov}-${key}`, 'top-level model is the serving upstream\'s');
}

function assertStreamServed(r, { requested, routed, failover }) {
  assert.equal(r.status, 200, `status ${r.status}: ${r.text ?? r.raw}`);
  assert.ok(r.events, `not an SSE answer: ${r.text}`);
  assert.equal(r.events.at(-1).data, '[DONE]', `stream must end with [DONE]: ${r.raw}`);
  const data = r.events.filter((e) => e.data !== '[DONE]').map(parseEventJson);
  const finish = data.filter((j) => j?.choices?.[0]?.finish_reason != null);
  assert.equal(finish.length, 1, `one finish chunk: ${r.raw}`);
  assert.deepEqual(
    { requested_route: finish[0].tresor?.requested_route, routed_model: finish[0].tresor?.routed_model, failover: finish[0].tresor?.failover },
    { requested_route: requested, routed_model: routed, failover },
    `tresor on the finish chunk: ${r.raw}`,
  );
}

const log = (name, r) => console.log(`${name}: status ${r.status}, ${r.ms.toFixed(0)} ms` +
  (r.firstEventMs !== undefined ? ` (first event ${r.firstEventMs.toFixed(0)} ms)` : '') +
  `, X-Tresor-Attempts: ${r.attemptsHeader}`);

describe('transient primary failures: retry on the same route, then fail over', { timeout: 120_000 }, () => {
  for (const status of [500, 502, 503, 504, 408, 429]) {
    test(`primary ${status} every time → ${status} ×2 on the primary, then served by the failover route`, async () => {
      await fa.behaviour({ status });
      const r = await timedChat(s, chatBody(A, { failover: [B] }));
      log(`primary ${status}`, r);
      assertServed(r, { requested: A, routed: B, failover: true });
      expectAttempts(r.attemptsHeader, [[A, status], [A, status], [B, 'ok']]);
      assert.deepEqual(await counts(), { a: 2, b: 1, c: 0 }, 'exactly attempts_per_route=2 primary attempts');
      assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms; backoff budget ${backoffBudget(1)} ms + 1 s`);
    });
  }

  test('primary connection refused → connect_failed ×2, then served by the failover route', async () => {
    const r = await timedChat(s, chatBody(DEAD, { failover: [B] }));
    log('primary refused', r);
    assertServed(r, { requested: DEAD, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[DEAD, 'connect_failed'], [DEAD, 'connect_failed'], [B, 'ok']]);
    assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('primary TLS handshake fails (untrusted certificate) → tls_failed ×2, then served by the failover route', async () => {
    const r = await timedChat(s, chatBody(TLS, { failover: [B] }));
    log('primary TLS failure', r);
    assertServed(r, { requested: TLS, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[TLS, 'tls_failed'], [TLS, 'tls_failed'], [B, 'ok']]);
    assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('primary resets the connection before answering → reset ×2, then served by the failover route', async () => {
    await fa.behaviour({ reset: 1 });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary reset', r);
    assertServed(r, { requested: A, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 'reset'], [A, 'reset'], [B, 'ok']]);
    // Every request the upstream received is an attempt (and listed): no hidden extra sends.
    assert.deepEqual(await counts(), { a: 2, b: 1, c: 0 }, UPSTREAM_COUNT_MSG);
    assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('primary 500 with 300 ms upstream latency → wall time bounded by latency ×2 + backoff + 1 s', async () => {
    await fa.behaviour({ status: 500, delay_ms: 300 });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary 500 after 300 ms', r);
    assertServed(r, { requested: A, routed: B, failover: true });
    const got = expectAttempts(r.attemptsHeader, [[A, 500], [A, 500], [B, 'ok']]);
    assert.ok(got[0].ms >= 300 && got[1].ms >= 300, `attempt times ${got.map((g) => g.ms)} include the upstream's 300 ms`);
    assert.ok(r.ms >= 600, `two 300 ms attempts cannot finish in ${r.ms.toFixed(0)} ms`);
    assert.ok(r.ms < 600 + backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  for (const [name, behaviour, expected] of [
    ['503', { status: 503 }, [[A, 503], [A, 503], [B, 'ok']]],
    ['connection refused', null, [[DEAD, 'connect_failed'], [DEAD, 'connect_failed'], [B, 'ok']]],
    ['reset', { reset: 1 }, [[A, 'reset'], [A, 'reset'], [B, 'ok']]],
    ['429', { status: 429 }, [[A, 429], [A, 429], [B, 'ok']]],
  ]) {
    test(`stream: primary ${name} before the first event → failover, header on the SSE response`, async () => {
      const primary = behaviour ? A : DEAD;
      if (behaviour) await fa.behaviour(behaviour);
      const r = await timedChat(s, chatBody(primary, { stream: true, failover: [B] }));
      log(`stream primary ${name}`, r);
      assertStreamServed(r, { requested: primary, routed: B, failover: true });
      expectAttempts(r.attemptsHeader, expected);
      assert.ok(r.firstEventMs < backoffBudget(1) + SLACK_MS, `first event after ${r.firstEventMs.toFixed(0)} ms`);
      if (behaviour) assert.deepEqual(await counts(), { a: 2, b: 1, c: 0 }, UPSTREAM_COUNT_MSG);
    });
  }

  test('primary 500 once, then healthy → served by the primary on its 2nd attempt (failover: false)', async () => {
    await fa.behaviour({ status: 500, times: 1 });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary 500 once', r);
    assertServed(r, { requested: A, routed: A, failover: false });
    expectAttempts(r.attemptsHeader, [[A, 500], [A, 'ok']]);
    assert.deepEqual(await counts(), { a: 2, b: 0, c: 0 });
    assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('429 with Retry-After: 2 once → the same route again after ≈2 s', async () => {
    await fa.behaviour({ status: 429, retry_after: 2, times: 1 });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary 429 Retry-After 2 once', r);
    assertServed(r, { requested: A, routed: A, failover: false });
    expectAttempts(r.attemptsHeader, [[A, 429], [A, 'ok']]);
    assert.deepEqual(await counts(), { a: 2, b: 0, c: 0 });
    assert.ok(r.ms >= 2000, `Retry-After 2 s not honoured: answered after ${r.ms.toFixed(0)} ms`);
    assert.ok(r.ms < 2000 + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('503 with Retry-After: 1 every time → 2 primary attempts 1 s apart, then the failover route', async () => {
    await fa.behaviour({ status: 503, retry_after: 1 });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary 503 Retry-After 1', r);
    assertServed(r, { requested: A, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 'ok']]);
    assert.deepEqual(await counts(), { a: 2, b: 1, c: 0 });
    assert.ok(r.ms >= 1000, `Retry-After 1 s not honoured: answered after ${r.ms.toFixed(0)} ms`);
    assert.ok(r.ms < 1000 + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('three candidates: 503 ×2, 401 (no retry), then the third serves', async () => {
    await Promise.all([fa.behaviour({ status: 503 }), fb.behaviour({ status: 401 })]);
    const r = await timedChat(s, chatBody(A, { failover: [B, C] }));
    log('chain 503/401/ok', r);
    assertServed(r, { requested: A, routed: C, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 401], [C, 'ok']]);
    assert.deepEqual(await counts(), { a: 2, b: 1, c: 1 });
    assert.ok(r.ms < backoffBudget(1) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('all routes fail → 502 upstream_error listing every attempt', async () => {
    await Promise.all([fa.behaviour({ status: 503 }), fb.behaviour({ status: 500 })]);
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('all failed', r);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, type: 'upstream_error', code: 'upstream_error' });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 500], [B, 500]]);
    assert.deepEqual(await counts(), { a: 2, b: 2, c: 0 });
    assert.ok(r.ms < backoffBudget(2) + SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });

  test('stream: all routes fail before the first event → 502 JSON envelope with the attempts header', async () => {
    await Promise.all([fa.behaviour({ status: 503 }), fb.behaviour({ reset: 1 })]);
    const r = await timedChat(s, chatBody(A, { stream: true, failover: [B] }));
    log('stream all failed', r);
    assert.match(r.headers.get('content-type') || '', /json/i);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, type: 'upstream_error', code: 'upstream_error' });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 'reset'], [B, 'reset']]);
  });
});

describe('non-transient upstream answers', { timeout: 60_000 }, () => {
  for (const status of [401, 403]) {
    test(`primary ${status} (provider rejected the router's credentials) → failover without retry`, async () => {
      await fa.behaviour({ status });
      const r = await timedChat(s, chatBody(A, { failover: [B] }));
      log(`primary ${status}`, r);
      assertServed(r, { requested: A, routed: B, failover: true });
      expectAttempts(r.attemptsHeader, [[A, status], [B, 'ok']]);
      assert.deepEqual(await counts(), { a: 1, b: 1, c: 0 });
      assert.ok(r.ms < SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
    });
  }

  for (const status of [400, 404, 422]) {
    test(`primary ${status} → ${status} passed through (upstream_rejected), exactly one upstream attempt, no failover`, async () => {
      await fa.behaviour({ status, error_code: 'unsupported_parameter' });
      const r = await timedChat(s, chatBody(A, { failover: [B] }));
      log(`primary ${status}`, r);
      const err = await readErrorEnvelope({ status: r.status, text: r.text },
        { status, type: 'invalid_request_error', code: 'upstream_rejected' });
      assert.ok(err.message.includes(`fake upstream error ${status}`), `upstream message kept: ${err.message}`);
      expectAttempts(r.attemptsHeader, [[A, status]]);
      assert.deepEqual(await counts(), { a: 1, b: 0, c: 0 });
    });
  }

  test('primary 400 context_length_exceeded → served by the failover route (no retry)', async () => {
    await fa.behaviour({ status: 400, error_code: 'context_length_exceeded' });
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    log('primary 400 context_length_exceeded', r);
    assertServed(r, { requested: A, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 400], [B, 'ok']]);
    assert.deepEqual(await counts(), { a: 1, b: 1, c: 0 });
  });

  test('stream: primary 400 context_length_exceeded → failover; plain 400 → 400 JSON, one attempt', async () => {
    await fa.behaviour({ status: 400, error_code: 'context_length_exceeded', times: 1 });
    const r1 = await timedChat(s, chatBody(A, { stream: true, failover: [B] }));
    log('stream 400 context_length_exceeded', r1);
    assertStreamServed(r1, { requested: A, routed: B, failover: true });
    expectAttempts(r1.attemptsHeader, [[A, 400], [B, 'ok']]);

    await s.clearFakes();
    await fa.behaviour({ status: 400 });
    const r2 = await timedChat(s, chatBody(A, { stream: true, failover: [B] }));
    log('stream 400', r2);
    await readErrorEnvelope({ status: r2.status, text: r2.text }, { status: 400, code: 'upstream_rejected' });
    expectAttempts(r2.attemptsHeader, [[A, 400]]);
    assert.deepEqual(await counts(), { a: 1, b: 0, c: 0 });
  });
});

describe('candidate lists', { timeout: 60_000 }, () => {
  test('healthy fixed primary → served directly, one attempt, failover: false', async () => {
    const r = await timedChat(s, chatBody(A, { failover: [B] }));
    assertServed(r, { requested: A, routed: A, failover: false });
    expectAttempts(r.attemptsHeader, [[A, 'ok']]);
    assert.deepEqual(await counts(), { a: 1, b: 0, c: 0 });
  });

  test('fixed compound primary without failover = one route: 503 → 502 after 2 attempts, nothing else tried', async () => {
    await fa.behaviour({ status: 503 });
    const r = await timedChat(s, chatBody(A));
    log('single route 503', r);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, code: 'upstream_error' });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503]]);
    assert.deepEqual(await counts(), { a: 2, b: 0, c: 0 });
  });

  test('failover: [] is accepted and means no alternative', async () => {
    const ok = await timedChat(s, chatBody(A, { failover: [] }));
    assertServed(ok, { requested: A, routed: A, failover: false });
    expectAttempts(ok.attemptsHeader, [[A, 'ok']]);
    await fa.behaviour({ status: 503 });
    const r = await timedChat(s, chatBody(A, { failover: [] }));
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, code: 'upstream_error' });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503]]);
    assert.equal((await fb.stats()).requests, 0);
  });

  test('failover as a single string is a one-element list', async () => {
    await fa.behaviour({ status: 503 });
    const r = await timedChat(s, chatBody(A, { failover: B }));
    assertServed(r, { requested: A, routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 'ok']]);
  });

  test('bare key: all matching routes in config order; served by index 1 → failover: true', async () => {
    const ok = await timedChat(s, chatBody('m1'));
    assertServed(ok, { requested: 'auto/auto/m1', routed: A, failover: false });
    expectAttempts(ok.attemptsHeader, [[A, 'ok']]);
    await fa.behaviour({ status: 503 });
    const r = await timedChat(s, chatBody('m1'));
    log('bare key, first route 503', r);
    assertServed(r, { requested: 'auto/auto/m1', routed: B, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 'ok']]);
  });

  test('eu/auto/m1 expands to the eu routes, then the failover entries', async () => {
    await Promise.all([fa.behaviour({ status: 401 }), fb.behaviour({ status: 403 })]);
    const r = await timedChat(s, chatBody('eu/auto/m1', { failover: [C] }));
    log('eu/auto + failover', r);
    assertServed(r, { requested: 'eu/auto/m1', routed: C, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 401], [B, 403], [C, 'ok']]);
  });

  test('duplicates removed: failover entries equal to (or expanding to) earlier candidates are not retried', async () => {
    await Promise.all([fa.behaviour({ status: 503 }), fb.behaviour({ status: 503 })]);
    const r = await timedChat(s, chatBody(A, { failover: [A, 'eu/auto/m1', B] }));
    log('duplicates', r);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, code: 'upstream_error' });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [B, 503], [B, 503]]);
    assert.deepEqual(await counts(), { a: 2, b: 2, c: 0 });
  });

  test('failover to a different model key', async () => {
    await fa.behaviour({ status: 503 });
    const r = await timedChat(s, chatBody(A, { failover: [C2] }));
    assertServed(r, { requested: A, routed: C2, failover: true });
    expectAttempts(r.attemptsHeader, [[A, 503], [A, 503], [C2, 'ok']]);
    assert.deepEqual((await fc.stats()).by_model, { 'provc-m2': 1 });
  });
});

describe('failover validation (cases not already in validation.test.mjs)', { timeout: 60_000 }, () => {
  // validation.test.mjs covers: number, object, 6 unknown-provider entries, a non-string entry,
  // a bare key entry, an empty segment, a malformed single string; and accepts a single string,
  // [] and 5 entries with duplicates.
  const six = [B, C, A2, C2, 'eu/auto/m1', 'auto/auto/m1'];
  const cases = [
    ['boolean', true],
    ['entry with 4 segments', [B, 'eu/provb/m1/x']],
    ['entry with 2 segments', ['eu/provb']],
    ['empty string entry', ['']],
    ['nested array entry', [[B]]],
    ['object entry', [{ id: B }]],
    ['null entry', [B, null]],
    ['6 valid, existing routes', six],
  ];
  for (const [name, failover] of cases) {
    test(`failover ${name} → 400 invalid_failover (param failover), nothing forwarded`, async () => {
      const r = await s.chat(chatBody(A, { failover }));
      await readErrorEnvelope(r, { status: 400, type: 'invalid_request_error', code: 'invalid_failover', param: 'failover' });
      assert.deepEqual(await counts(), { a: 0, b: 0, c: 0 });
    });
  }

  test('exactly 5 valid entries are accepted', async () => {
    const r = await timedChat(s, chatBody(A, { failover: six.slice(0, 5) }));
    assertServed(r, { requested: A, routed: A, failover: false });
  });
});
