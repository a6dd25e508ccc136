// Authentication: 401 envelopes, and the 401 is sent before (without) the request body.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, makeKey, readErrorEnvelope, RawConnection, requestHead,
  performance, ROUTE_GPT,
} from './harness.mjs';

let s;
before(async () => { s = await startStack(); });
after(stopAll);

const post = (headers, body = JSON.stringify(chatBody(ROUTE_GPT))) =>
  fetch(s.gw.url('/v1/chat/completions'), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

describe('authentication', { timeout: 60_000 }, () => {
  test('health endpoints need no key', async () => {
    for (const p of ['/healthz', '/readyz']) {
      const r = await fetch(s.gw.url(p));
      await r.arrayBuffer();
      assert.equal(r.status, 200, p);
    }
  });

  test('a configured key is accepted', async () => {
    const r = await s.chat(chatBody(ROUTE_GPT));
    assert.equal(r.status, 200, await r.text());
  });

  test('missing Authorization → 401 missing_api_key', async () => {
    const before = (await s.fake.stats()).requests;
    await readErrorEnvelope(await post({}), { status: 401, type: 'authentication_error', code: 'missing_api_key' });
    assert.equal((await s.fake.stats()).requests, before, 'nothing forwarded');
  });

  const malformed = {
    'too short': 'Bearer tr-abc',
    '95 hex chars': `Bearer tr-${'a'.repeat(95)}`,
    '97 hex chars': `Bearer tr-${'a'.repeat(97)}`,
    'non-hex char': `Bearer tr-${'a'.repeat(95)}g`,
    'wrong prefix': `Bearer sk-${'a'.repeat(96)}`,
    'no prefix': `Bearer ${'a'.repeat(99)}`,
    'empty bearer': 'Bearer ',
    'Basic scheme': `Basic ${Buffer.from('user:pass').toString('base64')}`,
    'key without scheme': makeKey(),
  };
  for (const [name, value] of Object.entries(malformed)) {
    test(`malformed key (${name}) → 401 invalid_api_key`, async () => {
      const err = await readErrorEnvelope(await post({ authorization: value }), { status: 401, type: 'authentication_error', code: 'invalid_api_key' });
      assert.ok(!err._text.includes(s.providerKey));
    });
  }

  test('well-formed but unknown key → 401 invalid_api_key', async () => {
    await readErrorEnvelope(await post({ authorization: `Bearer ${makeKey()}` }), { status: 401, type: 'authentication_error', code: 'invalid_api_key' });
    await readErrorEnvelope(await post({ authorization: `Bearer tr-${'0'.repeat(96)}` }), { status: 401, code: 'invalid_api_key' });
  });

  test('401 is answered before the body is read (Content-Length: 50000000, no body sent)', async () => {
    for (const auth of [null, `Bearer ${makeKey()}`]) {
      const conn = await RawConnection.connect(s.gw.port);
      try {
        const headers = [['Content-Type', 'application/json'], ['Content-Length', '50000000']];
        if (auth) headers.push(['Authorization', auth]);
        const t0 = performance.now();
        await conn.write(requestHead('POST', '/v1/chat/completions', headers));
        const res = await conn.readResponse({ timeoutMs: 5000 });
        const ms = performance.now() - t0;
        assert.equal(res.status, 401, res.text);
        await readErrorEnvelope(res, { status: 401, code: auth ? 'invalid_api_key' : 'missing_api_key' });
        assert.ok(ms < 3000, `401 took ${ms.toFixed(0)} ms`);
        assert.ok(await conn.waitClosed(5000), 'gateway must close the connection: the announced body was never read');
      } finally {
        conn.destroy();
      }
    }
  });
});
