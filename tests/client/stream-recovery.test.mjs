// Issue 18 as an unmodified OpenAI JS SDK sees it: a stream whose upstream fails after the
// first events went out (cut, stall, error) is continued on the next candidate — by replay
// (the original request again, the already delivered prefix checked and withheld) or by
// prefill (the delivered text sent as a trailing assistant message) — as ONE coherent stream:
// the first upstream's id/created/model on every chunk, the full text exactly once, one
// finish_reason, [DONE]; a receipt that records the recovery and digests the bytes the client
// got. A fallback that would produce a different text ends the stream with the in-band error
// (code stream_recovery_diverged), never a spliced answer. Hedging: a second candidate started
// when the first has no first event after X-Tresor-Hedge-After-Ms / hedge_after_ms.
//
// Everything over real sockets: tresor-router + one tresor-fake-upstream per provider
// (tests/fake_upstream/README.md: cut_after, stall_after, lag_first_ms, reject_prefill,
// honor_prefill, tool_args).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import {
  startRoutingStack, stopAll, parseAttempts, expectAttempts, fetchReceipt, decodeJws, readSse,
  streamResponseSha256, routerBin, tempDir, waitFor, performance,
} from '../integration/harness.mjs';

// 60 words, deterministic; non-ASCII so that byte offsets and character offsets differ.
const FULL = 'Die Kathedrale von Chartres steht seit dem zwölften Jahrhundert auf einem Hügel über der ' +
  'Eure, und ihre Fenster leuchten in einem Blau, das niemand mehr herstellen kann. Pilger kamen ' +
  'zu Fuß, Händler mit Wagen, Bauleute mit Seilen und Geduld. Heute zählen Besucher die Schritte im ' +
  'Labyrinth, fotografieren die Portale und fragen sich, wie viele Hände dieses Werk getragen haben 🙂';
const CHUNKS = 60;
const CUT = 40;
const PACE_MS = 5;
const IDLE_S = 2;
// Differs from FULL from the 5th word on (inside the 40 delivered chunks, and in the tail, so
// a splice would show).
const OTHER = FULL.split(' ').map((w, i) => (i >= 4 ? w.toUpperCase() + 'X' : w)).join(' ');
const TOOL_ARGS = '{"location":"Zürich, CH","unit":"celsius"}';
const TOOL_ARGS_OTHER = '{"location":"Berlin, DE","unit":"celsius"}';
const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather',
    parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string' } } },
  },
}];

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const C = 'eu/provc/m1';
const MESSAGES = [
  { role: 'system', content: 'Antworte auf Deutsch.' },
  { role: 'user', content: 'Erzähl mir von Chartres.' },
];

// Common to every stack: one attempt per route (so the recovery of A's failed stream is B, not
// A again), a breaker that never opens (the tests fail A on purpose, many times), a short idle
// limit for the stall case.
const STACK_DEFAULTS = {
  timeouts: { stream_idle_seconds: IDLE_S },
  retry: { attempts_per_route: 1, backoff_ms: 50 },
  breaker: { consecutive_failures: 1000 },
  content: FULL,
  fakeOpts: { chunks: CHUNKS, paceMs: PACE_MS },
};

let s; // the stack with the default recovery settings (no issue-18 config keys at all)
let dir;
let pieces; // FULL as the fake cuts it into CHUNKS content pieces

before(async () => {
  assert.equal(FULL.split(' ').length, 60, 'FULL has 60 words');
  s = await startRoutingStack({
    ...STACK_DEFAULTS,
    providers: ['prova', 'provb', 'provc'],
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: C, provider: 'provc' }],
  });
  dir = tempDir('tresor-recovery-');
  pieces = await fakePieces(s.fakes.prova, {});
  assert.equal(pieces.length, CHUNKS);
  assert.equal(pieces.join(''), FULL);
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

// ---------------------------------------------------------------------------------------------
// Helpers

/** The first k content pieces of FULL, as a client has them after k chunks. */
const prefix = (k) => pieces.slice(0, k).join('');
const bytes = (t) => Buffer.byteLength(t, 'utf8');

/**
 * Asks a fake directly (not through the gateway) for a stream with fault spec `spec` (body
 * `fake` layer) and returns its content pieces (or tool-call argument pieces), in order.
 * Used to know exactly what a client has after N chunks. Leaves a request in the fake's log:
 * call before clearing it.
 */
async function fakePieces(fake, spec) {
  const res = await fetch(`${fake.baseUrl()}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.providerKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'probe', stream: true, messages: [{ role: 'user', content: 'probe' }], fake: spec }),
  });
  assert.equal(res.status, 200, `direct fake request: ${res.status}`);
  const { events } = await readSse(res);
  const out = [];
  for (const e of events) {
    if (e.data === '[DONE]') continue;
    const d = JSON.parse(e.data).choices?.[0]?.delta ?? {};
    const piece = d.tool_calls ? d.tool_calls[0].function?.arguments : d.content;
    if (piece) out.push(piece);
  }
  return out;
}

/**
 * A client whose fetch records the exact request body and the raw response text (read from a
 * clone while the SDK consumes the original). maxRetries 0: every retry is the gateway's.
 */
function recordingClient(stack) {
  const calls = [];
  const client = new OpenAI({
    apiKey: stack.key,
    baseURL: `http://127.0.0.1:${stack.gw.port}/v1`,
    maxRetries: 0,
    fetch: async (url, init) => {
      const call = { url: String(url), requestBody: init?.body };
      calls.push(call);
      const res = await fetch(url, init);
      call.status = res.status;
      call.headers = res.headers;
      call.responseText = res.clone().text();
      return res;
    },
  });
  return { client, calls };
}

/**
 * One SDK stream: create → iterate to the end. Returns { chunks, text, error, raw, requestBody,
 * headers, t0, firstMs (create() to first chunk), ms (to the end), finishes, tresor }.
 * Never throws for an error while iterating (it is returned), so callers assert on it.
 */
async function sdkStream(stack, params, { headers = {} } = {}) {
  const { client, calls } = recordingClient(stack);
  const t0 = performance.now();
  const stream = await client.chat.completions.create({ messages: MESSAGES, stream: true, ...params }, { headers });
  const chunks = [];
  let firstMs;
  let error;
  try {
    for await (const c of stream) {
      if (firstMs === undefined) firstMs = performance.now() - t0;
      chunks.push(c);
    }
  } catch (e) {
    error = e;
  }
  const ms = performance.now() - t0;
  const call = calls.at(-1);
  const raw = await call.responseText;
  const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
  const finishes = chunks.filter((c) => c.choices?.[0]?.finish_reason != null);
  const tresor = chunks.filter((c) => c.tresor).at(-1)?.tresor;
  return { chunks, text, error, raw, requestBody: call.requestBody, headers: call.headers, t0, firstMs, ms, finishes, tresor };
}

/** A stream that ended well: no exception, one [DONE] at the end, one finish_reason. */
function assertCleanEnd(r, finishReason = 'stop') {
  assert.equal(r.error, undefined, `the stream must end without an exception, got ${r.error?.constructor?.name}: ` +
    `${r.error?.message} (code ${r.error?.code}); raw tail: ${r.raw.slice(-400)}`);
  assert.ok(/data: \[DONE\]\r?\n\r?\n$/.test(r.raw), `the stream ends with [DONE]; raw tail: ${r.raw.slice(-300)}`);
  assert.equal(r.raw.split('data: [DONE]').length - 1, 1, 'exactly one [DONE]');
  assert.equal(r.finishes.length, 1, `exactly one finish_reason, got ${r.finishes.length}`);
  assert.equal(r.finishes[0].choices[0].finish_reason, finishReason);
  assert.ok(!/"error"\s*:\s*\{/.test(r.raw), `no error event: ${r.raw.slice(-300)}`);
}

/** A stream that ended with the in-band error: an APIError while iterating, no [DONE], no finish. */
function assertErrorEnd(r, code) {
  assert.ok(r.error, `the stream must end with an exception, not as a complete answer; raw tail: ${r.raw.slice(-400)}`);
  assert.ok(r.error instanceof OpenAI.APIError, `got ${r.error?.constructor?.name}: ${r.error?.message}`);
  if (code !== undefined) assert.equal(r.error.code, code, `error code; message: ${r.error.message}`);
  assert.ok(!r.raw.includes('[DONE]'), `no [DONE] after an error; raw tail: ${r.raw.slice(-300)}`);
  assert.equal(r.finishes.length, 0, 'no finish_reason on a failed stream');
}

/** Every chunk carries the first chunk's id, created and model (the first upstream's). */
function assertOneIdentity(r) {
  const [first] = r.chunks;
  for (const [i, c] of r.chunks.entries()) {
    assert.deepEqual({ id: c.id, created: c.created, model: c.model },
      { id: first.id, created: first.created, model: first.model }, `chunk ${i} has another identity`);
  }
  assert.equal(r.chunks.filter((c) => c.choices?.[0]?.delta?.role).length, 1, 'one role chunk (no second stream start)');
}

/** A forwarded body without its `model` (each route has its own upstream model). */
const withoutModel = ({ model: _model, ...rest }) => rest;

/** The fake's recorded chat requests, bodies parsed. */
async function requestsOf(fake) {
  return (await fake.requests()).map((q) => ({ ...q, json: JSON.parse(q.body) }));
}

function runCli(args) {
  return new Promise((resolve) => {
    execFile(routerBin(), args, { timeout: 20_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

let cliRuns = 0;
/**
 * Fetches the receipt of a finished stream, verifies it with `tresor-router verify-receipt`
 * against the served JWKS with the request and response bytes, checks the response digest
 * recomputed here, and returns the claims.
 */
async function verifiedClaims(stack, r) {
  const id = r.tresor?.receipt_id;
  assert.ok(id, `a receipt_id in the tresor object: ${JSON.stringify(r.tresor)}`);
  const rec = await fetchReceipt(stack.gw, stack.key, id);
  assert.equal(rec.status, 200, `GET /v1/receipts/${id}: ${rec.text}`);
  const n = cliRuns++;
  const files = ['req', 'resp', 'receipt'].map((x) => path.join(dir, `${n}-${x}`));
  writeFileSync(files[0], r.requestBody);
  writeFileSync(files[1], r.raw);
  writeFileSync(files[2], rec.text);
  const out = await runCli(['verify-receipt', '--jwks', stack.gw.url('/.well-known/jwks.json'), files[2],
    '--request', files[0], '--response', files[1]]);
  assert.equal(out.code, 0, `verify-receipt: ${out.stdout}${out.stderr}`);
  assert.match(out.stdout, /^PASS\n/);
  const claims = decodeJws(JSON.parse(rec.text).receipt).payload;
  assert.equal(claims.response_sha256, streamResponseSha256(r.raw), 'response_sha256 = the bytes the client got');
  return claims;
}

/** The finish chunk's tresor after a recovery from `from` to `to` with `outcome` on `from`. */
function assertRecoveredTresor(r, { from, to, outcome, committed = from }) {
  const t = r.tresor;
  assert.ok(t, 'a tresor object on the last chunk');
  assert.equal(t.routed_model, to, `routed_model: ${JSON.stringify(t)}`);
  assert.equal(t.failover, true, `failover: ${JSON.stringify(t)}`);
  assert.equal(t.recovered_from, from, `recovered_from: ${JSON.stringify(t)}`);
  assert.equal(typeof t.attempts, 'string', `tresor.attempts (the trail): ${JSON.stringify(t)}`);
  const trail = parseAttempts(t.attempts);
  assert.ok(trail.some((a) => a.route === from && a.outcome === outcome), `trail has ${from}=${outcome}: ${t.attempts}`);
  assert.deepEqual([trail.at(-1).route, trail.at(-1).outcome], [to, 'ok'], `the trail ends with ${to}=ok: ${t.attempts}`);
  // The head went out at commit, before the failure: its X-Tresor-Attempts cannot know of it.
  expectAttempts(r.headers.get('x-tresor-attempts'), [[committed, 'ok']]);
}

/** Starts a stack like `s` with extra per-route keys and top-level config (issue-18 keys). */
function featureStack({ routes, routeExtras = {}, routing, retry = {}, timeouts = {} }) {
  return startRoutingStack({
    ...STACK_DEFAULTS,
    retry: { ...STACK_DEFAULTS.retry, ...retry },
    timeouts: { ...STACK_DEFAULTS.timeouts, ...timeouts },
    providers: [...new Set(routes.map((r) => r.provider))],
    routes,
    configHook: (cfg) => {
      for (const r of cfg.routes) Object.assign(r, routeExtras[r.id] ?? {});
      if (routing) cfg.routing = routing;
      return cfg;
    },
  });
}

/** Sum of the /metrics samples of family `name` whose labels contain every `labels` pair. */
async function metricSum(stack, name, labels = {}) {
  const res = await fetch(stack.gw.url('/metrics'));
  const text = await res.text();
  assert.equal(res.status, 200, text.slice(0, 300));
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

async function stopStack(t) {
  await Promise.all([t.gw.stop(), ...Object.values(t.fakes).map((f) => f.stop())]);
}

// ---------------------------------------------------------------------------------------------

describe('OpenAI JS SDK: mid-stream recovery (issue 18)', { timeout: 120_000 }, () => {
  test('1. cut after 40 of 60 chunks, deterministic fallback → the full text once, one coherent stream, receipt records the replay', async () => {
    await s.fakes.prova.behaviour({ cut_after: CUT });
    const recovered0 = await metricSum(s, 'tresor_stream_recoveries_total', { result: 'recovered' });
    const r = await sdkStream(s, { model: A, failover: [B] });
    console.log(`cut at ${CUT}: ${r.chunks.length} chunks, ${r.ms.toFixed(0)} ms; trail: ${r.tresor?.attempts}`);
    assertCleanEnd(r);
    assert.equal(r.text, FULL, 'the concatenated delta.content is the full answer, no duplicate, no gap');
    assertOneIdentity(r);
    assert.equal(r.chunks[0].model, 'prova-m1', 'the identity is the first upstream\'s');
    assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_cut' });

    // Replay: B got the original request again (no assistant prefill).
    const [qa] = await requestsOf(s.fakes.prova);
    const qbs = await requestsOf(s.fakes.provb);
    assert.equal(qbs.length, 1, 'one recovery request to B');
    assert.deepEqual(withoutModel(qbs[0].json), withoutModel(qa.json), 'the replay sends the original body (but B\'s model)');

    const claims = await verifiedClaims(s, r);
    assert.equal(claims.routed_model, B);
    assert.equal(claims.failover, true);
    assert.ok(Array.isArray(claims.recoveries) && claims.recoveries.length === 1, `recoveries: ${JSON.stringify(claims.recoveries)}`);
    const rec = claims.recoveries[0];
    assert.equal(rec.from, A);
    assert.equal(rec.to, B);
    assert.equal(rec.mode, 'replay');
    assert.ok(rec.offset > 0, `offset ${rec.offset}`);
    assert.equal(rec.offset, bytes(prefix(CUT)), 'offset = UTF-8 bytes of the text the client had at the cut');
    assert.equal(await metricSum(s, 'tresor_stream_recoveries_total', { result: 'recovered' }), recovered0 + 1,
      'tresor_stream_recoveries_total{result="recovered"} counts it');
  });

  test(`2. 20 chunks then silence, stream_idle_seconds ${IDLE_S} → the full text within idle + B's own time + 1 s`, async () => {
    const alone = await sdkStream(s, { model: B });
    assertCleanEnd(alone);
    assert.equal(alone.text, FULL);
    await s.clearFakes();

    await s.fakes.prova.behaviour({ stall_after: 20 });
    const r = await sdkStream(s, { model: A, failover: [B] });
    const bound = IDLE_S * 1000 + alone.ms + 1000;
    console.log(`stall at 20: total ${r.ms.toFixed(0)} ms (B alone ${alone.ms.toFixed(0)} ms, bound ${bound.toFixed(0)} ms); trail: ${r.tresor?.attempts}`);
    assertCleanEnd(r);
    assert.equal(r.text, FULL);
    assertOneIdentity(r);
    assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_stalled' });
    assert.ok(r.ms >= IDLE_S * 1000 - 50, `recovered after ${r.ms.toFixed(0)} ms: not before the idle limit`);
    assert.ok(r.ms <= bound, `total ${r.ms.toFixed(0)} ms > ${bound.toFixed(0)} ms (idle ${IDLE_S} s + B alone ${alone.ms.toFixed(0)} ms + 1 s)`);
    // The stalled upstream stream is closed, not left hanging.
    await waitFor(async () => (await s.fakes.prova.stats()).streams_aborted_by_client === 1,
      { timeoutMs: 2000, what: 'the gateway to close A\'s stalled stream' });
  });

  test('3. fallback that rejects prefill (400) and is not supports_prefill → recovered by replay; it never saw a prefill', async () => {
    await s.fakes.prova.behaviour({ cut_after: CUT });
    await s.fakes.provb.behaviour({ reject_prefill: 1 });
    const r = await sdkStream(s, { model: A, failover: [B] });
    console.log(`reject_prefill fallback: trail ${r.tresor?.attempts}`);
    assertCleanEnd(r);
    assert.equal(r.text, FULL);
    assertOneIdentity(r);
    assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_cut' });
    const qbs = await requestsOf(s.fakes.provb);
    assert.ok(qbs.length >= 1, 'B was asked');
    for (const q of qbs) {
      assert.notEqual(q.json.messages.at(-1).role, 'assistant', `B got a prefill request: ${q.body.slice(0, 400)}`);
      assert.ok(!('continue_final_message' in q.json), 'no continue_final_message either');
    }
    const claims = await verifiedClaims(s, r);
    assert.equal(claims.recoveries?.[0]?.mode, 'replay', `recoveries: ${JSON.stringify(claims.recoveries)}`);
  });

  test('4. fallback with supports_prefill: true → continued by prefill with exactly the delivered text (both prefill styles)', async () => {
    const BC = 'eu/provb/cfm';
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: BC, provider: 'provb' }],
      routeExtras: {
        [B]: { supports_prefill: true },
        [BC]: { supports_prefill: true, prefill_style: 'continue_final_message' },
      },
    });
    try {
      for (const [route, style] of [[B, 'assistant_message'], [BC, 'continue_final_message']]) {
        await t.clearFakes();
        await t.fakes.prova.behaviour({ cut_after: CUT });
        await t.fakes.provb.behaviour({ honor_prefill: 1 });
        const r = await sdkStream(t, { model: A, failover: [route] });
        console.log(`prefill (${style}): trail ${r.tresor?.attempts}`);
        assertCleanEnd(r);
        assert.equal(r.text, FULL, `${style}: the client's text is the full answer`);
        assertOneIdentity(r);
        assertRecoveredTresor(r, { from: A, to: route, outcome: 'stream_cut' });

        const [qa] = await requestsOf(t.fakes.prova);
        const qbs = await requestsOf(t.fakes.provb);
        assert.equal(qbs.length, 1, `${style}: one request to the fallback`);
        const fwd = qbs[0].json;
        assert.deepEqual(fwd.messages.at(-1), { role: 'assistant', content: prefix(CUT) },
          `${style}: the last message is the assistant prefix the client had`);
        assert.deepEqual(fwd.messages.slice(0, -1), qa.json.messages, `${style}: the original messages before it`);
        const { messages: _m, continue_final_message: _c, add_generation_prompt: _g, ...fwdRest } = withoutModel(fwd);
        const { messages: _ma, ...origRest } = withoutModel(qa.json);
        assert.deepEqual(fwdRest, origRest, `${style}: otherwise the original body`);
        if (style === 'continue_final_message') {
          assert.equal(fwd.continue_final_message, true, `continue_final_message: ${qbs[0].body.slice(-300)}`);
          assert.equal(fwd.add_generation_prompt, false, `add_generation_prompt: ${qbs[0].body.slice(-300)}`);
        } else {
          assert.ok(!('continue_final_message' in fwd) && !('add_generation_prompt' in fwd),
            `assistant_message style adds no vLLM fields: ${qbs[0].body.slice(-300)}`);
        }
        const claims = await verifiedClaims(t, r);
        assert.deepEqual(claims.recoveries, [{ from: A, to: route, offset: bytes(prefix(CUT)), mode: 'prefill' }]);
      }
    } finally {
      await stopStack(t);
    }
  });

  test('5. fallback that generates a different text → in-band stream_recovery_diverged, never a spliced answer', async () => {
    await s.fakes.prova.behaviour({ cut_after: CUT });
    await s.fakes.provb.behaviour({ content: OTHER });
    const diverged0 = await metricSum(s, 'tresor_stream_recoveries_total', { result: 'diverged' });
    const r = await sdkStream(s, { model: A, failover: [B] });
    console.log(`diverged: ${r.error?.constructor?.name} ${r.error?.code}: ${r.error?.message}`);
    assertErrorEnd(r, 'stream_recovery_diverged');
    assert.equal(r.error.type, 'server_error');
    assert.ok(FULL.startsWith(r.text), `the client's text is a prefix of A's: ${JSON.stringify(r.text)}`);
    assert.equal(r.text, prefix(CUT), 'exactly what A delivered, nothing of B\'s');
    assert.equal((await s.fakes.provb.requests()).length, 1, 'the recovery was tried on B');
    assert.equal(await metricSum(s, 'tresor_stream_recoveries_total', { result: 'diverged' }), diverged0 + 1,
      'tresor_stream_recoveries_total{result="diverged"} counts it');
  });

  test('6. tool-call stream cut after 5 of 10 argument chunks → arguments recovered exactly under A\'s call id; different arguments → in-band error', async () => {
    const argPieces = await fakePieces(s.fakes.prova, { tool_args: TOOL_ARGS, chunks: 10 });
    assert.equal(argPieces.length, 10);
    assert.equal(argPieces.join(''), TOOL_ARGS);

    for (const fallbackArgs of [TOOL_ARGS, TOOL_ARGS_OTHER]) {
      await s.clearFakes();
      await s.fakes.prova.behaviour({ tool_args: TOOL_ARGS, chunks: 10, cut_after: 5 });
      await s.fakes.provb.behaviour({ tool_args: fallbackArgs, chunks: 10 });
      const { client, calls } = recordingClient(s);
      // The SDK's own accumulator (ChatCompletionStream), as an application uses it.
      const stream = client.chat.completions.stream({ model: A, messages: MESSAGES, tools: TOOLS, failover: [B] });
      stream.done().catch(() => {}); // the error is asserted from the iteration below
      const chunks = [];
      let error;
      try {
        for await (const c of stream) chunks.push(c);
      } catch (e) {
        error = e;
      }
      const raw = await calls[0].responseText;
      const ids = chunks.flatMap((c) => (c.choices?.[0]?.delta?.tool_calls ?? []).map((tc) => tc.id).filter(Boolean));
      assert.equal(ids.length, 1, `one tool call started (one id), got ${JSON.stringify(ids)}`);
      assert.ok(chunks.every((c) => (c.choices?.[0]?.delta?.tool_calls ?? []).every((tc) => tc.index === 0)), 'one tool call (index 0)');
      const accumulated = chunks.flatMap((c) => (c.choices?.[0]?.delta?.tool_calls ?? []).map((tc) => tc.function?.arguments ?? '')).join('');
      if (fallbackArgs === TOOL_ARGS) {
        assert.equal(error, undefined, `no exception: ${error?.message} (code ${error?.code}); raw tail ${raw.slice(-300)}`);
        assert.ok(/data: \[DONE\]\r?\n\r?\n$/.test(raw), 'ends with [DONE]');
        const final = await stream.finalChatCompletion();
        const calls0 = final.choices[0].message.tool_calls;
        assert.equal(calls0.length, 1, `one tool call: ${JSON.stringify(calls0)}`);
        assert.equal(calls0[0].function.arguments, TOOL_ARGS, 'the SDK\'s accumulated arguments are exact');
        assert.equal(calls0[0].function.name, 'get_weather');
        assert.equal(calls0[0].id, ids[0], 'A\'s call id');
        assert.equal(final.choices[0].finish_reason, 'tool_calls');
        assert.equal((await s.fakes.prova.stats()).requests, 1);
        const tresor = chunks.filter((c) => c.tresor).at(-1)?.tresor;
        assert.equal(typeof tresor?.attempts, 'string', `tresor.attempts: ${JSON.stringify(tresor)}`);
        const trail = parseAttempts(tresor.attempts);
        assert.deepEqual([trail.at(-1).route, trail.at(-1).outcome], [B, 'ok'], 'finished by B');
        assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one chunk id');
      } else {
        assert.ok(error instanceof OpenAI.APIError, `an in-band error, got ${error?.constructor?.name}: ${error?.message}`);
        assert.equal(error.code, 'stream_recovery_diverged');
        assert.ok(!raw.includes('[DONE]'), 'no [DONE]');
        assert.equal(accumulated, argPieces.slice(0, 5).join(''), 'exactly A\'s first 5 argument pieces, nothing of B\'s');
        assert.equal((await s.fakes.provb.requests()).length, 1, 'the recovery was tried on B');
      }
    }
  });

  test('7. hedging via X-Tresor-Hedge-After-Ms: 500 → answered by B in ≈0.5 s + B\'s latency, A cancelled; without it no parallel attempt; invalid → 400', async () => {
    const alone = await sdkStream(s, { model: B });
    assertCleanEnd(alone);
    await s.clearFakes();

    await s.fakes.prova.behaviour({ lag_first_ms: 5000 });
    const won0 = await metricSum(s, 'tresor_hedges_total', { result: 'won' });
    const r = await sdkStream(s, { model: A, failover: [B] }, { headers: { 'X-Tresor-Hedge-After-Ms': '500' } });
    const bound = 500 + alone.firstMs + 700;
    console.log(`hedged: first chunk after ${r.firstMs?.toFixed(0)} ms (B alone ${alone.firstMs.toFixed(0)} ms, bound ${bound.toFixed(0)} ms); ` +
      `X-Tresor-Attempts: ${r.headers.get('x-tresor-attempts')}`);
    assertCleanEnd(r);
    assert.equal(r.text, FULL);
    assert.ok(r.firstMs >= 500 - 50, `first chunk after ${r.firstMs.toFixed(0)} ms: the hedge must wait 500 ms`);
    assert.ok(r.firstMs < bound, `first chunk after ${r.firstMs.toFixed(0)} ms, bound ${bound.toFixed(0)} ms`);
    assert.equal(r.tresor?.routed_model, B, `answered by B: ${JSON.stringify(r.tresor)}`);
    const attempts = parseAttempts(r.headers.get('x-tresor-attempts'));
    assert.ok(attempts.some((a) => a.route === A && a.outcome === 'hedged_cancelled'), `A=hedged_cancelled in ${r.headers.get('x-tresor-attempts')}`);
    assert.ok(attempts.some((a) => a.route === B && a.outcome === 'ok'), `B=ok in ${r.headers.get('x-tresor-attempts')}`);
    const aborted = (st) => Math.max(st.requests_aborted_by_client, st.streams_aborted_by_client);
    await waitFor(async () => aborted(await s.fakes.prova.stats()) >= 1,
      { timeoutMs: 2000, what: 'A\'s fake to count the cancelled request' });
    const stA = await s.fakes.prova.stats();
    assert.equal(stA.requests, 1);
    assert.equal(aborted(stA), 1, `A's fake: ${JSON.stringify(stA)}`);
    const qb = await requestsOf(s.fakes.provb);
    assert.equal(qb.length, 1);
    assert.equal(qb[0].headers['x-tresor-hedge-after-ms'], undefined, 'the hedge header is not forwarded');
    assert.equal(await metricSum(s, 'tresor_hedges_total', { result: 'won' }), won0 + 1, 'tresor_hedges_total{result="won"}');

    // The same request without any hedge setting: waits for A; B never asked.
    await s.clearFakes();
    await s.fakes.prova.behaviour({ lag_first_ms: 5000 });
    const u = await sdkStream(s, { model: A, failover: [B] });
    console.log(`unhedged: first chunk after ${u.firstMs?.toFixed(0)} ms`);
    assertCleanEnd(u);
    assert.equal(u.text, FULL);
    assert.equal(u.tresor?.routed_model, A);
    assert.ok(u.firstMs >= 5000 - 100, `first chunk after ${u.firstMs.toFixed(0)} ms: A's 5 s first token`);
    expectAttempts(u.headers.get('x-tresor-attempts'), [[A, 'ok']]);
    assert.equal((await s.fakes.provb.stats()).requests, 0, 'no parallel attempt without a hedge setting');

    // Invalid overrides are refused before any upstream is asked.
    await s.clearFakes();
    const client = new OpenAI({ apiKey: s.key, baseURL: `http://127.0.0.1:${s.gw.port}/v1`, maxRetries: 0 });
    for (const bad of ['abc', '-1', '600001', '1.5']) {
      await assert.rejects(
        client.chat.completions.create({ model: A, messages: MESSAGES, stream: true, failover: [B] },
          { headers: { 'X-Tresor-Hedge-After-Ms': bad } }),
        (err) => {
          assert.ok(err instanceof OpenAI.APIError, `${bad}: got ${err?.constructor?.name}: ${err?.message}`);
          assert.equal(err.status, 400, `${bad}: status`);
          assert.equal(err.code, 'invalid_hedge_override', `${bad}: code`);
          return true;
        },
      );
    }
    assert.equal((await s.fakes.prova.stats()).requests + (await s.fakes.provb.stats()).requests, 0, 'no upstream asked');
  });

  test('7b. route hedge_after_ms: 500 → hedged without a header; X-Tresor-Hedge-After-Ms: 0 turns it off', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      routeExtras: { [A]: { hedge_after_ms: 500 } },
    });
    try {
      const alone = await sdkStream(t, { model: B });
      assertCleanEnd(alone);
      await t.clearFakes();
      await t.fakes.prova.behaviour({ lag_first_ms: 5000 });
      const r = await sdkStream(t, { model: A, failover: [B] });
      const bound = 500 + alone.firstMs + 700;
      console.log(`route hedge: first chunk after ${r.firstMs?.toFixed(0)} ms (bound ${bound.toFixed(0)} ms)`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assert.equal(r.tresor?.routed_model, B);
      assert.ok(r.firstMs >= 500 - 50 && r.firstMs < bound, `first chunk after ${r.firstMs.toFixed(0)} ms`);
      assert.ok(parseAttempts(r.headers.get('x-tresor-attempts')).some((a) => a.route === A && a.outcome === 'hedged_cancelled'),
        r.headers.get('x-tresor-attempts'));
      await waitFor(async () => {
        const st = await t.fakes.prova.stats();
        return st.requests_aborted_by_client + st.streams_aborted_by_client >= 1;
      }, { timeoutMs: 2000, what: 'A\'s fake to count the cancelled request' });

      await t.clearFakes();
      await t.fakes.prova.behaviour({ lag_first_ms: 2000 });
      const off = await sdkStream(t, { model: A, failover: [B] }, { headers: { 'X-Tresor-Hedge-After-Ms': '0' } });
      assertCleanEnd(off);
      assert.equal(off.tresor?.routed_model, A, 'header 0: no hedging');
      assert.equal((await t.fakes.provb.stats()).requests, 0);
    } finally {
      await stopStack(t);
    }
  });

  test('8. routing.stream_recovery: off → a cut stream ends with the in-band error; no request to the fallback', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      routing: { stream_recovery: 'off' },
    });
    try {
      await t.fakes.prova.behaviour({ cut_after: CUT });
      const r = await sdkStream(t, { model: A, failover: [B] });
      console.log(`recovery off: ${r.error?.constructor?.name} ${r.error?.code}: ${r.error?.message}`);
      assertErrorEnd(r);
      assert.notEqual(r.error.code, 'stream_recovery_diverged');
      assert.equal(r.text, prefix(CUT), 'what A delivered');
      assert.equal((await t.fakes.provb.stats()).requests, 0, 'no recovery request');
      assert.equal((await t.fakes.prova.stats()).requests, 1);
    } finally {
      await stopStack(t);
    }
  });

  test('9. max_stream_recoveries (default 1): A cuts, B cuts too → in-band error after exactly one recovery; C never asked', async () => {
    await s.fakes.prova.behaviour({ cut_after: CUT });
    await s.fakes.provb.behaviour({ cut_after: 50 });
    const r = await sdkStream(s, { model: A, failover: [B, C] });
    console.log(`both cut: ${r.error?.constructor?.name} ${r.error?.code}: ${r.error?.message}`);
    assertErrorEnd(r);
    assert.equal(r.text, prefix(50), 'A\'s 40 chunks and B\'s next 10, then the error');
    assertOneIdentity(r);
    assert.equal((await s.fakes.provb.stats()).requests, 1, 'B got exactly one request');
    assert.equal((await s.fakes.provc.stats()).requests, 0, 'no second recovery');
  });
});

// Beyond the nine acceptance points: the other failure kinds, the order of recovery
// candidates, the per-route modes and a multi-choice stream.
describe('OpenAI JS SDK: mid-stream recovery, more cases', { timeout: 120_000 }, () => {
  test('10. a reset and an upstream error event mid-stream are recovered like a cut (stream_cut)', async () => {
    for (const fault of [{ reset_after: CUT }, { error_event_after: CUT }]) {
      await s.clearFakes();
      await s.fakes.prova.behaviour(fault);
      const r = await sdkStream(s, { model: A, failover: [B] });
      console.log(`${Object.keys(fault)[0]}: trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL, JSON.stringify(fault));
      assertOneIdentity(r);
      assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_cut' });
    }
  });

  test('11. the same route\'s remaining attempt recovers first (attempts_per_route 2); the failover route is not asked', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      retry: { attempts_per_route: 2 },
    });
    try {
      await t.fakes.prova.behaviour({ cut_after: CUT, times: 1 });
      const r = await sdkStream(t, { model: A, failover: [B] });
      console.log(`same route: trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assertOneIdentity(r);
      assert.equal(r.tresor?.routed_model, A);
      assert.equal(r.tresor?.recovered_from, A);
      const trail = parseAttempts(r.tresor.attempts);
      assert.deepEqual(trail.map((a) => [a.route, a.outcome]), [[A, 'stream_cut'], [A, 'ok']], r.tresor.attempts);
      assert.equal((await t.fakes.prova.stats()).requests, 2);
      assert.equal((await t.fakes.provb.stats()).requests, 0, 'the failover route is not needed');
    } finally {
      await stopStack(t);
    }
  });

  test('12. per-route stream_recovery: prefill_only without supports_prefill and off → skipped (recovery_skipped), the next candidate recovers', async () => {
    const BP = 'eu/provb/ponly';
    const BO = 'eu/provb/off';
    const BS = 'eu/provb/pref';
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: BP, provider: 'provb' }, { id: BO, provider: 'provb' },
        { id: BS, provider: 'provb' }, { id: C, provider: 'provc' }],
      routeExtras: {
        [BP]: { stream_recovery: 'prefill_only' },
        [BO]: { stream_recovery: 'off' },
        [BS]: { stream_recovery: 'prefill_only', supports_prefill: true },
      },
    });
    try {
      for (const skipped of [BP, BO]) {
        await t.clearFakes();
        await t.fakes.prova.behaviour({ cut_after: CUT });
        const r = await sdkStream(t, { model: A, failover: [skipped, C] });
        console.log(`${skipped} skipped: trail ${r.tresor?.attempts}`);
        assertCleanEnd(r);
        assert.equal(r.text, FULL);
        assertOneIdentity(r);
        assertRecoveredTresor(r, { from: A, to: C, outcome: 'stream_cut' });
        const trail = parseAttempts(r.tresor.attempts);
        assert.ok(trail.some((a) => a.route === skipped && a.outcome === 'recovery_skipped'), r.tresor.attempts);
        assert.equal((await t.fakes.provb.stats()).requests, 0, `${skipped} must not be asked to continue the stream`);
      }
      // prefill_only on a route that supports prefill: continued by prefill.
      await t.clearFakes();
      await t.fakes.prova.behaviour({ cut_after: CUT });
      await t.fakes.provb.behaviour({ honor_prefill: 1 });
      const r = await sdkStream(t, { model: A, failover: [BS, C] });
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assert.equal(r.tresor?.routed_model, BS);
      const [qb] = await requestsOf(t.fakes.provb);
      assert.deepEqual(qb.json.messages.at(-1), { role: 'assistant', content: prefix(CUT) });
      assert.equal((await t.fakes.provc.stats()).requests, 0);
    } finally {
      await stopStack(t);
    }
  });

  test('13. n=2 (the client gets choices[0] only, spec §1.1): recovered by replay, never by prefill, even on a supports_prefill route', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      routeExtras: { [B]: { supports_prefill: true } },
    });
    try {
      await t.fakes.prova.behaviour({ cut_after: CUT });
      await t.fakes.provb.behaviour({ reject_prefill: 1 });
      const r = await sdkStream(t, { model: A, failover: [B], n: 2 });
      console.log(`n=2: trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assertOneIdentity(r);
      assert.ok(r.chunks.every((c) => c.choices.every((ch) => ch.index === 0)), 'choices[0] only');
      assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_cut' });
      const qbs = await requestsOf(t.fakes.provb);
      assert.equal(qbs.length, 1);
      assert.equal(qbs[0].json.n, 2, 'the replay is the original request');
      assert.notEqual(qbs[0].json.messages.at(-1).role, 'assistant', 'no prefill for n=2');
    } finally {
      await stopStack(t);
    }
  });

  test('14. a recovery attempt that cannot reach the seam within attempt_first_event_seconds is abandoned; the next candidate continues', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: C, provider: 'provc' }],
      timeouts: { attempt_first_event_seconds: 1 },
      retry: { max_stream_recoveries: 2 }, // whether an abandoned attempt counts as a recovery is not the point here
    });
    try {
      const alone = await sdkStream(t, { model: C });
      assertCleanEnd(alone);
      await t.clearFakes();
      await t.fakes.prova.behaviour({ cut_after: CUT });
      // B would reproduce the 40 delivered chunks only after 40 × 60 ms = 2.4 s.
      await t.fakes.provb.behaviour({ pace_ms: 60 });
      const r = await sdkStream(t, { model: A, failover: [B, C] });
      const bound = 1000 + alone.ms + 1000 + CUT * PACE_MS;
      console.log(`slow recovery: total ${r.ms.toFixed(0)} ms (bound ${bound.toFixed(0)}); trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assertOneIdentity(r);
      assert.equal(r.tresor?.routed_model, C);
      const trail = parseAttempts(r.tresor.attempts);
      assert.deepEqual(trail.map((a) => a.route), [A, B, C], r.tresor.attempts);
      assert.equal(trail[0].outcome, 'stream_cut');
      assert.notEqual(trail[1].outcome, 'ok', r.tresor.attempts);
      assert.ok(r.ms <= bound, `total ${r.ms.toFixed(0)} ms > ${bound.toFixed(0)} ms: B was not abandoned after 1 s`);
      await waitFor(async () => (await t.fakes.provb.stats()).streams_aborted_by_client === 1,
        { timeoutMs: 2000, what: 'the gateway to close B\'s abandoned stream' });
    } finally {
      await stopStack(t);
    }
  });

  test('15. a client that left is never recovered for: A stalls, the client closes its connection, B is never asked', async () => {
    // The client leaves at TCP level (its socket destroyed after 20 chunks). Node's fetch
    // (under the SDK) does not close the connection when a stream is abandoned while no
    // bytes arrive, so the gateway could not tell; curl, Python clients and browsers close.
    const t = await featureStack({ routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }] });
    try {
      await t.fakes.prova.behaviour({ stall_after: 20 });
      const text = await new Promise((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1', port: t.gw.port, path: '/v1/chat/completions', method: 'POST',
          headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
        }, (res) => {
          let got = '';
          let buffer = '';
          res.setEncoding('utf8');
          res.on('data', (d) => {
            buffer += d;
            for (let i; (i = buffer.indexOf('\n\n')) >= 0;) {
              const event = buffer.slice(0, i);
              buffer = buffer.slice(i + 2);
              if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
              got += JSON.parse(event.slice(6)).choices?.[0]?.delta?.content ?? '';
            }
            if (got === prefix(20)) {
              res.socket.destroy();  // leaves
              resolve(got);
            }
          });
          res.on('error', () => {});
        });
        req.on('error', reject);
        req.end(JSON.stringify({ model: A, messages: MESSAGES, stream: true, failover: [B] }));
      });
      assert.equal(text, prefix(20));
      // The request is over for the gateway when its access line is written (after any
      // recovery it might have tried); bounded by the idle limit and slack.
      const line = await waitFor(() => /info access (\{.*"endpoint":"\/v1\/chat\/completions".*\})/.exec(t.gw.proc.stderr),
        { timeoutMs: IDLE_S * 1000 + 5000, what: 'the access line of the abandoned stream' });
      console.log(`client left: ${line[1]}`);
      assert.equal((await t.fakes.provb.stats()).requests, 0, 'no recovery for a client that left');
      assert.match(line[1], /"attempts":"eu\/prova\/m1=stream_stalled;\d+"/);
      await waitFor(async () => (await t.fakes.prova.stats()).streams_aborted_by_client === 1,
        { timeoutMs: 2000, what: 'the gateway to close A\'s stalled stream' });
    } finally {
      await stopStack(t);
    }
  });

  test('16. hedging: the primary answering after the hedge started wins (hedge cancelled); a fast primary or a single candidate starts no hedge', async () => {
    await s.fakes.prova.behaviour({ lag_first_ms: 800 });
    await s.fakes.provb.behaviour({ lag_first_ms: 5000 });
    const lost0 = await metricSum(s, 'tresor_hedges_total', { result: 'lost' });
    const r = await sdkStream(s, { model: A, failover: [B] }, { headers: { 'X-Tresor-Hedge-After-Ms': '300' } });
    console.log(`primary wins: first chunk ${r.firstMs?.toFixed(0)} ms; X-Tresor-Attempts: ${r.headers.get('x-tresor-attempts')}`);
    assertCleanEnd(r);
    assert.equal(r.text, FULL);
    assert.equal(r.tresor?.routed_model, A);
    assert.ok(r.firstMs < 800 + 1000, `first chunk after ${r.firstMs.toFixed(0)} ms: A's first event comes at 800 ms`);
    const attempts = parseAttempts(r.headers.get('x-tresor-attempts'));
    assert.ok(attempts.some((a) => a.route === B && a.outcome === 'hedged_cancelled'), r.headers.get('x-tresor-attempts'));
    assert.ok(attempts.some((a) => a.route === A && a.outcome === 'ok'), r.headers.get('x-tresor-attempts'));
    await waitFor(async () => {
      const st = await s.fakes.provb.stats();
      return st.requests === 1 && st.requests_aborted_by_client + st.streams_aborted_by_client >= 1;
    }, { timeoutMs: 2000, what: 'B\'s fake to count the cancelled hedge' });
    assert.equal(await metricSum(s, 'tresor_hedges_total', { result: 'lost' }), lost0 + 1, 'tresor_hedges_total{result="lost"}');

    // The primary's first event before the hedge delay: no hedge at all.
    await s.clearFakes();
    const fast = await sdkStream(s, { model: A, failover: [B] }, { headers: { 'X-Tresor-Hedge-After-Ms': '2000' } });
    assertCleanEnd(fast);
    assert.equal(fast.tresor?.routed_model, A);
    expectAttempts(fast.headers.get('x-tresor-attempts'), [[A, 'ok']]);
    assert.equal((await s.fakes.provb.stats()).requests, 0, 'no hedge before the delay');

    // A single candidate: nothing to hedge with; the request just waits for it.
    await s.clearFakes();
    await s.fakes.prova.behaviour({ lag_first_ms: 1000 });
    const single = await sdkStream(s, { model: A }, { headers: { 'X-Tresor-Hedge-After-Ms': '200' } });
    assertCleanEnd(single);
    assert.equal(single.text, FULL);
    assert.ok(single.firstMs >= 1000 - 50, `first chunk after ${single.firstMs.toFixed(0)} ms`);
    expectAttempts(single.headers.get('x-tresor-attempts'), [[A, 'ok']]);
    assert.equal((await s.fakes.prova.stats()).requests, 1, 'one request: no hedge on the same route');
  });

  test('17. seams at the edges: a cut right after the role chunk (offset 0) and after the last content chunk (before the finish), with include_usage', async () => {
    for (const cut of [0, CHUNKS]) {
      await s.clearFakes();
      await s.fakes.prova.behaviour({ cut_after: cut });
      const r = await sdkStream(s, { model: A, failover: [B], stream_options: { include_usage: true } });
      console.log(`cut after ${cut}: trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL, `cut after ${cut}`);
      assertOneIdentity(r);
      assertRecoveredTresor(r, { from: A, to: B, outcome: 'stream_cut' });
      const usage = r.chunks.filter((c) => c.usage);
      assert.equal(usage.length, 1, `one usage chunk (cut after ${cut})`);
      assert.deepEqual(usage[0].choices, []);
      const claims = await verifiedClaims(s, r);
      assert.deepEqual(claims.recoveries, [{ from: A, to: B, offset: bytes(prefix(cut)), mode: 'replay' }]);
    }
  });

  test('18. retry.max_stream_recoveries: 0 never recovers; 2 recovers twice (A cuts, B cuts, C finishes) and the receipt lists both', async () => {
    const routes = [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: C, provider: 'provc' }];
    const none = await featureStack({ routes, retry: { max_stream_recoveries: 0 } });
    try {
      await none.fakes.prova.behaviour({ cut_after: CUT });
      const r = await sdkStream(none, { model: A, failover: [B, C] });
      assertErrorEnd(r);
      assert.equal(r.text, prefix(CUT));
      assert.equal((await none.fakes.provb.stats()).requests + (await none.fakes.provc.stats()).requests, 0, 'no recovery');
    } finally {
      await stopStack(none);
    }
    const two = await featureStack({ routes, retry: { max_stream_recoveries: 2 } });
    try {
      await two.fakes.prova.behaviour({ cut_after: CUT });
      await two.fakes.provb.behaviour({ cut_after: 50 });
      const r = await sdkStream(two, { model: A, failover: [B, C] });
      console.log(`two recoveries: trail ${r.tresor?.attempts}`);
      assertCleanEnd(r);
      assert.equal(r.text, FULL);
      assertOneIdentity(r);
      assertRecoveredTresor(r, { from: B, to: C, outcome: 'stream_cut', committed: A });
      assert.deepEqual(parseAttempts(r.tresor.attempts).map((a) => [a.route, a.outcome]),
        [[A, 'stream_cut'], [B, 'stream_cut'], [C, 'ok']], r.tresor.attempts);
      const claims = await verifiedClaims(two, r);
      assert.deepEqual(claims.recoveries, [
        { from: A, to: B, offset: bytes(prefix(CUT)), mode: 'replay' },
        { from: B, to: C, offset: bytes(prefix(50)), mode: 'replay' },
      ]);
    } finally {
      await stopStack(two);
    }
  });

  test('19. a tool-call stream on a supports_prefill route is recovered by replay, not prefill (prefill is for plain content)', async () => {
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      routeExtras: { [B]: { supports_prefill: true } },
    });
    try {
      await t.fakes.prova.behaviour({ tool_args: TOOL_ARGS, chunks: 10, cut_after: 5 });
      await t.fakes.provb.behaviour({ tool_args: TOOL_ARGS, chunks: 10, reject_prefill: 1 });
      const { client } = recordingClient(t);
      const stream = client.chat.completions.stream({ model: A, messages: MESSAGES, tools: TOOLS, failover: [B] });
      const final = await stream.finalChatCompletion();
      const tc = final.choices[0].message.tool_calls;
      assert.equal(tc.length, 1);
      assert.equal(tc[0].function.arguments, TOOL_ARGS);
      assert.match(tc[0].id, /^call_fake_/);
      for (const q of await requestsOf(t.fakes.provb)) assert.notEqual(q.json.messages.at(-1).role, 'assistant', 'no prefill of a tool call');
    } finally {
      await stopStack(t);
    }
  });

  test('20. a hedge that won and then cuts is recovered on the next candidate; the winner is not retried beyond attempts_per_route (1)', async () => {
    await s.fakes.prova.behaviour({ lag_first_ms: 5000 });
    await s.fakes.provb.behaviour({ cut_after: 30 });
    const r = await sdkStream(s, { model: A, failover: [B, C] }, { headers: { 'X-Tresor-Hedge-After-Ms': '300' } });
    console.log(`hedge won, then cut: X-Tresor-Attempts ${r.headers.get('x-tresor-attempts')}; trail ${r.tresor?.attempts}; ` +
      `B requests ${(await s.fakes.provb.stats()).requests}, C requests ${(await s.fakes.provc.stats()).requests}; ` +
      `error ${r.error?.code ?? 'none'}`);
    assert.equal((await s.fakes.provb.stats()).requests, 1, 'B (attempts_per_route 1) is asked once');
    assertCleanEnd(r);
    assert.equal(r.text, FULL);
    assertOneIdentity(r);
    assert.equal(r.chunks[0].model, 'provb-m1', 'the identity of the stream the client got first (the hedge\'s)');
    assert.equal(r.tresor?.routed_model, C);
    assert.equal(r.tresor?.recovered_from, B);
    assert.deepEqual(parseAttempts(r.tresor.attempts).map((a) => [a.route, a.outcome]),
      [[A, 'hedged_cancelled'], [B, 'stream_cut'], [C, 'ok']], r.tresor.attempts);
  });

  test('21. recovery stays inside the request deadline (X-Tresor-Timeout-Seconds: 3): a slow replay ends with the in-band error at the deadline', async () => {
    await s.fakes.prova.behaviour({ stall_after: 20 });
    await s.fakes.provb.behaviour({ pace_ms: 100 }); // would reach the seam only at ≈ 2 s + 2 s
    const r = await sdkStream(s, { model: A, failover: [B] }, { headers: { 'X-Tresor-Timeout-Seconds': '3' } });
    console.log(`deadline during recovery: ended after ${r.ms.toFixed(0)} ms: ${r.error?.code}: ${r.error?.message}`);
    assertErrorEnd(r);
    assert.equal(r.text, prefix(20), 'nothing of B\'s replay reached the client');
    assert.ok(r.ms >= 3000 - 50 && r.ms <= 3000 + 700, `ended after ${r.ms.toFixed(0)} ms; the deadline is 3 s`);
    await waitFor(async () => (await s.fakes.provb.stats()).streams_aborted_by_client === 1,
      { timeoutMs: 2000, what: 'the gateway to close B\'s stream at the deadline' });
  });

  test('22. text that needs JSON escaping (quotes, backslashes, newlines, tabs, control and non-BMP characters) is recovered exactly by prefill and by replay', async () => {
    const TRICKY = Array.from({ length: 30 }, (_, i) =>
      [`"q${i}"`, `C:\\dir${i}\\`, `line${i}\n`, `tab\t${i}`, `ctl\u0001${i}`, `</script>${i}`, `𝄞${i}`, `\u2028${i}`][i % 8]).join(' ');
    const t = await featureStack({
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }, { id: C, provider: 'provc' }],
      routeExtras: { [B]: { supports_prefill: true } },
    });
    try {
      const tricky = await fakePieces(t.fakes.prova, { content: TRICKY, chunks: 30 });
      assert.equal(tricky.join(''), TRICKY);
      for (const [route, mode] of [[B, 'prefill'], [C, 'replay']]) {
        await t.clearFakes();
        await t.fakes.prova.behaviour({ content: TRICKY, chunks: 30, cut_after: 17 });
        await t.fakes.provb.behaviour({ content: TRICKY, chunks: 30, honor_prefill: 1 });
        await t.fakes.provc.behaviour({ content: TRICKY, chunks: 30 });
        const r = await sdkStream(t, { model: A, failover: [route] });
        assertCleanEnd(r);
        assert.equal(r.text, TRICKY, `${mode}: exact text`);
        assertOneIdentity(r);
        if (mode === 'prefill') {
          const [qb] = await requestsOf(t.fakes.provb);
          assert.deepEqual(qb.json.messages.at(-1), { role: 'assistant', content: tricky.slice(0, 17).join('') });
        }
        const claims = await verifiedClaims(t, r);
        assert.deepEqual(claims.recoveries, [{ from: A, to: route, offset: bytes(tricky.slice(0, 17).join('')), mode }]);
      }
    } finally {
      await stopStack(t);
    }
  });
});
