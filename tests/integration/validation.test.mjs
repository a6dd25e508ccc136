// Request validation: 400 envelopes with code + param for every core field, failover and the
// X-Tresor-Timeout-Seconds header; 404 for unknown routes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, chatBody, readErrorEnvelope, rawRequest, ROUTE_GPT, ROUTE_GEMMA, ROUTE_WHISPER,
} from './harness.mjs';

let s;
let forwardedBefore;
before(async () => {
  s = await startStack();
  forwardedBefore = (await s.fake.stats()).requests;
});
after(stopAll);

const MSG = [{ role: 'user', content: 'hi' }];
const IR = 'invalid_request_error';

// [name, body, status, code, param]
const bodyCases = [
  ['model missing', { messages: MSG }, 400, 'missing_required_parameter', 'model'],
  ['messages missing', { model: ROUTE_GPT }, 400, 'missing_required_parameter', 'messages'],
  ['model is a number', { model: 123, messages: MSG }, 400, 'invalid_parameter', 'model'],
  ['model is an array', { model: [ROUTE_GPT], messages: MSG }, 400, 'invalid_parameter', 'model'],
  ['model is an object', { model: { id: ROUTE_GPT }, messages: MSG }, 400, 'invalid_parameter', 'model'],
  ['messages is a string', { model: ROUTE_GPT, messages: 'hi' }, 400, 'invalid_parameter', /^messages/],
  ['messages is an object', { model: ROUTE_GPT, messages: { role: 'user' } }, 400, 'invalid_parameter', /^messages/],
  ['messages is empty', { model: ROUTE_GPT, messages: [] }, 400, 'invalid_parameter', /^messages/],
  ['messages element is a string', { model: ROUTE_GPT, messages: ['hi'] }, 400, 'invalid_parameter', /^messages/],
  ['messages element is null', { model: ROUTE_GPT, messages: [null] }, 400, 'invalid_parameter', /^messages/],
  ['message without role', { model: ROUTE_GPT, messages: [{ content: 'hi' }] }, 400, 'missing_required_parameter', /^messages\[0\]\.role$/],
  ['message role is a number', { model: ROUTE_GPT, messages: [{ role: 1, content: 'hi' }] }, 400, 'invalid_parameter', /^messages/],
  ['second message bad', { model: ROUTE_GPT, messages: [...MSG, { role: null }] }, 400, 'invalid_parameter', /^messages/],
  ['stream is a string', chatBody(ROUTE_GPT, { stream: 'true' }), 400, 'invalid_parameter', 'stream'],
  ['stream is a number', chatBody(ROUTE_GPT, { stream: 1 }), 400, 'invalid_parameter', 'stream'],
  ['temperature is a string', chatBody(ROUTE_GPT, { temperature: '0.5' }), 400, 'invalid_parameter', 'temperature'],
  ['temperature below 0', chatBody(ROUTE_GPT, { temperature: -0.1 }), 400, 'invalid_parameter', 'temperature'],
  ['temperature above 2', chatBody(ROUTE_GPT, { temperature: 2.01 }), 400, 'invalid_parameter', 'temperature'],
  ['temperature is a bool', chatBody(ROUTE_GPT, { temperature: true }), 400, 'invalid_parameter', 'temperature'],
  ['max_tokens zero', chatBody(ROUTE_GPT, { max_tokens: 0 }), 400, 'invalid_parameter', 'max_tokens'],
  ['max_tokens negative', chatBody(ROUTE_GPT, { max_tokens: -5 }), 400, 'invalid_parameter', 'max_tokens'],
  ['max_tokens fractional', chatBody(ROUTE_GPT, { max_tokens: 1.5 }), 400, 'invalid_parameter', 'max_tokens'],
  ['max_tokens is a string', chatBody(ROUTE_GPT, { max_tokens: '10' }), 400, 'invalid_parameter', 'max_tokens'],
  ['failover is a number', chatBody(ROUTE_GPT, { failover: 3 }), 400, 'invalid_failover', 'failover'],
  ['failover is an object', chatBody(ROUTE_GPT, { failover: { a: ROUTE_GEMMA } }), 400, 'invalid_failover', 'failover'],
  ['failover has 6 entries', chatBody(ROUTE_GPT, { failover: Array.from({ length: 6 }, (_, i) => `eu/p${i}/gemma-4-31b`) }), 400, 'invalid_failover', 'failover'],
  ['failover entry not a string', chatBody(ROUTE_GPT, { failover: [ROUTE_GEMMA, 7] }), 400, 'invalid_failover', 'failover'],
  ['failover entry is a bare key', chatBody(ROUTE_GPT, { failover: ['gemma-4-31b'] }), 400, 'invalid_failover', 'failover'],
  ['failover entry has an empty segment', chatBody(ROUTE_GPT, { failover: ['eu//gemma-4-31b'] }), 400, 'invalid_failover', 'failover'],
  ['failover single malformed string', chatBody(ROUTE_GPT, { failover: 'a/b' }), 400, 'invalid_failover', 'failover'],
  ['model is a/b', chatBody('a/b'), 400, 'invalid_parameter', 'model'],
  ['model is a//c', chatBody('a//c'), 400, 'invalid_parameter', 'model'],
  ['model has 4 segments', chatBody('eu/fake/gpt-oss-120b/x'), 400, 'invalid_parameter', 'model'],
  ['model is empty', chatBody(''), 400, ['invalid_parameter', 'missing_required_parameter'], 'model'],
  ['unknown route', chatBody('eu/fake/no-such-model'), 404, 'model_not_found', undefined],
  ['unknown bare key', chatBody('no-such-model'), 404, 'model_not_found', undefined],
  ['unknown provider', chatBody('eu/nobody/gpt-oss-120b'), 404, 'model_not_found', undefined],
  ['transcription route on chat', chatBody(ROUTE_WHISPER), 400, 'model_not_supported', undefined],
];

describe('body validation', { timeout: 60_000 }, () => {
  for (const [name, body, status, code, param] of bodyCases) {
    test(`${name} → ${status} ${code}`, async () => {
      const err = await readErrorEnvelope(await s.chat(body), { status, type: IR, code, param });
      assert.ok(!err._text.includes(s.providerKey));
    });
  }

  // The valid edges of the same rules must pass (so the 400s above are not blanket rejections).
  const accepted = [
    ['temperature 0', { temperature: 0 }],
    ['temperature 2', { temperature: 2 }],
    ['temperature 1.3', { temperature: 1.3 }],
    ['max_tokens 1', { max_tokens: 1 }],
    ['stream false', { stream: false }],
    ['tool and developer roles, null and array content', {
      messages: [
        { role: 'developer', content: 'be nice' },
        { role: 'user', content: [{ type: 'text', text: 'hi' }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: 'ok' },
      ],
    }],
    ['failover as a single string', { failover: ROUTE_GEMMA }],
    ['failover empty array', { failover: [] }],
    ['failover with 5 entries incl. duplicates and the primary', { failover: [ROUTE_GEMMA, ROUTE_GEMMA, ROUTE_GPT, 'auto/auto/gemma-4-31b', 'eu/auto/gpt-oss-120b'] }],
  ];
  for (const [name, extra] of accepted) {
    test(`accepted: ${name}`, async () => {
      const r = await s.chat(chatBody(ROUTE_GPT, extra));
      const text = await r.text();
      assert.equal(r.status, 200, text);
      assert.equal(JSON.parse(text).tresor.routed_model, ROUTE_GPT);
    });
  }

  test('rejected requests never reach the upstream', async () => {
    const st = await s.fake.stats();
    assert.equal(st.requests - forwardedBefore, accepted.length,
      `only the ${accepted.length} accepted requests may be forwarded`);
  });
});

describe('X-Tresor-Timeout-Seconds', { timeout: 60_000 }, () => {
  const H = 'X-Tresor-Timeout-Seconds';
  const invalid = ['', ' ', 'abc', '1.5', '5.0', '+5', '0x10', '0', '00', '-1', '-0', '5s', '1e2', '6 0', '30,30'];
  for (const v of invalid) {
    test(`invalid value ${JSON.stringify(v)} → 400 invalid_timeout_override`, async () => {
      // Raw socket: fetch would normalise some of these values.
      const body = JSON.stringify(chatBody(ROUTE_GPT));
      const { res, conn } = await rawRequest(s.gw.port, {
        headers: [['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json'], [H, v]],
        body,
      });
      conn.destroy();
      await readErrorEnvelope(res, { status: 400, type: IR, code: 'invalid_timeout_override', param: H });
    });
  }
  test('header sent twice → 400 invalid_timeout_override', async () => {
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    for (const [a, b] of [['30', '30'], ['30', '60']]) {
      const { res, conn } = await rawRequest(s.gw.port, {
        headers: [['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json'], [H, a], [H, b]],
        body,
      });
      conn.destroy();
      await readErrorEnvelope(res, { status: 400, code: 'invalid_timeout_override', param: H });
    }
  });

  test('invalid header is rejected on streams too', async () => {
    const r = await s.chat(chatBody(ROUTE_GPT, { stream: true }), { headers: { [H]: 'soon' } });
    await readErrorEnvelope(r, { status: 400, code: 'invalid_timeout_override', param: H });
  });

  for (const v of ['1', '30', ' 45 ', '\t600', '601', '86400', '99999999999999999999999']) {
    test(`valid value ${JSON.stringify(v)} → 200`, async () => {
      const body = JSON.stringify(chatBody(ROUTE_GPT));
      const { res, conn } = await rawRequest(s.gw.port, {
        headers: [['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json'], [H, v]],
        body,
      });
      conn.destroy();
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json().tresor.routed_model, ROUTE_GPT);
    });
  }
});

describe('Content-Type of a chat request (spec §1.1, §6.3)', { timeout: 60_000 }, () => {
  const body = JSON.stringify(chatBody(ROUTE_GPT));
  async function send(contentType) {
    const headers = [['Authorization', `Bearer ${s.key}`]];
    if (contentType !== undefined) headers.push(['Content-Type', contentType]);
    const { res, conn } = await rawRequest(s.gw.port, { headers, body });
    conn.destroy();
    return res;
  }

  for (const ct of ['application/json', 'application/json; charset=utf-8', 'Application/JSON', 'APPLICATION/JSON;CHARSET=UTF-8', ' application/json ', undefined]) {
    test(`accepted: ${ct === undefined ? 'no Content-Type' : JSON.stringify(ct)}`, async () => {
      const res = await send(ct);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json().tresor.routed_model, ROUTE_GPT);
    });
  }

  for (const ct of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x', 'application/jsonx', 'application/json-patch+json', 'json']) {
    test(`rejected before the upstream: ${JSON.stringify(ct)} → 400 invalid_json naming application/json`, async () => {
      const before = (await s.fake.stats()).requests;
      const err = await readErrorEnvelope(await send(ct), { status: 400, type: IR, code: 'invalid_json' });
      assert.match(err._text, /application\/json/);
      assert.equal((await s.fake.stats()).requests, before, 'nothing forwarded');
    });
  }
});
