// The client side held to the same standard (issue 17, item 7): an X-Tresor-Nonce that is not
// printable UTF-8 is 400 (a valid one still lands in the receipt); two Authorization headers
// are 400, not "first wins"; an absolute-form request target (RFC 9112 §3.2.2) is served like
// its origin form; an HTTP/1.0 client never gets 100 Continue (RFC 9110 §10.1.1); error bodies
// are valid UTF-8 JSON whatever bytes the client sent; a multipart `file` part without
// `filename` (or with only `filename*`) is the file, and backslashes in file names reach the
// upstream.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  startStack, stopAll, chatBody, readErrorEnvelope, RawConnection, rawRequest, fetchReceipt, fetchJwks, verifyJws,
  b64urlDecode,
  ROUTE_GPT, ROUTE_WHISPER,
} from './harness.mjs';

const IR = 'invalid_request_error';
const TRANSCRIPTIONS = '/v1/audio/transcriptions';
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Bytes as the latin1 string rawRequest() writes byte for byte. */
const bytes = (buf) => Buffer.from(buf).toString('latin1');
/** A UTF-8 string as the latin1 string of its bytes. */
const utf8Bytes = (s) => bytes(Buffer.from(s, 'utf8'));

let s;
before(async () => { s = await startStack(); });
after(stopAll);
beforeEach(async () => { await s.fake.reset(); });

const auth = () => ['Authorization', `Bearer ${s.key}`];
const json = ['Content-Type', 'application/json'];

async function chatRaw(headers, { target = '/v1/chat/completions', body = JSON.stringify(chatBody(ROUTE_GPT)) } = {}) {
  const { res, conn } = await rawRequest(s.gw.port, { target, headers, body });
  conn.destroy();
  return res;
}

async function upstreamChats() {
  return (await s.fake.requests()).filter((r) => r.target.endsWith('/chat/completions'));
}

/** Asserts the error body is valid UTF-8 and an error envelope; returns the error. */
async function strictError(res, expect) {
  assert.doesNotThrow(() => utf8Strict.decode(res.body), `the error body is valid UTF-8: ${res.body.toString('latin1')}`);
  return readErrorEnvelope(res, expect);
}

// ---------------------------------------------------------------------------------------------
describe('X-Tresor-Nonce', { timeout: 60_000 }, () => {
  const bad = {
    'a tab': 'a\tb',
    'invalid UTF-8 (FF FE)': bytes([0x6e, 0xff, 0xfe]),
    'Latin-1 é (E9), not UTF-8': bytes([0x63, 0x61, 0x66, 0xe9]),
    'a C1 control (U+0085 as C2 85)': bytes([0x61, 0xc2, 0x85]),
    'an overlong encoding of "/" (C0 AF)': bytes([0xc0, 0xaf]),
  };
  for (const [name, nonce] of Object.entries(bad)) {
    test(`${name} → 400 invalid_nonce, nothing sent upstream`, async () => {
      const res = await chatRaw([auth(), json, ['X-Tresor-Nonce', nonce]]);
      await strictError(res, { status: 400, type: IR, code: 'invalid_nonce', param: 'X-Tresor-Nonce' });
      assert.equal((await upstreamChats()).length, 0);
    });
  }

  test('two nonces → 400 invalid_nonce', async () => {
    const res = await chatRaw([auth(), json, ['X-Tresor-Nonce', 'one'], ['X-Tresor-Nonce', 'two']]);
    await strictError(res, { status: 400, type: IR, code: 'invalid_nonce', param: 'X-Tresor-Nonce' });
  });

  test('a printable UTF-8 nonce (é, ✓, emoji, spaces) is signed into the receipt as sent', async () => {
    const nonce = `nonce é ✓ 🙂 ${randomBytes(6).toString('hex')}`;
    const res = await chatRaw([auth(), json, ['X-Tresor-Nonce', utf8Bytes(nonce)]]);
    assert.equal(res.status, 200, res.text);
    const id = JSON.parse(res.text).tresor.receipt_id;
    const r = await fetchReceipt(s.gw, s.key, id);
    assert.equal(r.status, 200, r.text);
    const d = verifyJws(r.json.receipt, (await fetchJwks(s.gw)).json);
    // The claims are strict UTF-8 JSON (what jose and Python's json read).
    const claims = JSON.parse(utf8Strict.decode(b64urlDecode(d.parts[1])));
    assert.equal(claims.nonce, nonce);
  });
});

// ---------------------------------------------------------------------------------------------
describe('two Authorization headers', { timeout: 60_000 }, () => {
  const variants = {
    'the valid key twice': (k) => [[`Bearer ${k}`], [`Bearer ${k}`]],
    'the valid key first, another second': (k) => [[`Bearer ${k}`], ['Bearer tr-0000']],
    'another first, the valid key second': (k) => [['Bearer tr-0000'], [`Bearer ${k}`]],
  };
  for (const [name, values] of Object.entries(variants)) {
    test(`${name} → 400 before auth, nothing sent upstream`, async () => {
      const headers = values(s.key).map(([v]) => ['Authorization', v]);
      const res = await chatRaw([...headers, json]);
      await strictError(res, { status: 400, type: IR, code: 'duplicate_authorization', param: 'Authorization' });
      assert.equal((await upstreamChats()).length, 0);
    });
  }

  test('also on /v1/usage', async () => {
    const { res, conn } = await rawRequest(s.gw.port, {
      method: 'GET', target: '/v1/usage', headers: [auth(), auth()],
    });
    conn.destroy();
    await strictError(res, { status: 400, code: 'duplicate_authorization' });
  });
});

// ---------------------------------------------------------------------------------------------
describe('absolute-form request target (RFC 9112 §3.2.2)', { timeout: 60_000 }, () => {
  test('POST http://host/v1/chat/completions is served like /v1/chat/completions', async () => {
    const res = await chatRaw([auth(), json], { target: `http://127.0.0.1:${s.gw.port}/v1/chat/completions` });
    assert.equal(res.status, 200, res.text);
    assert.equal((await upstreamChats()).length, 1);
  });

  test('scheme in upper case, https, a query: GET /v1/models and /v1/models/{id}', async () => {
    for (const target of ['HTTP://example.com/v1/models?region=eu', `https://example.com:443/v1/models/${encodeURIComponent(ROUTE_GPT)}`]) {
      const { res, conn } = await rawRequest(s.gw.port, { method: 'GET', target });
      conn.destroy();
      assert.equal(res.status, 200, `${target}: ${res.text}`);
    }
  });

  test('the target\'s authority replaces Host: HTTP/1.1 without Host is served', async () => {
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(`POST http://gateway.example/v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer ${s.key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      const res = await conn.readResponse();
      assert.equal(res.status, 200, res.text);
    } finally {
      conn.destroy();
    }
  });

  const badAuthority = {
    'userinfo in the authority': 'http://user:pw@example.com/v1/models',
    'an empty authority': 'http:///v1/models',
  };
  for (const [name, target] of Object.entries(badAuthority)) {
    test(`${name} → 400 bad_request`, async () => {
      const { res, conn } = await rawRequest(s.gw.port, { method: 'GET', target });
      conn.destroy();
      await strictError(res, { status: 400, code: 'bad_request' });
    });
  }
});

// ---------------------------------------------------------------------------------------------
describe('Expect: 100-continue (RFC 9110 §10.1.1)', { timeout: 60_000 }, () => {
  /** Writes `head + body` at once and reads every byte until the gateway closes. */
  async function exchange(version, extra = '') {
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(`POST /v1/chat/completions HTTP/${version}\r\nHost: x\r\nAuthorization: Bearer ${s.key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n` +
        `${extra}\r\n${body}`);
      assert.ok(await conn.waitClosed(15_000), 'the gateway closes the connection');
      return conn.buf.toString('latin1');
    } finally {
      conn.destroy();
    }
  }

  test('an HTTP/1.0 client never receives 100 Continue; its request is answered', async () => {
    const wire = await exchange('1.0');
    assert.doesNotMatch(wire, /^HTTP\/1\.[01] 100/m, wire.slice(0, 300));
    assert.match(wire, /^HTTP\/1\.[01] 200 /, wire.slice(0, 300));
  });

  test('control: an HTTP/1.1 client does (then 200)', async () => {
    const wire = await exchange('1.1', 'Connection: close\r\n');
    assert.match(wire, /^HTTP\/1\.1 100 /, wire.slice(0, 300));
    assert.match(wire, /\r\nHTTP\/1\.1 200 /, wire.slice(0, 300));
  });
});

// ---------------------------------------------------------------------------------------------
// Multipart bodies, byte for byte (the header lines are latin1 strings of exact bytes).

/** parts: { headers: [line...], data: Buffer|string }. */
function multipart(boundary, parts) {
  const chunks = [];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n${p.headers.join('\r\n')}\r\n\r\n`, 'latin1'));
    chunks.push(Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data, 'utf8'));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

const textPart = (name, value) => ({ headers: [`Content-Disposition: form-data; name="${name}"`], data: value });

async function transcribe(parts) {
  const boundary = `----b${randomBytes(8).toString('hex')}`;
  const { res, conn } = await rawRequest(s.gw.port, {
    target: TRANSCRIPTIONS,
    headers: [auth(), ['Content-Type', `multipart/form-data; boundary=${boundary}`]],
    body: multipart(boundary, parts),
  });
  conn.destroy();
  return res;
}

async function upstreamFile() {
  const reqs = (await s.fake.requests()).filter((r) => r.transcription);
  assert.equal(reqs.length, 1, 'one transcription upstream');
  return reqs[0].transcription.file;
}

describe('multipart file parts', { timeout: 60_000 }, () => {
  // Over the 64 KiB a form field may hold: only a file part can carry it.
  const AUDIO = randomBytes(100_000);

  test('a `file` part without filename is the file (100 kB, not a 64 KiB field); the upstream gets audio.wav', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      { headers: ['Content-Disposition: form-data; name="file"', 'Content-Type: audio/wav'], data: AUDIO },
    ]);
    assert.equal(res.status, 200, res.text);
    const file = await upstreamFile();
    assert.equal(file.size, AUDIO.length);
    assert.equal(file.filename, 'audio.wav');
  });

  test('a `file` part with only filename* is the file, named by it (type from its extension)', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      { headers: ["Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''r%C3%A9union%201.mp3",
        'Content-Type: application/octet-stream'], data: AUDIO },
    ]);
    assert.equal(res.status, 200, res.text);
    const file = await upstreamFile();
    assert.equal(file.size, AUDIO.length);
    assert.equal(file.filename, 'réunion 1.mp3');
    assert.equal(file.content_type, 'audio/mpeg');
  });

  test('backslashes in a file name (a Windows path as browsers send it) reach the upstream', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      { headers: ['Content-Disposition: form-data; name="file"; filename="C:\\Users\\me\\talk.wav"', 'Content-Type: audio/wav'],
        data: AUDIO.subarray(0, 4096) },
    ]);
    assert.equal(res.status, 200, res.text);
    assert.equal((await upstreamFile()).filename, 'C:\\Users\\me\\talk.wav');
  });

  test('an escaped quote and an escaped backslash are unescaped, then sent as %22 and \\\\', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      { headers: ['Content-Disposition: form-data; name="file"; filename="a\\"b\\\\c.wav"', 'Content-Type: audio/wav'],
        data: AUDIO.subarray(0, 4096) },
    ]);
    assert.equal(res.status, 200, res.text);
    // The fake unescapes \" and \\ and does not percent-decode (as browsers' %22 is kept).
    assert.equal((await upstreamFile()).filename, 'a%22b\\c.wav');
  });
});

// ---------------------------------------------------------------------------------------------
describe('error bodies are valid UTF-8 JSON whatever the client sent', { timeout: 60_000 }, () => {
  test('a part Content-Type with invalid UTF-8 echoed in unsupported_media_type', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      { headers: ['Content-Disposition: form-data; name="file"; filename="a.bin"', `Content-Type: audio/${bytes([0xff, 0xc3])}x`],
        data: 'abc' },
    ]);
    const e = await strictError(res, { status: 400, code: 'unsupported_media_type' });
    assert.match(e.message, /audio\/\uFFFD\uFFFDx/);
  });

  test('a response_format cut at 64 bytes in the middle of a character', async () => {
    const res = await transcribe([
      textPart('model', ROUTE_WHISPER),
      textPart('response_format', `${'x'.repeat(63)}é and more`),
      { headers: ['Content-Disposition: form-data; name="file"; filename="a.wav"', 'Content-Type: audio/wav'], data: 'abc' },
    ]);
    await strictError(res, { status: 400, param: 'response_format' });
  });

  test('a model with a lone surrogate escape (\\udc80) in the chat JSON', async () => {
    const res = await chatRaw([auth(), json], { body: '{"model":"eu/fake/x\\udc80","messages":[{"role":"user","content":"hi"}]}' });
    assert.ok([400, 404].includes(res.status), `status ${res.status}`);
    await strictError(res, {});
  });

  test('a model id with invalid UTF-8 in /v1/models/{id}', async () => {
    const { res, conn } = await rawRequest(s.gw.port, { method: 'GET', target: '/v1/models/eu%2Ffake%2F%FF%C3' });
    conn.destroy();
    await strictError(res, { status: 404, code: 'model_not_found' });
  });
});
