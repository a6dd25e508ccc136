// Hostile or broken upstreams (issue 9, item 4): huge and endless response heads, garbage
// instead of JSON / SSE / HTTP, gzip nobody asked for, and answers over
// server.max_upstream_body_bytes. Each must give the client a clean answer (502
// upstream_error envelope, or 504 upstream_timeout when the head never ends), leak no
// provider key (the harness canary scan covers responses and logs; streams are checked
// here), leave the gateway healthy, and let the next normal request through the same
// provider succeed. With a failover route the request succeeds there instead.
//
// Two providers, one fake upstream each; faults are set per fake with POST /_fake/behaviour
// (the gateway rewrites `model`, so the model suffix cannot carry them), so the tests run one
// after the other on one shared stack.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, readSse, parseEventJson, expectAttempts, performance,
} from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const CAP = 1 * MiB; // server.max_upstream_body_bytes of the gateway here
const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const WA = 'eu/prova/whisper'; // transcription, prova only
const WHISPER = 'whisper'; // transcription: prova, then provb
const BUDGET_S = 2; // X-Tresor-Timeout-Seconds for the never-ending head

// As in transcriptions-limits.test.mjs: without ASan's quarantine, peak RSS means what the
// gateway holds at once on the sanitizer pass too. Set before any process is spawned.
process.env.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=0', 'thread_local_quarantine_size_kb=0']
  .filter(Boolean).join(':');

let s;
let fa;
let fb;

before(async () => {
  s = await startRoutingStack({
    providers: ['prova', 'provb'],
    routes: [
      { id: A, provider: 'prova' },
      { id: B, provider: 'provb' },
      { id: WA, provider: 'prova', type: 'transcription' },
      { id: 'eu/provb/whisper', provider: 'provb', type: 'transcription' },
    ],
    server: { max_upstream_body_bytes: CAP },
    // One attempt per route: each fault is seen exactly once per route, and the attempts header
    // tells the outcome. The breaker stays out of the way (every test fails prova again).
    retry: { attempts_per_route: 1, backoff_ms: 50 },
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    fakeOpts: { chunks: 3 },
  });
  ({ prova: fa, provb: fb } = s.fakes);
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

const providerKeys = () => [fa.providerKey, fb.providerKey];

function assertNoKey(text, what) {
  for (const k of providerKeys()) assert.ok(!text.includes(k), `provider key in ${what}`);
}

/** Fault for the next request to `fake` only (queued, times: 1). */
const fault = (fake, spec) => fake.behaviour({ ...spec, times: 1 });

async function chatError(body, expect, headers = {}) {
  const r = await s.chat(body, { headers });
  const attempts = r.headers.get('x-tresor-attempts');
  const err = await readErrorEnvelope(r, expect);
  assertNoKey(err._text, 'the error body');
  return { err, attempts };
}

/** Stream request expected to fail before its first event: a plain 502 envelope, no SSE. */
async function streamError(model, expect = { status: 502, code: 'upstream_error' }) {
  const r = await s.chat(chatBody(model, { stream: true }));
  assert.doesNotMatch(r.headers.get('content-type') || '', /event-stream/, 'no stream may start');
  const attempts = r.headers.get('x-tresor-attempts');
  const err = await readErrorEnvelope(r, expect);
  assertNoKey(err._text, 'the error body');
  return { err, attempts };
}

/** The gateway is alive and prova serves a normal request and a normal stream again. */
async function assertUnharmed() {
  const h = await fetch(s.gw.url('/healthz'));
  await h.arrayBuffer();
  assert.equal(h.status, 200, 'healthz after the hostile upstream');
  assert.ok(s.gw.proc.alive, 'gateway process alive');
  const r = await s.chat(chatBody(A));
  const text = await r.text();
  assert.equal(r.status, 200, `next request through prova: ${text.slice(0, 300)}`);
  assert.equal(JSON.parse(text).tresor.routed_model, A);
  const st = await s.chat(chatBody(A, { stream: true }));
  assert.equal(st.status, 200);
  const { events } = await readSse(st, { timeoutMs: 10_000 });
  assert.equal(events.at(-1)?.data, '[DONE]', 'next stream through prova completes');
}

async function transcribe(model, { filename = 'a.wav' } = {}) {
  const form = new FormData();
  form.append('model', model);
  form.append('file', new Blob([Buffer.alloc(2048, 7)], { type: 'audio/wav' }), filename);
  return fetch(s.gw.url('/v1/audio/transcriptions'), {
    method: 'POST', headers: { authorization: `Bearer ${s.key}` }, body: form,
  });
}

async function transcriptionError(model, expect = { status: 502, code: 'upstream_error' }) {
  const r = await transcribe(model);
  const attempts = r.headers.get('x-tresor-attempts');
  const err = await readErrorEnvelope(r, expect);
  assertNoKey(err._text, 'the error body');
  return { err, attempts };
}

async function chatServedByB(extra = {}) {
  const r = await s.chat(chatBody(A, { failover: [B], ...extra }));
  const attempts = r.headers.get('x-tresor-attempts');
  if (extra.stream) {
    assert.equal(r.status, 200);
    const { events, raw } = await readSse(r, { timeoutMs: 10_000 });
    assertNoKey(raw, 'the stream');
    assert.equal(events.at(-1)?.data, '[DONE]');
    const fin = events.map(parseEventJson).find((e) => e?.tresor);
    assert.equal(fin.tresor.routed_model, B);
    assert.equal(fin.tresor.failover, true);
    return attempts;
  }
  const text = await r.text();
  assert.equal(r.status, 200, text.slice(0, 300));
  const json = JSON.parse(text);
  assert.equal(json.tresor.routed_model, B);
  assert.equal(json.tresor.failover, true);
  return attempts;
}

// ---------------------------------------------------------------------------------------------

/** Chat, stream and transcription under the current behaviour: each a 502 after one bad_response attempt. */
async function expectBadResponseEverywhere() {
  let r = await chatError(chatBody(A), { status: 502, code: 'upstream_error' });
  expectAttempts(r.attempts, [[A, 'bad_response']]);
  r = await streamError(A);
  expectAttempts(r.attempts, [[A, 'bad_response']]);
  r = await transcriptionError(WA);
  expectAttempts(r.attempts, [[WA, 'bad_response']]);
}

/**
 * With `spec` as provider A's persistent behaviour, a chat, a stream and a transcription
 * through A each get a clean 502 with the attempt labelled bad_response; afterwards the
 * behaviour is cleared and the gateway must be unharmed.
 */
async function expectBadResponseOnEveryEndpoint(spec) {
  await fa.behaviour(spec);
  await expectBadResponseEverywhere();
  await fa.behaviour({});
  await assertUnharmed();
}

describe('response head: huge or endless', { timeout: 60_000 }, () => {
  test('1 MiB of header lines (cap 64 KiB) → 502 bad_response, chat, stream and transcription', async () => {
    await expectBadResponseOnEveryEndpoint({ huge_headers: MiB });
  });

  test('header lines without end, fast (one per ms) → 502 once past 64 KiB', async () => {
    await fault(fa, { endless_headers: 1 });
    const t0 = performance.now();
    const r = await chatError(chatBody(A), { status: 502, code: 'upstream_error' });
    expectAttempts(r.attempts, [[A, 'bad_response']]);
    console.log(`fast endless head cut after ${Math.round(performance.now() - t0)} ms`);
    await assertUnharmed();
  });

  test(`header lines without end, slow (one per 50 ms) → 504 within the ${BUDGET_S} s budget + 1.5 s`, async () => {
    const timeout = { 'x-tresor-timeout-seconds': String(BUDGET_S) };
    for (const stream of [false, true]) {
      await fault(fa, { endless_headers: 50 });
      const t0 = performance.now();
      const r = await s.chat(chatBody(A, { stream }), { headers: timeout });
      const err = await readErrorEnvelope(r, { status: 504, code: 'upstream_timeout' });
      const ms = performance.now() - t0;
      assertNoKey(err._text, 'the error body');
      console.log(`slow endless head (stream ${stream}): 504 after ${Math.round(ms)} ms`);
      assert.ok(ms < BUDGET_S * 1000 + 1500, `answered after ${Math.round(ms)} ms`);
      assert.ok(ms >= BUDGET_S * 1000 - 100, `504 before the budget ran out (${Math.round(ms)} ms)`);
    }
    await assertUnharmed();
  });
});

describe('garbage instead of an answer', { timeout: 60_000 }, () => {
  test('200 application/json with random bytes → 502 bad_response; transcription too', async () => {
    await fa.behaviour({ garbage: 1 });
    let r = await chatError(chatBody(A), { status: 502, code: 'upstream_error' });
    expectAttempts(r.attempts, [[A, 'bad_response']]);
    r = await transcriptionError(WA);
    expectAttempts(r.attempts, [[WA, 'bad_response']]);
    await fa.behaviour({});
    await assertUnharmed();
  });

  test('200 text/event-stream with random bytes → 502 before any event', async () => {
    await fault(fa, { garbage: 1 });
    const r = await streamError(A);
    expectAttempts(r.attempts, [[A, 'bad_response']]);
    await assertUnharmed();
  });

  test('random bytes after the first event → the stream ends with an in-band error event, no [DONE]', async () => {
    await fault(fa, { garbage_after: 1 });
    const r = await s.chat(chatBody(A, { stream: true }));
    assert.equal(r.status, 200);
    const { events, raw } = await readSse(r, { timeoutMs: 10_000 });
    assertNoKey(raw, 'the stream');
    assert.doesNotMatch(raw, /\uFFFD/, 'no garbage byte relayed to the client');
    const data = events.map((e) => e.data);
    assert.ok(!data.includes('[DONE]'), 'a broken stream must not end with [DONE]');
    const content = events.map(parseEventJson).filter((e) => e?.choices?.[0]?.delta?.content);
    assert.equal(content.length, 1, 'the one content chunk before the garbage is relayed');
    const last = parseEventJson(events.at(-1));
    assert.equal(last?.error?.type, 'upstream_error', `last event: ${events.at(-1)?.data}`);
    assert.equal(last.error.code, 'upstream_error');
    assert.ok(events.slice(0, -1).every((e) => parseEventJson(e) && !parseEventJson(e).error), 'only valid events before the error');
    await assertUnharmed();
  });

  test('not even HTTP (random bytes instead of a status line) → 502 bad_response', async () => {
    await expectBadResponseOnEveryEndpoint({ garbage: 2 });
  });

  test('garbage on the first route fails over to the next (chat, stream, transcription)', async () => {
    await fa.behaviour({ garbage: 1 });
    expectAttempts(await chatServedByB(), [[A, 'bad_response'], [B, 'ok']]);
    await fa.behaviour({ garbage: 2 });
    expectAttempts(await chatServedByB({ stream: true }), [[A, 'bad_response'], [B, 'ok']]);
    await fa.behaviour({ garbage: 1 });
    const t = await transcribe(WHISPER);
    const text = await t.text();
    assert.equal(t.status, 200, text.slice(0, 300));
    assert.equal(t.headers.get('x-tresor-routed-model'), 'eu/provb/whisper');
    expectAttempts(t.headers.get('x-tresor-attempts'), [[WA, 'bad_response'], ['eu/provb/whisper', 'ok']]);
    await fa.behaviour({});
    await assertUnharmed();
  });
});

describe('gzip nobody asked for', { timeout: 60_000 }, () => {
  test('the router asks for identity, refuses a gzip answer (502), and fails over', async () => {
    await fa.behaviour({ gzip: 1 });
    await expectBadResponseEverywhere();
    for (const q of await fa.requests())
      assert.equal(q.headers['accept-encoding'], 'identity', `${q.target}: Accept-Encoding sent upstream`);
    expectAttempts(await chatServedByB(), [[A, 'bad_response'], [B, 'ok']]);
    assert.match(s.gw.proc.stderr, /Content-Encoding gzip, which was not asked for/);
    await fa.behaviour({});
    await assertUnharmed();
  });
});

// ---------------------------------------------------------------------------------------------

function vm(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (f) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(text)[1]) * KiB;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

describe(`answers over server.max_upstream_body_bytes (${CAP / MiB} MiB)`, { timeout: 90_000 }, () => {
  test('an answer just under the cap is served whole', async () => {
    await fault(fa, { body_bytes: CAP - 64 * KiB });
    const r = await s.chat(chatBody(A));
    const text = await r.text();
    assert.equal(r.status, 200, text.slice(0, 300));
    const content = JSON.parse(text).choices[0].message.content;
    assert.ok(content.length > CAP - 128 * KiB, `content of ${content.length} bytes`);
  });

  for (const [framing, spec] of [['Content-Length', {}], ['chunked', { chunked: 1 }], ['close-delimited', { no_length: 1 }]]) {
    test(`2 MiB ${framing} → 502 bad_response, connection dropped, failover succeeds`, async () => {
      await fa.behaviour({ body_bytes: 2 * MiB, ...spec });
      const r = await chatError(chatBody(A), { status: 502, code: 'upstream_error' });
      expectAttempts(r.attempts, [[A, 'bad_response']]);
      expectAttempts(await chatServedByB(), [[A, 'bad_response'], [B, 'ok']]);
      await fa.behaviour({});
      await assertUnharmed();
      // The connections that carried the oversized answers were closed, not pooled: the normal
      // requests after them came over another connection.
      const reqs = await fa.requests();
      const over = reqs.slice(0, 2).map((q) => q.connection_id);
      for (const q of reqs.slice(2))
        assert.ok(!over.includes(q.connection_id), `request reused connection ${q.connection_id} of an oversized answer`);
    });
  }

  test('a transcript over the cap → 502; with a second route it fails over', async () => {
    await fa.behaviour({ body_bytes: 2 * MiB });
    const r = await transcriptionError(WA);
    expectAttempts(r.attempts, [[WA, 'bad_response']]);
    const t = await transcribe(WHISPER);
    const text = await t.text();
    assert.equal(t.status, 200, text.slice(0, 300));
    assert.equal(t.headers.get('x-tresor-routed-model'), 'eu/provb/whisper');
    await fa.behaviour({});
    await assertUnharmed();
  });

  test('200 MiB chunked answer: the gateway reads about the cap, not the answer (peak RSS)', async () => {
    const pid = s.gw.proc.pid;
    await fault(fa, { body_bytes: 200 * MiB, chunked: 1 });
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // VmHWM := VmRSS
    const before = vm(pid);
    const t0 = performance.now();
    const r = await chatError(chatBody(A), { status: 502, code: 'upstream_error' });
    const ms = performance.now() - t0;
    expectAttempts(r.attempts, [[A, 'bad_response']]);
    const afterStatus = vm(pid);
    const growth = afterStatus.hwm - before.rss;
    console.log(`200 MiB answer, cap 1 MiB: 502 after ${Math.round(ms)} ms; VmRSS ${(before.rss / MiB).toFixed(1)} MiB → ` +
      `peak ${(afterStatus.hwm / MiB).toFixed(1)} MiB (growth ${(growth / MiB).toFixed(1)} MiB), now ${(afterStatus.rss / MiB).toFixed(1)} MiB`);
    assert.ok(growth < 24 * MiB, `peak RSS grew by ${(growth / MiB).toFixed(1)} MiB (limit 24 MiB)`);
    await assertUnharmed();
  });
});
