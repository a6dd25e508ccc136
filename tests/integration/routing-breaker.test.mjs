// Route health across requests (routing issue): the per-route circuit breaker
// (consecutive_failures → open → skipped_breaker; after cooldown_seconds one half-open probe;
// success closes, failure re-opens; the last remaining candidate is always tried) and the
// Retry-After skip (a Retry-After above max_retry_after_seconds skips the route for that long,
// also for later requests: skipped_retry_after; all candidates skipped → 503
// no_route_available with Retry-After). The three cases use disjoint routes and fakes and run
// concurrently.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, timedChat, expectAttempts, parseAttempts,
  performance, delay,
} from './harness.mjs';

const COOLDOWN_S = 2;
const FAILURES = 5;
const BACKOFF_MS = 250; // the default: a request that retries the dead primary is visibly slower
const A = 'eu/prova/m1'; // the primary that dies and recovers
const B = 'eu/provb/m1'; // its fallback
const D = 'eu/provd/m1'; // always dead (connection refused)
const D_FALL = 'eu/provb/d1';
const R1 = 'eu/provr1/m1'; // Retry-After case
const R2 = 'eu/provr2/m1';

/** A free loopback port below the ephemeral range, so that nothing else grabs it while the fake is down. */
async function fixedPort() {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port in 20000-32000');
}

let s;
before(async () => {
  s = await startRoutingStack({
    providers: {
      prova: { port: await fixedPort() }, provb: {}, provd: { dead: true }, provr1: {}, provr2: {},
    },
    routes: [
      { id: A, provider: 'prova' },
      { id: B, provider: 'provb' },
      { id: D, provider: 'provd' },
      { id: D_FALL, provider: 'provb' },
      { id: R1, provider: 'provr1' },
      { id: R2, provider: 'provr2' },
    ],
    retry: { attempts_per_route: 2, backoff_ms: BACKOFF_MS, max_retry_after_seconds: 5 },
    breaker: { consecutive_failures: FAILURES, cooldown_seconds: COOLDOWN_S },
  });
});
after(stopAll);

const median = (xs) => { const a = [...xs].sort((p, q) => p - q); return a.length ? a[Math.floor(a.length / 2)] : NaN; };

/** Sends `body` every intervalMs for durationMs without waiting for answers; resolves with every result. */
async function paced(body, { intervalMs = 100, durationMs, tBase }) {
  const pending = [];
  const start = performance.now();
  for (let i = 0; performance.now() - start < durationMs; i++) {
    const sent = performance.now();
    pending.push(timedChat(s, body).then((r) => ({ ...r, sent: sent - tBase, done: performance.now() - tBase })));
    const next = start + (i + 1) * intervalMs;
    await delay(Math.max(0, next - performance.now())); // pacing the client loop, not synchronisation
  }
  const results = await Promise.all(pending);
  for (const r of results) r.parsed = parseAttempts(r.attemptsHeader);
  return results;
}

const fmt = (r) => `  sent ${r.sent.toFixed(0).padStart(5)} ms, ${r.ms.toFixed(0).padStart(4)} ms, ${r.status} ` +
  `${r.json?.tresor?.routed_model ?? ''} failover=${r.json?.tresor?.failover}: ${r.attemptsHeader}`;

describe('route health', { timeout: 90_000, concurrency: true }, () => {
  test(`breaker: dead primary opens after ${FAILURES} failures, half-open probe every ${COOLDOWN_S} s, closes after recovery`, async () => {
    const fa = s.fakes.prova;
    const body = chatBody(A, { failover: [B] });

    // Baseline: the fallback's own latency, and the primary healthy.
    const warm = await timedChat(s, body);
    assert.equal(warm.status, 200, warm.text);
    expectAttempts(warm.attemptsHeader, [[A, 'ok']]);
    const base = [];
    for (let i = 0; i < 5; i++) base.push((await timedChat(s, chatBody(B))).ms);
    const baseMs = median(base);

    // Phase 1: primary dead (connection refused), a request every 100 ms for 6 s.
    await fa.stop();
    const tBase = performance.now();
    const dead = await paced(body, { durationMs: 6000, tBase });
    console.log(`breaker phase 1 (primary down; fallback median ${baseMs.toFixed(1)} ms):\n${dead.map(fmt).join('\n')}`);
    for (const r of dead) {
      assert.equal(r.status, 200, fmt(r));
      assert.equal(r.json.tresor.routed_model, B, fmt(r));
      assert.equal(r.json.tresor.failover, true, fmt(r));
      const prim = r.parsed.slice(0, -1);
      assert.deepEqual([r.parsed.at(-1).route, r.parsed.at(-1).outcome], [B, 'ok'], fmt(r));
      assert.ok(prim.length >= 1 && prim.every((p) => p.route === A), fmt(r));
      // Attempted (connect_failed), possibly with the retry skipped because this very
      // request's failure opened the breaker (…, skipped_breaker), or skipped outright.
      const attempted = prim.filter((p) => p.outcome === 'connect_failed').length;
      const tailSkip = prim.length === attempted + 1 && prim.at(-1).outcome === 'skipped_breaker';
      assert.ok(attempted === prim.length || tailSkip,
        `primary either attempted (connect_failed) or skipped (skipped_breaker): ${fmt(r)}`);
    }
    expectAttempts(dead[0].attemptsHeader, [[A, 'connect_failed'], [A, 'connect_failed'], [B, 'ok']]);
    const skipped = dead.filter((r) => r.parsed[0].outcome === 'skipped_breaker');
    const firstSkip = dead.findIndex((r) => r.parsed[0].outcome === 'skipped_breaker');
    assert.ok(firstSkip > 0, 'the breaker never opened');
    // Opened after FAILURES consecutive failures: the requests before the first skip made at least
    // that many attempts, and not many more than the requests already in flight can add.
    const attemptsBeforeOpen = dead.slice(0, firstSkip).reduce((n, r) => n + r.parsed.length - 1, 0);
    assert.ok(attemptsBeforeOpen >= FAILURES, `opened after only ${attemptsBeforeOpen} failed attempts`);
    assert.ok(dead[firstSkip].sent < 2000, `first skip only at ${dead[firstSkip].sent.toFixed(0)} ms`);
    // Open: later requests do not attempt the primary, except one half-open probe per cooldown.
    const probes = dead.slice(firstSkip).filter((r) => r.parsed[0].outcome !== 'skipped_breaker');
    const span = dead.at(-1).sent - dead[firstSkip].sent;
    console.log(`breaker opened before ${dead[firstSkip].sent.toFixed(0)} ms after ${attemptsBeforeOpen} failed attempts; ` +
      `${skipped.length} skipped, ${probes.length} probes at ${probes.map((p) => p.sent.toFixed(0)).join(', ')} ms`);
    assert.ok(probes.length <= Math.ceil(span / (COOLDOWN_S * 1000)) + 1, `too many probes: ${probes.length} in ${span.toFixed(0)} ms`);
    assert.ok(probes.length >= 1, `no half-open probe in ${span.toFixed(0)} ms with a ${COOLDOWN_S} s cooldown`);
    for (let i = 1; i < probes.length; i++) {
      const gap = probes[i].sent - probes[i - 1].sent;
      assert.ok(gap >= COOLDOWN_S * 1000 - 300, `probes ${gap.toFixed(0)} ms apart, cooldown ${COOLDOWN_S} s`);
    }
    for (const r of probes) assert.equal(r.parsed.filter((p) => p.route === A).length >= 1, true);
    // Latency back to the fallback's: no attempts and no backoff on the dead primary.
    const skippedMs = median(skipped.map((r) => r.ms));
    console.log(`latency: fallback alone ${baseMs.toFixed(1)} ms, skipped-primary median ${skippedMs.toFixed(1)} ms, ` +
      `first (2 failed attempts + backoff) ${dead[0].ms.toFixed(0)} ms`);
    assert.ok(skippedMs < baseMs + 100, `requests with the breaker open take ${skippedMs.toFixed(0)} ms (fallback ${baseMs.toFixed(0)} ms)`);
    for (const r of skipped) assert.ok(r.parsed[0].ms < 50, `a skip costs no time: ${fmt(r)}`);

    // Phase 2: the primary comes back on the same port; the breaker closes within cooldown + one request.
    await fa.restart();
    const tUp = performance.now() - tBase;
    const up = await paced(body, { durationMs: COOLDOWN_S * 1000 + 1500, tBase });
    console.log(`breaker phase 2 (primary back at ${tUp.toFixed(0)} ms):\n${up.map(fmt).join('\n')}`);
    for (const r of up) assert.equal(r.status, 200, fmt(r));
    const firstOk = up.find((r) => r.json.tresor.routed_model === A);
    assert.ok(firstOk, 'the breaker never closed');
    console.log(`breaker closed: first request served by the primary was sent ${(firstOk.sent - tUp).toFixed(0)} ms after the restart`);
    assert.ok(firstOk.sent - tUp <= COOLDOWN_S * 1000 + 100 + 300,
      `first primary-served request sent ${(firstOk.sent - tUp).toFixed(0)} ms after the restart (cooldown ${COOLDOWN_S} s + one request)`);
    assert.equal(firstOk.json.tresor.failover, false);
    expectAttempts(firstOk.attemptsHeader, [[A, 'ok']]);
    // Closed: everything sent after the probe's answer goes to the primary directly.
    const later = up.filter((r) => r.sent > firstOk.done);
    assert.ok(later.length >= 3, 'some requests after the breaker closed');
    for (const r of later) {
      assert.equal(r.json.tresor.routed_model, A, fmt(r));
      assert.equal(r.json.tresor.failover, false, fmt(r));
      expectAttempts(r.attemptsHeader, [[A, 'ok']]);
    }
    const st = await fa.stats();
    assert.equal(st.requests, up.filter((r) => r.parsed.some((p) => p.route === A && p.outcome === 'ok')).length,
      'the recovered fake saw exactly the requests it served');
  });

  test('breaker: the last remaining candidate is tried even while its breaker is open', async () => {
    const body = chatBody(D, { failover: [D_FALL] });
    let open;
    const log = [];
    for (let i = 0; i < 8 && !open; i++) {
      const r = await timedChat(s, body);
      log.push(`  ${r.status} ${r.ms.toFixed(0)} ms: ${r.attemptsHeader}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.tresor.routed_model, D_FALL);
      if (parseAttempts(r.attemptsHeader)[0].outcome === 'skipped_breaker') open = r;
    }
    console.log(`dead route D until its breaker opened:\n${log.join('\n')}`);
    assert.ok(open, 'the breaker of the dead route never opened');
    expectAttempts(open.attemptsHeader, [[D, 'skipped_breaker'], [D_FALL, 'ok']]);
    assert.equal(open.json.tresor.failover, true, 'a skipped primary counts as left: served by index 1');
    // Alone, D is the last (only) candidate: attempted despite the open breaker.
    const r = await timedChat(s, chatBody(D));
    console.log(`D alone with its breaker open: ${r.status} after ${r.ms.toFixed(0)} ms, X-Tresor-Attempts: ${r.attemptsHeader}`);
    await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, type: 'upstream_error', code: 'upstream_error' });
    const got = parseAttempts(r.attemptsHeader);
    assert.ok(got.length >= 1 && got.every((p) => p.route === D && p.outcome === 'connect_failed'),
      `the last candidate must be attempted, not skipped: ${r.attemptsHeader}`);
  });

  test('Retry-After above max_retry_after_seconds: immediate failover, route skipped later, all skipped → 503 no_route_available', async () => {
    const [f1, f2] = [s.fakes.provr1, s.fakes.provr2];
    await f1.behaviour({ status: 429, retry_after: 30 });
    const body = chatBody(R1, { failover: [R2] });

    const r1 = await timedChat(s, body);
    console.log(`Retry-After 30 (max 5): ${r1.status} after ${r1.ms.toFixed(0)} ms, X-Tresor-Attempts: ${r1.attemptsHeader}`);
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.json.tresor.routed_model, R2);
    assert.equal(r1.json.tresor.failover, true);
    expectAttempts(r1.attemptsHeader, [[R1, 429], [R2, 'ok']]);
    assert.equal((await f1.stats()).requests, 1, 'no retry on a route that asked for 30 s');
    assert.ok(r1.ms < 1000, `failover took ${r1.ms.toFixed(0)} ms: must be immediate`);

    const r2 = await timedChat(s, body);
    console.log(`next request: ${r2.status} after ${r2.ms.toFixed(0)} ms, X-Tresor-Attempts: ${r2.attemptsHeader}`);
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.tresor.routed_model, R2);
    assert.equal(r2.json.tresor.failover, true, 'a skipped primary counts as left');
    expectAttempts(r2.attemptsHeader, [[R1, 'skipped_retry_after'], [R2, 'ok']]);
    assert.equal((await f1.stats()).requests, 1, 'the skipped route is not asked');

    // Now R2 asks for 30 s as well. The request that learns it did attempt its only route, so it
    // is "all routes failed" (502), not "no route could be attempted" (503).
    await f2.behaviour({ status: 503, retry_after: 30 });
    const r3 = await timedChat(s, chatBody(R2));
    console.log(`R2 answers 503 Retry-After 30: ${r3.status} after ${r3.ms.toFixed(0)} ms, X-Tresor-Attempts: ${r3.attemptsHeader}`);
    await readErrorEnvelope({ status: r3.status, text: r3.text }, { status: 502, type: 'upstream_error', code: 'upstream_error' });
    expectAttempts(r3.attemptsHeader, [[R2, 503]]);
    const n2 = (await f2.stats()).requests;

    const r4 = await timedChat(s, body);
    console.log(`all skipped: ${r4.status} after ${r4.ms.toFixed(0)} ms, Retry-After ${r4.headers.get('retry-after')}, ` +
      `X-Tresor-Attempts: ${r4.attemptsHeader}`);
    await readErrorEnvelope({ status: r4.status, text: r4.text }, { status: 503, type: 'service_unavailable', code: 'no_route_available' });
    const ra = r4.headers.get('retry-after');
    assert.match(ra || '', /^\d+$/, `Retry-After header on the 503: ${ra}`);
    assert.ok(Number(ra) >= 1 && Number(ra) <= 30, `Retry-After ${ra}`);
    expectAttempts(r4.attemptsHeader, [[R1, 'skipped_retry_after'], [R2, 'skipped_retry_after']]);
    assert.ok(r4.ms < 1000, `took ${r4.ms.toFixed(0)} ms`);
    assert.equal((await f1.stats()).requests, 1);
    assert.equal((await f2.stats()).requests, n2);
  });
});
