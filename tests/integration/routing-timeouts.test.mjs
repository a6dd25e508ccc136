// Deadlines and per-attempt timers (spec §4, routing issue): one X-Tresor-Timeout-Seconds budget
// covers every attempt, backoff and failover; non-stream attempt_first_byte_seconds, stream
// attempt_first_event_seconds (the last candidate gets the whole remaining budget); 504
// upstream_timeout at deadline + 100 ms at the latest. The long (10 s) timer cases run
// concurrently, each on its own pair of fake upstream processes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, timedChat, expectAttempts, parseEventJson,
  rawRequest, parseAttempts,
} from './harness.mjs';

const DEADLINE_SLACK_MS = 100; // "the response never arrives later than deadline + 100 ms"
const TIMER_SLACK_MS = 1000; // "failover at ≈ timer": t < timer + 1 s
const H = 'X-Tresor-Timeout-Seconds';

// Provider pairs: <x>a is the primary, <x>b its failover. Every concurrently running case owns
// its pair, so the per-process fault behaviours never mix.
const PAIRS = ['fb1', 'fb0', 'ss', 'sd', 'sl', 'sx', 'rb', 'ra', 'hv', 'tv'];
const prim = (x) => `eu/${x}a/m1`;
const fall = (x) => `eu/${x}b/m1`;
const routesFor = (pairs) => pairs.flatMap((x) => [
  { id: prim(x), provider: `${x}a` }, { id: fall(x), provider: `${x}b` },
]);
const providersFor = (pairs) => pairs.flatMap((x) => [`${x}a`, `${x}b`]);

let g1; // attempt_first_byte_seconds: 1
let g0; // the defaults: attempt_first_byte_seconds 0, attempt_first_event_seconds 10

before(async () => {
  [g1, g0] = await Promise.all([
    startRoutingStack({
      providers: providersFor(['fb1']),
      routes: routesFor(['fb1']),
      timeouts: { attempt_first_byte_seconds: 1 },
      retry: { backoff_ms: 50 },
    }),
    startRoutingStack({
      providers: providersFor(PAIRS.slice(1)),
      routes: routesFor(PAIRS.slice(1)),
      timeouts: { attempt_first_byte_seconds: 0, attempt_first_event_seconds: 10, stream_idle_seconds: 20 },
      retry: { backoff_ms: 50 },
    }),
  ]);
});
after(stopAll);

const log = (name, r) => console.log(`${name}: status ${r.status}, ${r.ms.toFixed(0)} ms` +
  (r.firstEventMs !== undefined ? ` (first event ${r.firstEventMs.toFixed(0)} ms)` : '') +
  `, X-Tresor-Attempts: ${r.attemptsHeader}`);

function assertStreamServed(r, { requested, routed, failover }) {
  assert.equal(r.status, 200, `status ${r.status}: ${r.text ?? r.raw}`);
  assert.ok(r.events, `not an SSE answer: ${r.text}`);
  assert.equal(r.events.at(-1).data, '[DONE]', `stream must end with [DONE]: ${r.raw}`);
  const finish = r.events.filter((e) => e.data !== '[DONE]').map(parseEventJson)
    .filter((j) => j?.choices?.[0]?.finish_reason != null);
  assert.equal(finish.length, 1, `one finish chunk: ${r.raw}`);
  const tr = finish[0].tresor || {};
  assert.deepEqual({ requested: tr.requested_route, routed: tr.routed_model, failover: tr.failover },
    { requested, routed, failover }, `tresor on the finish chunk: ${r.raw}`);
}

function assertDeadline504(r, budgetMs) {
  assert.equal(r.status, 504, `expected 504, got ${r.status}: ${r.text ?? r.raw}`);
  assert.match(r.headers.get('content-type') || '', /json/i);
  assert.ok(r.ms <= budgetMs + DEADLINE_SLACK_MS, `504 after ${r.ms.toFixed(0)} ms, deadline ${budgetMs} ms + ${DEADLINE_SLACK_MS} ms`);
  assert.ok(r.ms >= budgetMs - 50, `504 after ${r.ms.toFixed(0)} ms, before the ${budgetMs} ms deadline ran out`);
}

describe('deadline and per-attempt timers', { timeout: 90_000, concurrency: true }, () => {
  test('non-stream, silent primary, timeout 2 s, attempt_first_byte_seconds 1 → fallback serves after ≈1 s', async () => {
    const x = 'fb1';
    await g1.fakes[`${x}a`].behaviour({ silent: 1 });
    const r = await timedChat(g1, chatBody(prim(x), { failover: [fall(x)] }), { headers: { [H]: '2' } });
    log('silent primary, first_byte 1 s, deadline 2 s', r);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.tresor.routed_model, fall(x));
    assert.equal(r.json.tresor.failover, true);
    const got = expectAttempts(r.attemptsHeader, [[prim(x), 'first_byte_timeout'], [fall(x), 'ok']]);
    assert.ok(got[0].ms >= 1000 - 50 && got[0].ms < 1000 + TIMER_SLACK_MS, `abandoned attempt lasted ${got[0].ms} ms`);
    assert.ok(r.ms >= 1000, `fallback answered after ${r.ms.toFixed(0)} ms, before the 1 s first-byte timer`);
    assert.ok(r.ms < 2000 + DEADLINE_SLACK_MS, `answered after ${r.ms.toFixed(0)} ms, deadline 2 s`);
    assert.equal((await g1.fakes[`${x}a`].stats()).requests, 1, 'a first-byte timeout is not retried on the same route');
  });

  test('non-stream, silent primary, timeout 2 s, attempt_first_byte_seconds 0 → the primary eats the budget: 504 at ≤ 2.1 s', async () => {
    const x = 'fb0';
    await g0.fakes[`${x}a`].behaviour({ silent: 1 });
    const r = await timedChat(g0, chatBody(prim(x), { failover: [fall(x)] }), { headers: { [H]: '2' } });
    log('silent primary, first_byte off, deadline 2 s', r);
    assertDeadline504(r, 2000);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 504, type: 'timeout_error', code: 'upstream_timeout' });
    expectAttempts(r.attemptsHeader, [[prim(x), 'deadline']]);
    assert.equal((await g0.fakes[`${x}b`].stats()).requests, 0, 'no time left for the fallback');
  });

  test('stream, silent primary, timeout 30 s → fallback answers after attempt_first_event_seconds (10 s), not 504', async () => {
    const x = 'ss';
    await g0.fakes[`${x}a`].behaviour({ silent: 1 });
    const r = await timedChat(g0, chatBody(prim(x), { stream: true, failover: [fall(x)] }), { headers: { [H]: '30' } });
    log('stream, silent primary', r);
    assertStreamServed(r, { requested: prim(x), routed: fall(x), failover: true });
    const got = expectAttempts(r.attemptsHeader, [[prim(x), 'first_event_timeout'], [fall(x), 'ok']]);
    assert.ok(got[0].ms >= 10_000 - 50 && got[0].ms < 10_000 + TIMER_SLACK_MS, `abandoned attempt lasted ${got[0].ms} ms`);
    assert.ok(r.firstEventMs >= 10_000, `first event after ${r.firstEventMs.toFixed(0)} ms, before the 10 s timer`);
    assert.ok(r.firstEventMs < 10_000 + TIMER_SLACK_MS, `first event after ${r.firstEventMs.toFixed(0)} ms`);
  });

  test('stream, primary sends headers but its first event only after 20 s → failover at ≈10 s; the abandoned stream is closed', async () => {
    const x = 'sd';
    const fa = g0.fakes[`${x}a`];
    await fa.behaviour({ first_event_delay_ms: 20_000 });
    const r = await timedChat(g0, chatBody(prim(x), { stream: true, failover: [fall(x)] }), { headers: { [H]: '30' } });
    log('stream, primary first event after 20 s', r);
    assertStreamServed(r, { requested: prim(x), routed: fall(x), failover: true });
    const got = expectAttempts(r.attemptsHeader, [[prim(x), 'first_event_timeout'], [fall(x), 'ok']]);
    assert.ok(got[0].ms >= 10_000 - 50 && got[0].ms < 10_000 + TIMER_SLACK_MS, `abandoned attempt lasted ${got[0].ms} ms`);
    assert.ok(r.firstEventMs >= 10_000 && r.firstEventMs < 10_000 + TIMER_SLACK_MS, `first event after ${r.firstEventMs.toFixed(0)} ms`);
    const st = await fa.stats();
    assert.equal(st.requests, 1);
    assert.equal(st.streams_aborted_by_client, 1, `the gateway must close the abandoned upstream stream: ${JSON.stringify(st)}`);
  });

  test('stream, the last candidate gets the whole remaining budget: a 12 s first event is waited for', async () => {
    const x = 'sl';
    await g0.fakes[`${x}a`].behaviour({ first_event_delay_ms: 12_000 });
    const r = await timedChat(g0, chatBody(prim(x), { stream: true }), { headers: { [H]: '30' } });
    log('stream, single route, first event after 12 s', r);
    assertStreamServed(r, { requested: prim(x), routed: prim(x), failover: false });
    expectAttempts(r.attemptsHeader, [[prim(x), 'ok']]);
    assert.ok(r.firstEventMs >= 12_000 && r.firstEventMs < 12_000 + TIMER_SLACK_MS, `first event after ${r.firstEventMs.toFixed(0)} ms`);
  });

  test('stream, silent single route, timeout 3 s → 504 JSON at ≤ 3.1 s (nothing was sent yet)', async () => {
    const x = 'sx';
    await g0.fakes[`${x}a`].behaviour({ silent: 1 });
    const r = await timedChat(g0, chatBody(prim(x), { stream: true }), { headers: { [H]: '3' } });
    log('stream, silent single route, deadline 3 s', r);
    assertDeadline504(r, 3000);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 504, type: 'timeout_error', code: 'upstream_timeout' });
    expectAttempts(r.attemptsHeader, [[prim(x), 'deadline']]);
  });

  test('the deadline covers retries: 503 after 700 ms, timeout 1 s → 504 at ≤ 1.1 s, failover never reached', async () => {
    const x = 'rb';
    await g0.fakes[`${x}a`].behaviour({ status: 503, delay_ms: 700 });
    const r = await timedChat(g0, chatBody(prim(x), { failover: [fall(x)] }), { headers: { [H]: '1' } });
    log('503 after 700 ms, deadline 1 s', r);
    assertDeadline504(r, 1000);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 504, type: 'timeout_error', code: 'upstream_timeout' });
    const got = expectAttempts(r.attemptsHeader, [[prim(x), 503], [prim(x), 'deadline']]);
    assert.ok(got[0].ms >= 700, `first attempt took ${got[0].ms} ms`);
    assert.equal((await g0.fakes[`${x}b`].stats()).requests, 0);
  });

  test('a Retry-After wait never outlasts the deadline: 429 Retry-After 3 (≤ max 5), timeout 1 s → error at ≤ 1.1 s', async () => {
    const x = 'ra';
    await g0.fakes[`${x}a`].behaviour({ status: 429, retry_after: 3 });
    const r = await timedChat(g0, chatBody(prim(x)), { headers: { [H]: '1' } });
    log('429 Retry-After 3, deadline 1 s', r);
    // The contract does not say whether the gateway waits into the deadline (504 upstream_timeout
    // at 1 s) or gives up at once because the wait cannot fit (502 upstream_error, all routes
    // failed); either way the answer comes by deadline + 100 ms and the primary is asked once.
    assert.ok(r.ms <= 1000 + DEADLINE_SLACK_MS, `answered after ${r.ms.toFixed(0)} ms, deadline 1 s`);
    assert.ok([502, 504].includes(r.status), `status ${r.status}: ${r.text}`);
    await readErrorEnvelope({ status: r.status, text: r.text }, r.status === 504
      ? { type: 'timeout_error', code: 'upstream_timeout' } : { type: 'upstream_error', code: 'upstream_error' });
    const got = parseAttempts(r.attemptsHeader);
    assert.ok(got, 'X-Tresor-Attempts header missing');
    assert.deepEqual([got[0].route, got[0].outcome], [prim(x), '429'], r.attemptsHeader);
    assert.ok(got.length === 1 || (got.length === 2 && got[1].route === prim(x) && got[1].outcome === 'deadline'),
      `unexpected attempts after the 429: ${r.attemptsHeader}`);
    assert.equal((await g0.fakes[`${x}a`].stats()).requests, 1, 'the retry could only start after the deadline');
  });

  test('a slow but healthy primary inside the budget is not abandoned (non-stream, first_byte off)', async () => {
    const x = 'hv';
    await g0.fakes[`${x}a`].behaviour({ delay_ms: 1500 });
    const r = await timedChat(g0, chatBody(prim(x), { failover: [fall(x)] }), { headers: { [H]: '3' } });
    log('primary 1.5 s, deadline 3 s', r);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.tresor.routed_model, prim(x));
    assert.equal(r.json.tresor.failover, false);
    expectAttempts(r.attemptsHeader, [[prim(x), 'ok']]);
    assert.ok(r.ms >= 1500 && r.ms < 1500 + TIMER_SLACK_MS, `took ${r.ms.toFixed(0)} ms`);
  });
});

describe('X-Tresor-Timeout-Seconds values (cases not already in validation.test.mjs)', { timeout: 30_000 }, () => {
  // validation.test.mjs already covers: '', ' ', 'abc', '1.5', '5.0', '+5', '0x10', '0', '00',
  // '-1', '-0', '5s', '1e2', '6 0', '30,30' and the header twice (400 invalid_timeout_override);
  // '1', '30', ' 45 ', '\t600', '601', '86400' and a 20-digit value (accepted, 601+ clamped).
  const x = 'tv';
  const send = async (value) => {
    const body = JSON.stringify(chatBody(prim(x)));
    const { res, conn } = await rawRequest(g0.gw.port, {
      headers: [['Authorization', `Bearer ${g0.key}`], ['Content-Type', 'application/json'], [H, value]],
      body,
    });
    conn.destroy();
    return res;
  };
  for (const v of ['600', ' 30 ']) {
    test(`${JSON.stringify(v)} → accepted (200)`, async () => {
      const res = await send(v);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json().tresor.routed_model, prim(x));
    });
  }
  for (const v of ['-5']) {
    test(`${JSON.stringify(v)} → 400 invalid_timeout_override`, async () => {
      const res = await send(v);
      await readErrorEnvelope(res, { status: 400, type: 'invalid_request_error', code: 'invalid_timeout_override', param: H });
      assert.equal(res.headers['x-tresor-attempts'], undefined, 'rejected before routing: no attempts header');
    });
  }
});
