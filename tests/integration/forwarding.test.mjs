// What the upstream receives: provider key (never the client's), rewritten model, Tresor-only
// fields stripped, every other field byte-for-byte as the client sent it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, stopAll, readSse, parseEventJson, ROUTE_GPT, ROUTE_GEMMA, UPSTREAM_GPT } from './harness.mjs';

let s;
before(async () => { s = await startStack(); });
after(stopAll);

function escapeRe(str) { return str.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

// Hand-written bytes: odd spacing, a trailing zero, a big integer a double would round, escapes
// and raw UTF-8, nested containers. Whitespace inside a value must survive unchanged.
const X_CUSTOM = '{"a": [1, 2.50, "é\\u00e9"]}';
const SEED = '12345678901234567890';
const TEMPERATURE = '0.70';
const STOP = '[ "\\n\\n" , "END" ]';
const MESSAGES = '[{"role":"system","content":"Be brief."},{"role": "user", "content": [{"type":"text","text":"Grüße \\ud83d\\ude00"}]},{"role":"tool","tool_call_id":"c1","content":null}]';
const RAW_BODY =
  '{"model": "' + ROUTE_GPT + '",\n' +
  '  "messages": ' + MESSAGES + ',\n' +
  '  "x_custom": ' + X_CUSTOM + ',\n' +
  '  "failover": ["' + ROUTE_GEMMA + '"],\n' +
  '  "region": "eu",\n' +
  '  "provider": "fake",\n' +
  '  "temperature": ' + TEMPERATURE + ',\n' +
  '  "seed": ' + SEED + ',\n' +
  '  "stop": ' + STOP + ',\n' +
  '  "max_tokens": 64,\n' +
  '  "response_format": {"type":"json_object"},\n' +
  '  "user": "customer-42"}';

describe('forwarding to the upstream', { timeout: 60_000 }, () => {
  let rec;
  let recBody;

  before(async () => {
    await s.fake.reset();
    const res = await s.chat(Buffer.from(RAW_BODY, 'utf8'));
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const reqs = await s.fake.requests();
    assert.equal(reqs.length, 1, `exactly one upstream request, got ${reqs.length}`);
    rec = reqs[0];
    assert.equal(typeof rec.body, 'string', 'the fake records the raw body as a string');
    recBody = rec.body;
  });

  test('POST {base_url}/chat/completions', () => {
    assert.equal(rec.method, 'POST');
    assert.equal(rec.target, '/v1/chat/completions');
  });

  test('upstream sees the provider api key, never the client key', () => {
    assert.equal(rec.headers.authorization, `Bearer ${s.providerKey}`);
    const everything = JSON.stringify(rec);
    assert.ok(!everything.includes(s.key), 'client tr- key leaked to the upstream');
    assert.ok(!everything.includes(s.key.slice(3)), 'client key material leaked to the upstream');
  });

  test('model replaced by the route upstream_model; Tresor-only fields stripped', () => {
    const body = JSON.parse(recBody);
    assert.equal(body.model, UPSTREAM_GPT);
    for (const f of ['failover', 'region', 'provider']) {
      assert.ok(!(f in body), `${f} must not be forwarded: ${recBody}`);
    }
    assert.ok(!/"failover"\s*:/.test(recBody));
    const expectKeys = ['model', 'messages', 'x_custom', 'temperature', 'seed', 'stop', 'max_tokens', 'response_format', 'user'];
    assert.deepEqual(Object.keys(body).sort(), expectKeys.sort());
  });

  const verbatim = [
    ['x_custom', X_CUSTOM],
    ['messages', MESSAGES],
    ['temperature', TEMPERATURE],
    ['seed', SEED],
    ['stop', STOP],
    ['response_format', '{"type":"json_object"}'],
    ['user', '"customer-42"'],
    ['max_tokens', '64'],
  ];
  for (const [field, bytes] of verbatim) {
    test(`"${field}" forwarded byte-for-byte`, () => {
      const re = new RegExp('"' + field + '"\\s*:\\s*' + escapeRe(bytes) + '\\s*[,}]');
      assert.match(recBody, re, `upstream body: ${recBody}`);
    });
  }

  test('upstream Content-Length matches the forwarded body', () => {
    const cl = rec.headers['content-length'];
    if (cl !== undefined) assert.equal(Number(cl), Buffer.byteLength(recBody, 'utf8'));
    else assert.match(rec.headers['transfer-encoding'] || '', /chunked/i);
  });

  test('stream:true is forwarded as sent', async () => {
    await s.fake.reset();
    const res = await s.chat('{"model":"gpt-oss-120b","stream": true ,"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}');
    assert.equal(res.status, 200);
    const { events } = await readSse(res);
    const usageChunks = events.map(parseEventJson).filter((e) => e && typeof e === 'object' && e.usage != null);
    assert.equal(usageChunks.length, 1, 'a client that asked for usage sees the usage chunk once');
    const [r] = await s.fake.requests();
    const body = JSON.parse(r.body);
    assert.equal(body.stream, true);
    assert.equal(body.model, UPSTREAM_GPT);
    assert.match(r.body, /"stream_options"\s*:\s*\{"include_usage":true\}/);
    assert.equal(r.headers.authorization, `Bearer ${s.providerKey}`);
  });

  // Every stream is metered: the upstream is asked for usage even when the client did not ask
  // (the SDKs' default), and the usage chunk it then sends is not shown to that client.
  test('a stream without stream_options: the upstream is asked for usage, the client sees no usage chunk', async () => {
    await s.fake.reset();
    const res = await s.chat('{"model":"gpt-oss-120b","stream":true,"messages":[{"role":"user","content":"x"}]}');
    assert.equal(res.status, 200);
    const { raw, events } = await readSse(res);
    const [r] = await s.fake.requests();
    assert.deepEqual(JSON.parse(r.body).stream_options, { include_usage: true }, `upstream body: ${r.body}`);
    assert.match(raw, /data: \[DONE\]/);
    const chunks = events.map(parseEventJson).filter((e) => e && typeof e === 'object');
    assert.ok(chunks.some((c) => c.choices?.[0]?.delta?.content), 'the answer reached the client');
    assert.deepEqual(chunks.filter((c) => c.usage != null || c.choices?.length === 0), [], 'no usage chunk');
  });

  test("the client's other stream_options members are forwarded beside include_usage", async () => {
    await s.fake.reset();
    const res = await s.chat('{"model":"gpt-oss-120b","stream":true,"messages":[{"role":"user","content":"x"}],' +
      '"stream_options":{"include_obfuscation":false}}');
    assert.equal(res.status, 200);
    await res.text();
    const [r] = await s.fake.requests();
    assert.deepEqual(JSON.parse(r.body).stream_options, { include_obfuscation: false, include_usage: true },
      `upstream body: ${r.body}`);
  });
});
