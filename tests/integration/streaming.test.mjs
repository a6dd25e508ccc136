// SSE relay: events reach the client as the (paced) upstream produces them, tresor on the
// finish chunk, [DONE], error events for cut/stalled upstream streams, cancellation on
// client disconnect.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, readSse, parseEventJson, RawConnection, requestHead,
  readErrorEnvelope, waitFor, performance, ROUTE_GPT,
} from './harness.mjs';

const CONTENT = 'The quick brown fox jumps over the lazy dog.';
const PACE_MS = 200;
const CHUNKS = 5;
const IDLE_S = 2;
let s;

before(async () => {
  s = await startStack({
    content: CONTENT,
    fakeOpts: { paceMs: PACE_MS, chunks: CHUNKS },
    configOverrides: { timeouts: { stream_idle_seconds: IDLE_S } },
  });
});
after(stopAll);

function dataEvents(events) {
  return events.filter((e) => e.data !== '[DONE]').map((e) => ({ ...e, json: parseEventJson(e) }));
}

function assertNoDone(events, raw) {
  assert.ok(!events.some((e) => e.data === '[DONE]'), `no [DONE] after an error; raw stream:\n${raw}`);
}

function assertErrorLast(events, raw) {
  assert.ok(events.length > 0, 'some events');
  const last = parseEventJson(events.at(-1));
  assert.ok(last && typeof last.error === 'object' && last.error !== null, `final event must be {"error":{...}}; raw:\n${raw}`);
  assert.equal(typeof last.error.message, 'string');
  assert.ok(!raw.includes(s.providerKey), 'provider key leaked in the stream');
  assertNoDone(events, raw);
}

describe('streaming', { timeout: 60_000 }, () => {
  test('paced upstream: first event early, events relayed as they arrive, tresor on finish chunk, [DONE]', async () => {
    // Warm-up so that first-request costs in this test process (not the gateway) do not count.
    const warm = await s.chat(chatBody(ROUTE_GPT, { fake: { pace_ms: 1 } }));
    await warm.text();

    const t0 = performance.now();
    const res = await s.chat(chatBody(ROUTE_GPT, { stream: true }));
    const tHeaders = performance.now() - t0;
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /^text\/event-stream/i);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.equal(res.headers.get('x-accel-buffering'), 'no');
    assert.equal(res.headers.get('content-length'), null, 'no Content-Length on a stream');
    const { events, raw } = await readSse(res);

    const firstMs = events[0].t - t0;
    const spanMs = events.at(-1).t - events[0].t;
    console.log(`SSE first-event latency: ${firstMs.toFixed(1)} ms (headers after ${tHeaders.toFixed(1)} ms); ` +
      `last event ${spanMs.toFixed(0)} ms after the first; upstream pace ${PACE_MS} ms x ${CHUNKS} chunks`);
    assert.ok(firstMs < PACE_MS, `first event after ${firstMs.toFixed(1)} ms, must be < ${PACE_MS} ms`);
    assert.ok(spanMs >= 600, `last event only ${spanMs.toFixed(0)} ms after the first: events were buffered`);

    // Wire format: only `data: <payload>\n\n` blocks.
    const rebuilt = events.map((e) => `data: ${e.data}\n\n`).join('');
    assert.equal(raw, rebuilt, 'stream must consist of `data: <json>\\n\\n` events only');

    // Events arrive spread out, not in a burst (one scheduling hiccup tolerated).
    const data = dataEvents(events);
    const gaps = data.slice(1).map((e, i) => e.t - data[i].t);
    assert.ok(gaps.filter((g) => g >= PACE_MS / 2).length >= CHUNKS - 2,
      `inter-event gaps (ms): ${gaps.map((g) => g.toFixed(0)).join(', ')}`);

    assert.equal(events.at(-1).data, '[DONE]');
    assert.equal(events.filter((e) => e.data === '[DONE]').length, 1);
    for (const e of data) assert.ok(e.json, `event is not JSON: ${e.data}`);
    const text = data.map((e) => e.json.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(text, CONTENT);

    const finish = data.filter((e) => e.json.choices?.[0]?.finish_reason != null);
    assert.equal(finish.length, 1, 'exactly one finish chunk');
    assert.equal(finish[0].json.choices[0].finish_reason, 'stop');
    assert.equal(Object.keys(finish[0].json).at(-1), 'tresor', `tresor must be the last member: ${finish[0].data}`);
    const tr = finish[0].json.tresor;
    assert.equal(tr.requested_route, ROUTE_GPT);
    assert.equal(tr.routed_model, ROUTE_GPT);
    assert.equal(tr.failover, false);
    for (const e of data) {
      if (e !== finish[0] && e.json.choices?.[0]?.finish_reason == null) {
        assert.ok(!('tresor' in e.json), `tresor on a non-finish chunk: ${e.data}`);
      }
    }
  });

  test('bare key stream: requested_route normalised on the finish chunk; usage chunk forwarded', async () => {
    const res = await s.chat(chatBody('gpt-oss-120b', {
      stream: true, stream_options: { include_usage: true }, fake: { pace_ms: 5 },
    }));
    assert.equal(res.status, 200);
    const { events, raw } = await readSse(res);
    assert.equal(events.at(-1).data, '[DONE]', raw);
    const data = dataEvents(events);
    const finish = data.find((e) => e.json.choices?.[0]?.finish_reason != null);
    assert.ok(finish, raw);
    assert.equal(finish.json.tresor.requested_route, 'auto/auto/gpt-oss-120b');
    assert.equal(finish.json.tresor.routed_model, ROUTE_GPT);
    assert.ok(data.some((e) => e.json.usage && typeof e.json.usage.total_tokens === 'number'),
      `usage chunk missing: ${raw}`);
  });

  test('upstream cut mid-stream: final error event, no [DONE]', async () => {
    const res = await s.chat(chatBody(ROUTE_GPT, { stream: true, fake: { cut_after: 2, pace_ms: 20, chunks: 6 } }));
    assert.equal(res.status, 200);
    const { events, raw } = await readSse(res, { timeoutMs: 15_000 });
    assertErrorLast(events, raw);
    assert.ok(dataEvents(events).length >= 2, `the events before the cut are relayed: ${raw}`);
  });

  test('upstream stalls longer than stream_idle_seconds: error event, no [DONE]', async () => {
    const t0 = performance.now();
    const res = await s.chat(chatBody(ROUTE_GPT, { stream: true, fake: { stall_after: 2, pace_ms: 20, chunks: 6 } }));
    assert.equal(res.status, 200);
    const { events, raw } = await readSse(res, { timeoutMs: 20_000 });
    assertErrorLast(events, raw);
    const before = events.length >= 2 ? events.at(-2).t : t0;
    const waited = events.at(-1).t - before;
    assert.ok(waited >= IDLE_S * 1000 - 300, `error after ${waited.toFixed(0)} ms, before the idle limit of ${IDLE_S}s`);
    assert.ok(waited <= IDLE_S * 1000 + 4000, `error after ${waited.toFixed(0)} ms, idle limit is ${IDLE_S}s`);
  });

  test('invalid JSON events from the upstream are dropped', async () => {
    const res = await s.chat(chatBody(ROUTE_GPT, { stream: true, fake: { bad_event_after: 2, pace_ms: 10 } }));
    assert.equal(res.status, 200);
    const { events, raw } = await readSse(res);
    assert.equal(events.at(-1).data, '[DONE]', raw);
    for (const e of dataEvents(events)) assert.ok(e.json !== undefined, `invalid event relayed: ${e.data}`);
    assert.ok(dataEvents(events).some((e) => e.json.tresor), 'finish chunk with tresor still arrives');
  });

  test('upstream 5xx before the stream starts: 502 JSON envelope', async () => {
    const res = await s.chat(chatBody(ROUTE_GPT, { stream: true, fake: { status: 500 } }));
    assert.match(res.headers.get('content-type') || '', /json/i);
    const err = await readErrorEnvelope(res, { status: 502, code: 'upstream_error' });
    assert.ok(!err._text.includes(s.providerKey));
  });

  test('client disconnect mid-stream cancels the upstream stream', async () => {
    const before = await s.fake.stats();
    const body = JSON.stringify(chatBody(ROUTE_GPT, { stream: true, fake: { chunks: 200, pace_ms: 50 } }));
    const conn = await RawConnection.connect(s.gw.port);
    await conn.write(requestHead('POST', '/v1/chat/completions', [
      ['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json'],
      ['Content-Length', String(Buffer.byteLength(body))],
    ]) + body);
    await conn.waitUntil(() => conn.buf.includes('data: '), 10_000, 'first SSE event');
    const during = await s.fake.stats();
    assert.ok(during.active_streams >= 1, `upstream stream active: ${JSON.stringify(during)}`);
    conn.destroy();
    const after = await waitFor(async () => {
      const st = await s.fake.stats();
      return st.streams_aborted_by_client > before.streams_aborted_by_client ? st : null;
    }, { timeoutMs: 15_000, intervalMs: 50, what: 'fake streams_aborted_by_client to increase' });
    assert.equal(after.streams_completed, before.streams_completed, 'the upstream stream must not run to completion');
    assert.ok(await s.healthy(), 'gateway still healthy');
  });
});
