// POST /v1/audio/transcriptions (spec §7, issue #6) as a user of the official OpenAI JS SDK sees
// it: `client.audio.transcriptions.create()` with real audio files (espeak-ng + sox/ffmpeg, made
// at test time) passed as `fs.createReadStream(path)` and through the SDK's `toFile` helper,
// against a real tresor-router and tresor-fake-upstream. The fake answers with a transcript
// that names the file's size and SHA-256 as it received them, so a matching transcript proves
// the bytes went through the SDK's multipart and the gateway unchanged.
//
// What the SDK (openai 6.x on Node) puts on the wire for the file part, for reference:
//   * fs.createReadStream(p): the SDK's own streaming multipart (boundary `openai-<base36>`,
//     Transfer-Encoding: chunked), parts in the order of the params object, the file part as
//     `filename="<basename of p>"` with `Content-Type: application/octet-stream` (no type is
//     derived from the extension), so the gateway decides the type by the extension;
//   * toFile(bytes, name): a web File in undici's FormData (boundary `----formdata-undici-0…`,
//     Content-Length), again `application/octet-stream` unless toFile got `{ type }`.
// Unknown params in the params object become form fields; an array `x: [...]` becomes one
// `x[]` field per entry.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import OpenAI, { toFile } from 'openai';
import { compactVerify, createLocalJWKSet } from 'jose';
import {
  startStack, startRoutingStack, stopAll, fetchReceipt, fetchJwks, stripTresorMember, sha256HexBytes,
  expectAttempts, RECEIPT_ID_RE, ROUTE_GPT,
} from '../integration/harness.mjs';
import { makeTestAudio } from '../integration/audio-fixtures.mjs';

// The guide's route (spec §2.1, §7.3): the only transcription route of the main stack, so the
// automatic resolution of `auto/auto/whisper-large-v3` and of the bare key is deterministic.
const ROUTE_PM = 'eu/privatemode/whisper-large-v3';
const UPSTREAM_PM = 'whisper-large-v3';
const KEY = 'whisper-large-v3';
const AUTO = `auto/auto/${KEY}`;
// The fake reports 3.25 s of audio by default; the gateway rounds up.
const FAKE_SECONDS = 4;

let audio;
let s;
let baseURL;
let keySet;

/** The fake's transcript of one upload (tests/fake_upstream/README.md, "Audio transcriptions"). */
function fakeTranscript(filename, type, bytes) {
  return `fake transcript of ${filename} (${type}): bytes=${bytes.length} sha256=${sha256HexBytes(bytes)}`;
}

/** A client as users make one; maxRetries 0 so no SDK retry can hide a failure. */
function sdk(opts = {}) {
  return new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0, ...opts });
}

/**
 * A fetch for the SDK that records each request and, for a streamed body (what the SDK sends
 * for fs.createReadStream), a copy of the exact bytes (tee), so request digests can be checked.
 */
function recordingFetch() {
  const calls = [];
  const fn = async (url, init = {}) => {
    const call = { url: String(url), headers: new Headers(init.headers) };
    calls.push(call);
    let body = init.body;
    if (body instanceof ReadableStream) {
      const [toServer, copy] = body.tee();
      body = toServer;
      call.bytes = new Response(copy).arrayBuffer().then((ab) => Buffer.from(ab));
    }
    const res = await fetch(url, { ...init, body });
    call.status = res.status;
    return res;
  };
  return { fn, calls };
}

async function theOnlyUpload() {
  const reqs = await s.fake.requests();
  assert.equal(reqs.length, 1, `the fake got exactly one request: ${JSON.stringify(reqs.map((r) => r.target))}`);
  assert.equal(reqs[0].target, '/v1/audio/transcriptions');
  assert.ok(reqs[0].transcription, `the fake parsed the multipart: ${reqs[0].multipart_error}`);
  return reqs[0];
}

async function verifiedReceipt(id) {
  const r = await fetchReceipt(s.gw, s.key, id);
  assert.equal(r.status, 200, `GET /v1/receipts/${id}: ${r.text}`);
  assert.equal(r.json.id, id);
  const { payload, protectedHeader } = await compactVerify(r.json.receipt, keySet, { algorithms: ['ES256'] });
  assert.equal(protectedHeader.alg, 'ES256');
  return JSON.parse(new TextDecoder().decode(payload));
}

/** Asserts an SDK error: class, status, envelope code/param; the fake must not have been asked. */
async function rejectsWith(promise, { cls, status, code, param }) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, status, err.message);
    assert.equal(err.code, code, err.message);
    if (param !== undefined) assert.equal(err.param, param, err.message);
    assert.equal(err.type, 'invalid_request_error', err.message);
    return true;
  });
}

before(async () => {
  audio = makeTestAudio({ only: ['wav', 'webm'] });
  s = await startStack({
    configOverrides: {
      extraRoutes: [{ id: ROUTE_PM, provider: 'fake', upstream_model: UPSTREAM_PM, type: 'transcription' }],
    },
    // Drop the harness's default transcription route (same model key) so ROUTE_PM is the one
    // automatic resolution finds, as in the guide.
    configHook: (c) => ({ ...c, routes: c.routes.filter((r) => r.type !== 'transcription' || r.id === ROUTE_PM) }),
  });
  baseURL = s.gw.url('/v1');
  const j = await fetchJwks(s.gw);
  assert.equal(j.status, 200, j.text);
  keySet = createLocalJWKSet(j.json);
});
after(async () => {
  await stopAll();
  audio?.cleanup();
});

describe('OpenAI JS SDK: audio transcriptions', { timeout: 120_000 }, () => {
  beforeEach(async () => { await s.fake.reset(); });

  test('json (default) with fs.createReadStream: the fake\'s transcript of the exact bytes, tresor + usage, X-Tresor headers', async () => {
    const webm = audio.files.webm;
    const { data: transcript, response } = await sdk().audio.transcriptions.create({
      model: KEY,
      file: fs.createReadStream(webm.path),
    }).withResponse();

    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') || '', /^application\/json/);
    assert.equal(transcript.text, fakeTranscript('meeting.webm', 'audio/webm', webm.bytes),
      'size and sha256 in the transcript are those of the file on disk');

    const id = response.headers.get('x-tresor-receipt-id');
    assert.match(id ?? '', RECEIPT_ID_RE, 'X-Tresor-Receipt-Id header');
    assert.equal(response.headers.get('x-tresor-routed-model'), ROUTE_PM);
    assert.equal(response.headers.get('x-tresor-requested-route'), AUTO);
    assert.equal(response.headers.get('x-tresor-failover'), 'false');
    expectAttempts(response.headers.get('x-tresor-attempts'), [[ROUTE_PM, 'ok']]);

    assert.deepEqual(transcript.usage, { type: 'duration', seconds: FAKE_SECONDS });
    assert.deepEqual(Object.keys(transcript), ['text', 'usage', 'tresor'], 'usage after the upstream members, tresor last');
    assert.deepEqual(Object.keys(transcript.tresor), ['receipt_id', 'requested_route', 'routed_model', 'failover']);
    assert.deepEqual(transcript.tresor, { receipt_id: id, requested_route: AUTO, routed_model: ROUTE_PM, failover: false });

    // What the provider got: the route's upstream model, the normalised type, the same bytes.
    const up = await theOnlyUpload();
    assert.deepEqual(up.transcription.file, {
      name: 'file', filename: 'meeting.webm', content_type: 'audio/webm',
      size: webm.bytes.length, sha256: sha256HexBytes(webm.bytes),
    });
    assert.deepEqual(up.transcription.fields, { model: UPSTREAM_PM, response_format: 'json' });
    assert.deepEqual(up.transcription.field_order, ['model', 'response_format', 'file']);
    assert.equal(up.headers.authorization, `Bearer ${s.providerKey}`);
  });

  // The same upload through the other ways the SDK offers; the fake must see the type the
  // gateway derived and the identical bytes.
  const variants = [
    { name: 'createReadStream(meeting.wav)', ext: 'wav', filename: 'meeting.wav', type: 'audio/wav',
      file: (f) => fs.createReadStream(f.path) },
    { name: 'toFile(Buffer, "meeting.webm")', ext: 'webm', filename: 'meeting.webm', type: 'audio/webm',
      file: (f) => toFile(f.bytes, 'meeting.webm') },
    { name: 'toFile(Buffer, "meeting.wav")', ext: 'wav', filename: 'meeting.wav', type: 'audio/wav',
      file: (f) => toFile(f.bytes, 'meeting.wav') },
    { name: 'toFile(createReadStream(meeting.webm)) (name from the path)', ext: 'webm', filename: 'meeting.webm',
      type: 'audio/webm', file: (f) => toFile(fs.createReadStream(f.path)) },
    { name: 'toFile(Buffer, "recording", { type: "audio/wav" }) (no extension)', ext: 'wav', filename: 'recording',
      type: 'audio/wav', file: (f) => toFile(f.bytes, 'recording', { type: 'audio/wav' }) },
    { name: 'toFile(Buffer, "clip.webm", { type: "video/webm" }) (alias)', ext: 'webm', filename: 'clip.webm',
      type: 'audio/webm', file: (f) => toFile(f.bytes, 'clip.webm', { type: 'video/webm' }) },
  ];
  for (const v of variants) {
    test(`json upload via ${v.name} → transcript of the same bytes, upstream type ${v.type}`, async () => {
      const f = audio.files[v.ext];
      const transcript = await sdk().audio.transcriptions.create({ model: AUTO, file: await v.file(f), response_format: 'json' });
      assert.equal(transcript.text, fakeTranscript(v.filename, v.type, f.bytes));
      assert.equal(transcript.tresor.routed_model, ROUTE_PM);
      const up = await theOnlyUpload();
      assert.equal(up.transcription.file.content_type, v.type);
      assert.equal(up.transcription.file.filename, v.filename);
      assert.equal(up.transcription.file.sha256, sha256HexBytes(f.bytes));
    });
  }

  test('text: the SDK returns the transcript string; the header\'s receipt verifies with jose and digests match', async () => {
    const wav = audio.files.wav;
    const rec = recordingFetch();
    const t0 = Math.floor(Date.now() / 1000);
    const { data: text, response } = await sdk({ fetch: rec.fn }).audio.transcriptions.create({
      model: KEY,
      file: fs.createReadStream(wav.path),
      response_format: 'text',
      language: 'en',
    }).withResponse();
    const t1 = Math.floor(Date.now() / 1000);

    assert.equal(typeof text, 'string', 'response_format text → the SDK hands back a string');
    assert.equal(text, fakeTranscript('meeting.wav', 'audio/wav', wav.bytes));
    assert.equal(response.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(response.headers.get('x-tresor-routed-model'), ROUTE_PM);
    assert.equal(response.headers.get('x-tresor-requested-route'), AUTO);
    assert.equal(response.headers.get('x-tresor-failover'), 'false');
    const id = response.headers.get('x-tresor-receipt-id');
    assert.match(id ?? '', RECEIPT_ID_RE, 'a text answer names its receipt in X-Tresor-Receipt-Id');

    // The gateway asked the provider for json (contract §6) and still gave the client text.
    const up = await theOnlyUpload();
    assert.equal(up.transcription.fields.response_format, 'json');
    assert.equal(up.transcription.fields.language, 'en');

    const claims = await verifiedReceipt(id);
    assert.equal(claims.jti, id);
    assert.ok(claims.iat >= t0 && claims.iat <= t1, `iat ${claims.iat} in [${t0}, ${t1}]`);
    assert.equal(claims.endpoint, '/v1/audio/transcriptions');
    assert.equal(claims.requested_route, AUTO);
    assert.equal(claims.routed_model, ROUTE_PM);
    assert.equal(claims.failover, false);
    assert.equal(claims.prompt_tokens, 0);
    assert.equal(claims.completion_tokens, 0);
    assert.equal(claims.audio_seconds, FAKE_SECONDS);
    assert.equal(claims.response_sha256, sha256HexBytes(text), 'response_sha256 = SHA-256 of the text body');
    assert.equal(rec.calls.length, 1);
    assert.ok(rec.calls[0].bytes, 'the SDK streamed the multipart body for a ReadStream');
    const sent = await rec.calls[0].bytes;
    assert.match(rec.calls[0].headers.get('content-type'), /^multipart\/form-data; boundary=/);
    assert.equal(claims.request_sha256, sha256HexBytes(sent), 'request_sha256 = SHA-256 of the multipart the SDK sent');
  });

  test('json receipt: response_sha256 covers the JSON body without its tresor member', async () => {
    const webm = audio.files.webm;
    const response = await sdk().audio.transcriptions.create({
      model: KEY, file: await toFile(webm.bytes, 'meeting.webm'),
    }).asResponse();
    assert.equal(response.status, 200);
    const raw = await response.text();
    const cut = stripTresorMember(raw);
    assert.ok(cut, raw);
    const claims = await verifiedReceipt(cut.tresor.receipt_id);
    assert.equal(claims.response_sha256, sha256HexBytes(cut.stripped));
    assert.equal(claims.audio_seconds, FAKE_SECONDS);
  });

  test('verbose_json with language en: segments, duration, language', async () => {
    const wav = audio.files.wav;
    const t = await sdk().audio.transcriptions.create({
      model: KEY, file: fs.createReadStream(wav.path), response_format: 'verbose_json', language: 'en',
    });
    const T = fakeTranscript('meeting.wav', 'audio/wav', wav.bytes);
    assert.equal(t.text, T);
    assert.equal(t.task, 'transcribe');
    assert.equal(t.language, 'en');
    assert.equal(t.duration, 3.25);
    assert.ok(Array.isArray(t.segments) && t.segments.length === 1, JSON.stringify(t.segments));
    assert.equal(t.segments[0].text, T);
    assert.equal(t.segments[0].end, 3.25);
    assert.deepEqual(t.usage, { type: 'duration', seconds: FAKE_SECONDS });
    assert.equal(t.tresor.routed_model, ROUTE_PM);
    assert.equal(Object.keys(t).at(-1), 'tresor');
    const up = await theOnlyUpload();
    assert.equal(up.transcription.fields.response_format, 'verbose_json');
    assert.equal(up.transcription.fields.language, 'en');
  });

  test('verbose_json without language → BadRequestError 400 missing_required_parameter (language)', async () => {
    await rejectsWith(
      sdk().audio.transcriptions.create({
        model: KEY, file: fs.createReadStream(audio.files.wav.path), response_format: 'verbose_json',
      }),
      { cls: OpenAI.BadRequestError, status: 400, code: 'missing_required_parameter', param: 'language' },
    );
    assert.equal((await s.fake.requests()).length, 0, 'nothing reached the provider');
  });

  test('guide sample ported to the JS SDK: auto/auto/whisper-large-v3, meeting.webm, json', async () => {
    // The guide's Python sample, line by line (only the key and the base URL differ):
    //   client = OpenAI(api_key=..., base_url=...)
    //   with open("meeting.webm", "rb") as audio:
    //       transcript = client.audio.transcriptions.create(
    //           model="auto/auto/whisper-large-v3", file=audio, response_format="json")
    //   print(transcript.text)
    const client = new OpenAI({
      apiKey: s.key,
      baseURL: s.gw.url('/v1'),
    });

    const transcript = await client.audio.transcriptions.create({
      model: 'auto/auto/whisper-large-v3',
      file: fs.createReadStream(audio.files.webm.path), // …/meeting.webm
      response_format: 'json',
    });

    console.log(transcript.text);

    assert.equal(transcript.text, fakeTranscript('meeting.webm', 'audio/webm', audio.files.webm.bytes));
    assert.equal(transcript.tresor.requested_route, 'auto/auto/whisper-large-v3');
    assert.equal(transcript.tresor.routed_model, ROUTE_PM);
    assert.equal(transcript.tresor.failover, false);
    assert.match(transcript.tresor.receipt_id, RECEIPT_ID_RE);
  });

  test('guide sample as the Python SDK puts it on the wire (httpx multipart, video/webm), replayed with fetch', async () => {
    // A REPLAY, not the Python SDK: PyPI is not reachable from the test machines, so `openai`
    // (Python) and httpx cannot be installed. This sends the bytes they produce for the guide's
    // sample: openai-python pops its `Content-Type: multipart/form-data` header and hands the
    // non-file params as `data` and the open file as `files` to httpx; httpx's MultipartStream
    // writes the data fields first (model, response_format, in dict order), then the file part
    // with filename = basename of file.name and Content-Type from mimetypes.guess_type()
    // (Python maps .webm to video/webm), boundary = 16 random bytes as hex, and a Content-Length.
    const webm = audio.files.webm;
    const boundary = randomBytes(16).toString('hex');
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nauto/auto/whisper-large-v3\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\njson\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="meeting.webm"\r\n` +
        'Content-Type: video/webm\r\n\r\n'),
      webm.bytes,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const res = await fetch(s.gw.url('/v1/audio/transcriptions'), {
      method: 'POST',
      headers: {
        'Accept': 'application/json',
        'Authorization': `Bearer ${s.key}`,
        'Content-Type': `multipart/form-data; boundary=${boundary}`,
        'User-Agent': 'OpenAI/Python 1.99.0',
        'X-Stainless-Lang': 'python',
        'X-Stainless-Package-Version': '1.99.0',
        'X-Stainless-Runtime': 'CPython',
        'X-Stainless-Retry-Count': '0',
      },
      body,
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const transcript = JSON.parse(text);
    assert.equal(transcript.text, fakeTranscript('meeting.webm', 'audio/webm', webm.bytes));
    assert.equal(transcript.tresor.requested_route, 'auto/auto/whisper-large-v3');
    assert.equal(transcript.tresor.routed_model, ROUTE_PM);
    assert.equal(res.headers.get('x-tresor-receipt-id'), transcript.tresor.receipt_id);

    const up = await theOnlyUpload();
    assert.equal(up.transcription.file.content_type, 'audio/webm', 'video/webm normalised to audio/webm');
    assert.equal(up.transcription.file.filename, 'meeting.webm');
    assert.equal(up.transcription.file.size, webm.bytes.length);
    assert.equal(up.transcription.file.sha256, sha256HexBytes(webm.bytes), 'identical bytes upstream');

    const claims = await verifiedReceipt(transcript.tresor.receipt_id);
    assert.equal(claims.request_sha256, sha256HexBytes(body), 'request_sha256 over the replayed bytes');
  });

  test('unsupported type: toFile(notes.txt, text/plain) → BadRequestError unsupported_media_type (file)', async () => {
    await rejectsWith(
      sdk().audio.transcriptions.create({
        model: KEY, file: await toFile(Buffer.from('these are meeting notes, not audio\n'), 'notes.txt', { type: 'text/plain' }),
      }),
      { cls: OpenAI.BadRequestError, status: 400, code: 'unsupported_media_type', param: 'file' },
    );
    assert.equal((await s.fake.requests()).length, 0);
  });

  test('failover as an extra param (form field `failover`) → BadRequestError failover_not_supported', async () => {
    await rejectsWith(
      sdk().audio.transcriptions.create({
        model: KEY, file: fs.createReadStream(audio.files.wav.path), failover: ROUTE_PM,
      }),
      { cls: OpenAI.BadRequestError, status: 400, code: 'failover_not_supported', param: 'failover' },
    );
    assert.equal((await s.fake.requests()).length, 0);
  });

  // Both official SDKs serialise an array param in multipart as `name[]` fields (openai-node:
  // `failover: [...]`; openai-python: `extra_body={"failover": [...]}`, the chat guide's
  // pattern), so this is how a client's failover list actually arrives.
  test('failover as an array, as in the chat guide (the SDK sends `failover[]` fields) → failover_not_supported', async () => {
    await rejectsWith(
      sdk().audio.transcriptions.create({
        model: KEY, file: fs.createReadStream(audio.files.wav.path), failover: [ROUTE_PM],
      }),
      { cls: OpenAI.BadRequestError, status: 400, code: 'failover_not_supported', param: 'failover' },
    );
    assert.equal((await s.fake.requests()).length, 0);
  });

  test('unknown model → NotFoundError 404 model_not_found; chat route → BadRequestError model_not_supported', async () => {
    await rejectsWith(
      sdk().audio.transcriptions.create({ model: 'whisper-tiny', file: fs.createReadStream(audio.files.wav.path) }),
      { cls: OpenAI.NotFoundError, status: 404, code: 'model_not_found' },
    );
    await rejectsWith(
      sdk().audio.transcriptions.create({ model: ROUTE_GPT, file: fs.createReadStream(audio.files.wav.path) }),
      { cls: OpenAI.BadRequestError, status: 400, code: 'model_not_supported' },
    );
    assert.equal((await s.fake.requests()).length, 0);
  });
});

describe('OpenAI JS SDK: transcription failover over two providers', { timeout: 120_000 }, () => {
  const A = `eu/prova/${KEY}`;
  const B = `eu/provb/${KEY}`;
  let r;

  before(async () => {
    r = await startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [
        { id: A, provider: 'prova', type: 'transcription' },
        { id: B, provider: 'provb', type: 'transcription' },
      ],
      retry: { backoff_ms: 50 },
      // Keep the circuit breaker out of the way: these tests fail route A on purpose.
      breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    });
  });
  beforeEach(async () => { await r.clearFakes(); });

  test('the first route answers 503: the SDK gets the second route\'s transcript, tresor.failover true', async () => {
    await r.fakes.prova.behaviour({ status: 503 });
    const client = new OpenAI({ apiKey: r.key, baseURL: r.gw.url('/v1'), maxRetries: 0 });
    const webm = audio.files.webm;
    const { data: t, response } = await client.audio.transcriptions.create({
      model: KEY, file: fs.createReadStream(webm.path), response_format: 'json',
    }).withResponse();

    assert.equal(t.text, fakeTranscript('meeting.webm', 'audio/webm', webm.bytes));
    assert.equal(t.tresor.failover, true);
    assert.equal(t.tresor.requested_route, AUTO);
    assert.equal(t.tresor.routed_model, B);
    assert.equal(response.headers.get('x-tresor-failover'), 'true');
    assert.equal(response.headers.get('x-tresor-routed-model'), B);
    expectAttempts(response.headers.get('x-tresor-attempts'), [[A, 503], [A, 503], [B, 'ok']]);

    // Both providers got the whole, identical upload (the spool was replayed for each attempt).
    const [ra, rb] = await Promise.all([r.fakes.prova.requests(), r.fakes.provb.requests()]);
    assert.equal(ra.length, 2);
    assert.equal(rb.length, 1);
    for (const q of [...ra, ...rb]) {
      assert.equal(q.transcription.file.sha256, sha256HexBytes(webm.bytes));
      assert.equal(q.transcription.file.content_type, 'audio/webm');
    }
    assert.equal(ra[0].transcription.fields.model, `prova-${KEY}`);
    assert.equal(rb[0].transcription.fields.model, `provb-${KEY}`);
  });

  test('every route failing → the SDK throws (502 upstream_error), no retry hides it', async () => {
    await r.fakes.prova.behaviour({ status: 503 });
    await r.fakes.provb.behaviour({ status: 500 });
    const client = new OpenAI({ apiKey: r.key, baseURL: r.gw.url('/v1'), maxRetries: 0 });
    await assert.rejects(
      client.audio.transcriptions.create({ model: KEY, file: fs.createReadStream(audio.files.wav.path) }),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 502);
        assert.equal(err.code, 'upstream_error');
        return true;
      },
    );
    const [sa, sb] = await Promise.all([r.fakes.prova.stats(), r.fakes.provb.stats()]);
    assert.equal(sa.requests + sb.requests, 4, 'two attempts per route, one SDK request');
  });
});
