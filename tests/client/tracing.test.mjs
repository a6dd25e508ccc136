// Issue 20: OpenTelemetry traces as an operator's collector receives them. An OTLP/HTTP
// receiver on loopback decodes every export with OpenTelemetry's own generated protobuf code
// (@opentelemetry/otlp-transformer's ExportTraceServiceRequest — no decoder of ours), while an
// unmodified OpenAI SDK drives requests through tresor-router to fake upstreams that fail on
// cue: the span tree of a retry, a failover and a recovered stream; the GenAI attribute names
// and values; the client's traceparent continued and forwarded upstream; no prompt or answer
// text in any span; and a collector that is down or hangs costs requests nothing while the
// dropped-span counter counts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import OpenAI, { toFile } from 'openai';
import { randomBytes } from 'node:crypto';
import {
  startRoutingStack, stopAll, closedPort, waitFor, performance,
} from '../integration/harness.mjs';

const require = createRequire(import.meta.url);
const otlp = require('@opentelemetry/otlp-transformer/build/src/generated/root');
const ExportTraceServiceRequest = otlp.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const SPAN_KIND = { SERVER: 2, CLIENT: 3 };
const STATUS = { UNSET: 0, OK: 1, ERROR: 2 };

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const T = 'eu/prova/whisper';
const PROMPT = 'Quel temps fait-il à Chartres aujourd’hui ?';
const ANSWER = 'Il pleut doucement sur la cathédrale, comme souvent en novembre.';

// ---------------------------------------------------------------------------------------------
// The OTLP receiver

const hex = (bytes) => Buffer.from(bytes ?? []).toString('hex');

/** An attribute list (KeyValue[]) as a plain object, arrays and int64 unwrapped. */
function attributes(list = []) {
  const out = {};
  for (const { key, value } of list) {
    assert.ok(!(key in out), `attribute ${key} appears twice`);
    out[key] = anyValue(value);
  }
  return out;
}
function anyValue(v) {
  if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
  if (v.intValue !== undefined && v.intValue !== null) return Number(v.intValue);
  if (v.doubleValue !== undefined && v.doubleValue !== null) return v.doubleValue;
  if (v.arrayValue) return v.arrayValue.values.map(anyValue);
  throw new Error(`unexpected AnyValue ${JSON.stringify(v)}`);
}

/**
 * An OTLP/HTTP trace receiver: `mode` ok (200), or hang (reads the body, never answers).
 * Keeps every decoded span and the raw bodies.
 */
async function startReceiver() {
  const r = { spans: [], bodies: [], resources: [], contentTypes: [], mode: 'ok', hung: [] };
  r.server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      if (r.mode === 'hang') { r.hung.push(res); return; }
      assert.equal(req.url, '/v1/traces');
      r.contentTypes.push(req.headers['content-type']);
      r.bodies.push(body);
      const decoded = ExportTraceServiceRequest.decode(body);
      for (const rs of decoded.resourceSpans) {
        r.resources.push(attributes(rs.resource?.attributes));
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            r.spans.push({
              traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId),
              traceState: s.traceState ?? '', name: s.name, kind: s.kind,
              start: BigInt(s.startTimeUnixNano.toString()), end: BigInt(s.endTimeUnixNano.toString()),
              attributes: attributes(s.attributes),
              events: (s.events ?? []).map((e) => ({ name: e.name, attributes: attributes(e.attributes) })),
              status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
              scope: ss.scope?.name,
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end();
    });
  });
  await new Promise((resolve) => r.server.listen(0, '127.0.0.1', resolve));
  r.url = `http://127.0.0.1:${r.server.address().port}`;
  r.close = () => new Promise((resolve) => {
    for (const res of r.hung) res.destroy();
    r.server.closeAllConnections?.();
    r.server.close(resolve);
  });
  r.trace = (traceId) => r.spans.filter((s) => s.traceId === traceId);
  return r;
}

function tracingHook(endpoint, extra = {}) {
  return (config) => ({ ...config, tracing: { otlp_endpoint: endpoint, export_interval_ms: 50, ...extra } });
}

function client(stack, headers = {}) {
  return new OpenAI({
    apiKey: stack.key, baseURL: `http://127.0.0.1:${stack.gw.port}/v1`, maxRetries: 0, defaultHeaders: headers,
  });
}

async function metric(stack, name, labels = '') {
  const text = await (await fetch(stack.gw.url('/metrics'))).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

const newTraceId = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');
const newSpanId = () => Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex');

/** The spans of one trace once the request's span has arrived (exported after the answer). */
async function spansOf(receiver, traceId, count) {
  await waitFor(() => receiver.trace(traceId).length >= count, { timeoutMs: 10_000, what: `${count} spans of ${traceId}` });
  return receiver.trace(traceId);
}

/** Checks one request's span tree and returns { server, attempts } (attempts in start order). */
function spanTree(spans, traceId) {
  const servers = spans.filter((s) => s.kind === SPAN_KIND.SERVER);
  assert.equal(servers.length, 1, 'one SERVER span per request');
  const [server] = servers;
  const attempts = spans.filter((s) => s !== server);
  for (const a of attempts) {
    assert.equal(a.kind, SPAN_KIND.CLIENT, `${a.name}: an attempt is a CLIENT span`);
    assert.equal(a.traceId, traceId);
    assert.equal(a.parentSpanId, server.spanId, 'every attempt is a child of the request span');
    assert.ok(a.start >= server.start && a.end <= server.end + 1_000_000n,
      `attempt ${a.name} [${a.start}, ${a.end}] within the request [${server.start}, ${server.end}]`);
    assert.equal(a.scope, 'tresor-router');
  }
  attempts.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  return { server, attempts };
}

// ---------------------------------------------------------------------------------------------

describe('traces exported over OTLP/HTTP', () => {
  let receiver;
  let s;
  before(async () => {
    receiver = await startReceiver();
    s = await startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' },
        { id: T, provider: 'prova', type: 'transcription' }],
      retry: { attempts_per_route: 2, backoff_ms: 20 },
      breaker: { consecutive_failures: 1000 },
      content: ANSWER,
      fakeOpts: { chunks: 12, paceMs: 2 },
      configHook: tracingHook(receiver.url),
    });
  });
  after(async () => { await stopAll(); await receiver.close(); });

  test('a JSON request with a retry and a failover: one SERVER span, one CLIENT span per attempt, GenAI attributes', async () => {
    await s.clearFakes();
    // A fails twice (its retry too), then B answers.
    await s.fakes.prova.behaviour({ times: 2, status: 503 });
    const traceId = newTraceId();
    const parent = newSpanId();
    const sdk = client(s, { traceparent: `00-${traceId}-${parent}-01`, tracestate: 'vendor1=opaque,vendor2=x' });
    const { data: completion, response } = await sdk.chat.completions
      .create({ model: A, messages: [{ role: 'user', content: PROMPT }], failover: [B] })
      .withResponse();
    assert.equal(response.headers.get('x-tresor-trace-id'), traceId, 'the response names the trace it continued');

    const { server, attempts } = spanTree(await spansOf(receiver, traceId, 4), traceId);
    assert.equal(server.parentSpanId, parent, "the request span's parent is the client's span");
    assert.equal(server.traceState, 'vendor1=opaque,vendor2=x', 'tracestate is kept');
    assert.equal(server.name, `chat ${A}`);
    assert.deepEqual(
      attempts.map((a) => [a.attributes['tresor.route'], a.attributes['tresor.attempt.reason'], a.attributes['tresor.attempt.outcome']]),
      [[A, 'initial', 'http_status'], [A, 'retry', 'http_status'], [B, 'failover', 'ok']]);

    const sa = server.attributes;
    assert.equal(sa['gen_ai.operation.name'], 'chat');
    assert.equal(sa['gen_ai.provider.name'], 'openai');
    assert.equal(sa['gen_ai.request.model'], A);
    assert.equal(sa['gen_ai.request.stream'], false);
    assert.equal(sa['gen_ai.response.model'], completion.model);
    assert.deepEqual(sa['gen_ai.response.finish_reasons'], completion.choices.map((c) => c.finish_reason));
    assert.equal(sa['gen_ai.usage.input_tokens'], completion.usage.prompt_tokens);
    assert.equal(sa['gen_ai.usage.output_tokens'], completion.usage.completion_tokens);
    assert.equal(sa['http.response.status_code'], 200);
    assert.equal(sa['http.request.method'], 'POST');
    assert.equal(sa['http.route'], '/v1/chat/completions');
    assert.equal(sa['tresor.requested_route'], A);
    assert.equal(sa['tresor.routed_model'], B);
    assert.equal(sa['tresor.failover'], true);
    assert.equal(sa['tresor.attempts'], 3);
    assert.equal(sa['tresor.receipt_id'], completion.tresor.receipt_id);
    assert.equal(sa['tresor.request_id'], response.headers.get('x-request-id'));
    assert.equal(sa['tresor.customer'], 'acme');
    assert.equal(server.status.code, STATUS.UNSET, 'a served request is not an error');
    assert.ok(!('gen_ai.response.time_to_first_chunk' in sa), 'no time to first chunk without a stream');

    for (const [i, a] of attempts.entries()) {
      const fake = i < 2 ? s.fakes.prova : s.fakes.provb;
      const at = a.attributes;
      assert.equal(a.name, `chat ${i < 2 ? 'prova' : 'provb'}-m1`, 'span name: operation and the model asked upstream');
      assert.equal(at['gen_ai.operation.name'], 'chat');
      assert.equal(at['gen_ai.provider.name'], 'openai');
      assert.equal(at['gen_ai.request.model'], `${i < 2 ? 'prova' : 'provb'}-m1`);
      assert.equal(at['tresor.provider'], i < 2 ? 'prova' : 'provb');
      assert.equal(at['server.address'], '127.0.0.1');
      assert.equal(at['server.port'], fake.port);
      if (i < 2) {
        assert.equal(at['http.response.status_code'], 503);
        assert.equal(at['error.type'], '503');
        assert.equal(a.status.code, STATUS.ERROR);
      } else {
        assert.equal(at['http.response.status_code'], undefined, 'a 200 is not an attempt outcome status');
        assert.ok(!('error.type' in at));
        assert.equal(a.status.code, STATUS.UNSET);
      }
    }

    // Each attempt went upstream with a traceparent naming its own span, and the tracestate.
    const upstream = [...await s.fakes.prova.requests(), ...await s.fakes.provb.requests()];
    assert.deepEqual(upstream.map((r) => r.headers.traceparent),
      attempts.map((a) => `00-${traceId}-${a.spanId}-01`));
    for (const r of upstream) assert.equal(r.headers.tracestate, 'vendor1=opaque,vendor2=x');

    // The access log line names the trace.
    await waitFor(() => s.gw.proc.stderr.includes(`"trace_id":"${traceId}"`), { what: 'the access line with trace_id' });
  });

  test('a stream cut after its 200 and recovered on the next route: the recovery is a span of its own', async () => {
    await s.clearFakes();
    await s.fakes.prova.behaviour({ times: 1, status: 503 });
    await s.fakes.prova.behaviour({ times: 1, cut_after: 5 });
    const traceId = newTraceId();
    const sdk = client(s, { traceparent: `00-${traceId}-${newSpanId()}-01` });
    const stream = await sdk.chat.completions.create({
      model: A, messages: [{ role: 'user', content: PROMPT }], failover: [B], stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage;
    let finish;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, ANSWER, 'the client got the whole answer once');

    const { server, attempts } = spanTree(await spansOf(receiver, traceId, 4), traceId);
    assert.deepEqual(
      attempts.map((a) => [a.attributes['tresor.route'], a.attributes['tresor.attempt.reason'], a.attributes['tresor.attempt.outcome']]),
      [[A, 'initial', 'http_status'], [A, 'retry', 'stream_cut'], [B, 'recovery', 'ok']]);
    assert.equal(attempts[1].attributes['error.type'], 'stream_cut');
    assert.equal(attempts[1].status.code, STATUS.ERROR);
    const sa = server.attributes;
    assert.equal(sa['gen_ai.request.stream'], true);
    assert.deepEqual(sa['gen_ai.response.finish_reasons'], [finish]);
    assert.equal(sa['gen_ai.usage.output_tokens'] > 0, true);
    assert.equal(typeof sa['gen_ai.response.time_to_first_chunk'], 'number');
    const requestSeconds = Number(server.end - server.start) / 1e9;
    assert.ok(sa['gen_ai.response.time_to_first_chunk'] > 0 && sa['gen_ai.response.time_to_first_chunk'] < requestSeconds,
      `time to first chunk ${sa['gen_ai.response.time_to_first_chunk']} s within the request's ${requestSeconds} s`);
    assert.ok(usage, 'the SDK got the usage chunk it asked for');
    assert.equal(sa['tresor.routed_model'], B);
  });

  test('an invalid or repeated traceparent starts a new trace; not-sampled is honoured and still forwarded', async () => {
    for (const bad of [
      `00-${'A'.repeat(32)}-${newSpanId()}-01`,     // uppercase hex
      `ff-${newTraceId()}-${newSpanId()}-01`,       // version ff
      `00-${'0'.repeat(32)}-${newSpanId()}-01`,     // all-zero trace id
      `00-${newTraceId()}-${'0'.repeat(16)}-01`,    // all-zero parent id
      `00-${newTraceId()}-${newSpanId()}-01-extra`, // version 00 with more fields
    ]) {
      await s.clearFakes();
      const res = await s.chat({ model: A, messages: [{ role: 'user', content: 'x' }] }, { headers: { traceparent: bad, tracestate: 'a=b' } });
      assert.equal(res.status, 200);
      await res.text();
      const traceId = res.headers.get('x-tresor-trace-id');
      assert.match(traceId, /^[0-9a-f]{32}$/);
      assert.ok(!bad.includes(traceId), `${bad}: a new trace, not the invalid one`);
      const [server] = (await spansOf(receiver, traceId, 2)).filter((x) => x.kind === SPAN_KIND.SERVER);
      assert.equal(server.parentSpanId, '', `${bad}: the request span is a root`);
      assert.equal(server.traceState, '', `${bad}: tracestate is dropped with an invalid traceparent`);
      const [upstream] = await s.fakes.prova.requests();
      assert.match(upstream.headers.traceparent, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    }

    // Two traceparent headers: neither is continued.
    const one = newTraceId();
    const two = newTraceId();
    const res = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: [['authorization', `Bearer ${s.key}`], ['content-type', 'application/json'],
        ['traceparent', `00-${one}-${newSpanId()}-01`], ['traceparent', `00-${two}-${newSpanId()}-01`]],
      body: JSON.stringify({ model: A, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(res.status, 200);
    await res.text();
    assert.ok(![one, two].includes(res.headers.get('x-tresor-trace-id')));

    // Not sampled by the client: nothing exported, the decision forwarded upstream.
    await s.clearFakes();
    const quiet = newTraceId();
    const exportedBefore = receiver.spans.length;
    const res2 = await s.chat({ model: A, messages: [{ role: 'user', content: 'x' }] },
      { headers: { traceparent: `00-${quiet}-${newSpanId()}-00` } });
    assert.equal(res2.status, 200);
    await res2.text();
    assert.equal(res2.headers.get('x-tresor-trace-id'), quiet);
    const [upstream] = await s.fakes.prova.requests();
    assert.match(upstream.headers.traceparent, new RegExp(`^00-${quiet}-[0-9a-f]{16}-00$`));
    // A later sampled request's spans arriving proves the exporter has run past this one.
    const marker = newTraceId();
    const res3 = await s.chat({ model: A, messages: [{ role: 'user', content: 'x' }] },
      { headers: { traceparent: `00-${marker}-${newSpanId()}-01` } });
    await res3.text();
    await spansOf(receiver, marker, 2);
    assert.equal(receiver.trace(quiet).length, 0, 'a trace the client did not sample is not exported');
    assert.ok(receiver.spans.length > exportedBefore);
  });

  test('a transcription is a span tree of its own: operation transcription, the audio route', async () => {
    await s.clearFakes();
    const traceId = newTraceId();
    const sdk = client(s, { traceparent: `00-${traceId}-${newSpanId()}-01` });
    const transcript = await sdk.audio.transcriptions.create({
      model: T, file: await toFile(randomBytes(4096), 'clip.wav', { type: 'audio/wav' }),
    });
    assert.equal(typeof transcript.text, 'string');
    const { server, attempts } = spanTree(await spansOf(receiver, traceId, 2), traceId);
    assert.equal(server.name, `transcription ${T}`);
    assert.equal(server.attributes['gen_ai.operation.name'], 'transcription');
    assert.equal(server.attributes['http.route'], '/v1/audio/transcriptions');
    assert.ok(!('gen_ai.request.stream' in server.attributes), 'stream is a chat attribute');
    assert.equal(attempts.length, 1);
    assert.equal(attempts[0].name, 'transcription prova-whisper');
    assert.equal(attempts[0].attributes['tresor.attempt.reason'], 'initial');
    const [upstream] = await s.fakes.prova.requests();
    assert.equal(upstream.headers.traceparent, `00-${traceId}-${attempts[0].spanId}-01`);
  });

  test('exports are OTLP/HTTP protobuf with the service resource, and carry no prompt or answer text', async () => {
    assert.ok(receiver.contentTypes.length > 0);
    for (const t of receiver.contentTypes) assert.equal(t, 'application/x-protobuf');
    for (const r of receiver.resources) {
      assert.equal(r['service.name'], 'tresor-router');
      assert.match(r['service.version'], /^\d+\.\d+\.\d+/);
      assert.match(r['service.instance.id'], /^[0-9a-f-]{36}$/);
    }
    const all = Buffer.concat(receiver.bodies);
    for (const secret of [PROMPT, ANSWER, 'Chartres', 'cathédrale', s.key]) {
      assert.equal(all.includes(Buffer.from(secret)), false, `exported spans contain "${secret}"`);
    }
    assert.equal(await metric(s, 'tresor_trace_spans_total', '{result="dropped_queue_full"}'), 0);
    assert.ok(await metric(s, 'tresor_trace_spans_total', '{result="exported"}') >= receiver.spans.length - 2);
  });
});

describe('a collector that is down or hangs costs requests nothing', () => {
  after(stopAll);

  /** Sends `n` requests one after another; returns each one's time in ms (all must be 200). */
  async function timedRequests(stack, n) {
    const times = [];
    for (let i = 0; i < n; ++i) {
      const t0 = performance.now();
      const res = await stack.chat({ model: A, messages: [{ role: 'user', content: 'x' }] });
      assert.equal(res.status, 200);
      await res.text();
      times.push(performance.now() - t0);
    }
    return times;
  }

  test('collector down: every request is served, and the spans it could not take are counted as dropped', async () => {
    const port = await closedPort();
    const s = await startRoutingStack({
      providers: ['prova'], routes: [{ id: A, provider: 'prova' }],
      configHook: tracingHook(`http://127.0.0.1:${port}`, { export_timeout_ms: 1000 }),
    });
    await timedRequests(s, 20);
    // 20 requests × 2 spans; the exporter retries each batch once, then drops it.
    await waitFor(async () => (await metric(s, 'tresor_trace_spans_total', '{result="dropped_export_failed"}')) === 40,
      { timeoutMs: 15_000, what: 'all 40 spans counted as dropped_export_failed' });
    assert.ok(await metric(s, 'tresor_trace_export_failures_total') >= 1);
    assert.equal(await metric(s, 'tresor_trace_spans_total', '{result="exported"}'), 0);
  });

  test('collector hangs: requests are served at once while the queue fills, and the overflow is counted', async () => {
    const receiver = await startReceiver();
    receiver.mode = 'hang';
    const s = await startRoutingStack({
      providers: ['prova'], routes: [{ id: A, provider: 'prova' }],
      // A 5 s export timeout with a queue of 10 spans: the exporter is stuck in its first
      // export while the requests go on.
      configHook: tracingHook(receiver.url, { export_timeout_ms: 5000, max_queue_spans: 10, max_batch_spans: 2 }),
    });
    try {
      const times = await timedRequests(s, 40);
      await waitFor(() => receiver.hung.length >= 1, { what: 'the exporter stuck in an export' });
      // What the gateway controls: no request waited for the collector's 5 s timeout.
      assert.ok(Math.max(...times) < 2500, `slowest request ${Math.max(...times).toFixed(0)} ms while the collector hangs`);
      const dropped = await metric(s, 'tresor_trace_spans_total', '{result="dropped_queue_full"}');
      const queued = await metric(s, 'tresor_trace_queue_spans');
      assert.ok(queued <= 10, `queue ${queued} within max_queue_spans`);
      assert.ok(dropped >= 80 - 10 - 2 * 2 * 2, `dropped ${dropped}: all that did not fit the queue`);
    } finally {
      await receiver.close();
    }
  });
});
