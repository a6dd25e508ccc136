// Size limits (413, 431) answered without reading the body, connection closed afterwards;
// unknown path 404, wrong method 405 with Allow.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, readErrorEnvelope, rawRequest, RawConnection, requestHead, chunk,
  performance, ROUTE_GPT,
} from './harness.mjs';

const MAX_BODY = 1048576;
const MAX_HEADER = 8192;
let s;
before(async () => { s = await startStack(); });
after(stopAll);

const auth = () => [['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json']];

/** A valid chat body of exactly n bytes (padding in an unknown field). */
function bodyOfSize(n) {
  const base = JSON.stringify({ ...chatBody(ROUTE_GPT), pad: '' });
  const b = JSON.stringify({ ...chatBody(ROUTE_GPT), pad: 'x'.repeat(n - base.length) });
  assert.equal(Buffer.byteLength(b), n);
  return b;
}

describe('body size limit', { timeout: 60_000 }, () => {
  test(`a body of exactly max_body_bytes (${MAX_BODY}) is accepted`, async () => {
    const { res, conn } = await rawRequest(s.gw.port, { headers: auth(), body: bodyOfSize(MAX_BODY), timeoutMs: 20_000 });
    conn.destroy();
    assert.equal(res.status, 200, res.text.slice(0, 500));
  });

  test('Content-Length over the cap → 413 before the body is sent, then close', async () => {
    const conn = await RawConnection.connect(s.gw.port);
    try {
      const t0 = performance.now();
      await conn.write(requestHead('POST', '/v1/chat/completions', [...auth(), ['Content-Length', String(MAX_BODY + 1)]]));
      const res = await conn.readResponse({ timeoutMs: 5000 });
      const ms = performance.now() - t0;
      await readErrorEnvelope(res, { status: 413, type: 'invalid_request_error', code: 'request_too_large' });
      assert.ok(ms < 3000, `413 took ${ms.toFixed(0)} ms`);
      assert.ok(await conn.waitClosed(5000), 'gateway must close the connection after 413');
    } finally {
      conn.destroy();
    }
    assert.ok(await s.healthy());
  });

  test('chunked body crossing the cap → 413, then close', async () => {
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(requestHead('POST', '/v1/chat/completions', [...auth(), ['Transfer-Encoding', 'chunked']]));
      const piece = Buffer.from(`{"model":"${ROUTE_GPT}","messages":[{"role":"user","content":"hi"}],"pad":"`);
      await conn.write(chunk(piece));
      const filler = Buffer.alloc(16 * 1024, 'y');
      let sent = piece.length;
      // Keep sending until the gateway answers (it must, once the cap is crossed) or 2x the cap.
      while (sent <= 2 * MAX_BODY && conn.buf.length === 0 && !conn.ended && !conn.closed && !conn.error) {
        if (!(await conn.write(chunk(filler)))) break;
        sent += filler.length;
      }
      const res = await conn.readResponse({ timeoutMs: 5000 });
      await readErrorEnvelope(res, { status: 413, code: 'request_too_large' });
      assert.ok(sent > MAX_BODY, `413 after only ${sent} body bytes (cap ${MAX_BODY})`);
      assert.ok(await conn.waitClosed(5000), 'gateway must close the connection after 413');
    } finally {
      conn.destroy();
    }
    assert.ok(await s.healthy());
  });

  test('chunked body below the cap is accepted', async () => {
    const body = Buffer.from(bodyOfSize(200_000));
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(requestHead('POST', '/v1/chat/completions', [...auth(), ['Transfer-Encoding', 'chunked']]));
      for (let i = 0; i < body.length; i += 30_000) await conn.write(chunk(body.subarray(i, i + 30_000)));
      await conn.write('0\r\n\r\n');
      const res = await conn.readResponse();
      assert.equal(res.status, 200, res.text.slice(0, 500));
      assert.equal(res.json().tresor.routed_model, ROUTE_GPT);
    } finally {
      conn.destroy();
    }
  });
});

describe('header size limit', { timeout: 60_000 }, () => {
  const expect431 = async (name, head) => {
    const conn = await RawConnection.connect(s.gw.port);
    try {
      await conn.write(head);
      const res = await conn.readResponse({ timeoutMs: 5000 });
      await readErrorEnvelope(res, { status: 431, type: 'invalid_request_error', code: 'request_header_too_large' });
      assert.ok(await conn.waitClosed(5000), `${name}: gateway must close the connection after 431`);
    } finally {
      conn.destroy();
    }
  };

  test('one header larger than max_header_bytes → 431', async () => {
    await expect431('big header', requestHead('POST', '/v1/chat/completions', [...auth(), ['X-Pad', 'a'.repeat(MAX_HEADER + 100)], ['Content-Length', '2']]));
  });

  test('many headers adding up to more than max_header_bytes → 431', async () => {
    const many = Array.from({ length: 200 }, (_, i) => [`X-Pad-${i}`, 'b'.repeat(50)]);
    await expect431('many headers', requestHead('POST', '/v1/chat/completions', [...auth(), ...many, ['Content-Length', '2']]));
  });

  test('request target longer than max_header_bytes → 431', async () => {
    await expect431('long target', requestHead('GET', `/healthz?${'q'.repeat(MAX_HEADER + 100)}`, []));
  });

  test('a head well below the cap is accepted', async () => {
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    const { res, conn } = await rawRequest(s.gw.port, { headers: [...auth(), ['X-Pad', 'c'.repeat(MAX_HEADER / 2)]], body });
    conn.destroy();
    assert.equal(res.status, 200, res.text);
  });

  test('gateway healthy afterwards', async () => {
    assert.ok(await s.healthy());
  });
});

describe('paths and methods', { timeout: 60_000 }, () => {
  for (const [method, path] of [['GET', '/v1/nope'], ['POST', '/v1/embeddings'], ['POST', '/v1/completions'], ['GET', '/'], ['POST', '/v1/chat/completions/extra']]) {
    test(`${method} ${path} → 404 not_found`, async () => {
      const r = await fetch(s.gw.url(path), {
        method,
        headers: { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' },
        body: method === 'POST' ? JSON.stringify(chatBody(ROUTE_GPT)) : undefined,
      });
      await readErrorEnvelope(r, { status: 404, code: 'not_found' });
    });
  }

  for (const [method, path, allowed] of [['GET', '/v1/chat/completions', 'POST'], ['PUT', '/v1/chat/completions', 'POST'], ['DELETE', '/v1/chat/completions', 'POST'], ['POST', '/healthz', 'GET']]) {
    test(`${method} ${path} → 405 method_not_allowed with Allow`, async () => {
      const r = await fetch(s.gw.url(path), {
        method,
        headers: { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' },
        body: method === 'GET' ? undefined : '{}',
      });
      const allow = r.headers.get('allow');
      await readErrorEnvelope(r, { status: 405, code: 'method_not_allowed' });
      assert.ok(allow, 'Allow header missing');
      assert.ok(allow.split(',').map((x) => x.trim().toUpperCase()).includes(allowed), `Allow: ${allow}`);
    });
  }
});
