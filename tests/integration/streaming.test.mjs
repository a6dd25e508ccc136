// SSE relay: events reach the client as the (paced) upstream produces them, tresor on the
// finish chunk, [DONE], error events for cut/stalled upstream streams, cancellation on
// client disconnect; the upstream connection kept after [DONE] (and dropped when its body
// does not end).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import {
  startStack, startGateway, gatewayConfig, stopAll, chatBody, readSse, parseEventJson, RawConnection, requestHead,
  readErrorEnvelope, waitFor, performance, makeKey, makeProviderKey, sha256Hex, sseDataPayloads, ROUTE_GPT,
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
    const left = performance.now();
    const after = await waitFor(async () => {
      const st = await s.fake.stats();
      return st.streams_aborted_by_client > before.streams_aborted_by_client ? st : null;
    }, { timeoutMs: 15_000, intervalMs: 20, what: 'fake streams_aborted_by_client to increase' });
    // Promptly: the gateway notices on its next write to the client (an event every 50 ms)
    // and drops the upstream at once; the 200-event stream would otherwise run ~10 s more.
    const ms = performance.now() - left;
    console.log(`upstream stream cancelled ${ms.toFixed(0)} ms after the client left`);
    assert.ok(ms < 2000, `the upstream was cancelled ${ms.toFixed(0)} ms after the client left`);
    assert.equal(after.streams_completed, before.streams_completed, 'the upstream stream must not run to completion');
    assert.ok(await s.healthy(), 'gateway still healthy');
  });
});

// ---------------------------------------------------------------------------------------------
// The upstream connection after a stream. Once the client has its [DONE], the gateway reads the
// upstream's chunked terminator (waiting TAIL_WAIT_MS at most) so that the kept-alive connection
// goes back to the provider's pool instead of being closed and re-opened for the next stream.
// An upstream whose body does not end is closed instead, without holding up the client.
// Pools are per gateway I/O thread: the requests whose upstream connections are compared go over
// one client connection (served by one thread), one after the other.

const TAIL_WAIT_MS = 20; // the gateway's wait for the upstream's terminator after [DONE]
// The windows timed below hold only gateway work (relaying a few events, at most TAIL_WAIT_MS,
// a new upstream connection); the slack absorbs scheduling on a loaded 2-core machine. Waiting
// for an upstream body that never ends would take stream_idle_seconds (2 s) or forever.
const SLACK_MS = 100;

/** Sends one chat request on an open RawConnection to a gateway; reads the whole answer. */
async function rawChat(conn, key, body, headers = []) {
  const text = JSON.stringify(body);
  await conn.write(requestHead('POST', '/v1/chat/completions', [
    ['Authorization', `Bearer ${key}`], ['Content-Type', 'application/json'],
    ['Content-Length', String(Buffer.byteLength(text))], ...headers,
  ]) + text);
  const res = await conn.readResponse({ timeoutMs: 20_000 });
  return { res, end: performance.now() };
}

/** A complete relayed stream: data events only, one finish chunk with tresor, the whole content, [DONE] last. */
function assertCompleteStream(res, content) {
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'] || '', /^text\/event-stream/i);
  const blocks = res.text.split('\n\n');
  assert.equal(blocks.pop(), '', `the stream ends after a whole event: ${res.text}`);
  assert.ok(blocks.every((b) => b.startsWith('data: ')), `data events only: ${res.text}`);
  assert.equal(blocks.at(-1), 'data: [DONE]', `[DONE] last: ${res.text}`);
  assert.equal(blocks.filter((b) => b === 'data: [DONE]').length, 1, res.text);
  const chunks = sseDataPayloads(res.text).map((p) => JSON.parse(p));
  assert.ok(!chunks.some((c) => c.error), `no error event: ${res.text}`);
  const finish = chunks.filter((c) => c.choices?.[0]?.finish_reason != null);
  assert.equal(finish.length, 1, `one finish chunk: ${res.text}`);
  assert.equal(finish[0].choices[0].finish_reason, 'stop');
  assert.equal(finish[0].tresor?.routed_model, ROUTE_GPT, `tresor on the finish chunk: ${res.text}`);
  assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join(''), content, 'the whole answer');
}

describe('streaming: the upstream connection is kept after [DONE] (fake upstream)', { timeout: 60_000 }, () => {
  const newTag = () => `reuse-${randomBytes(6).toString('hex')}`;
  // The fake's records of this test's requests (tagged in the message), oldest first.
  const upstreamRequests = async (tag) => (await s.fake.requests()).filter((r) => (r.body ?? '').includes(tag));
  const tagged = (tag, i, extra = {}) => chatBody(ROUTE_GPT, {
    stream: true, messages: [{ role: 'user', content: `${tag} ${i}` }], ...extra,
  });

  test('5 sequential streams on one client connection → the fake upstream sees all 5 on ONE connection', async () => {
    const tag = newTag();
    const before = await s.fake.stats();
    const conn = await RawConnection.connect(s.gw.port);
    try {
      for (let i = 0; i < 5; i++) {
        const extra = { fake: { pace_ms: 5 }, ...(i % 2 ? { stream_options: { include_usage: true } } : {}) };
        const { res } = await rawChat(conn, s.key, tagged(tag, i, extra));
        assertCompleteStream(res, CONTENT);
      }
    } finally {
      conn.destroy();
    }
    const reqs = await upstreamRequests(tag);
    assert.equal(reqs.length, 5, `the fake saw the 5 streams: ${JSON.stringify(reqs.map((r) => r.body))}`);
    const ids = reqs.map((r) => r.connection_id);
    assert.equal(new Set(ids).size, 1, `5 sequential streams over one upstream connection, got connection_ids ${ids.join(', ')}`);
    const after = await waitFor(async () => {
      const st = await s.fake.stats();
      return st.streams_completed >= before.streams_completed + 5 ? st : null;
    }, { timeoutMs: 5000, what: 'the fake to count 5 completed streams' });
    assert.equal(after.streams_completed, before.streams_completed + 5);
    assert.equal(after.streams_aborted_by_client, before.streams_aborted_by_client, 'the gateway left no stream early');
  });

  test('fake no_done (finish chunk, then the body never ends): the client completes, the next request succeeds on a new upstream connection, the unended one is closed', async () => {
    const tag = newTag();
    const before = await s.fake.stats();
    const conn = await RawConnection.connect(s.gw.port);
    let a;
    let b;
    let c;
    try {
      a = await rawChat(conn, s.key, tagged(tag, 0, { fake: { pace_ms: 5, no_done: 1 } }));
      assertCompleteStream(a.res, CONTENT);
      b = await rawChat(conn, s.key, tagged(tag, 1, { fake: { pace_ms: 0 } }), [['X-Tresor-Receipt', 'false']]);
      assertCompleteStream(b.res, CONTENT);
      c = await rawChat(conn, s.key, tagged(tag, 2, { fake: { pace_ms: 0 } }));
      assertCompleteStream(c.res, CONTENT);
    } finally {
      conn.destroy();
    }
    const next = b.end - a.end;
    console.log(`no_done upstream: the next stream on the client connection took ${next.toFixed(1)} ms`);
    // The next request waits for the tail wait of the one before (same client connection), then
    // opens an upstream connection; its own upstream stream is unpaced and it stores no receipt.
    assert.ok(next <= TAIL_WAIT_MS + SLACK_MS, `the next stream took ${next.toFixed(1)} ms after the unended one`);
    const [ra, rb, rc] = await upstreamRequests(tag);
    assert.ok(ra && rb && rc, 'the fake saw the 3 requests');
    assert.notEqual(rb.connection_id, ra.connection_id, 'the connection whose body never ended is not reused');
    assert.equal(rc.connection_id, rb.connection_id, 'the new connection is kept as usual');
    await waitFor(async () => (await s.fake.stats()).streams_aborted_by_client === before.streams_aborted_by_client + 1,
      { timeoutMs: 5000, what: 'the gateway to close the upstream connection of the unended stream' });
  });
});

/**
 * A minimal upstream (node:http, in this process: its timestamps share the test's clock) that
 * answers every chat request with a short stream ending in `data: [DONE]`, then, by the
 * request body's `fake.tail`: 'end' (default) the zero-length chunk (keep-alive goes on);
 * 'hold' nothing more, the connection left open; 'fin' a FIN without the zero-length chunk.
 * (The fake upstream has no such fault: its no_done* faults leave out [DONE] itself.)
 */
async function startTailUpstream(pieces) {
  const requests = []; // { at, doneAt, connection_id, tail }
  const connections = new Map(); // id → { closedAt }
  let nextId = 0;
  const server = http.createServer((req, res) => {
    const rec = { at: null, doneAt: null, connection_id: req.socket.tailId, tail: 'end' };
    requests.push(rec);
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      rec.at = performance.now();
      try { rec.tail = JSON.parse(Buffer.concat(parts).toString('utf8')).fake?.tail ?? 'end'; } catch { /* end */ }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const base = { id: 'chatcmpl-tail', object: 'chat.completion.chunk', created: 1700000000, model: 'tail-model' };
      const chunk = (delta, finish = null) => ({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] });
      const events = [chunk({ role: 'assistant', content: '' }), ...pieces.map((p) => chunk({ content: p })), chunk({}, 'stop')];
      for (const e of events) res.write(`data: ${JSON.stringify(e)}\n\n`);
      res.write('data: [DONE]\n\n');
      rec.doneAt = performance.now();
      if (rec.tail === 'end') res.end();
      else if (rec.tail === 'fin') res.socket.end();
      // 'hold': nothing more; the gateway has to give up on the tail.
    });
  });
  server.keepAliveTimeout = 120_000;
  server.on('connection', (sock) => {
    const id = ++nextId;
    sock.tailId = id;
    const c = { closedAt: null };
    connections.set(id, c);
    sock.on('close', () => { c.closedAt = performance.now(); });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    requests,
    connections,
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

describe('streaming: an upstream body that does not end after [DONE]', { timeout: 60_000 }, () => {
  const PIECES = ['Tail ', 'of the ', 'stream.'];
  let up;
  let gw;
  const key = makeKey();
  before(async () => {
    up = await startTailUpstream(PIECES);
    gw = await startGateway({
      config: gatewayConfig({
        fakeUrl: up.baseUrl,
        keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
        timeouts: { stream_idle_seconds: IDLE_S },
      }),
      env: { FAKE_PROVIDER_KEY: makeProviderKey() },
    });
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  // Three streams on one client connection: the first ends its upstream body with `tail`, the
  // other two normally. No receipts: the windows timed hold no receipt-store write.
  async function sequence(tail) {
    const first = up.requests.length;
    const body = (t) => chatBody(ROUTE_GPT, { stream: true, fake: { tail: t } });
    const noReceipt = [['X-Tresor-Receipt', 'false']];
    const conn = await RawConnection.connect(gw.port);
    try {
      const a = await rawChat(conn, key, body(tail), noReceipt);
      assertCompleteStream(a.res, PIECES.join(''));
      const b = await rawChat(conn, key, body('end'), noReceipt);
      assertCompleteStream(b.res, PIECES.join(''));
      const c = await rawChat(conn, key, body('end'), noReceipt);
      assertCompleteStream(c.res, PIECES.join(''));
      const reqs = up.requests.slice(first);
      assert.equal(reqs.length, 3, 'the upstream saw the 3 requests');
      assert.deepEqual(reqs.map((r) => r.tail), [tail, 'end', 'end']);
      return { a, b, c, ra: reqs[0], rb: reqs[1], rc: reqs[2] };
    } finally {
      conn.destroy();
    }
  }

  function assertPrompt({ a, ra, rb }, tail) {
    const done = a.end - ra.doneAt;
    const next = rb.at - a.end;
    console.log(`[DONE] then ${tail}: the client's stream ended ${done.toFixed(1)} ms after the upstream's [DONE]; ` +
      `the next request reached the upstream ${next.toFixed(1)} ms later`);
    assert.ok(done <= SLACK_MS, `the client's stream ended ${done.toFixed(1)} ms after the upstream sent [DONE]`);
    assert.ok(next <= TAIL_WAIT_MS + SLACK_MS,
      `the next request on the client connection reached the upstream ${next.toFixed(1)} ms after the stream before it ended`);
  }

  test('control: streams that end properly share one upstream connection', async () => {
    const r = await sequence('end');
    assert.equal(r.rb.connection_id, r.ra.connection_id);
    assert.equal(r.rc.connection_id, r.ra.connection_id);
  });

  test('[DONE], then the body never ends (connection held open): complete stream at once, next request on a new upstream connection, the held one closed', async () => {
    const r = await sequence('hold');
    assertPrompt(r, 'hold');
    assert.notEqual(r.rb.connection_id, r.ra.connection_id, 'the connection whose body never ended is not reused');
    assert.equal(r.rc.connection_id, r.rb.connection_id, 'the new connection is kept');
    const held = up.connections.get(r.ra.connection_id);
    await waitFor(() => held.closedAt !== null, { timeoutMs: 5000, what: 'the gateway to close the held upstream connection' });
    const closed = held.closedAt - r.ra.doneAt;
    assert.ok(closed <= TAIL_WAIT_MS + SLACK_MS, `the held upstream connection was closed ${closed.toFixed(1)} ms after its [DONE]`);
  });

  test('[DONE], then FIN without the zero-length chunk: complete stream at once, next request on a new upstream connection', async () => {
    const r = await sequence('fin');
    assertPrompt(r, 'fin');
    assert.notEqual(r.rb.connection_id, r.ra.connection_id, 'the closed connection is not reused');
    assert.equal(r.rc.connection_id, r.rb.connection_id, 'the new connection is kept');
  });
});
