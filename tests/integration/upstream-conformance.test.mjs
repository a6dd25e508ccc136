// Legal but unusual upstreams. Real providers do all of these, and our own fake upstream used
// to do none of them, so the gateway was only ever tested against one way of speaking HTTP,
// SSE and the OpenAI API. Each test asserts what a correct gateway does:
//
//   * interim 1xx heads (100 Continue, 103 Early Hints) before the answer: ignored; the
//     client gets the 200 and its content, and a pooled connection stays in sync (request A
//     with interim heads, request B right after on the same connection: each gets its own
//     answer, and B's receipt covers B's bytes);
//   * a 200 whose body (or first event) is an OpenAI error envelope, a chat answer without
//     `choices`, a transcription without `text`: not a success (bad_response: the next route,
//     or 502 upstream_error), and no receipt; `"error": null` on a normal answer is normal;
//   * SSE framing as the WHATWG spec allows it: multi-line `data:`, CR / LF / CRLF line ends,
//     comments, `event:`, `id:`, `retry:`, `data:` without the space: the client gets valid
//     SSE, the whole content, and a receipt that `tresor-router verify-receipt` passes;
//   * `n: 2` streams: the client gets choices[0] only (spec: "In streaming, only choices[0]
//     is passed through"), [DONE] after both upstream choices finished, the upstream usage;
//   * chunks and answers without id / object / created / model: the client still gets them;
//   * an upstream that closes a pooled keep-alive connection just as the gateway reuses it:
//     the gateway retries on a fresh connection inside the same attempt (one `ok` attempt).
//
// Two providers for chat and transcription failover (prova, provb) and a third (provc) with
// max_connections 1, so its connection is pooled and reused. Faults go in the body's `fake`
// object (forwarded to the upstream as an unknown field) or, where only one provider may see
// them, in that fake's runtime behaviour.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startRoutingStack, stopAll, chatBody, readErrorEnvelope, expectAttempts, makeKey, sha256Hex, sha256HexBytes,
  stripTresorMember, decodeJws, verifyJws, fetchReceipt, fetchJwks, defaultStorePath, receiptRowCount, routerBin,
  tempDir, waitFor,
} from './harness.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const C = 'eu/provc/m1'; // provc: max_connections 1, for the interim isolation test only
const D = 'eu/provd/m1'; // provd: max_connections 1, for the dropped keep-alive test only
const WA = 'eu/prova/whisper';
const WHISPER = 'whisper'; // bare key: eu/prova/whisper, then eu/provb/whisper
const UPSTREAM_A = 'prova-m1'; // startRoutingStack's default upstream_model for A
const CONTENT = 'Grüße vom Fake, in drei Teilen: {eins}, [zwei], "drei".';
const PROMPT_TOKENS = 1; // chatBody's "Hello!"
const CONTENT_WORDS = CONTENT.split(/\s+/).length;
const SECOND_WORDS = 'SECOND-CHOICE from the fake upstream.'.split(/\s+/).length;
// The interim tests each get a provider of their own: a gateway that misreads a 1xx leaves the
// rest of the answer in its pooled connection, which would break whichever test came next.
const INTERIM_VALUES = [100, 103, 'both'];
const INTERIM_KINDS = ['json', 'stream', 'transcription'];
const interimProvider = (v, kind) => `int${v}${kind}`;
const INTERIM_PROVIDERS = INTERIM_VALUES.flatMap((v) => INTERIM_KINDS.map((k) => interimProvider(v, k)));

let s;
let fa;
let fb;
let fc;
let fd;
let key2; // a second customer
let dir;

before(async () => {
  key2 = makeKey();
  s = await startRoutingStack({
    providers: ['prova', 'provb', 'provc', 'provd', ...INTERIM_PROVIDERS],
    routes: [
      { id: A, provider: 'prova' },
      { id: B, provider: 'provb' },
      { id: C, provider: 'provc' },
      { id: D, provider: 'provd' },
      { id: WA, provider: 'prova', type: 'transcription' },
      { id: 'eu/provb/whisper', provider: 'provb', type: 'transcription' },
      ...INTERIM_PROVIDERS.flatMap((p) => [
        { id: `eu/${p}/m1`, provider: p },
        { id: `eu/${p}/whisper`, provider: p, type: 'transcription' },
      ]),
    ],
    // One worker: one connection pool per provider, so max_connections 1 means that
    // consecutive requests to provc / provd share one pooled connection.
    server: { threads: 1 },
    // One attempt per route: the attempts header tells each outcome once. The breaker stays
    // out of the way (several tests fail prova on purpose).
    retry: { attempts_per_route: 1, backoff_ms: 50 },
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    fakeOpts: { chunks: 3 },
    content: CONTENT,
    configHook: (cfg) => {
      cfg.providers.provc.max_connections = 1;
      cfg.providers.provd.max_connections = 1;
      cfg.auth.keys.push({ sha256: sha256Hex(key2), customer: 'other' });
      return cfg;
    },
  });
  ({ prova: fa, provb: fb, provc: fc, provd: fd } = s.fakes);
  dir = tempDir('tresor-conformance-');
});
after(stopAll);
beforeEach(async () => { await s.clearFakes(); });

// ---------------------------------------------------------------------------------------------
// helpers

/**
 * WHATWG HTML "event stream" parsing of a whole body: lines end with CRLF, LF or CR; a blank
 * line dispatches; `:` lines are comments; one leading space of a value is dropped; data lines
 * join with "\n". Returns { events: [{data, event, id}], incomplete } (incomplete: text after
 * the last dispatched event that is not just comments / empty).
 */
function parseSse(raw) {
  const lines = raw.split(/\r\n|\r|\n/);
  const events = [];
  let data = null;
  let event = '';
  let id;
  let pendingLines = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const last = i === lines.length - 1; // the text after the final line end (no terminator)
    if (last) { if (line !== '') pendingLines.push(line); break; }
    if (line === '') {
      if (data !== null) events.push({ data: data.replace(/\n$/, ''), event: event || 'message', id });
      data = null;
      event = '';
      pendingLines = [];
      continue;
    }
    pendingLines.push(line);
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data = (data ?? '') + value + '\n';
    else if (field === 'event') event = value;
    else if (field === 'id') id = value;
  }
  const incomplete = pendingLines.filter((l) => !l.startsWith(':')).join('\n');
  return { events, incomplete };
}

/** Every event is [DONE] or JSON; returns the parsed chunks (without [DONE]) and checks the end. */
function checkStream(raw, what) {
  const { events, incomplete } = parseSse(raw);
  assert.equal(incomplete, '', `${what}: text after the last complete event: ${JSON.stringify(incomplete)}`);
  const chunks = [];
  for (const ev of events) {
    if (ev.data === '[DONE]') continue;
    let j;
    try { j = JSON.parse(ev.data); } catch {
      assert.fail(`${what}: an event whose data is not JSON: ${JSON.stringify(ev.data.slice(0, 300))}\nraw: ${raw.slice(0, 1500)}`);
    }
    chunks.push(j);
  }
  assert.ok(events.length > 0, `${what}: no SSE event at all in ${JSON.stringify(raw.slice(0, 500))}`);
  assert.equal(events.at(-1).data, '[DONE]', `${what}: the stream ends with [DONE]; raw: ${raw.slice(-600)}`);
  assert.equal(events.filter((e) => e.data === '[DONE]').length, 1, `${what}: exactly one [DONE]`);
  return chunks;
}

const contentOf = (chunks) => chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');

/** POST a chat request with `key` (default the stack's); returns { status, headers, attempts, text, json }. */
async function chat(body, { key = s.key } = {}) {
  const bodyText = JSON.stringify(body);
  const r = await s.chat(bodyText, { headers: { authorization: `Bearer ${key}` } });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, headers: r.headers, attempts: r.headers.get('x-tresor-attempts'), text, json, bodyText };
}

async function transcribe(model, { key = s.key } = {}) {
  const form = new FormData();
  form.append('model', model);
  form.append('file', new Blob([Buffer.alloc(2048, 7)], { type: 'audio/wav' }), 'a.wav');
  const r = await fetch(s.gw.url('/v1/audio/transcriptions'), {
    method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form,
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, attempts: r.headers.get('x-tresor-attempts'), text, json };
}

function runCli(args) {
  return new Promise((resolve) => {
    execFile(routerBin(), args, { timeout: 20_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

/** `tresor-router verify-receipt` on the receipt `id` with the request and response bytes. */
async function verifyWithCli(id, requestText, responseText, tag) {
  const rec = await fetchReceipt(s.gw, s.key, id);
  assert.equal(rec.status, 200, `receipt ${id}: ${rec.text}`);
  const files = ['req', 'resp', 'receipt'].map((n) => path.join(dir, `${tag}-${n}`));
  writeFileSync(files[0], requestText);
  writeFileSync(files[1], responseText);
  writeFileSync(files[2], rec.text);
  const out = await runCli(['verify-receipt', '--jwks', s.gw.url('/.well-known/jwks.json'), files[2],
    '--request', files[0], '--response', files[1]]);
  assert.equal(out.code, 0, `verify-receipt: ${out.stdout}${out.stderr}`);
  assert.match(out.stdout, /^PASS\n/);
  return decodeJws(JSON.parse(rec.text).receipt).payload;
}

const receiptCount = () => receiptRowCount(defaultStorePath(s.gw));

/** A 502 upstream_error after one bad_response attempt on `route`, and no receipt stored. */
async function expectBadResponse(send, route) {
  const before = receiptCount();
  const r = await send();
  const err = await readErrorEnvelope({ status: r.status, text: r.text }, { status: 502, code: 'upstream_error' });
  assert.ok(!err._text.includes('receipt_id'), 'no receipt id on the error');
  expectAttempts(r.attempts, [[route, 'bad_response']]);
  assert.equal(receiptCount(), before, 'no receipt stored for the error');
}

// ---------------------------------------------------------------------------------------------

describe('interim 1xx heads before the answer', { timeout: 60_000 }, () => {
  for (const v of INTERIM_VALUES) {
    const route = (kind, what = 'm1') => `eu/${interimProvider(v, kind)}/${what}`;
    test(`interim ${v} before a JSON answer → 200 with the content`, async () => {
      const r = await chat(chatBody(route('json'), { fake: { interim: v } }));
      assert.equal(r.status, 200, r.text.slice(0, 400));
      assert.equal(r.json?.choices?.[0]?.message?.content, CONTENT, r.text.slice(0, 400));
      expectAttempts(r.attempts, [[route('json'), 'ok']]);
    });

    test(`interim ${v} before a stream → 200 event stream with the whole content`, async () => {
      const r = await chat(chatBody(route('stream'), { stream: true, fake: { interim: v } }));
      assert.equal(r.status, 200, r.text.slice(0, 400));
      assert.equal(contentOf(checkStream(r.text, 'interim stream')), CONTENT);
    });

    test(`interim ${v} before a transcription answer → 200 with the transcript`, async () => {
      const fake = s.fakes[interimProvider(v, 'transcription')];
      await fake.behaviour({ interim: v });
      const r = await transcribe(route('transcription', 'whisper'));
      assert.equal(r.status, 200, r.text.slice(0, 400));
      assert.match(r.json?.text ?? '', /^fake transcript of a\.wav/);
      expectAttempts(r.attempts, [[route('transcription', 'whisper'), 'ok']]);
    });
  }

  test('interim heads on a pooled connection: request A and request B (another customer) right after each get their own answer; B\'s receipt covers B\'s bytes', async () => {
    // provc has max_connections 1: B waits for A's connection and reuses it. A gateway that
    // takes the 100 or 103 for A's answer leaves A's real answer in the connection for B.
    const bodyA = chatBody(C, { fake: { interim: 'both', content: 'ANSWER-FOR-A' } });
    const bodyB = chatBody(C, { fake: { content: 'ANSWER-FOR-B' } });
    const pa = chat(bodyA);
    const pb = chat(bodyB, { key: key2 });
    const [ra, rb] = await Promise.all([pa, pb]);
    assert.equal(ra.status, 200, `A: ${ra.text.slice(0, 400)}`);
    assert.equal(ra.json?.choices?.[0]?.message?.content, 'ANSWER-FOR-A', `A got: ${ra.text.slice(0, 400)}`);
    assert.equal(rb.status, 200, `B: ${rb.text.slice(0, 400)}`);
    assert.equal(rb.json?.choices?.[0]?.message?.content, 'ANSWER-FOR-B', `B got: ${rb.text.slice(0, 400)}`);
    assert.ok(!rb.text.includes('ANSWER-FOR-A'), 'nothing of A in B');
    const ids = (await fc.requests()).map((q) => q.connection_id);
    assert.equal(ids.length, 2);
    assert.equal(ids[0], ids[1], 'B reused A\'s pooled connection (the case under test)');

    const id = rb.json.tresor?.receipt_id;
    assert.ok(id, `B has a receipt id: ${rb.text}`);
    const rec = await fetchReceipt(s.gw, key2, id);
    assert.equal(rec.status, 200, rec.text);
    const { payload } = verifyJws(rec.json.receipt, (await fetchJwks(s.gw)).json);
    assert.equal(payload.request_sha256, sha256HexBytes(rb.bodyText), 'B\'s receipt covers B\'s request');
    assert.equal(payload.response_sha256, sha256HexBytes(stripTresorMember(rb.text).stripped),
      'B\'s receipt covers the bytes B got');
  });
});

describe('an error inside a 200, and answers without choices or text', { timeout: 60_000 }, () => {
  test('error_in_200 (JSON): the next route serves it, the first attempt is bad_response', async () => {
    await fa.behaviour({ error_in_200: 1 });
    const r = await chat(chatBody(A, { failover: [B] }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.equal(r.json.tresor?.routed_model, B);
    assert.equal(r.json.choices[0].message.content, CONTENT);
    expectAttempts(r.attempts, [[A, 'bad_response'], [B, 'ok']]);
  });

  test('error_in_200 (JSON), one route: 502 upstream_error, no receipt', async () => {
    await fa.behaviour({ error_in_200: 1 });
    await expectBadResponse(() => chat(chatBody(A)), A);
  });

  test('error_in_200 (stream, the first event is an error): the next route serves it', async () => {
    await fa.behaviour({ error_in_200: 1 });
    const r = await chat(chatBody(A, { stream: true, failover: [B] }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    const chunks = checkStream(r.text, 'error_in_200 stream with failover');
    assert.ok(!r.text.includes('overloaded'), `the upstream error event must not reach the client: ${r.text.slice(0, 600)}`);
    assert.equal(contentOf(chunks), CONTENT);
    assert.equal(chunks.find((c) => c.tresor)?.tresor.routed_model, B);
    expectAttempts(r.attempts, [[A, 'bad_response'], [B, 'ok']]);
  });

  test('error_in_200 (stream), one route: 502 upstream_error before any event, no receipt', async () => {
    await fa.behaviour({ error_in_200: 1 });
    await expectBadResponse(() => chat(chatBody(A, { stream: true })), A);
  });

  test('error_in_200 (transcription): the next route serves it; pinned: 502, no receipt', async () => {
    await fa.behaviour({ error_in_200: 1 });
    const r = await transcribe(WHISPER);
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.equal(r.json.tresor?.routed_model, 'eu/provb/whisper');
    expectAttempts(r.attempts, [[WA, 'bad_response'], ['eu/provb/whisper', 'ok']]);
    await expectBadResponse(() => transcribe(WA), WA);
  });

  test('error_null (JSON): "error": null on a normal answer is served normally', async () => {
    const r = await chat(chatBody(A, { fake: { error_null: 1 } }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.equal(r.json.choices[0].message.content, CONTENT);
    expectAttempts(r.attempts, [[A, 'ok']]);
  });

  test('error_null (stream): "error": null on every chunk is served normally', async () => {
    const st = await chat(chatBody(A, { stream: true, fake: { error_null: 1 } }));
    assert.equal(st.status, 200, st.text.slice(0, 400));
    assert.equal(contentOf(checkStream(st.text, 'error_null stream')), CONTENT);
    expectAttempts(st.attempts, [[A, 'ok']]);
  });

  test('no_choices: a 200 chat answer without choices is bad_response (failover to B; alone: 502, no receipt)', async () => {
    await fa.behaviour({ no_choices: 1 });
    const r = await chat(chatBody(A, { failover: [B] }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.equal(r.json.tresor?.routed_model, B);
    expectAttempts(r.attempts, [[A, 'bad_response'], [B, 'ok']]);
    await expectBadResponse(() => chat(chatBody(A)), A);
  });

  test('no_text: a 200 transcription without text is bad_response (failover to provb; pinned: 502, no receipt)', async () => {
    await fa.behaviour({ no_text: 1 });
    const r = await transcribe(WHISPER);
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.equal(r.json.tresor?.routed_model, 'eu/provb/whisper');
    expectAttempts(r.attempts, [[WA, 'bad_response'], ['eu/provb/whisper', 'ok']]);
    await expectBadResponse(() => transcribe(WA), WA);
  });
});

describe('SSE framing the WHATWG spec allows', { timeout: 60_000 }, () => {
  const variants = [
    ['LF line ends (the usual)', { sse_line_ending: 'lf' }],
    ['CRLF line ends', { sse_line_ending: 'crlf' }],
    ['CR line ends', { sse_line_ending: 'cr' }],
    ['multi-line data', { multiline_data: 1 }],
    ['comments, event:, id:, retry:, data: without the space', { sse_extras: 1 }],
    ['all at once (multi-line data, CR, extras)', { multiline_data: 1, sse_line_ending: 'cr', sse_extras: 1 }],
  ];
  variants.forEach(([name, spec], i) => {
    test(`${name}: the client gets valid SSE, the whole content and a receipt that verifies`, async () => {
      const r = await chat(chatBody(A, { stream: true, stream_options: { include_usage: true }, fake: spec }));
      assert.equal(r.status, 200, r.text.slice(0, 400));
      const chunks = checkStream(r.text, name);
      assert.equal(contentOf(chunks), CONTENT, `content; raw: ${r.text.slice(0, 1500)}`);
      const usage = chunks.find((c) => c.usage)?.usage;
      assert.deepEqual(usage, { prompt_tokens: PROMPT_TOKENS, completion_tokens: CONTENT_WORDS,
        total_tokens: PROMPT_TOKENS + CONTENT_WORDS });
      const id = chunks.find((c) => c.tresor)?.tresor.receipt_id;
      assert.ok(id, `a receipt id in the stream: ${r.text.slice(-800)}`);
      const claims = await verifyWithCli(id, r.bodyText, r.text, `sse-${i}`);
      assert.equal(claims.completion_tokens, CONTENT_WORDS);
    });
  });
});

describe('n > 1 streams', { timeout: 60_000 }, () => {
  test('n: 2 stream: only choices[0], [DONE] after both upstream choices finished, the upstream usage and receipt', async () => {
    const r = await chat(chatBody(A, { stream: true, n: 2, stream_options: { include_usage: true } }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assert.ok(!r.text.includes('SECOND-CHOICE'), `choice 1 leaked: ${r.text.slice(0, 2000)}`);
    const chunks = checkStream(r.text, 'n=2');
    for (const c of chunks)
      for (const ch of c.choices ?? []) assert.equal(ch.index, 0, `a chunk for choice ${ch.index}: ${JSON.stringify(c)}`);
    assert.equal(contentOf(chunks), CONTENT);
    assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason).length, 1, 'one finish chunk');
    // [DONE] is the very end: nothing after it.
    assert.match(r.text, /data: ?\[DONE\](\r\n|\r|\n){2}$/, `nothing after [DONE]: ${JSON.stringify(r.text.slice(-200))}`);
    // The upstream sends its usage chunk after both choices' finish chunks: the client gets it.
    const usage = chunks.find((c) => c.usage)?.usage;
    const completion = CONTENT_WORDS + SECOND_WORDS;
    assert.deepEqual(usage, { prompt_tokens: PROMPT_TOKENS, completion_tokens: completion,
      total_tokens: PROMPT_TOKENS + completion }, 'the upstream usage, both choices');
    const id = chunks.find((c) => c.tresor)?.tresor.receipt_id;
    assert.ok(id, 'a receipt id');
    const claims = await verifyWithCli(id, r.bodyText, r.text, 'n2');
    assert.equal(claims.completion_tokens, completion, 'receipt completion_tokens = the upstream usage');
    // The gateway read the upstream stream to its end (it did not hang up after choice 0).
    await waitFor(async () => (await fa.stats()).streams_completed === 1, { what: 'upstream stream completed' });
    assert.equal((await fa.stats()).streams_aborted_by_client, 0);
  });
});

describe('answers without id, object, created, model', { timeout: 60_000 }, () => {
  function assertIdentity(o, object, what) {
    assert.equal(typeof o.id, 'string', `${what}: id in ${JSON.stringify(o)}`);
    assert.ok(o.id.length > 0, `${what}: non-empty id`);
    assert.equal(o.object, object, `${what}: object in ${JSON.stringify(o)}`);
    assert.ok(Number.isInteger(o.created), `${what}: integer created in ${JSON.stringify(o)}`);
    assert.equal(o.model, UPSTREAM_A, `${what}: model in ${JSON.stringify(o)}`);
  }

  test('omit_fields, JSON: the client gets id, object, created and model', async () => {
    const r = await chat(chatBody(A, { fake: { omit_fields: 1 } }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    assertIdentity(r.json, 'chat.completion', 'JSON answer');
    assert.equal(r.json.choices[0].message.content, CONTENT);
  });

  test('omit_fields, stream: every chunk has id, object, created and model', async () => {
    const r = await chat(chatBody(A, { stream: true, stream_options: { include_usage: true }, fake: { omit_fields: 1 } }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    const chunks = checkStream(r.text, 'omit_fields stream');
    chunks.forEach((c, i) => assertIdentity(c, 'chat.completion.chunk', `chunk ${i}`));
    assert.equal(contentOf(chunks), CONTENT);
  });

  test('omit_fields + no_finish, stream: the chunk carrying tresor has choices[0] (the guide\'s loop reads it) and the identity fields', async () => {
    const r = await chat(chatBody(A, { stream: true, fake: { omit_fields: 1, no_finish: 1 } }));
    assert.equal(r.status, 200, r.text.slice(0, 400));
    const chunks = checkStream(r.text, 'omit_fields + no_finish');
    const t = chunks.find((c) => c.tresor);
    assert.ok(t, `a chunk with tresor: ${r.text.slice(-600)}`);
    assert.ok(Array.isArray(t.choices) && t.choices.length > 0 && t.choices[0]?.delta,
      `choices[0].delta on the tresor chunk: ${JSON.stringify(t)}`);
    chunks.forEach((c, i) => assertIdentity(c, 'chat.completion.chunk', `chunk ${i}`));
  });
});

describe('an upstream that closes a pooled connection as it is reused', { timeout: 60_000 }, () => {
  test('drop_next_on_connection: the next request is served on a fresh connection within ONE ok attempt', async () => {
    const first = await chat(chatBody(D, { fake: { drop_next_on_connection: 1 } }));
    assert.equal(first.status, 200, first.text.slice(0, 400));
    const second = await chat(chatBody(D));
    assert.equal(second.status, 200, second.text.slice(0, 400));
    assert.equal(second.json.choices[0].message.content, CONTENT);
    const stats = await fd.stats();
    assert.equal(stats.dropped_on_connection, 1, 'the second request was sent on the pooled connection and dropped');
    const reqs = (await fd.requests()).filter((q) => q.target.endsWith('/chat/completions'));
    assert.equal(reqs.length, 2, 'the fake answered two requests');
    assert.notEqual(reqs[1].connection_id, reqs[0].connection_id, 'the retry went over a new connection');
    expectAttempts(second.attempts, [[D, 'ok']]);
  });
});
