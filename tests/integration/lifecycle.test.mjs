// Process lifecycle and request bookkeeping (operations issue): /healthz and /readyz,
// X-Request-Id (honoured, replaced, generated), X-Tresor-Overhead-Us, one JSON access log line
// per request; SIGHUP reloads the config file under load without failing a request (an
// invalid file keeps the running config); SIGTERM drains: /readyz 503 during the notice
// period, streams in flight finish, new connections are refused after it, idle keep-alive
// connections are closed, exit 0; server.drain_seconds bounds the whole drain.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, readSse, parseEventJson, toYaml, waitFor, delay,
  performance, RawConnection, requestHead, makeKey, sha256Hex, RECEIPT_ID_RE, REQUEST_ID_RE,
} from './harness.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const OLD = 'eu/prova/old'; // removed by the reload
const NEW = 'eu/prova/m2'; // added by the reload
const CHAT = '/v1/chat/completions';

let s; // the shared stack (everything but the drain tests)
const KEY_BETA = makeKey(); // a second customer's key, removed by a reload below

before(async () => {
  s = await startRoutingStack({
    configHook: (cfg) => { cfg.auth.keys.push({ sha256: sha256Hex(KEY_BETA), customer: 'beta' }); },
    providers: ['prova', 'provb'],
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: OLD, provider: 'prova' }],
    retry: { attempts_per_route: 1, backoff_ms: 50, max_retry_after_seconds: 5 },
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    fakeOpts: { chunks: 3 },
  });
});
after(stopAll);

async function readAll(res) {
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * One request on a new connection (no keep-alive pool): { status, headers (object), text, json }.
 * Used where a reload happened: see the keep-alive test in the SIGHUP section.
 */
function fresh(gw, p, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) h['content-length'] = Buffer.byteLength(body);
    const req = http.request({ host: '127.0.0.1', port: gw.port, path: p, method, headers: h, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${p} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}
const get = (gw, p, headers = {}) => fresh(gw, p, { headers });
const chatFresh = (gw, key, bodyObj) => fresh(gw, CHAT, {
  method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(bodyObj),
});
const strip = (attempts) => attempts.replace(/;\d+/g, ''); // X-Tresor-Attempts without the timings
const uniqueId = (tag) => `${tag}-${Math.random().toString(36).slice(2, 10)}`;

/** Every access log line of a gateway: [{ line, json }]. */
function accessLines(gw) {
  return gw.proc.stderr.split('\n').concat(gw.proc.stdout.split('\n'))
    .map((line) => ({ line, m: /^\S+ info access (\{.*\})\s*$/.exec(line) }))
    .filter((x) => x.m)
    .map((x) => ({ line: x.line, json: JSON.parse(x.m[1]) }));
}

/** Waits for exactly one access line with this request id and returns its JSON. */
async function accessLineFor(gw, requestId) {
  const found = await waitFor(() => {
    const lines = accessLines(gw).filter((x) => x.json.request_id === requestId);
    return lines.length ? lines : null;
  }, { timeoutMs: 10_000, what: `the access log line of request ${requestId}` });
  // (The last access-log test checks that no request id was logged twice.)
  assert.equal(found.length, 1, `one access line per request, got:\n${found.map((x) => x.line).join('\n')}`);
  return found[0].json;
}

/** A Prometheus sample value from a scrape (exact label match; 0 if absent). */
async function metric(gw, name, labels = {}) {
  const { text } = await get(gw, '/metrics');
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',');
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] || '').split(/,(?=[a-zA-Z_]\w*=")/).filter(Boolean).sort().join(',');
    if (got === want) return Number(m[3]);
  }
  return 0;
}

/** Connects to port; resolves 'connected' (then closes) or the error code (e.g. ECONNREFUSED). */
function probeConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.once('connect', () => { sock.destroy(); resolve('connected'); });
    sock.once('error', (e) => resolve(e.code || String(e)));
  });
}

// ---------------------------------------------------------------------------------------------

describe('health endpoints', { timeout: 30_000 }, () => {
  test('GET /healthz and /readyz answer 200 {"status":"ok"} without authentication', async () => {
    for (const p of ['/healthz', '/readyz']) {
      for (const headers of [{}, { authorization: `Bearer ${makeKey()}` }, { authorization: 'Basic Zm9vOmJhcg==' }]) {
        const r = await get(s.gw, p, headers);
        assert.equal(r.status, 200, `${p}: ${r.text}`);
        assert.match(r.headers['content-type'] || '', /^application\/json/i);
        assert.deepEqual(r.json, { status: 'ok' }, p);
      }
    }
    const head = await fetch(s.gw.url('/healthz'), { method: 'HEAD' });
    assert.equal(head.status, 200, 'HEAD /healthz');
  });
});

describe('X-Request-Id and X-Tresor-Overhead-Us', { timeout: 60_000 }, () => {
  const valid = ['abc-123', 'A.b_c:d-9', 'x'.repeat(128), '0', 'req:2026-11-25T00:00:00.000Z'];
  for (const id of valid) {
    test(`a valid client id (${id.length > 30 ? `${id.length} chars` : id}) is echoed back and logged`, async () => {
      const r = await readAll(await s.chat(chatBody(A), { headers: { 'x-request-id': id } }));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-request-id'), id);
      assert.equal((await accessLineFor(s.gw, id)).request_id, id);
    });
  }

  const invalid = { '129 chars': 'x'.repeat(129), 'a space': 'has space', 'a slash': 'a/b', 'a semicolon': 'a;b',
    'a quote': 'a"b', 'a non-ASCII byte': 'caf\u00e9', 'an equals sign': 'a=b' };
  for (const [what, id] of Object.entries(invalid)) {
    test(`a client id with ${what} is replaced by a generated UUID`, async () => {
      const r = await readAll(await s.chat(chatBody(A), { headers: { 'x-request-id': id } }));
      assert.equal(r.status, 200, r.text);
      const got = r.headers.get('x-request-id');
      assert.match(got || '', REQUEST_ID_RE, `generated id: ${got}`);
      assert.equal((await accessLineFor(s.gw, got)).request_id, got, 'the generated id is the one logged');
    });
  }

  test('an empty X-Request-Id is replaced by a generated UUID', async () => {
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(requestHead('GET', '/healthz', [['X-Request-Id', '']]));
      const res = await conn.readResponse({ method: 'GET' });
      assert.equal(res.status, 200);
      assert.match(res.headers['x-request-id'] || '', REQUEST_ID_RE);
    } finally {
      conn.destroy();
    }
  });

  test('without X-Request-Id every answer carries a fresh UUID: JSON, SSE, errors, public endpoints', async () => {
    const seen = new Set();
    const answers = {
      'chat 200': await s.chat(chatBody(A)),
      'chat stream 200': await s.chat(chatBody(A, { stream: true })),
      'chat 400 invalid_json': await s.chat('{"model":'),
      'chat 401': await fetch(s.gw.url(CHAT), { method: 'POST', headers: { authorization: `Bearer ${makeKey()}` }, body: '{}' }),
      'unknown path 404': await fetch(s.gw.url('/v2/nothing')),
      '405': await fetch(s.gw.url('/healthz'), { method: 'POST', body: 'x' }),
      '/healthz': await fetch(s.gw.url('/healthz')),
      '/metrics': await fetch(s.gw.url('/metrics')),
      '/v1/models': await fetch(s.gw.url('/v1/models')),
      '/.well-known/jwks.json': await fetch(s.gw.url('/.well-known/jwks.json')),
    };
    for (const [what, res] of Object.entries(answers)) {
      const id = res.headers.get('x-request-id');
      assert.match(id || '', REQUEST_ID_RE, `${what}: X-Request-Id ${id}`);
      assert.ok(!seen.has(id), `${what}: ids are unique`);
      seen.add(id);
      await res.arrayBuffer();
    }
    for (let i = 0; i < 20; i++) {
      const r = await fetch(s.gw.url('/healthz'));
      await r.arrayBuffer();
      const id = r.headers.get('x-request-id');
      assert.ok(!seen.has(id), 'ids are unique');
      seen.add(id);
    }
  });

  test('X-Tresor-Overhead-Us: an integer on every non-stream answer, at most the time the client waited', async () => {
    const cases = {
      'chat 200': () => s.chat(chatBody(A)),
      'chat 401': () => fetch(s.gw.url(CHAT), { method: 'POST', headers: { authorization: `Bearer ${makeKey()}` }, body: '{}' }),
      'chat 404 model_not_found': () => s.chat(chatBody('eu/nowhere/x')),
      'unknown path 404': () => fetch(s.gw.url('/nothing')),
      '405': () => fetch(s.gw.url('/v1/models'), { method: 'DELETE' }),
      '/healthz': () => fetch(s.gw.url('/healthz')),
      '/v1/models': () => fetch(s.gw.url('/v1/models')),
    };
    for (const [what, send] of Object.entries(cases)) {
      const t0 = performance.now();
      const res = await send();
      const waitedUs = (performance.now() - t0) * 1000;
      await res.arrayBuffer();
      const v = res.headers.get('x-tresor-overhead-us');
      assert.match(v || '', /^\d+$/, `${what}: X-Tresor-Overhead-Us ${v}`);
      assert.ok(Number(v) <= waitedUs + 1000, `${what}: overhead ${v} µs ≤ the ${waitedUs.toFixed(0)} µs the client waited`);
    }
  });

  test('X-Tresor-Overhead-Us excludes the upstream wait (upstream takes 300 ms)', async () => {
    const t0 = performance.now();
    const id = uniqueId('overhead');
    const res = await s.chat(chatBody(A, { fake: { delay_ms: 300 } }), { headers: { 'x-request-id': id } });
    const waitedUs = (performance.now() - t0) * 1000;
    const r = await readAll(res);
    assert.equal(r.status, 200, r.text);
    assert.ok(waitedUs >= 300_000, 'the upstream took 300 ms');
    const v = Number(r.headers.get('x-tresor-overhead-us'));
    assert.ok(Number.isInteger(v) && v >= 0, `overhead ${v}`);
    const logged = (await accessLineFor(s.gw, id)).overhead_us;
    assert.ok(logged <= waitedUs - 250_000, `the access log's overhead_us ${logged} leaves out the upstream wait`);
    assert.ok(v <= waitedUs - 250_000, `overhead ${v} µs leaves out the upstream's 300 ms (client waited ${waitedUs.toFixed(0)} µs)`);
  });
});

describe('access log', { timeout: 60_000 }, () => {
  const BASE_KEYS = ['time', 'request_id', 'method', 'endpoint', 'customer', 'status', 'stream', 'duration_ms', 'bytes_in', 'bytes_out'];
  const INFERENCE_KEYS = ['requested_route', 'routed_model', 'failover', 'attempts', 'upstream_ms', 'overhead_us'];

  function assertLine(j, { method, endpoint, customer, status, stream = false, inference = false }) {
    const keys = Object.keys(j).sort();
    assert.deepEqual(keys, [...BASE_KEYS, ...(inference ? INFERENCE_KEYS : [])].sort(), `keys of ${JSON.stringify(j)}`);
    assert.match(j.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'time is ISO 8601 UTC');
    assert.ok(Math.abs(Date.parse(j.time) - Date.now()) < 5 * 60_000, `time ${j.time} is now`);
    assert.equal(j.method, method);
    assert.equal(j.endpoint, endpoint);
    assert.equal(j.customer, customer);
    assert.equal(j.status, status);
    assert.equal(j.stream, stream);
    for (const k of ['duration_ms', 'bytes_in', 'bytes_out']) assert.ok(Number.isInteger(j[k]) && j[k] >= 0, `${k} = ${j[k]}`);
    if (inference) {
      for (const k of ['upstream_ms', 'overhead_us']) assert.ok(Number.isInteger(j[k]) && j[k] >= 0, `${k} = ${j[k]}`);
      assert.equal(typeof j.attempts, 'string');
      assert.equal(typeof j.failover, 'boolean');
    }
  }

  test('a served chat request: one JSON line with routing, attempts, timings and byte counts', async () => {
    const id = uniqueId('log-chat');
    const body = JSON.stringify(chatBody(A));
    const r = await readAll(await s.chat(body, { headers: { 'x-request-id': id } }));
    assert.equal(r.status, 200, r.text);
    const j = await accessLineFor(s.gw, id);
    assertLine(j, { method: 'POST', endpoint: CHAT, customer: 'acme', status: 200, inference: true });
    assert.equal(j.requested_route, A);
    assert.equal(j.routed_model, A);
    assert.equal(j.failover, false);
    // The attempts of the X-Tresor-Attempts header (the log times the last one when the answer was written).
    assert.equal(strip(j.attempts), strip(r.headers.get('x-tresor-attempts')), 'attempts = the X-Tresor-Attempts header');
    assert.match(j.attempts, /^eu\/prova\/m1=ok;\d+$/);
    assert.equal(j.bytes_in, Buffer.byteLength(body), 'bytes_in = the request body');
    assert.equal(j.bytes_out, Buffer.byteLength(r.text), 'bytes_out = the response body');
    assert.ok(j.duration_ms >= j.upstream_ms, 'duration covers the upstream wait');
  });

  test('a stream with failover: stream true, failover true, the serving route, bytes_out = the SSE body', async () => {
    await s.clearFakes();
    await s.fakes.prova.behaviour({ status: 503, times: 1 });
    const id = uniqueId('log-stream');
    const res = await s.chat(chatBody(A, { stream: true, failover: [B] }), { headers: { 'x-request-id': id } });
    assert.equal(res.status, 200);
    const attempts = res.headers.get('x-tresor-attempts');
    const { raw, events } = await readSse(res);
    assert.equal(events.at(-1).data, '[DONE]');
    const j = await accessLineFor(s.gw, id);
    assertLine(j, { method: 'POST', endpoint: CHAT, customer: 'acme', status: 200, stream: true, inference: true });
    assert.equal(j.requested_route, A);
    assert.equal(j.routed_model, B);
    assert.equal(j.failover, true);
    // Same attempts as the header (whose last entry was timed at the first event, the log's at the end).
    assert.equal(strip(j.attempts), strip(attempts));
    assert.match(j.attempts, /^eu\/prova\/m1=503;\d+, eu\/provb\/m1=ok;\d+$/);
    assert.equal(j.bytes_out, Buffer.byteLength(raw), 'bytes_out = the SSE body relayed');
    await s.clearFakes();
  });

  test('refused and public requests: endpoint templates, customer, status; no routing fields outside inference', async () => {
    // A receipt id to fetch.
    const served = await readAll(await s.chat(chatBody(A)));
    const receiptId = served.json.tresor.receipt_id;
    assert.match(receiptId, RECEIPT_ID_RE);
    const auth = { authorization: `Bearer ${s.key}` };
    const cases = [
      { what: 'invalid key', send: (h) => fetch(s.gw.url(CHAT), { method: 'POST', headers: { ...h, authorization: `Bearer ${makeKey()}` }, body: '{}' }),
        want: { method: 'POST', endpoint: CHAT, customer: '', status: 401, inference: true } },
      { what: 'invalid JSON', send: (h) => s.chat('{"model":', { headers: h }),
        want: { method: 'POST', endpoint: CHAT, customer: 'acme', status: 400, inference: true } },
      { what: 'unknown model', send: (h) => s.chat(chatBody('eu/nowhere/x'), { headers: h }),
        want: { method: 'POST', endpoint: CHAT, customer: 'acme', status: 404, inference: true } },
      { what: 'receipt', send: (h) => fetch(s.gw.url(`/v1/receipts/${receiptId}`), { headers: { ...h, ...auth } }),
        want: { method: 'GET', endpoint: '/v1/receipts/{id}', customer: 'acme', status: 200 } },
      { what: 'unknown receipt', send: (h) => fetch(s.gw.url('/v1/receipts/nope-123'), { headers: { ...h, ...auth } }),
        want: { method: 'GET', endpoint: '/v1/receipts/{id}', customer: 'acme', status: 404 } },
      { what: 'models', send: (h) => fetch(s.gw.url('/v1/models?detail=true'), { headers: h }),
        want: { method: 'GET', endpoint: '/v1/models', customer: '', status: 200 } },
      { what: 'models POST', send: (h) => fetch(s.gw.url('/v1/models'), { method: 'POST', headers: h, body: '{}' }),
        want: { method: 'POST', endpoint: '/v1/models', customer: '', status: 405 } },
      { what: 'healthz', send: (h) => fetch(s.gw.url('/healthz'), { headers: h }),
        want: { method: 'GET', endpoint: '/healthz', customer: '', status: 200 } },
      { what: 'readyz', send: (h) => fetch(s.gw.url('/readyz'), { headers: h }),
        want: { method: 'GET', endpoint: '/readyz', customer: '', status: 200 } },
      { what: 'metrics', send: (h) => fetch(s.gw.url('/metrics'), { headers: h }),
        want: { method: 'GET', endpoint: '/metrics', customer: '', status: 200 } },
      { what: 'jwks', send: (h) => fetch(s.gw.url('/.well-known/jwks.json'), { headers: h }),
        want: { method: 'GET', endpoint: '/.well-known/jwks.json', customer: '', status: 200 } },
      { what: 'usage', send: (h) => fetch(s.gw.url('/v1/usage'), { headers: { ...h, ...auth } }),
        want: { method: 'GET', endpoint: '/v1/usage', customer: 'acme', status: 200 } },
      { what: 'unknown path with a query', send: (h) => fetch(s.gw.url('/admin/secret?x=1'), { headers: h }),
        want: { method: 'GET', endpoint: 'other', customer: '', status: 404 } },
      { what: 'HEAD', send: (h) => fetch(s.gw.url('/healthz'), { method: 'HEAD', headers: h }),
        want: { method: 'HEAD', endpoint: '/healthz', customer: '', status: 200 } },
    ];
    for (const c of cases) {
      const id = uniqueId(`log-${c.what.replace(/\W+/g, '-')}`);
      const res = await c.send({ 'x-request-id': id });
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(res.status, c.want.status, `${c.what}: ${body.toString().slice(0, 200)}`);
      assert.equal(res.headers.get('x-request-id'), id);
      const j = await accessLineFor(s.gw, id);
      assertLine(j, c.want);
      if (c.want.inference) {
        assert.equal(j.routed_model, '', `${c.what}: no route served it`);
        assert.equal(j.attempts, '', `${c.what}: no attempt`);
      }
      if (c.what !== 'HEAD') assert.equal(j.bytes_out, body.length, `${c.what}: bytes_out = the body sent`);
    }
  });

  test('every access line is `<time> info access {JSON}`, and no request was logged twice', async () => {
    const lines = (s.gw.proc.stderr + s.gw.proc.stdout).split('\n').filter((l) => l.includes(' access '));
    assert.ok(lines.length > 40, 'access lines were written');
    const ids = new Map();
    for (const l of lines) {
      const m = /^\S+ info access (\{.*\})\s*$/.exec(l);
      assert.ok(m, `access line format: ${l}`);
      let j;
      assert.doesNotThrow(() => { j = JSON.parse(m[1]); }, `JSON: ${l}`);
      ids.set(j.request_id, (ids.get(j.request_id) || 0) + 1);
    }
    // Every request in this file so far had its own id (client-chosen ids are used once).
    const twice = [...ids].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], 'one line per request');
  });
});

// ---------------------------------------------------------------------------------------------
// SIGHUP

/** 16 keep-alive client loops posting chat requests until stop(); counts per phase. */
function startLoad(gw, key, { loops = 16, model = A } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: loops });
  const body = JSON.stringify(chatBody(model));
  const st = { ok: 0, failed: 0, failures: [], stopping: false, phase: 'before', byPhase: {} };
  const one = () => new Promise((resolve) => {
    const phase = st.phase;
    const req = http.request({
      host: '127.0.0.1', port: gw.port, path: CHAT, method: 'POST', agent,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => {
        let ok = res.statusCode === 200;
        if (ok) {
          try { ok = JSON.parse(data).tresor?.routed_model === model; } catch { ok = false; }
        }
        if (ok) st.ok++;
        else { st.failed++; st.failures.push(`${res.statusCode} ${data.slice(0, 200)}`); }
        st.byPhase[phase] = (st.byPhase[phase] || 0) + 1;
        resolve();
      });
      res.on('error', (e) => { st.failed++; st.failures.push(String(e)); resolve(); });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('client timeout')));
    req.on('error', (e) => { st.failed++; st.failures.push(String(e)); resolve(); });
    req.end(body);
  });
  const runners = Array.from({ length: loops }, async () => {
    while (!st.stopping) await one();
  });
  st.total = () => st.ok + st.failed;
  st.stop = async () => {
    st.stopping = true;
    await Promise.all(runners);
    agent.destroy();
  };
  return st;
}

describe('SIGHUP: config reload', { timeout: 180_000 }, () => {
  test('under 16 concurrent keep-alive clients: no request fails, the new route is served, an in-flight stream keeps its config', async () => {
    const { gw } = s;
    // Before: NEW is unknown, OLD is served.
    await readErrorEnvelope(await s.chat(chatBody(NEW)), { status: 404, code: 'model_not_found' });
    const successBefore = await metric(gw, 'tresor_config_reloads_total', { result: 'success' });

    // A slow stream on OLD, which the new file removes: it started on the old config.
    const streamRes = await s.chat(chatBody(OLD, { stream: true, fake: { pace_ms: 200, chunks: 15 } }));
    assert.equal(streamRes.status, 200);
    const streamDone = readSse(streamRes, { timeoutMs: 60_000 });

    const load = startLoad(gw, s.key);
    await waitFor(() => load.total() >= 1000, { timeoutMs: 60_000, intervalMs: 20, what: '1000 requests before the reload' });

    const next = structuredClone(s.config);
    next.routes = [...next.routes.filter((r) => r.id !== OLD), { id: NEW, provider: 'prova', upstream_model: 'prova-m2', type: 'chat' }];
    writeFileSync(gw.configPath, toYaml(next));
    load.phase = 'during';
    const atSignal = load.total();
    const t0 = performance.now();
    gw.proc.signal('SIGHUP');
    await gw.proc.waitForOutput(/config reloaded from (\S+): \d+ providers, 3 routes/, { stream: 'stderr', timeoutMs: 20_000 });
    const reloadMs = performance.now() - t0;
    load.phase = 'after';
    const atReload = load.total();
    await waitFor(() => load.total() >= Math.max(2000, atReload + 1000), { timeoutMs: 90_000, intervalMs: 20, what: '1000 requests after the reload' });
    await load.stop();
    console.log(`reload under load: ${load.total()} requests (${atSignal} before SIGHUP, ${atReload - atSignal} while ` +
      `reloading (${reloadMs.toFixed(0)} ms), ${load.total() - atReload} after), ${load.failed} failed; per phase ${JSON.stringify(load.byPhase)}`);
    assert.equal(load.failed, 0, `failed requests: ${load.failures.slice(0, 5).join(' | ')}`);
    assert.ok(load.total() >= 2000, `${load.total()} requests across the reload`);
    assert.match(gw.proc.stderr, new RegExp(`config reloaded from ${gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
      'the log names the file');

    // The stream that started before the reload finishes on its old route.
    const { events } = await streamDone;
    assert.equal(events.at(-1).data, '[DONE]', 'the in-flight stream completed');
    const finish = events.map(parseEventJson).find((e) => e?.choices?.[0]?.finish_reason);
    assert.equal(finish.tresor.routed_model, OLD, 'served by the route of its snapshot');

    // After (new connections): NEW is served and listed, OLD is gone.
    const r = await chatFresh(gw, s.key, chatBody(NEW));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.tresor.routed_model, NEW);
    assert.equal(r.json.model, 'prova-m2', 'the new route\'s upstream_model');
    const gone = await chatFresh(gw, s.key, chatBody(OLD));
    assert.equal(gone.status, 404, gone.text);
    assert.equal(gone.json.error.code, 'model_not_found');
    const models = await get(gw, '/v1/models');
    assert.deepEqual(models.json.data.map((m) => m.id), [A, B, NEW], '/v1/models lists the new routes table');
    assert.equal(await metric(gw, 'tresor_config_reloads_total', { result: 'success' }), successBefore + 1, 'success counter +1');
  });

  const invalidFiles = [
    {
      what: 'an unknown key',
      make: (cfg) => {
        const text = toYaml(cfg) + 'bogus_key: 1\n';
        return { text, line: text.split('\n').length - 1, col: 1, message: /unknown key 'bogus_key'/ };
      },
    },
    {
      what: 'a route naming a provider that does not exist',
      make: (cfg) => {
        const bad = structuredClone(cfg);
        bad.routes = [...bad.routes, { id: 'eu/ghost/m1', provider: 'ghost', upstream_model: 'x', type: 'chat' }];
        const text = toYaml(bad);
        const line = text.split('\n').findIndex((l) => l.includes('"ghost"') && l.includes('provider')) + 1;
        return { text, line, col: null, message: /ghost/ };
      },
    },
    {
      what: 'broken YAML',
      make: (cfg) => {
        const text = toYaml(cfg) + 'server: [unclosed\n';
        return { text, line: null, col: null, message: /./ };
      },
    },
  ];
  for (const f of invalidFiles) {
    test(`an invalid file (${f.what}) keeps the running config; failure counter +1; the log names FILE:LINE:COL`, async () => {
      const { gw } = s;
      const valid = structuredClone(s.config);
      valid.routes = [...valid.routes.filter((r) => r.id !== OLD), { id: NEW, provider: 'prova', upstream_model: 'prova-m2', type: 'chat' }];
      const modelsBefore = (await get(gw, '/v1/models')).text;
      const failBefore = await metric(gw, 'tresor_config_reloads_total', { result: 'failure' });
      const successBefore = await metric(gw, 'tresor_config_reloads_total', { result: 'success' });
      const bad = f.make(valid);
      writeFileSync(gw.configPath, bad.text);
      const seen = gw.proc.stderr.length;
      gw.proc.signal('SIGHUP');
      await waitFor(() => gw.proc.stderr.slice(seen).includes('config reload failed'), { timeoutMs: 20_000, what: 'the reload failure line' });
      const line = gw.proc.stderr.slice(seen).split('\n').find((l) => l.includes('config reload failed'));
      console.log(`invalid reload (${f.what}): ${line}`);
      const esc = gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const m = new RegExp(`config reload failed, keeping the running config: ${esc}:(\\d+):(\\d+): (.*)$`).exec(line);
      assert.ok(m, `FILE:LINE:COL: message in ${JSON.stringify(line)}`);
      if (bad.line !== null) assert.equal(Number(m[1]), bad.line, 'the line of the error');
      if (bad.col !== null) assert.equal(Number(m[2]), bad.col, 'the column of the error');
      assert.match(m[3], bad.message);
      assert.equal(await metric(gw, 'tresor_config_reloads_total', { result: 'failure' }), failBefore + 1, 'failure counter +1');
      assert.equal(await metric(gw, 'tresor_config_reloads_total', { result: 'success' }), successBefore, 'success counter unchanged');
      // Still serving the running config.
      assert.ok(gw.proc.alive);
      for (const model of [A, NEW]) {
        const r = await chatFresh(gw, s.key, chatBody(model));
        assert.equal(r.status, 200, `${model}: ${r.text}`);
        assert.equal(r.json.tresor.routed_model, model);
      }
      assert.equal((await get(gw, '/v1/models')).text, modelsBefore, '/v1/models unchanged');
      assert.equal((await get(gw, '/readyz')).status, 200, 'still ready');
      // Put the valid file back: the next SIGHUP succeeds again.
      writeFileSync(gw.configPath, toYaml(valid));
      gw.proc.signal('SIGHUP');
      await waitFor(async () => await metric(gw, 'tresor_config_reloads_total', { result: 'success' }) === successBefore + 1,
        { timeoutMs: 20_000, what: 'the next reload to succeed' });
    });
  }
});

// ---------------------------------------------------------------------------------------------
// SIGTERM

/** Reads a stream to its end, recording when its first event and its end arrived. */
async function consumeStream(res) {
  const out = { status: res.status, raw: '', firstEventAt: null, endedAt: null, error: null };
  try {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.raw += dec.decode(value, { stream: true });
      if (out.firstEventAt === null && out.raw.includes('data:')) out.firstEventAt = performance.now();
    }
  } catch (e) {
    out.error = e;
  }
  out.endedAt = performance.now();
  return out;
}

/** A keep-alive connection that has been answered once with `key` and is now idle. */
async function idleConnection(gw, key) {
  const conn = await RawConnection.connect(gw.port);
  await conn.write(requestHead('GET', '/v1/usage', { Authorization: `Bearer ${key}` }));
  const res = await conn.readResponse({ method: 'GET' });
  assert.equal(res.status, 200, res.text);
  return conn;
}

async function postOn(conn, key, bodyObj) {
  const body = JSON.stringify(bodyObj);
  await conn.write(requestHead('POST', CHAT, {
    Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)),
  }) + body);
  return conn.readResponse({ timeoutMs: 20_000 });
}

async function reloadWith(gw, cfg) {
  const seen = gw.proc.stderr.length;
  writeFileSync(gw.configPath, toYaml(cfg));
  gw.proc.signal('SIGHUP');
  await waitFor(() => /config reloaded from /.test(gw.proc.stderr.slice(seen)), { timeoutMs: 20_000, what: 'the reload' });
}

describe('SIGHUP: connections that were idle during the reload', { timeout: 60_000 }, () => {

  test('a route added by the reload is served on an already open keep-alive connection', async () => {
    const { gw } = s;
    const conn = await idleConnection(gw, s.key);
    try {
      const cfg = structuredClone(s.config);
      cfg.routes = [...cfg.routes, { id: 'eu/prova/m3', provider: 'prova', upstream_model: 'prova-m3', type: 'chat' }];
      await reloadWith(gw, cfg);
      const fresh1 = await chatFresh(gw, s.key, chatBody('eu/prova/m3'));
      assert.equal(fresh1.status, 200, `a new connection: ${fresh1.text}`);
      const res = await postOn(conn, s.key, chatBody('eu/prova/m3'));
      assert.equal(res.status, 200, `the open connection's next request after "config reloaded": ${res.text}`);
    } finally {
      conn.destroy();
    }
  });

  test('a key removed by the reload is refused on an already open keep-alive connection', async () => {
    const { gw } = s;
    const conn = await idleConnection(gw, KEY_BETA);
    try {
      const cfg = structuredClone(s.config);
      cfg.auth.keys = cfg.auth.keys.filter((k) => k.customer !== 'beta');
      await reloadWith(gw, cfg);
      const fresh1 = await chatFresh(gw, KEY_BETA, chatBody(A));
      assert.equal(fresh1.status, 401, `a new connection: ${fresh1.text}`);
      const res = await postOn(conn, KEY_BETA, chatBody(A));
      assert.equal(res.status, 401, `the revoked key on the open connection after "config reloaded": ${res.status} ${res.text.slice(0, 200)}`);
    } finally {
      conn.destroy();
    }
  });
});

describe('SIGTERM: drain', { timeout: 180_000 }, () => {
  test('20 open streams finish with [DONE]; /readyz 503 during the notice; then refused connections, idle keep-alive closed; exit 0', async () => {
    const NOTICE_S = 2;
    const st = await startRoutingStack({
      providers: ['prova'],
      routes: [{ id: A, provider: 'prova' }],
      server: { drain_seconds: 30, drain_notice_seconds: NOTICE_S },
    });
    const { gw } = st;
    const fake = st.fakes.prova;
    // An idle keep-alive connection: one request answered, then nothing.
    const idle = await RawConnection.connect(gw.port);
    await idle.write(requestHead('GET', '/healthz', {}));
    assert.equal((await idle.readResponse({ method: 'GET' })).status, 200);

    // 20 streams of 20 chunks 250 ms apart (≈ 5 s), each on its own connection.
    const responses = await Promise.all(Array.from({ length: 20 },
      () => st.chat(chatBody(A, { stream: true, fake: { pace_ms: 250, chunks: 20 } }))));
    const streams = responses.map((res) => consumeStream(res));
    responses.forEach((res) => assert.equal(res.status, 200));
    // A busy keep-alive request (non-stream, the upstream takes 2.5 s) on a raw connection.
    const busy = await RawConnection.connect(gw.port);
    const busyBody = JSON.stringify(chatBody(A, { fake: { delay_ms: 2500 } }));
    await busy.write(requestHead('POST', CHAT, {
      Authorization: `Bearer ${st.key}`, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(busyBody)),
    }) + busyBody);
    await waitFor(async () => (await fake.stats()).requests >= 21, { what: 'the 21 requests at the upstream' });

    const t0 = performance.now();
    gw.proc.signal('SIGTERM');
    const exited = gw.proc.exit.then((info) => ({ ...info, at: performance.now() }));
    const idleClosed = idle.waitClosed(30_000).then((closed) => ({ closed, at: performance.now() }));

    // During the notice: still accepting; /readyz answers 503 draining, with Connection: close.
    let ready;
    await waitFor(async () => {
      const { res, conn } = await rawRequest503(gw.port);
      conn.destroy();
      ready = res;
      return res.status === 503;
    }, { timeoutMs: NOTICE_S * 1000, intervalMs: 20, what: '/readyz 503 during the notice period' });
    assert.deepEqual(JSON.parse(ready.text), { status: 'draining' });
    assert.equal((ready.headers.connection || '').toLowerCase(), 'close', 'answers while draining close their connection');
    const notReadyAt = performance.now() - t0;

    // After the notice: the listener is closed.
    await waitFor(async () => (await probeConnect(gw.port)) === 'ECONNREFUSED',
      { timeoutMs: 20_000, intervalMs: 50, what: 'connections to be refused' });
    const refusedAt = performance.now() - t0;
    const openStreamsAtRefusal = (await Promise.all(streams.map((p) => Promise.race([p.then(() => 0), delay(0).then(() => 1)]))))
      .reduce((a, b) => a + b, 0);

    // The idle keep-alive connection is closed by the drain (after the notice).
    const idleResult = await idleClosed;
    assert.ok(idleResult.closed, 'the idle keep-alive connection was closed');
    const idleClosedAt = idleResult.at - t0;

    // The busy request is answered, with Connection: close, and its connection closes.
    const busyRes = await busy.readResponse({ timeoutMs: 20_000 });
    assert.equal(busyRes.status, 200, busyRes.text);
    assert.equal((busyRes.headers.connection || '').toLowerCase(), 'close', 'Connection: close on an answer sent while draining');
    assert.ok(await busy.waitClosed(10_000), 'the busy connection is closed after its answer');
    busy.destroy();

    // Every stream completes.
    const results = await Promise.all(streams);
    const lastEnd = Math.max(...results.map((r) => r.endedAt)) - t0;
    results.forEach((r, i) => {
      assert.equal(r.error, null, `stream ${i}: ${r.error}`);
      assert.match(r.raw, /data: \[DONE\]\s*$/, `stream ${i} ends with [DONE]: …${r.raw.slice(-300)}`);
      assert.ok(!/"error"/.test(r.raw), `stream ${i} has no error event`);
      const chunks = r.raw.split('\n').filter((l) => l.startsWith('data: {')).length;
      assert.ok(chunks >= 22, `stream ${i}: all ${chunks} events (role + 20 content + finish)`);
    });

    const exit = await exited;
    const exitAt = exit.at - t0;
    console.log(`drain: /readyz 503 at ${notReadyAt.toFixed(0)} ms, refused at ${refusedAt.toFixed(0)} ms ` +
      `(${openStreamsAtRefusal} streams still open then), idle keep-alive closed at ${idleClosedAt.toFixed(0)} ms, ` +
      `20/20 streams complete with [DONE] (last at ${lastEnd.toFixed(0)} ms), exit code ${exit.code} signal ${exit.signal} ` +
      `at ${exitAt.toFixed(0)} ms after SIGTERM`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit status 0');
    assert.ok(refusedAt >= NOTICE_S * 1000 - 100, `listeners close after the ${NOTICE_S} s notice, not at ${refusedAt.toFixed(0)} ms`);
    assert.ok(idleClosedAt >= NOTICE_S * 1000 - 100, `idle connections are closed after the notice, not at ${idleClosedAt.toFixed(0)} ms`);
    assert.ok(exitAt >= lastEnd - 50, 'the process waited for the streams');
    assert.ok(exitAt < 25_000, `exit ${exitAt.toFixed(0)} ms after SIGTERM, well within drain_seconds (30)`);
    assert.match(gw.proc.stderr, /drain: every connection finished/);
  });

  test('drain_seconds bounds the drain: a stream that would last 10 s is cut at 2 s, exit 0', async () => {
    const st = await startRoutingStack({
      providers: ['prova'],
      routes: [{ id: A, provider: 'prova' }],
      server: { drain_seconds: 2, drain_notice_seconds: 0 },
    });
    const { gw } = st;
    const res = await st.chat(chatBody(A, { stream: true, fake: { pace_ms: 500, chunks: 20 } }));
    assert.equal(res.status, 200);
    const stream = consumeStream(res);
    await waitFor(async () => (await st.fakes.prova.stats()).active_streams >= 1, { what: 'the stream at the upstream' });
    const t0 = performance.now();
    gw.proc.signal('SIGTERM');
    // Notice 0: the listener closes at once.
    await waitFor(async () => (await probeConnect(gw.port)) === 'ECONNREFUSED',
      { timeoutMs: 10_000, intervalMs: 50, what: 'connections to be refused' });
    const exit = await gw.proc.exit;
    const exitMs = performance.now() - t0;
    const r = await stream;
    console.log(`drain grace: exit code ${exit.code} signal ${exit.signal} ${exitMs.toFixed(0)} ms after SIGTERM ` +
      `(drain_seconds 2); the stream got ${r.raw.split('\n').filter((l) => l.startsWith('data: {')).length} events, ` +
      `[DONE]: ${r.raw.includes('[DONE]')}`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit status 0');
    assert.ok(exitMs >= 1900, `not before the 2 s grace period: ${exitMs.toFixed(0)} ms`);
    assert.ok(exitMs < 2000 + 6000, `soon after the 2 s grace period: ${exitMs.toFixed(0)} ms`);
    assert.ok(!/data: \[DONE\]/.test(r.raw), 'the 10 s stream did not complete');
    assert.match(gw.proc.stderr, /drain: grace period over, closing 1 connection\(s\) still open/);
  });

  test('a second SIGTERM stops at once', async () => {
    const st = await startRoutingStack({
      providers: ['prova'],
      routes: [{ id: A, provider: 'prova' }],
      server: { drain_seconds: 60, drain_notice_seconds: 0 },
    });
    const { gw } = st;
    const res = await st.chat(chatBody(A, { stream: true, fake: { pace_ms: 500, chunks: 40 } }));
    assert.equal(res.status, 200);
    const stream = consumeStream(res);
    await waitFor(async () => (await st.fakes.prova.stats()).active_streams >= 1, { what: 'the stream at the upstream' });
    gw.proc.signal('SIGTERM');
    await gw.proc.waitForOutput(/draining: \/readyz answers 503/, { stream: 'stderr', timeoutMs: 10_000 });
    const t0 = performance.now();
    gw.proc.signal('SIGTERM');
    const exit = await gw.proc.exit;
    const exitMs = performance.now() - t0;
    await stream;
    console.log(`second SIGTERM: exit code ${exit.code} signal ${exit.signal} ${exitMs.toFixed(0)} ms after it`);
    assert.ok(exitMs < 5000, `stopped ${exitMs.toFixed(0)} ms after the second signal (drain_seconds 60)`);
    assert.equal(exit.signal, null, 'exits by itself, not killed');
  });
});

/** GET /readyz on a fresh connection; { res, conn }. */
async function rawRequest503(port) {
  const conn = await RawConnection.connect(port);
  await conn.write(requestHead('GET', '/readyz', {}));
  const res = await conn.readResponse({ method: 'GET', timeoutMs: 5000 });
  return { res, conn };
}
