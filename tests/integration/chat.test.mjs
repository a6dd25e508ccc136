// Non-streaming chat completions: the upstream's JSON with `tresor` appended, route
// normalisation, chunked and slow request bodies, keep-alive.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, RawConnection, requestHead, chunk, delay,
  ROUTE_GPT, ROUTE_GEMMA, UPSTREAM_GPT, UPSTREAM_GEMMA,
} from './harness.mjs';

const CONTENT = 'Hello! How can I help you today?';
let s;

before(async () => { s = await startStack({ content: CONTENT }); });
after(stopAll);

function assertTresor(tresor, requested, routed) {
  assert.equal(typeof tresor, 'object');
  assert.equal(tresor.requested_route, requested, 'tresor.requested_route');
  assert.equal(tresor.routed_model, routed, 'tresor.routed_model');
  assert.equal(tresor.failover, false, 'tresor.failover');
  for (const k of Object.keys(tresor)) {
    assert.ok(['receipt_id', 'requested_route', 'routed_model', 'failover'].includes(k), `unexpected tresor field ${k}`);
  }
}

describe('non-stream chat completion', { timeout: 60_000 }, () => {
  test('returns the upstream completion with a tresor object as the last member', async () => {
    const res = await s.chat(chatBody(ROUTE_GPT));
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.match(res.headers.get('content-type') || '', /^application\/json/i);
    const body = JSON.parse(text);
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.choices[0].message.role, 'assistant');
    assert.equal(body.choices[0].message.content, CONTENT);
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.deepEqual(Object.keys(body).at(-1), 'tresor', `tresor must be the last member: ${text}`);
    assertTresor(body.tresor, ROUTE_GPT, ROUTE_GPT);

    // Everything but `tresor` is what the upstream itself answers for the same request.
    const direct = await fetch(`${s.fake.baseUrl()}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.providerKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chatBody(UPSTREAM_GPT)),
    });
    assert.equal(direct.status, 200);
    const up = await direct.json();
    const strip = (o) => { const c = { ...o }; delete c.id; delete c.created; delete c.tresor; return c; };
    assert.deepEqual(strip(body), strip(up));
  });

  const cases = [
    { name: 'full compound id', model: ROUTE_GPT, requested: ROUTE_GPT, routed: ROUTE_GPT, upstream: UPSTREAM_GPT },
    { name: 'bare key', model: 'gpt-oss-120b', requested: 'auto/auto/gpt-oss-120b', routed: ROUTE_GPT, upstream: UPSTREAM_GPT },
    { name: 'bare key + region hint', model: 'gpt-oss-120b', extra: { region: 'eu' }, requested: 'eu/auto/gpt-oss-120b', routed: ROUTE_GPT, upstream: UPSTREAM_GPT },
    { name: 'bare key + region and provider hints', model: 'gpt-oss-120b', extra: { region: 'eu', provider: 'fake' }, requested: 'eu/fake/gpt-oss-120b', routed: ROUTE_GPT, upstream: UPSTREAM_GPT },
    { name: 'bare key + provider hint', model: 'gemma-4-31b', extra: { provider: 'privatemode' }, requested: 'auto/privatemode/gemma-4-31b', routed: ROUTE_GEMMA, upstream: UPSTREAM_GEMMA },
    { name: 'auto/auto/key', model: 'auto/auto/gemma-4-31b', requested: 'auto/auto/gemma-4-31b', routed: ROUTE_GEMMA, upstream: UPSTREAM_GEMMA },
    { name: 'region/auto/key', model: 'eu/auto/gemma-4-31b', requested: 'eu/auto/gemma-4-31b', routed: ROUTE_GEMMA, upstream: UPSTREAM_GEMMA },
    { name: 'auto/provider/key', model: 'auto/privatemode/gemma-4-31b', requested: 'auto/privatemode/gemma-4-31b', routed: ROUTE_GEMMA, upstream: UPSTREAM_GEMMA },
    { name: 'hints ignored for a compound id', model: ROUTE_GEMMA, extra: { region: 'global', provider: 'fake' }, requested: ROUTE_GEMMA, routed: ROUTE_GEMMA, upstream: UPSTREAM_GEMMA },
  ];
  for (const c of cases) {
    test(`routing: ${c.name} (${c.model}${c.extra ? ' ' + JSON.stringify(c.extra) : ''})`, async () => {
      await s.fake.reset();
      const res = await s.chat(chatBody(c.model, c.extra));
      const text = await res.text();
      assert.equal(res.status, 200, text);
      const body = JSON.parse(text);
      assertTresor(body.tresor, c.requested, c.routed);
      const reqs = await s.fake.requests();
      assert.equal(reqs.length, 1, 'exactly one upstream request');
      assert.equal(JSON.parse(reqs[0].body).model, c.upstream);
    });
  }
});

describe('request framing', { timeout: 60_000 }, () => {
  test('a chunked request body sent slowly, head split mid-line, is answered normally', async () => {
    const body = Buffer.from(JSON.stringify(chatBody(ROUTE_GPT, { temperature: 0.5 })));
    const conn = await RawConnection.connect(s.gw.port);
    try {
      const head = requestHead('POST', '/v1/chat/completions', [
        ['Authorization', `Bearer ${s.key}`],
        ['Content-Type', 'application/json'],
        ['Transfer-Encoding', 'chunked'],
      ]);
      const cut = head.indexOf('Authorization') + 10;
      await conn.write(head.slice(0, cut));
      await delay(100); // a slow client, not synchronisation
      await conn.write(head.slice(cut));
      const parts = [body.subarray(0, 7), body.subarray(7, 40), body.subarray(40)];
      for (const p of parts) {
        await conn.write(chunk(p));
        await delay(50);
      }
      await conn.write('0\r\n\r\n');
      const res = await conn.readResponse();
      assert.equal(res.status, 200, res.text);
      const json = res.json();
      assert.equal(json.choices[0].message.content, CONTENT);
      assert.equal(json.tresor.routed_model, ROUTE_GPT);
    } finally {
      conn.destroy();
    }
  });

  test('keep-alive: several requests over one client connection', async () => {
    const conn = await RawConnection.connect(s.gw.port);
    try {
      const post = (model) => {
        const b = JSON.stringify(chatBody(model));
        return requestHead('POST', '/v1/chat/completions', [
          ['Authorization', `Bearer ${s.key}`],
          ['Content-Type', 'application/json'],
          ['Content-Length', String(Buffer.byteLength(b))],
        ]) + b;
      };
      const seen = [];
      for (const model of [ROUTE_GPT, ROUTE_GEMMA, 'gpt-oss-120b']) {
        assert.ok(await conn.write(post(model)), 'write on the kept-alive connection');
        const res = await conn.readResponse();
        assert.equal(res.status, 200, res.text);
        assert.doesNotMatch(res.headers.connection || '', /close/i);
        seen.push(res.json().tresor.routed_model);
      }
      await conn.write(requestHead('GET', '/healthz', []));
      const h = await conn.readResponse({ method: 'GET' });
      assert.equal(h.status, 200);
      assert.deepEqual(seen, [ROUTE_GPT, ROUTE_GEMMA, ROUTE_GPT]);
      assert.equal(conn.ended || conn.closed, false, 'gateway must keep the connection open');
    } finally {
      conn.destroy();
    }
  });
});
