// Fuzz-style table of malformed bodies: each gets a 400 envelope, nothing reaches the
// upstream, and afterwards the gateway is still alive and answering /healthz.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, stopAll, readErrorEnvelope, rawRequest, ROUTE_GPT } from './harness.mjs';

let s;
before(async () => { s = await startStack(); });
after(stopAll);

const VALID = `{"model":"${ROUTE_GPT}","messages":[{"role":"user","content":"Hallo, wie geht's? \\u00e9"}],"temperature":0.5,"max_tokens":32,"stream":false,"x":{"y":[1,2.5e-3,true,null]}}`;
const MSG = '[{"role":"user","content":"hi"}]';
const pre = `{"model":"${ROUTE_GPT}","messages":${MSG}`;
const b = (s2) => Buffer.from(s2, 'latin1'); // latin1 keeps the explicitly written bytes
const withBytes = (...parts) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));

const JSON_ERR = ['invalid_json'];
const PARAM_ERR = ['invalid_parameter', 'invalid_json'];

// [name, body Buffer, allowed codes]
const cases = [];

// 1. The valid body truncated at every byte offset.
for (let i = 0; i < VALID.length; i++) {
  cases.push([`truncated at ${i}/${VALID.length}: ${JSON.stringify(VALID.slice(Math.max(0, i - 12), i))}`, Buffer.from(VALID.slice(0, i)), JSON_ERR]);
}

// 2. Not an object.
for (const body of ['[]', 'null', '"x"', '42', 'true', '[{"model":"x"}]', ' ', '\n']) {
  cases.push([`top level ${JSON.stringify(body)}`, Buffer.from(body), JSON_ERR]);
}

// 3. Syntax errors.
for (const body of [
  `${pre}} x`, `${pre}},`, `${pre}}}`, `${pre},}`, `${pre},"a":}`, `${pre},"a"}`, `${pre},a:1}`,
  `{'model':'${ROUTE_GPT}'}`, `${pre},"t":NaN}`, `${pre},"t":Infinity}`, `${pre},"t":-Infinity}`,
  `${pre},"t":01}`, `${pre},"t":1.}`, `${pre},"t":.5}`, `${pre},"t":1e}`, `${pre},"t":--1}`, `${pre},"t":+1}`,
  `${pre},"s":"\\x41"}`, `${pre},"s":"\\u12"}`, `${pre},"s":"\\uZZZZ"}`, `${pre},"s":"unterminated}`,
  `${pre} /* comment */}`, `${pre},"t":tru}`, `${pre},"t":nul}`, `{"model":"${ROUTE_GPT}" "messages":${MSG}}`,
  `{"model":"${ROUTE_GPT}",,"messages":${MSG}}`, `${pre}]`, `[${pre}}`,
]) {
  cases.push([`syntax error ...${JSON.stringify(body.slice(-30))}`, Buffer.from(body), JSON_ERR]);
}
cases.push(['raw control char in a string', withBytes(`${pre},"s":"a`, Buffer.from([0x01]), 'b"}'), JSON_ERR]);
cases.push(['raw newline in a string', withBytes(`${pre},"s":"a\nb"}`), JSON_ERR]);
cases.push(['NUL byte after the object', withBytes(`${pre}}`, Buffer.from([0x00])), JSON_ERR]);

// 4. Invalid UTF-8 inside strings (message content, unknown field, key).
const badUtf8 = {
  'lone 0xff': [0xff],
  'lone continuation 0x80': [0x80],
  'truncated 2-byte 0xc3': [0xc3],
  'bad continuation c3 28': [0xc3, 0x28],
  'overlong slash c0 af': [0xc0, 0xaf],
  'overlong e0 80 af': [0xe0, 0x80, 0xaf],
  'UTF-8 encoded surrogate ed a0 80': [0xed, 0xa0, 0x80],
  'truncated 3-byte e2 82': [0xe2, 0x82],
  'code point above U+10FFFF f4 90 80 80': [0xf4, 0x90, 0x80, 0x80],
  '0xfe': [0xfe],
};
for (const [name, bytes] of Object.entries(badUtf8)) {
  cases.push([`invalid UTF-8 (${name}) in message content`,
    withBytes(`{"model":"${ROUTE_GPT}","messages":[{"role":"user","content":"ab`, Buffer.from(bytes), 'cd"}]}'), JSON_ERR]);
}
cases.push(['invalid UTF-8 in an unknown field', withBytes(`${pre},"x_custom":"`, Buffer.from([0xff, 0xfe]), '"}'), JSON_ERR]);
cases.push(['invalid UTF-8 in a key', withBytes(`${pre},"k`, Buffer.from([0xc0, 0x80]), '":1}'), JSON_ERR]);

// 5. Deep nesting.
const deep = 100_000;
cases.push([`${deep} x [ as the whole body`, Buffer.from('['.repeat(deep)), JSON_ERR]);
cases.push([`${deep} x [ ] nested in an unknown field`, Buffer.from(`${pre},"x":${'['.repeat(deep)}${']'.repeat(deep)}}`), JSON_ERR]);
cases.push([`${deep} x {"a": nested in an unknown field`, Buffer.from(`${pre},"x":${'{"a":'.repeat(deep)}1${'}'.repeat(deep)}}`), JSON_ERR]);
cases.push([`${deep} x [ nested in messages content`, Buffer.from(`{"model":"${ROUTE_GPT}","messages":[{"role":"user","content":${'['.repeat(deep)}${']'.repeat(deep)}}]}`), JSON_ERR]);

// 6. Wrong types for each core field, and huge numbers.
const wrong = {
  model: ['null', 'true', '1', '1e999', '{}', '[]', '[""]'],
  messages: ['null', 'true', '1', '"hi"', '{}', '[]', '[1]', '[[]]', '["user"]', '[{"role":null}]', '[{"role":[]}]', '[{"role":{}}]'],
  stream: ['"yes"', '1', '0', '{}', '[]', '"true"', '1e999'],
  temperature: ['"1"', 'true', '{}', '[]', '1e999', '-1e999', '99999999999999999999999', '2.0000001', '-0.0000001', '3'],
  max_tokens: ['"1"', 'true', '{}', '[]', '0', '-1', '1.5', '1e999', '99999999999999999999999', '-99999999999999999999999', '0.5'],
};
for (const [field, values] of Object.entries(wrong)) {
  for (const v of values) {
    const fields = { model: `"${ROUTE_GPT}"`, messages: MSG, [field]: v };
    const body = '{' + Object.entries(fields).map(([k, val]) => `"${k}":${val}`).join(',') + '}';
    const codes = field === 'model' || field === 'messages'
      ? [...PARAM_ERR, 'missing_required_parameter'] // null may count as missing
      : PARAM_ERR;
    cases.push([`${field} = ${v}`, Buffer.from(body), codes, field]);
  }
}

// 7. The empty body.
cases.push(['empty body', Buffer.alloc(0), JSON_ERR]);

describe('malformed request bodies', { timeout: 120_000 }, () => {
  let forwardedBefore;
  before(async () => { forwardedBefore = (await s.fake.stats()).requests; });

  test(`${cases.length} malformed bodies → 400 envelope each, gateway survives`, async () => {
    const failures = [];
    for (const [name, body, codes, field] of cases) {
      try {
        const { res, conn } = await rawRequest(s.gw.port, {
          headers: [['Authorization', `Bearer ${s.key}`], ['Content-Type', 'application/json'], ['Connection', 'close']],
          body,
          timeoutMs: 10_000,
        });
        conn.destroy();
        const err = await readErrorEnvelope(res, { status: 400, type: 'invalid_request_error', code: codes });
        // param names the field, or a path inside it (e.g. "messages[0].role").
        const p = err.param;
        const namesField = typeof p === 'string' && (p === field || p.startsWith(`${field}[`) || p.startsWith(`${field}.`));
        if (field && err.code !== 'invalid_json' && !namesField) {
          throw new Error(`param should name ${field}, got ${JSON.stringify(p)}`);
        }
      } catch (e) {
        failures.push(`${name}: ${e.message}`);
        if (!s.gw.proc.alive) {
          failures.push(`GATEWAY EXITED after "${name}": ${JSON.stringify(s.gw.proc.exitInfo)}`);
          break;
        }
      }
    }
    assert.deepEqual(failures, [], `${failures.length} of ${cases.length} cases failed:\n${failures.join('\n')}`);
  });

  test('lone surrogate escapes may be accepted; either way no crash', async () => {
    const body = `{"model":"${ROUTE_GPT}","messages":[{"role":"user","content":"\\ud800 and \\udfff and \\udc00\\ud800"}]}`;
    const r = await s.chat(body);
    const text = await r.text();
    if (r.status !== 200) {
      await readErrorEnvelope({ status: r.status, text }, { status: 400, code: 'invalid_json' });
    } else {
      forwardedBefore += 1;
      assert.equal(JSON.parse(text).tresor.routed_model, ROUTE_GPT);
    }
  });

  test('nothing malformed reached the upstream', async () => {
    assert.equal((await s.fake.stats()).requests, forwardedBefore);
  });

  test('gateway still alive and healthy afterwards', async () => {
    assert.ok(s.gw.proc.alive, 'gateway process exited');
    const r = await fetch(s.gw.url('/healthz'));
    await r.arrayBuffer();
    assert.equal(r.status, 200);
    const ok = await s.chat({ model: ROUTE_GPT, messages: [{ role: 'user', content: 'still there?' }] });
    assert.equal(ok.status, 200, await ok.text());
  });
});
