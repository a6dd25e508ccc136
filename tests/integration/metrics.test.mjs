// GET /metrics (operations issue): Prometheus text format 0.0.4 that promtool accepts, and
// counters that move by exactly what was asked of the gateway: a scrape before and after a
// known mix of requests, compared series by series (label sets as objects). Live gauges:
// tresor_active_streams during an open stream, tresor_route_breaker_state once a breaker
// opened. The tests in this file run one after the other on one routing stack.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scrape as BaseScrape, labelKey, promtoolCheck } from './metrics-support.mjs';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, readSse, expectAttempts, waitFor, RawConnection, requestHead,
} from './harness.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const DEAD = 'eu/provdead/m1';
const CHAT = '/v1/chat/completions';
const BREAKER_FAILURES = 3;

let s;
let fa;

before(async () => {
  s = await startRoutingStack({
    providers: { prova: {}, provb: {}, provdead: { dead: true } },
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: DEAD, provider: 'provdead' }],
    // One attempt per route keeps the arithmetic obvious: a failover = [A failed, B ok].
    retry: { attempts_per_route: 1, backoff_ms: 50, max_retry_after_seconds: 5 },
    // Opens after 3 consecutive failures and stays open for the whole file.
    breaker: { consecutive_failures: BREAKER_FAILURES, cooldown_seconds: 600 },
    fakeOpts: { chunks: 3 },
    server: { body_timeout_seconds: 1 },
  });
  fa = s.fakes.prova;
});
after(stopAll);

// The Prometheus text reader is metrics-support.mjs's; here an absent counter reads 0.
class Scrape extends BaseScrape {
  /** The value of the sample with exactly these labels (0 when absent: counters start there). */
  value(name, labels = {}) {
    return super.value(name, labels) ?? 0;
  }
}

async function scrape() {
  const res = await fetch(s.gw.url('/metrics'));
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return new Scrape(text);
}

/**
 * A scrape taken once `ready(scrape)` holds. A request is counted when the gateway is done with
 * its connection, just after the client has its answer, so a scrape sent at once can still
 * miss it (seen in CI on a loaded machine).
 */
async function scrapeUntil(ready, what) {
  let m;
  await waitFor(async () => ready(m = await scrape()), { timeoutMs: 10_000, what });
  return m;
}

/** Every series of `name` whose value changed between two scrapes: { labelKey: delta }. */
function deltas(before, afterScrape, name) {
  const out = {};
  for (const x of afterScrape.series(name)) {
    const d = x.value - before.value(name, x.labels);
    if (d !== 0) out[labelKey(x.labels)] = d;
  }
  for (const x of before.series(name)) {
    if (!afterScrape.has(name, x.labels)) out[labelKey(x.labels)] = -x.value;
  }
  return out;
}

/** Expected deltas as [[labels, delta], …] → the same keyed shape as deltas(). */
const expectDeltas = (pairs) => Object.fromEntries(pairs.map(([labels, d]) => [labelKey(labels), d]));

async function readAll(res) {
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

// ---------------------------------------------------------------------------------------------

describe('GET /metrics', { timeout: 120_000 }, () => {
  test('is valid exposition text: promtool check metrics exits 0; every documented family has its type', async () => {
    // Some traffic first, so the labelled families have series.
    const ok = await readAll(await s.chat(chatBody(A)));
    assert.equal(ok.status, 200, ok.text);
    const m = await scrapeUntil((x) => x.value('tresor_route_requests_total', { route: A, status: '200' }) >= 1,
      'the chat request in /metrics');
    const r = await promtoolCheck(m.text);
    assert.equal(r.code, 0, `promtool check metrics exited ${r.code}:\n${r.stdout}${r.stderr}`);
    const families = {
      tresor_requests_total: 'counter',
      tresor_route_requests_total: 'counter',
      tresor_upstream_attempts_total: 'counter',
      tresor_route_breaker_state: 'gauge',
      tresor_active_connections: 'gauge',
      tresor_active_streams: 'gauge',
      tresor_receipts_issued_total: 'counter',
      tresor_receipts_signed_total: 'counter',
      tresor_receipts_stored_total: 'counter',
      tresor_receipt_store_failures_total: 'counter',
      tresor_config_reloads_total: 'counter',
      tresor_signing_key_conflict: 'gauge',
      tresor_spend_nanos_total: 'counter',
      tresor_spend_estimated_nanos_total: 'counter',
      tresor_reservation_refusals_total: 'counter',
      tresor_cut_streams_billed_total: 'counter',
      tresor_spool_bytes: 'gauge',
      tresor_spool_max_bytes: 'gauge',
      tresor_spool_refusals_total: 'counter',
      tresor_request_duration_seconds: 'histogram',
      tresor_upstream_duration_seconds: 'histogram',
      tresor_overhead_seconds: 'histogram',
      process_resident_memory_bytes: 'gauge',
      process_open_fds: 'gauge',
      process_cpu_seconds_total: 'counter',
      process_start_time_seconds: 'gauge',
    };
    for (const [name, type] of Object.entries(families)) {
      // prometheus-cpp declares counters by their family name with or without _total.
      const declared = m.types.get(name) ?? m.types.get(name.replace(/_total$/, ''));
      assert.equal(declared, type, `# TYPE of ${name}`);
    }
    // Both reload results exist from the start (rate() works before the first reload).
    assert.ok(m.has('tresor_config_reloads_total', { result: 'success' }));
    assert.ok(m.has('tresor_config_reloads_total', { result: 'failure' }));
    // One breaker series per configured route, all closed so far.
    assert.deepEqual(m.series('tresor_route_breaker_state').map((x) => [x.labels.route, x.value]),
      [[A, 0], [B, 0], [DEAD, 0]]);
    assert.ok(m.value('process_resident_memory_bytes') > 1_000_000, 'RSS is plausible');
    assert.ok(m.value('process_open_fds') > 3, 'open fds are plausible');
    const start = m.value('process_start_time_seconds');
    assert.ok(Math.abs(start - Date.now() / 1000) < 600, `process_start_time_seconds ${start} is recent`);
    // Histograms are cumulative and end in +Inf = _count.
    for (const h of ['tresor_request_duration_seconds', 'tresor_upstream_duration_seconds', 'tresor_overhead_seconds']) {
      const count = m.value(`${h}_count`, { endpoint: CHAT });
      assert.ok(count >= 1, `${h}_count{endpoint=chat} ≥ 1`);
      const buckets = m.series(`${h}_bucket`).filter((x) => x.labels.endpoint === CHAT);
      assert.equal(buckets.at(-1).labels.le, '+Inf', `${h} ends with le="+Inf"`);
      assert.equal(buckets.at(-1).value, count, `${h} +Inf bucket = _count`);
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, `${h} buckets are cumulative`);
    }
  });

  test('a known mix of requests moves exactly the expected series by exactly that much', async () => {
    await s.clearFakes();
    const before0 = await scrape();

    // 2 failovers: the first candidate answers 503, the second serves.
    await fa.behaviour({ status: 503, times: 2 });
    for (let i = 0; i < 2; i++) {
      const r = await readAll(await s.chat(chatBody(A, { failover: [B] })));
      assert.equal(r.status, 200, r.text);
      expectAttempts(r.headers.get('x-tresor-attempts'), [[A, 503], [B, 'ok']]);
    }
    // 5 plain successes on A.
    for (let i = 0; i < 5; i++) {
      const r = await readAll(await s.chat(chatBody(A)));
      assert.equal(r.status, 200, r.text);
      expectAttempts(r.headers.get('x-tresor-attempts'), [[A, 'ok']]);
    }
    // 1 stream on A, read to [DONE].
    const sres = await s.chat(chatBody(A, { stream: true }));
    assert.equal(sres.status, 200);
    const { events } = await readSse(sres);
    assert.equal(events.at(-1).data, '[DONE]');
    // 3 client errors, answered before any upstream attempt.
    await readErrorEnvelope(await s.chat('{"model": "eu/prova/m1", "messages": ['), { status: 400, code: 'invalid_json' });
    await readErrorEnvelope(await s.chat(chatBody('eu/nowhere/m9')), { status: 404, code: 'model_not_found' });
    await readErrorEnvelope(await s.chat(chatBody(A), { headers: { 'x-tresor-timeout-seconds': 'soon' } }),
      { status: 400, code: 'invalid_timeout_override' });
    // 1 upstream 400, passed through.
    await fa.behaviour({ status: 400, times: 1 });
    await readErrorEnvelope(await s.chat(chatBody(A)), { status: 400, code: 'upstream_rejected' });
    // 1 client that stops sending in the middle of its body: dropped after body_timeout_seconds
    // without an answer, counted as 499 (client closed request).
    const conn = await RawConnection.connect(s.gw.port);
    await conn.write(requestHead('POST', CHAT, {
      Authorization: `Bearer ${s.key}`, 'Content-Type': 'application/json', 'Content-Length': '500',
    }) + '{"model":');
    assert.ok(await conn.waitClosed(20_000), 'the gateway drops a stalled upload after body_timeout_seconds');
    assert.equal(conn.buf.length, 0, 'no answer to a stalled upload');
    conn.destroy();

    // The stream's receipt and the 499 are accounted when the gateway is done with them.
    let after0;
    await waitFor(async () => {
      after0 = await scrape();
      return after0.value('tresor_requests_total', { endpoint: CHAT, status: '499' }) -
        before0.value('tresor_requests_total', { endpoint: CHAT, status: '499' }) === 1 &&
        after0.value('tresor_receipts_stored_total') - before0.value('tresor_receipts_stored_total') >= 8;
    }, { timeoutMs: 15_000, what: 'the 499 and 8 stored receipts in /metrics' });
    // Scrapes that ran before the last one are requests too (/metrics, 200).
    const scrapesBefore = after0.value('tresor_requests_total', { endpoint: '/metrics', status: '200' }) -
      before0.value('tresor_requests_total', { endpoint: '/metrics', status: '200' });
    assert.ok(scrapesBefore >= 1);

    assert.deepEqual(deltas(before0, after0, 'tresor_requests_total'), expectDeltas([
      [{ endpoint: CHAT, status: '200' }, 8], // 2 failovers + 5 successes + 1 stream
      [{ endpoint: CHAT, status: '400' }, 3], // invalid JSON, bad timeout header, upstream 400
      [{ endpoint: CHAT, status: '404' }, 1],
      [{ endpoint: CHAT, status: '499' }, 1], // the stalled upload
      [{ endpoint: '/metrics', status: '200' }, scrapesBefore],
    ]), 'tresor_requests_total{endpoint,status}');
    assert.deepEqual(deltas(before0, after0, 'tresor_route_requests_total'), expectDeltas([
      [{ route: A, status: '200' }, 6],
      [{ route: B, status: '200' }, 2],
      [{ route: '', status: '400' }, 3], // no route served them (the upstream 400 included)
      [{ route: '', status: '404' }, 1],
      [{ route: '', status: '499' }, 1],
    ]), 'tresor_route_requests_total{route,status}');
    assert.deepEqual(deltas(before0, after0, 'tresor_upstream_attempts_total'), expectDeltas([
      [{ route: A, outcome: 'ok' }, 6],
      [{ route: A, outcome: 'http_5xx' }, 2],
      [{ route: A, outcome: 'http_4xx' }, 1],
      [{ route: B, outcome: 'ok' }, 2],
    ]), 'tresor_upstream_attempts_total{route,outcome}');
    assert.deepEqual(deltas(before0, after0, 'tresor_failovers_total'), expectDeltas([[{ endpoint: CHAT }, 2]]),
      'tresor_failovers_total{endpoint}');
    // Histograms: one observation per answered request, per endpoint.
    for (const h of ['tresor_request_duration_seconds', 'tresor_upstream_duration_seconds', 'tresor_overhead_seconds']) {
      const want = h === 'tresor_request_duration_seconds'
        ? [[{ endpoint: CHAT }, 13], [{ endpoint: '/metrics' }, scrapesBefore]]
        : [[{ endpoint: CHAT }, 13]];
      assert.deepEqual(deltas(before0, after0, `${h}_count`), expectDeltas(want), `${h}_count`);
      const inf = deltas(before0, after0, `${h}_bucket`)[labelKey({ endpoint: CHAT, le: '+Inf' })];
      assert.equal(inf, 13, `${h}_bucket{le="+Inf"}`);
      assert.ok(after0.value(`${h}_sum`, { endpoint: CHAT }) >= before0.value(`${h}_sum`, { endpoint: CHAT }), `${h}_sum grows`);
    }
    // Receipts: one per 200 (2 + 5 + 1), all stored, none failed.
    assert.equal(after0.value('tresor_receipts_issued_total') - before0.value('tresor_receipts_issued_total'), 8, 'receipts issued');
    assert.equal(after0.value('tresor_receipts_stored_total') - before0.value('tresor_receipts_stored_total'), 8, 'receipts stored');
    assert.equal(after0.value('tresor_receipt_store_failures_total') - before0.value('tresor_receipt_store_failures_total'), 0);
    // Nothing else moved.
    assert.deepEqual(deltas(before0, after0, 'tresor_config_reloads_total'), {});
    assert.deepEqual(after0.series('tresor_route_breaker_state').map((x) => x.value), [0, 0, 0], 'no breaker opened');
    assert.equal(after0.value('tresor_active_streams'), 0);
  });

  test('a client that disconnects while its request waits on the upstream is counted as 499, not 200', async () => {
    await s.clearFakes();
    await fa.behaviour({ delay_ms: 1500, times: 1 });
    const before0 = await scrape();
    const ac = new AbortController();
    const pending = s.chat(chatBody(A), { signal: ac.signal }).then(() => 'answered', () => 'aborted');
    await waitFor(async () => (await fa.stats()).requests >= 1, { what: 'the upstream got the request' });
    ac.abort();
    assert.equal(await pending, 'aborted');
    let after0;
    await waitFor(async () => {
      after0 = await scrape();
      return Object.keys(deltas(before0, after0, 'tresor_route_requests_total')).length > 0;
    }, { timeoutMs: 15_000, what: 'the abandoned request in /metrics' });
    assert.deepEqual(deltas(before0, after0, 'tresor_requests_total')[labelKey({ endpoint: CHAT, status: '499' })], 1,
      `requests_total deltas: ${JSON.stringify(deltas(before0, after0, 'tresor_requests_total'))}`);
  });

  test('tresor_active_streams counts a stream while it is relayed and drops back to 0 when it ends', async () => {
    await s.clearFakes();
    await fa.behaviour({ pace_ms: 250, chunks: 8, times: 1 }); // ≈ 2.5 s of stream
    assert.equal((await scrape()).value('tresor_active_streams'), 0, 'no stream open before');
    const res = await s.chat(chatBody(A, { stream: true }));
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let raw = '';
    while (!raw.includes('data:')) {
      const { value, done } = await reader.read();
      assert.ok(!done, `the stream ended before its first event: ${raw}`);
      raw += dec.decode(value, { stream: true });
    }
    const during = await scrape();
    assert.equal(during.value('tresor_active_streams'), 1, 'one stream open');
    assert.ok(during.value('tresor_active_connections') >= 2, 'the stream\'s connection and the scrape\'s are open');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      raw += dec.decode(value, { stream: true });
    }
    assert.match(raw, /data: \[DONE\]\s*$/, 'the stream completed');
    await waitFor(async () => (await scrape()).value('tresor_active_streams') === 0,
      { timeoutMs: 10_000, what: 'tresor_active_streams back to 0' });
  });

  test(`tresor_route_breaker_state is 1 once a route failed ${BREAKER_FAILURES} times in a row; skipped attempts are not counted`, async () => {
    await s.clearFakes();
    const before0 = await scrape();
    assert.equal(before0.value('tresor_route_breaker_state', { route: DEAD }), 0, 'closed at first');
    // The dead route refuses connections: each request fails over to B.
    for (let i = 0; i < BREAKER_FAILURES; i++) {
      const r = await readAll(await s.chat(chatBody(DEAD, { failover: [B] })));
      assert.equal(r.status, 200, r.text);
      expectAttempts(r.headers.get('x-tresor-attempts'), [[DEAD, 'connect_failed'], [B, 'ok']]);
    }
    const open = await scrape();
    assert.equal(open.value('tresor_route_breaker_state', { route: DEAD }), 1, 'open after consecutive failures');
    assert.equal(open.value('tresor_route_breaker_state', { route: A }), 0, 'other routes stay closed');
    assert.equal(open.value('tresor_route_breaker_state', { route: B }), 0, 'other routes stay closed');
    // While open, the dead route is skipped: no attempt on it is counted.
    const r = await readAll(await s.chat(chatBody(DEAD, { failover: [B] })));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.tresor.routed_model, B);
    const after0 = await scrapeUntil((x) => x.value('tresor_upstream_attempts_total', { route: B, outcome: 'ok' }) -
      before0.value('tresor_upstream_attempts_total', { route: B, outcome: 'ok' }) >= BREAKER_FAILURES + 1,
      'every request of this test in /metrics');
    assert.deepEqual(deltas(before0, after0, 'tresor_upstream_attempts_total'), expectDeltas([
      [{ route: DEAD, outcome: 'connect_failed' }, BREAKER_FAILURES],
      [{ route: B, outcome: 'ok' }, BREAKER_FAILURES + 1],
    ]), 'attempts: the skipped one is not an attempt');
    assert.deepEqual(deltas(before0, after0, 'tresor_failovers_total'), expectDeltas([[{ endpoint: CHAT }, BREAKER_FAILURES + 1]]));
    assert.equal(after0.value('tresor_route_breaker_state', { route: DEAD }), 1, 'still open (cooldown 600 s)');
    const check = await promtoolCheck(after0.text);
    assert.equal(check.code, 0, `promtool: ${check.stdout}${check.stderr}`);
  });
});
