// Issue 16, acceptance 5: a client that resets its connection (RST: socket.resetAndDestroy();
// a plain destroy sends FIN, a half-close, which still gets its answer) before its answer
// began stops costing:
//   (a) during a slow failover: while the primary's slow attempt is in flight, and while the
//       gateway backs off after the primary's 500;
//   (b) while a non-stream answer is pending (the upstream delays its answer);
//   (c) while a stream's first event is pending (headers came, the first event lags).
// In each case the fake upstream sees the attempt in flight cancelled (its connection closed:
// requests_aborted_by_client), no attempt is made after the reset (neither a retry nor the
// fallback route), nothing is charged (/v1/usage spent unchanged, reserved back to 0), no
// receipt is stored and the request is counted as 499 in /metrics.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startRoutingStack, stopAll, waitFor, delay, performance, defaultStorePath, receiptRowCount, chatBody,
} from './harness.mjs';
import { nanosText, readUsage } from './money-support.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const BACKOFF_MS = 2000;
// After the reset, the fakes are watched this long for a late attempt: longer than a retry
// after the backoff (≤ 1.5 × BACKOFF_MS) or the fallback would take to arrive. An absence
// can only be observed over a window; nothing here waits on it for synchronisation.
const QUIET_WINDOW_MS = 1.5 * BACKOFF_MS + 1500;

let s;
let fa;
let fb;
let db;

before(async () => {
  s = await startRoutingStack({
    providers: ['prova', 'provb'],
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
    retry: { attempts_per_route: 2, backoff_ms: BACKOFF_MS, max_retry_after_seconds: 5 },
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    fakeOpts: { chunks: 4 },
    configHook: (config) => {
      for (const r of config.routes) r.pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
      config.auth.customers = { acme: { credit: 1000, currency: 'eur' } };
      return config;
    },
  });
  ({ prova: fa, provb: fb } = s.fakes);
  db = defaultStorePath(s.gw);
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

// tresor_requests_total for the chat endpoint with status 499, from /metrics.
async function count499() {
  const text = await (await fetch(s.gw.url('/metrics'))).text();
  const line = text.split('\n').find((l) => l.startsWith('tresor_requests_total{') &&
    l.includes('endpoint="/v1/chat/completions"') && l.includes('status="499"'));
  return line ? Number(line.trim().split(/\s+/).pop()) : 0;
}

// Sends one chat request on a raw socket, waits until `inFlight()` holds, then resets the
// connection (RST). Resolves with the bytes the gateway had written by then.
async function sendThenReset(body, inFlight, what) {
  const socket = net.connect(s.gw.port, '127.0.0.1');
  const received = [];
  socket.on('data', (d) => received.push(d));
  socket.on('error', () => {});
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  const json = JSON.stringify(body);
  socket.write('POST /v1/chat/completions HTTP/1.1\r\n' +
    `Host: 127.0.0.1:${s.gw.port}\r\nAuthorization: Bearer ${s.key}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`);
  await waitFor(inFlight, { timeoutMs: 10_000, what });
  socket.resetAndDestroy();
  return Buffer.concat(received).toString('latin1');
}

const stats = async () => {
  const [a, b] = await Promise.all([fa.stats(), fb.stats()]);
  return { a, b };
};

// The shared checks after a reset: the attempt in flight cancelled (or none was in flight),
// no attempt afterwards, no charge, no receipt, a 499.
async function expectNothingAfterReset({ before499, usageBefore, receiptsBefore, inFlight, resetAt }) {
  if (inFlight) {
    await waitFor(async () => (await fa.stats()).requests_aborted_by_client === 1,
      { timeoutMs: 5_000, what: 'the upstream attempt in flight cancelled (its connection closed)' });
    const ms = performance.now() - resetAt;
    assert.ok(ms < 4000, `cancelled at once after the reset (${Math.round(ms)} ms)`);
  }
  await waitFor(async () => (await count499()) === before499 + 1, { timeoutMs: 10_000, what: 'the request counted as 499' });
  const seen = await stats();
  await delay(QUIET_WINDOW_MS); // observation window for an attempt that must not come
  const later = await stats();
  assert.equal(later.a.requests, seen.a.requests, 'no retry on the primary after the reset');
  assert.equal(later.a.requests, 1, 'exactly the one attempt made before the reset');
  assert.equal(later.b.requests, 0, 'the fallback route was never tried');
  const usage = await waitFor(async () => {
    const u = await readUsage(s.gw, s.key);
    return u.reserved === 0n && u;
  }, { timeoutMs: 10_000, what: 'the hold released' });
  assert.equal(nanosText(usage.spent), nanosText(usageBefore.spent), 'nothing charged');
  assert.equal(receiptRowCount(db), receiptsBefore, 'no receipt stored');
}

async function baseline() {
  return { before499: await count499(), usageBefore: await readUsage(s.gw, s.key), receiptsBefore: receiptRowCount(db) };
}

describe('a client that resets its connection stops costing', { timeout: 120_000 }, () => {
  test('control: an answered request is charged and receipted', async () => {
    const before_ = await baseline();
    const res = await s.chat(chatBody(A));
    const body = await res.json();
    assert.equal(res.status, 200);
    assert.ok(body.tresor.receipt_id);
    const u = await readUsage(s.gw, s.key);
    assert.ok(u.spent > before_.usageBefore.spent, 'charged');
    assert.equal(receiptRowCount(db), before_.receiptsBefore + 1);
  });

  test('(a) during a slow failover: reset while the primary\'s slow attempt is in flight', async () => {
    await fa.behaviour({ status: 500, delay_ms: 1500 });
    const base = await baseline();
    const got = await sendThenReset(chatBody(A, { failover: [B] }),
      async () => (await fa.stats()).requests === 1, 'the primary attempt in flight');
    const resetAt = performance.now();
    assert.equal(got, '', 'nothing was answered before the reset');
    await expectNothingAfterReset({ ...base, inFlight: true, resetAt });
  });

  test('(a) during a slow failover: reset while the gateway backs off after the primary\'s 500', async () => {
    await fa.behaviour({ status: 500 });
    const base = await baseline();
    const got = await sendThenReset(chatBody(A, { failover: [B] }),
      async () => (await fa.stats()).requests === 1, 'the first attempt answered 500');
    assert.equal(got, '', 'nothing was answered before the reset');
    await expectNothingAfterReset({ ...base, inFlight: false });
  });

  test('(b) while a non-stream answer is pending', async () => {
    await fa.behaviour({ delay_ms: 8000 });
    const base = await baseline();
    const got = await sendThenReset(chatBody(A, { failover: [B] }),
      async () => (await fa.stats()).requests === 1, 'the attempt in flight');
    const resetAt = performance.now();
    assert.equal(got, '');
    await expectNothingAfterReset({ ...base, inFlight: true, resetAt });
  });

  test('(c) while a stream\'s first event is pending', async () => {
    await fa.behaviour({ lag_first_ms: 8000 });
    const base = await baseline();
    const got = await sendThenReset(chatBody(A, { stream: true, failover: [B] }),
      async () => { const st = await fa.stats(); return st.requests === 1 && st.active_streams === 1; },
      'the upstream stream open, its first event pending');
    const resetAt = performance.now();
    assert.equal(got, '', 'the client had no answer yet (the gateway commits on the first event)');
    await expectNothingAfterReset({ ...base, inFlight: true, resetAt });
    assert.equal((await fa.stats()).streams_aborted_by_client, 1);
  });
});
