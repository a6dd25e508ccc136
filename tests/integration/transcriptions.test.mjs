// POST /v1/audio/transcriptions (spec §7, issue #6): the functional contract end to end, with real
// processes over loopback (tresor-router + tresor-fake-upstream).
//
//   * every container from makeTestAudio() reaches the upstream byte for byte, with its
//     normalised media type (in memory and spooled: upload_memory_bytes is lowered here);
//   * the part Content-Type / filename combinations real SDKs send → accepted (and the type
//     the upstream saw) or 400 unsupported_media_type;
//   * request validation → exact status / code / param, and no upstream request;
//   * json / verbose_json / text answers, normalised usage, the tresor member, X-Tresor-*;
//   * the form the upstream receives (model = upstream_model, response_format, field order);
//   * routing over two transcription routes: failover replays identical bytes, pinned ids,
//     hints, upstream 4xx pass-through, the X-Tresor-Timeout-Seconds budget;
//   * receipts (request_sha256 over the exact multipart bytes, response_sha256, audio_seconds);
//   * billing per audio minute, per request and per token (GET /v1/usage, credits).
//
// The multipart bodies are built by hand here (multipart()), so the exact bytes on the wire are
// known: request_sha256 is checked against them. Faults are set per fake process through
// POST /_fake/behaviour, so the tests in a describe run one after the other on a shared stack.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  startStack, startRoutingStack, stopAll, makeKey, sha256Hex, sha256HexBytes, readErrorEnvelope,
  fetchReceipt, fetchJwks, verifyJws, stripTresorMember, expectAttempts, parseAttempts, performance,
  RECEIPT_ID_RE, ROUTE_GPT, ROUTE_WHISPER, delay, getUsage, toNanos, assertReceiptShape,
} from './harness.mjs';
import { makeTestAudio } from './audio-fixtures.mjs';

const ENDPOINT = '/v1/audio/transcriptions';
const IR = 'invalid_request_error';

// Extra transcription routes on the main stack's fake provider, one per pricing model.
const R_MINUTE = 'eu/fake/whisper-minute'; // billing_unit audio_minute, 0.6 per minute
const R_REQUEST = 'eu/fake/whisper-request'; // billing_unit request, 0.25 per request
const R_TOKENS = 'eu/fake/voxtral-tokens'; // per million tokens
const MINUTE_PRICE = 0.6;
const REQUEST_PRICE = 0.25;
const IN_PER_MTOK = 100_000; // 0.1 per input token (scaled up for the test)
const OUT_PER_MTOK = 200_000; // 0.2 per output token
// Each request reserves its most expensive outcome before the upload goes upstream: the
// route's max_audio_seconds at the minute price (0.6 here), the request price, or
// max_output_tokens of output (20 here). The credits below cover those reservations.
const MINUTE_MAX_SECONDS = 60;
const TOKENS_MAX_OUTPUT = 100;
const UPSTREAM = {
  [ROUTE_WHISPER]: 'whisper', // harness gatewayConfig()
  [R_MINUTE]: 'whisper-minute-up',
  [R_REQUEST]: 'whisper-request-up',
  [R_TOKENS]: 'voxtral-tokens-up',
};
// The fake reports 3.25 s of audio by default: every duration figure is ceil(3.25) = 4.
const FAKE_SECONDS = 3.25;
const SECONDS = 4;

// Billing customers, one per test so their spend does not mix (acme, the stack's own key, has
// no credit limit).
const KEY_MINUTE = makeKey();
const KEY_REQUEST = makeKey();
const KEY_TOKENS = makeKey();
const KEY_FREE = makeKey();
const KEY_BROKE = makeKey();

let audio; // makeTestAudio(): { files: { ext: { path, bytes, type } }, cleanup }
let WAV; // the wav fixture's bytes
let SMALL; // a small payload for validation (the gateway does not decode audio)
let s; // the main stack: one fake provider, transcription routes of every pricing kind
let jwks;

before(async () => {
  audio = makeTestAudio();
  WAV = audio.files.wav.bytes;
  SMALL = WAV.subarray(0, 4096);
  s = await startStack({
    configHook: (c) => {
      // Below the wav (113 kB), flac (59 kB) and webm (31 kB) fixtures, above mp3 (11 kB): both the
      // in-memory and the spool-file path of the upload carry the bytes upstream.
      c.server.upload_memory_bytes = 16384;
      c.routes.push(
        { id: R_MINUTE, provider: 'fake', upstream_model: UPSTREAM[R_MINUTE], type: 'transcription',
          pricing: { billing_unit: 'audio_minute', unit_amount: MINUTE_PRICE, currency: 'eur' },
          max_audio_seconds: MINUTE_MAX_SECONDS },
        { id: R_REQUEST, provider: 'fake', upstream_model: UPSTREAM[R_REQUEST], type: 'transcription',
          pricing: { billing_unit: 'request', unit_amount: REQUEST_PRICE, currency: 'eur' } },
        { id: R_TOKENS, provider: 'fake', upstream_model: UPSTREAM[R_TOKENS], type: 'transcription',
          pricing: { input_per_mtok: IN_PER_MTOK, output_per_mtok: OUT_PER_MTOK, currency: 'eur' },
          max_output_tokens: TOKENS_MAX_OUTPUT },
      );
      c.auth.keys.push(
        { sha256: sha256Hex(KEY_MINUTE), customer: 'minute-co' },
        { sha256: sha256Hex(KEY_REQUEST), customer: 'request-co' },
        { sha256: sha256Hex(KEY_TOKENS), customer: 'tokens-co' },
        { sha256: sha256Hex(KEY_FREE), customer: 'free-co' },
        { sha256: sha256Hex(KEY_BROKE), customer: 'broke-co' },
      );
      c.auth.customers = {
        'minute-co': { credit: 1.0, currency: 'eur' },
        'request-co': { credit: 1.0, currency: 'eur' },
        'tokens-co': { credit: 100.0, currency: 'eur' },
        'free-co': { credit: 1.0, currency: 'eur' },
        // One request's reservation (0.25) fits; after it is spent, 0.05 remains: not a second.
        'broke-co': { credit: 0.3, currency: 'eur' },
      };
      return c;
    },
  });
  jwks = (await fetchJwks(s.gw)).json;
});
after(async () => {
  await stopAll();
  audio?.cleanup();
});

// ---------------------------------------------------------------------------------------------
// Multipart bodies, byte for byte

/** A text field part. `value` may be a string (UTF-8) or a Buffer (exact bytes). */
const field = (name, value) => ({ name, value });

/**
 * A file part. contentType null = no Content-Type header; filename null = no filename
 * parameter at all; name defaults to "file".
 */
const filePart = (data, { filename = 'meeting.wav', contentType = 'audio/wav', name = 'file' } = {}) =>
  ({ name, filename, contentType, value: data });

/** Encodes parts as multipart/form-data; returns { body (Buffer), contentType, boundary }. */
function multipart(parts, { boundary = `----tresor-test-${randomBytes(12).toString('hex')}`, close = true } = {}) {
  const out = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined && p.filename !== null) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType !== undefined && p.contentType !== null) head += `Content-Type: ${p.contentType}\r\n`;
    out.push(Buffer.from(`${head}\r\n`, 'utf8'));
    out.push(Buffer.isBuffer(p.value) ? p.value : Buffer.from(String(p.value), 'utf8'));
    out.push(Buffer.from('\r\n', 'latin1'));
  }
  if (close) out.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'));
  return { body: Buffer.concat(out), contentType: `multipart/form-data; boundary=${boundary}`, boundary };
}

/** The usual form: model + file (+ extra fields between them). */
const form = (model = ROUTE_WHISPER, { file = filePart(SMALL), fields = [] } = {}) =>
  [field('model', model), ...fields, file];

/**
 * POST /v1/audio/transcriptions on `gw` with the multipart of `parts` (or `raw`: { body,
 * contentType }). contentType: override the request Content-Type (null: send none).
 * Returns { status, headers, text, json, sent (the exact body bytes), boundary, ms }.
 */
async function transcribe(parts, { gw = s.gw, key = s.key, headers = {}, contentType, raw } = {}) {
  const mp = raw ?? multipart(parts);
  const h = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers };
  const ct = contentType !== undefined ? contentType : mp.contentType;
  if (ct !== null) h['content-type'] = ct;
  const t0 = performance.now();
  const res = await fetch(gw.url(ENDPOINT), { method: 'POST', headers: h, body: mp.body });
  const text = await res.text();
  const ms = performance.now() - t0;
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json, sent: mp.body, boundary: mp.boundary, ms };
}

/** What the fake answers as the transcript for one upload (tests/fake_upstream/README.md). */
const fakeTranscript = (filename, contentType, bytes, prompt) =>
  `fake transcript of ${filename} (${contentType}): bytes=${bytes.length} sha256=${sha256HexBytes(bytes)}` +
  (prompt !== undefined ? ` prompt=${prompt}` : '');

/** The fake's recorded transcription uploads (oldest first). */
async function uploads(fake = s.fake) {
  return (await fake.requests()).filter((r) => r.transcription).map((r) => r.transcription);
}

/** Exactly one upload reached `fake`; returns its `transcription` record. */
async function onlyUpload(fake = s.fake) {
  const all = await uploads(fake);
  assert.equal(all.length, 1, `one upstream transcription request, got ${all.length}`);
  return all[0];
}

/** Asserts that the upstream received exactly `bytes` as the file part. */
function assertSameFile(up, bytes, what = 'upstream file') {
  assert.ok(up.file, `${what}: no file part recorded`);
  assert.equal(up.file.name, 'file', `${what}: part name`);
  assert.equal(up.file.size, bytes.length, `${what}: size`);
  assert.equal(up.file.sha256, sha256HexBytes(bytes), `${what}: sha256`);
}

/** An error answer with exactly this status/code (and param, if given); type invalid_request_error for 4xx. */
async function assertError(r, { status, code, param, type }) {
  const expect = { status, code };
  if (param !== undefined) expect.param = param;
  if (type !== undefined) expect.type = type;
  return readErrorEnvelope({ status: r.status, text: r.text }, expect);
}

/** Asserts the X-Tresor-* route headers of a 200 and that they agree with `tresor` (when given). */
function assertRouteHeaders(r, { requested, routed, failover, receiptId }) {
  const h = r.headers;
  assert.equal(h.get('x-tresor-requested-route'), requested, 'X-Tresor-Requested-Route');
  assert.equal(h.get('x-tresor-routed-model'), routed, 'X-Tresor-Routed-Model');
  assert.equal(h.get('x-tresor-failover'), failover ? 'true' : 'false', 'X-Tresor-Failover');
  if (receiptId === null) assert.equal(h.get('x-tresor-receipt-id'), null, 'no X-Tresor-Receipt-Id');
  else if (receiptId !== undefined) assert.equal(h.get('x-tresor-receipt-id'), receiptId, 'X-Tresor-Receipt-Id');
  const attempts = parseAttempts(h.get('x-tresor-attempts'));
  assert.ok(attempts && attempts.length >= 1, `X-Tresor-Attempts: ${h.get('x-tresor-attempts')}`);
  assert.deepEqual([attempts.at(-1).route, attempts.at(-1).outcome], [routed, 'ok'], 'last attempt served it');
}

/** A 200 JSON answer: tresor member last, receipt id shape, headers in agreement. */
function assertJsonServed(r, { requested, routed, failover = false, receipt = true }) {
  assert.equal(r.status, 200, `status ${r.status}: ${r.text}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assert.ok(r.json, `not JSON: ${r.text}`);
  assert.equal(Object.keys(r.json).at(-1), 'tresor', `tresor is the last member: ${r.text}`);
  const tr = r.json.tresor;
  assert.deepEqual(Object.keys(tr), receipt ? ['receipt_id', 'requested_route', 'routed_model', 'failover']
    : ['requested_route', 'routed_model', 'failover'], `tresor members: ${JSON.stringify(tr)}`);
  assert.deepEqual({ requested_route: tr.requested_route, routed_model: tr.routed_model, failover: tr.failover },
    { requested_route: requested, routed_model: routed, failover }, 'tresor routing fields');
  if (receipt) assert.match(tr.receipt_id, RECEIPT_ID_RE);
  assertRouteHeaders(r, { requested, routed, failover, receiptId: receipt ? tr.receipt_id : null });
  return tr;
}

const upstreamCount = async (fake = s.fake) => (await fake.stats()).requests;

/** GET /v1/usage for a key, its amounts as exact decimal strings (harness getUsage). */
async function usageOf(key) {
  const { status, text, usage } = await getUsage(s.gw, key);
  assert.equal(status, 200, text);
  return usage;
}

/** An exact decimal amount from /v1/usage equals `nanos` (BigInt). */
const amount = (text, nanos, what) => assert.equal(toNanos(text), nanos, `${what}: ${text}`);

/** The receipt of `id`, fetched with `key` and verified against the JWKS; returns its payload. */
async function verifiedClaims(gw, key, id, keys = jwks) {
  const r = await fetchReceipt(gw, key, id);
  assert.equal(r.status, 200, `GET /v1/receipts/${id}: ${r.text}`);
  assertReceiptShape(r.json);
  assert.equal(r.json.id, id);
  const d = verifyJws(r.json.receipt, keys);
  assert.equal(d.payload.jti, id);
  return d.payload;
}

/** The fake's own answer to a form sent directly (with the provider key): the byte-exact oracle. */
async function askFakeDirectly(parts) {
  const mp = multipart(parts);
  const res = await fetch(`${s.fake.baseUrl()}/audio/transcriptions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s.providerKey}`, 'content-type': mp.contentType },
    body: mp.body,
  });
  const text = await res.text();
  assert.equal(res.status, 200, `the fake itself: ${text}`);
  return text;
}

// =============================================================================================
// Main stack
// =============================================================================================

describe('transcriptions: main stack', { timeout: 180_000 }, () => {
  beforeEach(async () => { await s.fake.reset(); });

  // -------------------------------------------------------------------------------------------
  describe('every test-audio container reaches the upstream byte for byte', () => {
    const formats = ['wav', 'flac', 'ogg', 'mp3', 'webm', 'm4a', 'mp4'];
    for (const ext of formats) {
      for (const how of ['its own Content-Type', 'application/octet-stream + extension']) {
        test(`${ext} (${how})`, async () => {
          const f = audio.files[ext];
          const filename = path.basename(f.path);
          const contentType = how === 'its own Content-Type' ? f.type : 'application/octet-stream';
          const r = await transcribe(form(ROUTE_WHISPER, { file: filePart(f.bytes, { filename, contentType }) }));
          assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
          const up = await onlyUpload();
          assertSameFile(up, f.bytes, `${ext} upload`);
          assert.equal(up.file.content_type, f.type, 'the normalised media type went upstream');
          assert.equal(up.file.filename, filename, 'the filename as the client sent it');
          // The fake's transcript names the digest of what it got: the client sees the same one.
          assert.equal(r.json.text, fakeTranscript(filename, f.type, f.bytes));
          assert.ok(r.json.text.includes(`bytes=${f.bytes.length} sha256=${sha256HexBytes(f.bytes)}`));
        });
      }
    }
  });

  // -------------------------------------------------------------------------------------------
  describe('part Content-Type / filename as SDKs send them', () => {
    // [part Content-Type (null: none), filename (null: no filename parameter), normalised type | 400]
    const cases = [
      ['video/webm', 'meeting.webm', 'audio/webm'], // Python mimetypes for .webm
      ['application/octet-stream', 'x.wav', 'audio/wav'],
      [null, 'x.MP3', 'audio/mpeg'],
      ['audio/x-wav', 'x.wav', 'audio/wav'],
      ['audio/wave', 'x.wav', 'audio/wav'],
      ['audio/vnd.wave', 'x.wav', 'audio/wav'],
      ['audio/mp3', 'x.mp3', 'audio/mpeg'],
      ['audio/x-flac', 'x.flac', 'audio/flac'],
      ['video/mp4', 'x.mp4', 'audio/mp4'],
      ['video/mpeg', 'x.mpeg', 'audio/mpeg'],
      ['audio/ogg', 'x.ogg', 'audio/ogg'],
      ['audio/webm;codecs=opus', 'x.webm', 'audio/webm'],
      ['audio/ogg; codecs="opus"', 'x.ogg', 'audio/ogg'],
      ['AUDIO/WAV', 'x.wav', 'audio/wav'],
      ['Audio/Mpeg', 'x.mp3', 'audio/mpeg'],
      ['audio/x-m4a', 'x.m4a', 'audio/x-m4a'],
      ['audio/m4a', 'x.m4a', 'audio/m4a'],
      [null, 'x.m4a', 'audio/m4a'],
      [null, 'x.mpga', 'audio/mpeg'],
      ['application/octet-stream', 'x.oga', 'audio/ogg'],
      ['application/octet-stream', 'x.FLAC', 'audio/flac'],
      ['audio/wav', 'recording', 'audio/wav'], // the type decides; no extension needed
      ['audio/mpeg', 'notes.txt', 'audio/mpeg'], // an accepted type wins over the extension
      // rejections
      ['text/plain', 'x.wav', 400], // the type wins over the extension
      ['application/octet-stream', 'x.txt', 400],
      ['application/octet-stream', 'recording', 400],
      [null, 'recording', 400],
      ['video/quicktime', 'x.mov', 400],
      ['audio/aac', 'x.aac', 400],
      ['image/png', 'x.png', 400],
      ['audio/x-ms-wma', 'x.wma', 400],
    ];
    for (const [ct, filename, expected] of cases) {
      const label = `${ct ?? '(no Content-Type)'} + ${filename ?? '(no filename)'} → ` +
        (expected === 400 ? '400 unsupported_media_type' : expected);
      test(label, async () => {
        const r = await transcribe(form(ROUTE_WHISPER, { file: filePart(SMALL, { filename, contentType: ct }) }));
        if (expected === 400) {
          await assertError(r, { status: 400, code: 'unsupported_media_type', param: 'file', type: IR });
          assert.equal(await upstreamCount(), 0, 'refused before any upstream request');
          return;
        }
        assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
        const up = await onlyUpload();
        assertSameFile(up, SMALL);
        assert.equal(up.file.content_type, expected, 'normalised Content-Type upstream');
        assert.equal(up.file.filename, filename, 'filename forwarded as sent');
      });
    }

    for (const [filename, label] of [['', 'an empty filename'], [null, 'no filename parameter']]) {
      test(`audio/ogg with ${label} → upstream filename "audio.ogg"`, async () => {
        const r = await transcribe(form(ROUTE_WHISPER, { file: filePart(SMALL, { filename, contentType: 'audio/ogg' }) }));
        assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
        const up = await onlyUpload();
        assert.equal(up.file.filename, 'audio.ogg');
        assert.equal(up.file.content_type, 'audio/ogg');
        assertSameFile(up, SMALL);
      });
    }
  });

  // -------------------------------------------------------------------------------------------
  describe('request bodies as clients send them', () => {
    test('Node\'s own FormData (as openai-node builds it): Blob without a type + meeting.mp3, video/webm Blob', async () => {
      for (const [ext, blobType, want] of [['mp3', '', 'audio/mpeg'], ['webm', 'video/webm', 'audio/webm']]) {
        await s.fake.reset();
        const f = audio.files[ext];
        const fd = new FormData();
        fd.append('model', ROUTE_WHISPER);
        fd.append('language', 'en');
        fd.append('file', new Blob([f.bytes], { type: blobType }), `meeting.${ext}`);
        const res = await fetch(s.gw.url(ENDPOINT), { method: 'POST', headers: { authorization: `Bearer ${s.key}` }, body: fd });
        const text = await res.text();
        assert.equal(res.status, 200, `${ext}: ${text}`);
        const up = await onlyUpload();
        assertSameFile(up, f.bytes, `FormData ${ext}`);
        assert.equal(up.file.content_type, want);
        assert.equal(up.file.filename, `meeting.${ext}`);
        assert.deepEqual(up.field_order, ['model', 'response_format', 'language', 'file']);
      }
    });

    test('a chunked upload (no Content-Length) of the flac fixture in 7 kB pieces: same bytes upstream, request_sha256', async () => {
      const f = audio.files.flac;
      const mp = multipart(form(ROUTE_WHISPER, { file: filePart(f.bytes, { filename: 'meeting.flac', contentType: 'audio/flac' }) }));
      let at = 0;
      const stream = new ReadableStream({
        pull(c) {
          if (at >= mp.body.length) { c.close(); return; }
          c.enqueue(mp.body.subarray(at, at + 7000));
          at += 7000;
        },
      });
      const res = await fetch(s.gw.url(ENDPOINT), {
        method: 'POST', duplex: 'half', body: stream,
        headers: { authorization: `Bearer ${s.key}`, 'content-type': mp.contentType },
      });
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assertSameFile(await onlyUpload(), f.bytes, 'chunked flac');
      const json = JSON.parse(text);
      const p = await verifiedClaims(s.gw, s.key, json.tresor.receipt_id);
      assert.equal(p.request_sha256, sha256HexBytes(mp.body), 'digest of the multipart bytes, not of the chunked framing');
    });

    test('a quoted boundary parameter and a preamble are accepted', async () => {
      const mp = multipart(form());
      const body = Buffer.concat([Buffer.from('This is the preamble.\r\n'), mp.body]);
      const r = await transcribe(null, { raw: { body }, contentType: `multipart/form-data; boundary="${mp.boundary}"` });
      assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
      assertSameFile(await onlyUpload(), SMALL);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('validation: exact status / code / param, refused before any upstream request', () => {
    const F = () => filePart(SMALL);
    const M = () => field('model', ROUTE_WHISPER);
    const withField = (name, value) => () => [M(), field(name, value), F()];
    // [name, () => parts | { raw, contentType }, { status, code, param? }, request options]
    const cases = [
      ['response_format srt', withField('response_format', 'srt'), { status: 400, code: 'invalid_parameter', param: 'response_format' }],
      ['response_format vtt', withField('response_format', 'vtt'), { status: 400, code: 'invalid_parameter', param: 'response_format' }],
      ['response_format XML', withField('response_format', 'XML'), { status: 400, code: 'invalid_parameter', param: 'response_format' }],
      ['response_format JSON (upper case)', withField('response_format', 'JSON'), { status: 400, code: 'invalid_parameter', param: 'response_format' }],
      ['response_format empty', withField('response_format', ''), { status: 400, code: 'invalid_parameter', param: 'response_format' }],
      ['language EN', withField('language', 'EN'), { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['language eng', withField('language', 'eng'), { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['language e', withField('language', 'e'), { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['language empty', withField('language', ''), { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['language "e1"', withField('language', 'e1'), { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['verbose_json without language', withField('response_format', 'verbose_json'),
        { status: 400, code: 'missing_required_parameter', param: 'language' }],
      ['temperature 2', withField('temperature', '2'), { status: 400, code: 'invalid_parameter', param: 'temperature' }],
      ['temperature abc', withField('temperature', 'abc'), { status: 400, code: 'invalid_parameter', param: 'temperature' }],
      ['temperature -0.1', withField('temperature', '-0.1'), { status: 400, code: 'invalid_parameter', param: 'temperature' }],
      ['temperature empty', withField('temperature', ''), { status: 400, code: 'invalid_parameter', param: 'temperature' }],
      ['stream true', withField('stream', 'true'), { status: 400, code: 'invalid_parameter', param: 'stream' }],
      ['failover list', withField('failover', '["eu/fake/whisper-large-v3"]'),
        { status: 400, code: 'failover_not_supported', param: 'failover' }],
      ['failover empty', withField('failover', ''), { status: 400, code: 'failover_not_supported', param: 'failover' }],
      ['failover[] (openai-node list form)', () => [M(), field('failover[]', 'eu/fake/whisper-large-v3'), field('failover[]', 'x/y/z'), F()],
        { status: 400, code: 'failover_not_supported', param: 'failover' }],
      ['failover[0] (indexed list form)', withField('failover[0]', 'eu/fake/whisper-large-v3'),
        { status: 400, code: 'failover_not_supported', param: 'failover' }],
      ['missing file', () => [M(), field('language', 'en')], { status: 400, code: 'missing_required_parameter', param: 'file' }],
      ['missing model', () => [field('language', 'en'), F()], { status: 400, code: 'missing_required_parameter', param: 'model' }],
      ['empty model', () => [field('model', ''), F()], { status: 400, code: 'invalid_parameter', param: 'model' }],
      ['model given twice', () => [M(), M(), F()], { status: 400, code: 'invalid_parameter', param: 'model' }],
      ['language given twice', () => [M(), field('language', 'en'), field('language', 'en'), F()],
        { status: 400, code: 'invalid_parameter', param: 'language' }],
      ['two file parts', () => [M(), F(), F()], { status: 400, code: 'invalid_parameter', param: 'file' }],
      ['a second file-bearing part named attachment', () => [M(), F(), filePart(SMALL, { name: 'attachment', filename: 'b.wav' })],
        { status: 400, code: 'invalid_parameter', param: 'attachment' }],
      ['empty file', () => [M(), filePart(Buffer.alloc(0))], { status: 400, code: 'invalid_parameter', param: 'file' }],
      ['non-UTF-8 prompt', withField('prompt', Buffer.from([0x66, 0xff, 0xfe, 0x6f])), { status: 400, code: 'invalid_parameter' }],
      ['chat route as model', () => [field('model', ROUTE_GPT), F()], { status: 400, code: 'model_not_supported' }],
      ['unknown compound model', () => [field('model', 'eu/fake/no-such-whisper'), F()], { status: 404, code: 'model_not_found' }],
      ['unknown bare model', () => [field('model', 'no-such-whisper'), F()], { status: 404, code: 'model_not_found' }],
      // Framing and headers
      ['Content-Type application/json', () => ({ ...multipart([M(), F()]), contentType: 'application/json' }),
        { status: 400, code: 'invalid_multipart' }],
      ['no Content-Type at all', () => ({ ...multipart([M(), F()]), contentType: null }),
        { status: 400, code: 'invalid_multipart' }],
      ['multipart/form-data without boundary', () => ({ ...multipart([M(), F()]), contentType: 'multipart/form-data' }),
        { status: 400, code: 'invalid_multipart' }],
      ['no closing delimiter (truncated body)', () => multipart([M(), F()], { close: false }),
        { status: 400, code: 'invalid_multipart' }],
      ['part without a name', () => {
        const mp = multipart([M(), F()]);
        return { ...mp, body: Buffer.from(mp.body.toString('latin1').replace('form-data; name="model"', 'form-data'), 'latin1') };
      }, { status: 400, code: 'invalid_multipart' }],
      ['bad X-Tresor-Timeout-Seconds (abc)', () => [M(), F()], { status: 400, code: 'invalid_timeout_override' },
        { headers: { 'x-tresor-timeout-seconds': 'abc' } }],
      ['bad X-Tresor-Timeout-Seconds (0)', () => [M(), F()], { status: 400, code: 'invalid_timeout_override' },
        { headers: { 'x-tresor-timeout-seconds': '0' } }],
      ['no Authorization', () => [M(), F()], { status: 401 }, { key: null }],
    ];
    for (const [name, build, expect, opts = {}] of cases) {
      test(`${name} → ${expect.status} ${expect.code ?? ''} ${expect.param ? `(param ${expect.param})` : ''}`, async () => {
        const built = build();
        const r = Array.isArray(built) ? await transcribe(built, opts)
          : await transcribe(null, { ...opts, raw: built, contentType: built.contentType });
        if (expect.code) await assertError(r, { ...expect, type: expect.status < 500 && expect.status !== 401 ? IR : undefined });
        else assert.equal(r.status, expect.status, r.text);
        assert.equal(await upstreamCount(), 0, 'refused before any upstream request');
      });
    }

    test('accepted boundary values: temperature 0 / 1 / 0.5, stream false, language en, verbose_json + de', async () => {
      for (const fields of [
        [field('temperature', '0')], [field('temperature', '1')], [field('temperature', '0.5')],
        [field('stream', 'false')], [field('language', 'en')],
        [field('response_format', 'verbose_json'), field('language', 'de')],
      ]) {
        const r = await transcribe(form(ROUTE_WHISPER, { fields }));
        assert.equal(r.status, 200, `${JSON.stringify(fields)}: ${r.text}`);
      }
      assert.equal(await upstreamCount(), 6);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('responses: json, verbose_json, text', () => {
    const wavFile = () => filePart(WAV, { filename: 'meeting.wav', contentType: 'audio/wav' });
    const T = () => fakeTranscript('meeting.wav', 'audio/wav', WAV);

    test('json on an audio_minute route: upstream members byte for byte, usage {duration, 4}, tresor last', async () => {
      const r = await transcribe(form(R_MINUTE, { file: wavFile() }));
      assertJsonServed(r, { requested: R_MINUTE, routed: R_MINUTE });
      assert.deepEqual(Object.keys(r.json), ['text', 'usage', 'tresor']);
      assert.equal(r.json.text, T());
      assert.deepEqual(r.json.usage, { type: 'duration', seconds: SECONDS });
      const oracle = await askFakeDirectly([field('model', UPSTREAM[R_MINUTE]), field('response_format', 'json'), wavFile()]);
      const usageAt = oracle.lastIndexOf(',"usage":');
      assert.equal(oracle.slice(usageAt), `,"usage":{"type":"duration","seconds":${FAKE_SECONDS}}}`, 'fixture: fake usage');
      assert.equal(stripTresorMember(r.text).stripped,
        `${oracle.slice(0, usageAt)},"usage":{"type":"duration","seconds":${SECONDS}}}`);
    });

    test('json on a per-token route with upstream token usage → usage {tokens, input, output, total}', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const r = await transcribe(form(R_TOKENS, { file: wavFile() }));
      assertJsonServed(r, { requested: R_TOKENS, routed: R_TOKENS });
      const input = Math.ceil(WAV.length / 1000);
      const output = T().split(/\s+/).length;
      assert.deepEqual(Object.keys(r.json.usage), ['type', 'input_tokens', 'output_tokens', 'total_tokens']);
      assert.deepEqual(r.json.usage, { type: 'tokens', input_tokens: input, output_tokens: output, total_tokens: input + output });
    });

    test('json on an unpriced route, upstream duration usage → usage {duration, 4}', async () => {
      const d = await transcribe(form(ROUTE_WHISPER, { file: wavFile() }));
      assertJsonServed(d, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
      assert.deepEqual(d.json.usage, { type: 'duration', seconds: SECONDS });
    });

    test('json on an unpriced route, upstream token usage → usage {tokens}', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const t = await transcribe(form(ROUTE_WHISPER, { file: wavFile() }));
      assertJsonServed(t, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
      assert.equal(t.json.usage.type, 'tokens');
      assert.equal(t.json.usage.input_tokens, Math.ceil(WAV.length / 1000));
    });

    test('json on an unpriced route, upstream without usage → no usage member', async () => {
      await s.fake.behaviour({ no_usage: 1 });
      const r = await transcribe(form(ROUTE_WHISPER, { file: wavFile() }));
      assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
      assert.deepEqual(Object.keys(r.json), ['text', 'tresor']);
      assert.equal(r.json.text, T());
    });

    test('json: the upstream usage seconds are rounded up (audio_ms 1500 → 2, 60000 → 60)', async () => {
      for (const [ms, want] of [[1500, 2], [60000, 60]]) {
        await s.fake.behaviour({ audio_ms: ms });
        const r = await transcribe(form(R_MINUTE));
        assertJsonServed(r, { requested: R_MINUTE, routed: R_MINUTE });
        assert.deepEqual(r.json.usage, { type: 'duration', seconds: want }, `audio_ms ${ms}`);
      }
    });

    test('verbose_json: task/language/duration/segments preserved byte for byte, usage normalised, tresor last', async () => {
      const r = await transcribe(form(R_MINUTE, {
        file: wavFile(), fields: [field('response_format', 'verbose_json'), field('language', 'en')],
      }));
      assertJsonServed(r, { requested: R_MINUTE, routed: R_MINUTE });
      assert.deepEqual(Object.keys(r.json), ['task', 'language', 'duration', 'text', 'segments', 'usage', 'tresor']);
      assert.equal(r.json.task, 'transcribe');
      assert.equal(r.json.language, 'en');
      assert.equal(r.json.duration, FAKE_SECONDS);
      assert.equal(r.json.segments[0].text, T());
      assert.deepEqual(r.json.usage, { type: 'duration', seconds: SECONDS });
      const oracle = await askFakeDirectly([field('model', UPSTREAM[R_MINUTE]), field('response_format', 'verbose_json'),
        field('language', 'en'), wavFile()]);
      const usageAt = oracle.lastIndexOf(',"usage":');
      assert.ok(usageAt > 0 && oracle.endsWith('}}'), `fixture: ${oracle}`);
      assert.equal(stripTresorMember(r.text).stripped,
        `${oracle.slice(0, usageAt)},"usage":{"type":"duration","seconds":${SECONDS}}}`,
        'every member but usage exactly as the upstream wrote it');
    });

    test('verbose_json on a per-token route with upstream token usage → usage {tokens}, members kept', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const r = await transcribe(form(R_TOKENS, {
        file: wavFile(), fields: [field('response_format', 'verbose_json'), field('language', 'en')],
      }));
      assertJsonServed(r, { requested: R_TOKENS, routed: R_TOKENS });
      assert.deepEqual(Object.keys(r.json), ['task', 'language', 'duration', 'text', 'segments', 'usage', 'tresor']);
      const input = Math.ceil(WAV.length / 1000);
      const output = T().split(/\s+/).length;
      assert.deepEqual(r.json.usage, { type: 'tokens', input_tokens: input, output_tokens: output, total_tokens: input + output });
    });

    test('text on a per-token route with upstream token usage → the transcript', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const r = await transcribe(form(R_TOKENS, { file: wavFile(), fields: [field('response_format', 'text')] }));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, T());
    });

    test('verbose_json without upstream usage: usage from duration (audio_ms 2200 → 3)', async () => {
      await s.fake.behaviour({ no_usage: 1, audio_ms: 2200 });
      const r = await transcribe(form(R_MINUTE, {
        fields: [field('response_format', 'verbose_json'), field('language', 'fr')],
      }));
      assertJsonServed(r, { requested: R_MINUTE, routed: R_MINUTE });
      assert.equal(r.json.duration, 2.2);
      assert.deepEqual(r.json.usage, { type: 'duration', seconds: 3 });
    });

    test('text: text/plain; charset=utf-8, body exactly the transcript, X-Tresor-* headers, no tresor', async () => {
      const r = await transcribe(form(R_MINUTE, { file: wavFile(), fields: [field('response_format', 'text')] }));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
      assert.equal(r.text, T());
      assert.ok(!r.text.includes('tresor'), 'no tresor member in a text answer');
      const id = r.headers.get('x-tresor-receipt-id');
      assert.match(id ?? '', RECEIPT_ID_RE, 'X-Tresor-Receipt-Id');
      assertRouteHeaders(r, { requested: R_MINUTE, routed: R_MINUTE, failover: false, receiptId: id });
      expectAttempts(r.headers.get('x-tresor-attempts'), [[R_MINUTE, 'ok']]);
    });

    test('X-Tresor-Receipt: false → no receipt_id and no X-Tresor-Receipt-Id (json and text)', async () => {
      const j = await transcribe(form(ROUTE_WHISPER), { headers: { 'x-tresor-receipt': 'false' } });
      assertJsonServed(j, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER, receipt: false });
      assert.ok(!j.text.includes('receipt_id'));
      const t = await transcribe(form(ROUTE_WHISPER, { fields: [field('response_format', 'text')] }),
        { headers: { 'x-tresor-receipt': 'false' } });
      assert.equal(t.status, 200, t.text);
      assert.equal(t.headers.get('x-tresor-receipt-id'), null);
      assertRouteHeaders(t, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER, failover: false, receiptId: null });
    });

    test('a bare key answers with requested_route auto/auto/<key>', async () => {
      const r = await transcribe(form('whisper-large-v3'));
      assertJsonServed(r, { requested: 'auto/auto/whisper-large-v3', routed: ROUTE_WHISPER });
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('the upstream form', () => {
    test('model = upstream_model, response_format json for text, other fields in order, hints not forwarded', async () => {
      const prompt = 'Tresor, Zürich – Q3 “budget” meeting';
      const parts = [
        field('region', 'eu'),
        field('model', 'whisper-large-v3'),
        field('language', 'en'),
        field('response_format', 'text'),
        field('provider', 'fake'),
        field('prompt', prompt),
        field('stream', 'false'),
        field('temperature', '0.2'),
        field('timestamp_granularities[]', 'word'),
        field('timestamp_granularities[]', 'segment'),
        field('x_vendor_hint', 'keep-me'),
        filePart(WAV, { filename: 'meeting.wav', contentType: 'audio/x-wav' }),
      ];
      const r = await transcribe(parts);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, fakeTranscript('meeting.wav', 'audio/wav', WAV, prompt), 'text body = the transcript');
      assertRouteHeaders(r, { requested: 'eu/fake/whisper-large-v3', routed: ROUTE_WHISPER, failover: false });
      const [req] = (await s.fake.requests()).filter((x) => x.transcription);
      assert.equal(req.target, '/v1/audio/transcriptions');
      assert.equal(req.headers.authorization, `Bearer ${s.providerKey}`, 'the provider key, not the client key');
      const ct = req.headers['content-type'];
      const m = /^multipart\/form-data; *boundary="?([^";]+)"?$/.exec(ct);
      assert.ok(m, `upstream Content-Type ${ct}`);
      assert.notEqual(m[1], r.boundary, 'the gateway writes the upstream multipart with its own boundary');
      const up = req.transcription;
      assert.deepEqual(up.field_order, ['model', 'response_format', 'language', 'prompt', 'temperature',
        'timestamp_granularities[]', 'timestamp_granularities[]', 'x_vendor_hint', 'file']);
      assert.deepEqual(up.fields, {
        model: UPSTREAM[ROUTE_WHISPER],
        response_format: 'json',
        language: 'en',
        prompt,
        temperature: '0.2',
        'timestamp_granularities[]': ['word', 'segment'],
        x_vendor_hint: 'keep-me',
      });
      assertSameFile(up, WAV);
      assert.equal(up.file.content_type, 'audio/wav');
      assert.equal(up.file.filename, 'meeting.wav');
    });

    test('response_format json / verbose_json pass through; absent → json', async () => {
      for (const [fields, want] of [
        [[], 'json'],
        [[field('response_format', 'json')], 'json'],
        [[field('response_format', 'verbose_json'), field('language', 'en')], 'verbose_json'],
      ]) {
        await s.fake.reset();
        const r = await transcribe(form(R_MINUTE, { fields }));
        assert.equal(r.status, 200, r.text);
        const up = await onlyUpload();
        assert.equal(up.fields.response_format, want);
        assert.equal(up.fields.model, UPSTREAM[R_MINUTE]);
        assert.equal(up.field_order[0], 'model');
        assert.equal(up.field_order[1], 'response_format');
        assert.equal(up.field_order.at(-1), 'file');
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('receipts', () => {
    test('json: the receipt verifies; endpoint, request_sha256 of the exact multipart, response_sha256, audio_seconds', async () => {
      const r = await transcribe(form(ROUTE_WHISPER, { file: filePart(WAV), fields: [field('language', 'en')] }));
      const tr = assertJsonServed(r, { requested: ROUTE_WHISPER, routed: ROUTE_WHISPER });
      const p = await verifiedClaims(s.gw, s.key, tr.receipt_id);
      assert.equal(p.endpoint, ENDPOINT);
      assert.equal(p.requested_route, ROUTE_WHISPER);
      assert.equal(p.routed_model, ROUTE_WHISPER);
      assert.equal(p.failover, false);
      assert.equal(p.request_sha256, sha256HexBytes(r.sent), 'SHA-256 of the multipart bytes as sent');
      assert.equal(p.response_sha256, sha256HexBytes(stripTresorMember(r.text).stripped));
      assert.equal(p.audio_seconds, SECONDS);
      assert.equal(p.prompt_tokens, 0);
      assert.equal(p.completion_tokens, 0);
    });

    test('text: response_sha256 is the digest of the text body; id from X-Tresor-Receipt-Id', async () => {
      const r = await transcribe(form(R_MINUTE, { fields: [field('response_format', 'text')] }));
      assert.equal(r.status, 200, r.text);
      const id = r.headers.get('x-tresor-receipt-id');
      assert.match(id ?? '', RECEIPT_ID_RE);
      const p = await verifiedClaims(s.gw, s.key, id);
      assert.equal(p.endpoint, ENDPOINT);
      assert.equal(p.request_sha256, sha256HexBytes(r.sent));
      assert.equal(p.response_sha256, sha256HexBytes(r.text));
      assert.equal(p.audio_seconds, SECONDS);
    });

    test('verbose_json on a bare key: requested_route auto/auto/<key>, digest without the tresor member', async () => {
      const r = await transcribe(form('whisper-large-v3', { fields: [field('response_format', 'verbose_json'), field('language', 'en')] }));
      const tr = assertJsonServed(r, { requested: 'auto/auto/whisper-large-v3', routed: ROUTE_WHISPER });
      const p = await verifiedClaims(s.gw, s.key, tr.receipt_id);
      assert.equal(p.requested_route, 'auto/auto/whisper-large-v3');
      assert.equal(p.routed_model, ROUTE_WHISPER);
      assert.equal(p.response_sha256, sha256HexBytes(stripTresorMember(r.text).stripped));
      assert.equal(p.request_sha256, sha256HexBytes(r.sent));
    });

    test('token usage lands in prompt_tokens / completion_tokens', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const r = await transcribe(form(R_TOKENS));
      const tr = assertJsonServed(r, { requested: R_TOKENS, routed: R_TOKENS });
      const p = await verifiedClaims(s.gw, s.key, tr.receipt_id);
      assert.equal(p.prompt_tokens, r.json.usage.input_tokens);
      assert.equal(p.completion_tokens, r.json.usage.output_tokens);
      assert.equal(p.request_sha256, sha256HexBytes(r.sent));
    });

    test('no receipt for a refused request', async () => {
      const r = await transcribe(form(ROUTE_WHISPER, { fields: [field('response_format', 'srt')] }));
      assert.equal(r.status, 400);
      assert.equal(r.headers.get('x-tresor-receipt-id'), null);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('billing', () => {
    test(`audio_minute: ${MINUTE_PRICE} per minute × ${SECONDS} s = ${MINUTE_PRICE * SECONDS / 60}`, async () => {
      const r = await transcribe(form(R_MINUTE, { file: filePart(WAV) }), { key: KEY_MINUTE });
      assertJsonServed(r, { requested: R_MINUTE, routed: R_MINUTE });
      const u = await usageOf(KEY_MINUTE);
      assert.equal(u.customer, 'minute-co');
      assert.equal(u.currency, 'eur');
      amount(u.credit, 1_000_000_000n, 'credit');
      // 0.6 × 4 / 60 = 0.04
      amount(u.spent, 40_000_000n, 'spent');
      amount(u.by_route[R_MINUTE].spent, 40_000_000n, `by_route[${R_MINUTE}]`);
      amount(u.by_route[R_MINUTE].estimated, 0n, 'the upstream reported the duration');
      amount(u.reserved, 0n, 'reserved after settlement');
      amount(u.remaining, 960_000_000n, 'remaining');
    });

    test(`request: ${REQUEST_PRICE} per request, whatever the duration; usage reports the duration`, async () => {
      await s.fake.behaviour({ audio_ms: 90_500 });
      const r = await transcribe(form(R_REQUEST), { key: KEY_REQUEST });
      assertJsonServed(r, { requested: R_REQUEST, routed: R_REQUEST });
      assert.deepEqual(r.json.usage, { type: 'duration', seconds: 91 });
      const u = await usageOf(KEY_REQUEST);
      amount(u.spent, 250_000_000n, 'spent');
      assert.deepEqual(Object.keys(u.by_route), [R_REQUEST]);
      amount(u.remaining, 750_000_000n, 'remaining');
    });

    test('tokens: input × input_per_mtok + output × output_per_mtok', async () => {
      await s.fake.behaviour({ usage_tokens: 1 });
      const r = await transcribe(form(R_TOKENS), { key: KEY_TOKENS });
      assertJsonServed(r, { requested: R_TOKENS, routed: R_TOKENS });
      const { input_tokens: i, output_tokens: o } = r.json.usage;
      assert.ok(i > 0 && o > 0, JSON.stringify(r.json.usage));
      const u = await usageOf(KEY_TOKENS);
      // 0.1 per input token, 0.2 per output token
      amount(u.spent, BigInt(i) * 100_000_000n + BigInt(o) * 200_000_000n, 'spent');
    });

    test('an unpriced route charges nothing', async () => {
      const r = await transcribe(form(ROUTE_WHISPER), { key: KEY_FREE });
      assert.equal(r.status, 200, r.text);
      const u = await usageOf(KEY_FREE);
      amount(u.spent, 0n, 'spent');
      amount(u.remaining, 1_000_000_000n, 'remaining');
      // The route may be listed (settled at 0) or not at all; it never shows a charge.
      assert.ok(Object.keys(u.by_route).every((k) => k === ROUTE_WHISPER), JSON.stringify(u.by_route));
      for (const v of Object.values(u.by_route)) amount(v.spent, 0n, `by_route[${ROUTE_WHISPER}]`);
    });

    test('credit used up → 402 balance_exceeded with no upstream request', async () => {
      const first = await transcribe(form(R_REQUEST), { key: KEY_BROKE });
      assert.equal(first.status, 200, first.text);
      amount((await usageOf(KEY_BROKE)).remaining, 50_000_000n, 'remaining: less than one request');
      const before = await upstreamCount();
      const second = await transcribe(form(R_REQUEST), { key: KEY_BROKE });
      await assertError(second, { status: 402, code: 'balance_exceeded', type: 'insufficient_funds' });
      assert.equal(await upstreamCount(), before, 'no upstream request');
    });
  });
});

// =============================================================================================
// Routing stack: two transcription routes for the same key on two fake providers
// =============================================================================================

describe('transcriptions: routing and failover', { timeout: 180_000 }, () => {
  const A = 'eu/prova/whisper-x';
  const B = 'us/provb/whisper-x';
  const CHAT = 'eu/prova/chat-x';
  const BACKOFF_MS = 50;
  let r2; // routing stack
  let fa;
  let fb;
  let jwks2;

  before(async () => {
    r2 = await startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [
        { id: A, provider: 'prova', type: 'transcription' },
        { id: B, provider: 'provb', type: 'transcription' },
        { id: CHAT, provider: 'prova', type: 'chat' },
      ],
      retry: { attempts_per_route: 2, backoff_ms: BACKOFF_MS, max_retry_after_seconds: 5 },
      breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
      // The wav (113 kB) goes to a spool file: failover replays it from there.
      server: { upload_memory_bytes: 16384 },
    });
    ({ prova: fa, provb: fb } = r2.fakes);
    jwks2 = (await fetchJwks(r2.gw)).json;
  });
  beforeEach(async () => { await r2.clearFakes(); });

  const send = (model, { fields = [], headers = {}, file = filePart(WAV) } = {}) =>
    transcribe([field('model', model), ...fields, file], { gw: r2.gw, key: r2.key, headers });
  const counts = async () => ({ a: await upstreamCount(fa), b: await upstreamCount(fb) });

  test('first route 503 (after the whole upload) → second route gets identical bytes; failover true', async () => {
    await fa.behaviour({ status: 503 });
    const r = await send('whisper-x');
    assertJsonServed(r, { requested: 'auto/auto/whisper-x', routed: B, failover: true });
    expectAttempts(r.headers.get('x-tresor-attempts'), [[A, 503], [A, 503], [B, 'ok']]);
    assert.deepEqual(await counts(), { a: 2, b: 1 });
    const tried = await uploads(fa);
    for (const up of tried) {
      assertSameFile(up, WAV, 'upload to the failing route');
      assert.equal(up.fields.model, 'prova-whisper-x');
    }
    const served = await onlyUpload(fb);
    assertSameFile(served, WAV, 'replayed upload to the second route');
    assert.equal(served.fields.model, 'provb-whisper-x');
    assert.equal(served.file.content_type, 'audio/wav');
    assert.equal(served.file.filename, 'meeting.wav');
    assert.equal(r.json.text, fakeTranscript('meeting.wav', 'audio/wav', WAV));
    // The receipt records the failover.
    const p = await verifiedClaims(r2.gw, r2.key, r.json.tresor.receipt_id, jwks2);
    assert.equal(p.failover, true);
    assert.equal(p.requested_route, 'auto/auto/whisper-x');
    assert.equal(p.routed_model, B);
    assert.equal(p.request_sha256, sha256HexBytes(r.sent));
  });

  test('first route resets the connection → served by the second route with the same bytes', async () => {
    await fa.behaviour({ reset: 1 });
    const r = await send('whisper-x', { fields: [field('response_format', 'text')] });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, fakeTranscript('meeting.wav', 'audio/wav', WAV));
    assertRouteHeaders(r, { requested: 'auto/auto/whisper-x', routed: B, failover: true });
    assertSameFile(await onlyUpload(fb), WAV, 'replayed upload');
  });

  test('a pinned compound id with a 503 upstream → 502 after its retries, the other route untouched', async () => {
    await fa.behaviour({ status: 503 });
    const r = await send(A);
    await assertError(r, { status: 502, code: 'upstream_error' });
    assert.deepEqual(await counts(), { a: 2, b: 0 }, 'attempts_per_route = 2 on the pinned route only');
    for (const up of await uploads(fa)) assertSameFile(up, WAV, 'each retry carries the whole upload');
  });

  test('hints pick the matching route (region us, provider provb, region EU); ignored for a compound id', async () => {
    for (const [fields, requested, routed] of [
      [[field('region', 'us')], 'us/auto/whisper-x', B],
      [[field('provider', 'provb')], 'auto/provb/whisper-x', B],
      [[field('region', 'EU')], 'eu/auto/whisper-x', A],
    ]) {
      await r2.clearFakes();
      const r = await send('whisper-x', { fields });
      assertJsonServed(r, { requested, routed, failover: false });
      assert.deepEqual(await counts(), routed === A ? { a: 1, b: 0 } : { a: 0, b: 1 }, JSON.stringify(fields));
      const up = await onlyUpload(routed === A ? fa : fb);
      assert.ok(!('region' in up.fields) && !('provider' in up.fields), `hints not forwarded: ${JSON.stringify(up.fields)}`);
    }
    await r2.clearFakes();
    const pinned = await send(A, { fields: [field('region', 'us'), field('provider', 'provb')] });
    assertJsonServed(pinned, { requested: A, routed: A, failover: false });
    assert.deepEqual(await counts(), { a: 1, b: 0 });
  });

  test('a hint matching no route → 404 model_not_found; the chat route as model → 400 model_not_supported', async () => {
    const none = await send('whisper-x', { fields: [field('region', 'ap')] });
    await assertError(none, { status: 404, code: 'model_not_found' });
    const chat = await send(CHAT);
    await assertError(chat, { status: 400, code: 'model_not_supported' });
    assert.deepEqual(await counts(), { a: 0, b: 0 });
  });

  test('upstream 400 → relayed with code upstream_rejected, no failover', async () => {
    await fa.behaviour({ status: 400, error_code: 'invalid_audio' });
    const r = await send('whisper-x');
    const err = await assertError(r, { status: 400, code: 'upstream_rejected', type: IR });
    assert.ok(err.message.length > 0);
    assert.deepEqual(await counts(), { a: 1, b: 0 }, 'a 4xx is not retried and not failed over');
  });

  test('X-Tresor-Timeout-Seconds: 1 with a 3 s upstream delay → 504 upstream_timeout within 1 s + 1 s', async () => {
    await Promise.all([fa.behaviour({ delay_ms: 3000 }), fb.behaviour({ delay_ms: 3000 })]);
    const r = await send('whisper-x', { headers: { 'x-tresor-timeout-seconds': '1' }, file: filePart(SMALL) });
    console.log(`timeout override 1 s: status ${r.status} after ${r.ms.toFixed(0)} ms`);
    await assertError(r, { status: 504, code: 'upstream_timeout' });
    assert.ok(r.ms >= 900, `answered after ${r.ms.toFixed(0)} ms, before the 1 s budget`);
    assert.ok(r.ms < 2000, `answered after ${r.ms.toFixed(0)} ms; budget 1 s + 1 s slack`);
    assert.ok((await counts()).a >= 1, 'the upstream was asked');
  });

  // The budget bounds the upstream's work: it starts when the upload is complete, so a client
  // on a slow link is not refused for the time its own upload took.
  test('X-Tresor-Timeout-Seconds: 1 and an upload trickled over ~2 s → 200 (the budget counts from the last byte)', async () => {
    const mp = multipart([field('model', 'whisper-x'), filePart(SMALL)]);
    const pieces = 8;
    const size = Math.ceil(mp.body.length / pieces);
    const t0 = performance.now();
    // A client-side pace (the scenario itself, not synchronisation): 8 pieces, 250 ms apart.
    let next = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (next >= mp.body.length) { controller.close(); return; }
        await delay(250);
        controller.enqueue(mp.body.subarray(next, next + size));
        next += size;
      },
    });
    const res = await fetch(r2.gw.url(ENDPOINT), {
      method: 'POST',
      headers: { authorization: `Bearer ${r2.key}`, 'content-type': mp.contentType, 'x-tresor-timeout-seconds': '1' },
      body,
      duplex: 'half',
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    console.log(`trickled upload with a 1 s budget: status ${res.status} after ${ms.toFixed(0)} ms`);
    assert.equal(res.status, 200, text);
    assert.ok(ms > 1500, `the upload took ${ms.toFixed(0)} ms, longer than the budget`);
    assertSameFile(await onlyUpload(fa), SMALL);
  });
});
