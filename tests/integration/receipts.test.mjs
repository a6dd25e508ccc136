// Receipts (spec §5, receipts issue): issuance and opt-out, GET /v1/receipts/{id} scoping and
// errors, the JWKS endpoints, receipts of streams (stored before [DONE]), no receipt for failed
// requests or streams, X-Tresor-Nonce, failover claims, TTL expiry, signing-key rotation, lazy
// signing (receipts.signing: on_fetch by default, at_issue) and time-ordered (UUIDv7) ids.
// Receipts are verified with node:crypto (harness verifyJws); the client suite verifies them
// with `jose` as well. Stored rows are counted with the sqlite3 CLI in the gateway's default
// store (state/tresor.db in its private config dir).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  startStack, startRoutingStack, stopAll, chatBody, makeKey, sha256Hex, readErrorEnvelope, readSse, parseEventJson,
  fetchReceipt, fetchJwks, verifyJws, decodeJws, stripTresorMember, streamResponseSha256, sseDataPayloads,
  sha256HexBytes, defaultStorePath, receiptRowCount, sqliteQuery, b64urlDecode, restartGateway, waitFor,
  RECEIPT_ID_RE, RECEIPT_CLAIMS, ROUTE_GPT, ROUTE_GEMMA, assertReceiptShape,
} from './harness.mjs';

const CONTENT = 'Hello from the fake upstream, with receipts.';
let s; // customers: acme (keys s.key and KEY_A2), globex (KEY_B)
const KEY_A2 = makeKey();
const KEY_B = makeKey();
let dbPath;
let jwks;

before(async () => {
  s = await startStack({
    content: CONTENT,
    fakeOpts: { chunks: 4 },
    configHook: (c) => {
      c.auth.keys.push({ sha256: sha256Hex(KEY_A2), customer: 'acme' }, { sha256: sha256Hex(KEY_B), customer: 'globex' });
      return c;
    },
  });
  dbPath = defaultStorePath(s.gw);
  jwks = (await fetchJwks(s.gw)).json;
});
after(stopAll);
beforeEach(async () => { await s.fake.reset(); });

const nowS = () => Math.floor(Date.now() / 1000);

/** POST a chat body (object or exact string) with `key`; returns { res, text, json }. */
async function chatWith(key, body, headers = {}) {
  const res = await fetch(s.gw.url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { res, status: res.status, text, json };
}

/** A successful non-stream completion; returns its receipt id and the exact bytes. */
async function completion(key = s.key, { body = chatBody(ROUTE_GPT), headers = {} } = {}) {
  const sent = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await chatWith(key, sent, headers);
  assert.equal(r.status, 200, r.text);
  const id = r.json.tresor?.receipt_id;
  assert.match(id ?? '', RECEIPT_ID_RE, `tresor.receipt_id: ${r.text}`);
  return { id, sent, ...r };
}

/** A 200 fetch of a receipt: {id, receipt} (+ log fields); verified against `keys`. Returns the decoded JWS. */
async function fetchVerified(gw, key, id, keys = jwks) {
  const r = await fetchReceipt(gw, key, id);
  assert.equal(r.status, 200, `GET /v1/receipts/${id}: ${r.text}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assertReceiptShape(r.json);
  assert.equal(r.json.id, id);
  const d = verifyJws(r.json.receipt, keys);
  assert.equal(d.payload.jti, id);
  return { ...d, jws: r.json.receipt, text: r.text };
}

async function expectNotFound(gw, key, id) {
  const r = await fetchReceipt(gw, key, id);
  const err = await readErrorEnvelope({ status: r.status, text: r.text },
    { status: 404, code: 'receipt_not_found', type: 'invalid_request_error' });
  assert.ok(!r.text.includes('"receipt"'), 'no receipt in a 404');
  return err._text;
}

/** Streams a chat request; returns { status, events (parsed JSON or '[DONE]'), raw, afterDone }. */
async function streamChat(body, { headers = {}, key = s.key, onDone } = {}) {
  const res = await fetch(s.gw.url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  if (!/^text\/event-stream/.test(res.headers.get('content-type') || '')) {
    return { status: res.status, text: await res.text() };
  }
  let afterDone;
  const parsed = [];
  const { raw } = await readSse(res, {
    onEvent: (ev) => {
      parsed.push(ev.data === '[DONE]' ? '[DONE]' : parseEventJson(ev) ?? ev.data);
      // The moment [DONE] is parsed, before anything else: the receipt must already be stored.
      if (ev.data === '[DONE]' && onDone) afterDone = onDone(parsed);
      return false;
    },
  });
  return { status: res.status, events: parsed, raw, afterDone: await afterDone };
}

const finishChunk = (events) => events.find((e) => typeof e === 'object' && e.choices?.[0]?.finish_reason);

describe('receipts: issuance, fetch and verification', { timeout: 60_000 }, () => {
  test('a JSON completion carries tresor.receipt_id; the fetched receipt verifies with exactly the documented header and claims', async () => {
    const t0 = nowS();
    const body = chatBody(ROUTE_GEMMA, { messages: [{ role: 'user', content: 'one two three' }] });
    const r = await completion(s.key, { body });
    const t1 = nowS();
    assert.deepEqual(Object.keys(r.json.tresor), ['receipt_id', 'requested_route', 'routed_model', 'failover']);
    const d = await fetchVerified(s.gw, s.key, r.id);
    assert.equal(d.headerText, '{"alg":"ES256","kid":"router-receipt-1"}');
    assert.equal(d.signature.length, 64, 'raw R‖S');
    assert.deepEqual(Object.keys(d.payload), RECEIPT_CLAIMS, 'claims in order, no nonce');
    const p = d.payload;
    assert.ok(Number.isInteger(p.iat) && p.iat >= t0 && p.iat <= t1, `iat ${p.iat} in [${t0}, ${t1}]`);
    assert.equal(p.receipt_type, 'message');
    assert.equal(p.requested_route, ROUTE_GEMMA);
    assert.equal(p.routed_model, ROUTE_GEMMA);
    assert.equal(p.failover, false);
    assert.equal(p.endpoint, '/v1/chat/completions');
    assert.equal(p.prompt_tokens, r.json.usage.prompt_tokens);
    assert.equal(p.completion_tokens, r.json.usage.completion_tokens);
    assert.equal(p.prompt_tokens, 3);
    assert.equal(p.usage_estimated, false, 'the upstream reported usage');
    assert.ok(!('cost' in p) && !('currency' in p), 'an unpriced route: no cost claim');
    assert.equal(p.request_sha256, sha256HexBytes(r.sent));
    const cut = stripTresorMember(r.text);
    assert.deepEqual(cut.tresor, r.json.tresor);
    assert.equal(p.response_sha256, sha256HexBytes(cut.stripped));
    // Fetching again gives the same stored JWS.
    const again = await fetchReceipt(s.gw, s.key, r.id);
    assert.equal(again.json.receipt, d.jws);
  });

  test('every completion gets a fresh receipt id; one row per receipt in the store', async () => {
    const before = receiptRowCount(dbPath);
    const ids = new Set();
    for (let i = 0; i < 5; i++) ids.add((await completion()).id);
    assert.equal(ids.size, 5);
    assert.equal(receiptRowCount(dbPath), before + 5);
  });
});

describe('receipts: GET /v1/receipts/{id} scoping and errors', { timeout: 60_000 }, () => {
  test("scoped to the key's customer: a same-customer key fetches it, another customer's key gets 404", async () => {
    const a = await completion(s.key);
    const own = await fetchVerified(s.gw, s.key, a.id);
    const sibling = await fetchVerified(s.gw, KEY_A2, a.id);
    assert.equal(sibling.jws, own.jws, 'key A2 of the same customer sees the same receipt');
    const foreign = await expectNotFound(s.gw, KEY_B, a.id);
    const unknown = await expectNotFound(s.gw, KEY_B, randomUUID());
    assert.equal(foreign, unknown, "another customer's receipt and an unknown id get the same body");

    // And the other way round: globex's receipt is invisible to both acme keys.
    const b = await completion(KEY_B);
    await fetchVerified(s.gw, KEY_B, b.id);
    assert.equal(await expectNotFound(s.gw, s.key, b.id), unknown);
    assert.equal(await expectNotFound(s.gw, KEY_A2, b.id), unknown);
    // A2 issues, A fetches.
    const a2 = await completion(KEY_A2);
    await fetchVerified(s.gw, s.key, a2.id);
  });

  test('unknown and malformed ids → 404 receipt_not_found (same body as unknown)', async () => {
    const real = (await completion()).id;
    const unknown = await expectNotFound(s.gw, s.key, randomUUID());
    const malformed = [
      'x',
      'not-a-uuid',
      real.replaceAll('-', ''),
      `${real}0`,
      real.slice(0, -1),
      `${real.slice(0, -1)}g`,
      `${real}/`,
      `{${real}}`,
      encodeURIComponent(`${real}' OR '1'='1`),
      encodeURIComponent("' OR 1=1; --"),
      'a'.repeat(3000),
    ];
    for (const id of malformed) {
      const body = await expectNotFound(s.gw, s.key, id);
      assert.equal(body, unknown, `id ${JSON.stringify(id.slice(0, 60))}`);
    }
    await fetchVerified(s.gw, s.key, real); // still there
  });

  test('an id in upper or mixed case finds the receipt (UUIDs are case-insensitive, RFC 9562); the answer echoes the stored lowercase id', async () => {
    const { id } = await completion();
    const mixed = [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join('');
    for (const asked of [id.toUpperCase(), mixed]) {
      const r = await fetchReceipt(s.gw, s.key, asked);
      assert.equal(r.status, 200, `GET /v1/receipts/${asked}: ${r.text}`);
      assertReceiptShape(r.json);
      assert.equal(r.json.id, id);
      assert.equal(verifyJws(r.json.receipt, jwks).payload.jti, id);
    }
    // Still scoped: another customer's upper-case id is the same 404 as an unknown one.
    await expectNotFound(s.gw, KEY_B, id.toUpperCase());
  });

  test('missing or unknown API key → 401, even for an existing id', async () => {
    const { id } = await completion();
    const missing = await fetchReceipt(s.gw, null, id);
    await readErrorEnvelope({ status: missing.status, text: missing.text }, { status: 401, type: 'authentication_error' });
    assert.ok(!missing.text.includes('"receipt"'));
    const bad = await fetchReceipt(s.gw, makeKey(), id);
    await readErrorEnvelope({ status: bad.status, text: bad.text }, { status: 401, type: 'authentication_error' });
    assert.ok(!bad.text.includes('"receipt"'));
  });
});

describe('receipts: JWKS', { timeout: 30_000 }, () => {
  test('/.well-known/jwks.json and the alias /v1/verify/jwks.json: no auth, cacheable, one ES256 P-256 key', async () => {
    const main = await fetchJwks(s.gw, '/.well-known/jwks.json');
    const alias = await fetchJwks(s.gw, '/v1/verify/jwks.json');
    for (const r of [main, alias]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('cache-control'), 'public, max-age=300');
      assert.match(r.headers.get('content-type') || '', /^application\/json/);
      assert.deepEqual(Object.keys(r.json), ['keys']);
      assert.equal(r.json.keys.length, 1);
      const k = r.json.keys[0];
      assert.deepEqual(Object.keys(k), ['kty', 'crv', 'x', 'y', 'kid', 'use', 'alg']);
      assert.deepEqual({ ...k, x: undefined, y: undefined },
        { kty: 'EC', crv: 'P-256', x: undefined, y: undefined, kid: 'router-receipt-1', use: 'sig', alg: 'ES256' });
      assert.equal(Buffer.from(k.x, 'base64url').length, 32);
      assert.equal(Buffer.from(k.y, 'base64url').length, 32);
      assert.ok(!('d' in k), 'no private part');
    }
    assert.equal(alias.text, main.text, 'the alias serves the same set');
    // A receipt verifies with the set fetched anonymously.
    const { id } = await completion();
    await fetchVerified(s.gw, s.key, id, main.json);
  });
});

describe('receipts: opt-out', { timeout: 60_000 }, () => {
  test('X-Tresor-Receipt: false / FALSE / False / 0 → no receipt_id key and nothing stored', async () => {
    const before = receiptRowCount(dbPath);
    for (const v of ['false', 'FALSE', 'False', '0']) {
      const r = await chatWith(s.key, chatBody(ROUTE_GPT), { 'X-Tresor-Receipt': v });
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.tresor, 'the tresor object is still there');
      assert.ok(!('receipt_id' in r.json.tresor), `X-Tresor-Receipt: ${v} → no receipt_id: ${r.text}`);
      assert.ok(!r.text.includes('receipt_id'));
      assert.equal(r.json.tresor.routed_model, ROUTE_GPT);
    }
    // Streams too.
    for (const v of ['false', 'FALSE', '0']) {
      const st = await streamChat(chatBody(ROUTE_GPT, { stream: true, stream_options: { include_usage: true } }),
        { headers: { 'X-Tresor-Receipt': v } });
      assert.equal(st.status, 200);
      assert.equal(st.events.at(-1), '[DONE]');
      const fin = finishChunk(st.events);
      assert.ok(fin?.tresor, `finish chunk with a tresor object: ${st.raw}`);
      assert.ok(!('receipt_id' in fin.tresor), `stream, X-Tresor-Receipt: ${v}: ${st.raw}`);
      assert.ok(!st.raw.includes('receipt_id'));
    }
    assert.equal(receiptRowCount(dbPath), before, 'opted-out requests store no receipt');
  });

  test('any other value (true, 1, yes, no, empty, …) → a receipt', async () => {
    const before = receiptRowCount(dbPath);
    const values = ['true', 'TRUE', '1', 'yes', 'no', 'off', 'falsey', '00', ''];
    for (const v of values) {
      const { id } = await completion(s.key, { headers: { 'X-Tresor-Receipt': v } });
      await fetchVerified(s.gw, s.key, id);
    }
    assert.equal(receiptRowCount(dbPath), before + values.length);
  });
});

describe('receipts: streams', { timeout: 60_000 }, () => {
  test('receipt_id on the finish chunk; a fetch fired the moment [DONE] arrives succeeds (8 concurrent streams)', async () => {
    const before = receiptRowCount(dbPath);
    const body = chatBody(ROUTE_GPT, { stream: true, stream_options: { include_usage: true } });
    const sent = JSON.stringify(body);
    const runs = await Promise.all(Array.from({ length: 8 }, () => streamChat(sent, {
      onDone: (events) => fetchReceipt(s.gw, s.key, finishChunk(events)?.tresor?.receipt_id),
    })));
    for (const st of runs) {
      assert.equal(st.status, 200);
      assert.equal(st.events.at(-1), '[DONE]');
      const fin = finishChunk(st.events);
      const id = fin?.tresor?.receipt_id;
      assert.match(id ?? '', RECEIPT_ID_RE, `receipt_id on the finish chunk: ${st.raw}`);
      assert.equal(st.afterDone.status, 200, `fetch right after [DONE]: ${st.afterDone.text}`);
      const d = verifyJws(st.afterDone.json.receipt, jwks);
      assert.equal(d.payload.jti, id);
      assert.equal(d.payload.request_sha256, sha256HexBytes(sent));
      assert.equal(d.payload.response_sha256, streamResponseSha256(st.raw));
      const usage = st.events.find((e) => typeof e === 'object' && e.usage)?.usage;
      assert.equal(d.payload.prompt_tokens, usage.prompt_tokens);
      assert.equal(d.payload.completion_tokens, usage.completion_tokens);
    }
    assert.equal(receiptRowCount(dbPath), before + 8);
  });

  test('a stream cut by the upstream (cut_after) → no finish chunk, no receipt_id, nothing stored', async () => {
    const before = receiptRowCount(dbPath);
    const st = await streamChat(chatBody(ROUTE_GPT, { stream: true, fake: { cut_after: 2, chunks: 6 } }));
    assert.equal(st.status, 200, 'committed before the cut');
    assert.ok(!st.events.includes('[DONE]'), st.raw);
    assert.equal(finishChunk(st.events), undefined, `no finish chunk: ${st.raw}`);
    assert.ok(st.events.at(-1)?.error, `ends with an in-band error event: ${st.raw}`);
    assert.ok(!st.raw.includes('receipt_id'), 'no receipt_id was ever sent');
    assert.equal(receiptRowCount(dbPath), before, 'nothing stored for the failed stream');
  });

  test('a stream ending in an upstream error event (error_event_after) → no receipt', async () => {
    const before = receiptRowCount(dbPath);
    const st = await streamChat(chatBody(ROUTE_GPT, { stream: true, fake: { error_event_after: 1 } }));
    assert.equal(st.status, 200);
    assert.ok(!st.events.includes('[DONE]'));
    assert.ok(st.events.at(-1)?.error, st.raw);
    assert.ok(!st.raw.includes('receipt_id'));
    assert.equal(receiptRowCount(dbPath), before);
  });
});

describe('receipts: failed requests', { timeout: 60_000 }, () => {
  test('upstream 500 on the only route (JSON and stream) → error, no receipt', async () => {
    const before = receiptRowCount(dbPath);
    await s.fake.behaviour({ status: 500 });
    try {
      const r = await chatWith(s.key, chatBody(ROUTE_GPT));
      assert.ok(r.status >= 500, `${r.status} ${r.text}`);
      assert.ok(r.json?.error, r.text);
      assert.ok(!r.text.includes('receipt_id'));
      const st = await streamChat(chatBody(ROUTE_GPT, { stream: true }));
      assert.ok(st.status >= 500, `${st.status} ${st.text ?? st.raw}`);
      assert.ok(!(st.text ?? st.raw).includes('receipt_id'));
    } finally {
      await s.fake.behaviour({});
    }
    assert.equal(receiptRowCount(dbPath), before);
  });

  test('4xx (upstream 400 passed through, request validation) → no receipt', async () => {
    const before = receiptRowCount(dbPath);
    const up = await chatWith(s.key, chatBody(ROUTE_GPT, { fake: { status: 400 } }));
    assert.equal(up.status, 400, up.text);
    assert.ok(!up.text.includes('receipt_id'));
    const invalid = await chatWith(s.key, { model: ROUTE_GPT });
    assert.equal(invalid.status, 400, invalid.text);
    assert.ok(!invalid.text.includes('receipt_id'));
    assert.equal(receiptRowCount(dbPath), before);
  });
});

describe('receipts: X-Tresor-Nonce', { timeout: 30_000 }, () => {
  test('the nonce is copied into the nonce claim (last), JSON and stream', async () => {
    const nonce = `n-${randomBytes(12).toString('hex')}`;
    const r = await completion(s.key, { headers: { 'X-Tresor-Nonce': nonce } });
    const d = await fetchVerified(s.gw, s.key, r.id);
    assert.deepEqual(Object.keys(d.payload), [...RECEIPT_CLAIMS, 'nonce']);
    assert.equal(d.payload.nonce, nonce);

    const nonce2 = `stream-${randomBytes(8).toString('base64url')}`;
    const st = await streamChat(chatBody(ROUTE_GPT, { stream: true }), { headers: { 'X-Tresor-Nonce': nonce2 } });
    const id = finishChunk(st.events)?.tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE, st.raw);
    const d2 = await fetchVerified(s.gw, s.key, id);
    assert.equal(d2.payload.nonce, nonce2);
    assert.equal(d2.payload.response_sha256, streamResponseSha256(st.raw));
  });
});

describe('receipts: failover', { timeout: 60_000 }, () => {
  const A = 'eu/provdead/m1';
  const B = 'eu/provb/m1';
  let rs;
  before(async () => {
    rs = await startRoutingStack({
      providers: { provdead: { dead: true }, provb: {} },
      routes: [{ id: A, provider: 'provdead' }, { id: B, provider: 'provb' }],
      retry: { attempts_per_route: 1, backoff_ms: 10 },
      breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
      fakeOpts: { chunks: 3 },
    });
  });

  test('served by the failover route: routed_model/failover claims match the response tresor object', async () => {
    const sent = JSON.stringify({ model: A, failover: [B], messages: [{ role: 'user', content: 'Hello!' }] });
    const res = await rs.chat(sent);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const tr = JSON.parse(text).tresor;
    assert.equal(tr.failover, true);
    assert.equal(tr.routed_model, B);
    assert.equal(tr.requested_route, A);
    const jwksR = (await fetchJwks(rs.gw)).json;
    const d = await fetchVerified(rs.gw, rs.key, tr.receipt_id, jwksR);
    assert.equal(d.payload.routed_model, tr.routed_model);
    assert.equal(d.payload.failover, tr.failover);
    assert.equal(d.payload.requested_route, tr.requested_route);
    assert.equal(d.payload.request_sha256, sha256HexBytes(sent));
    assert.equal(d.payload.response_sha256, sha256HexBytes(stripTresorMember(text).stripped));

    // Stream, failing over before the first event.
    const res2 = await rs.chat({ model: A, failover: [B], stream: true, messages: [{ role: 'user', content: 'Hi' }] });
    assert.equal(res2.status, 200);
    const { raw } = await readSse(res2);
    const fin = sseDataPayloads(raw).map((p) => JSON.parse(p)).find((c) => c.choices?.[0]?.finish_reason);
    assert.equal(fin.tresor.failover, true);
    assert.equal(fin.tresor.routed_model, B);
    const d2 = await fetchVerified(rs.gw, rs.key, fin.tresor.receipt_id, jwksR);
    assert.equal(d2.payload.routed_model, B);
    assert.equal(d2.payload.failover, true);
    assert.equal(d2.payload.requested_route, A);
    assert.equal(d2.payload.response_sha256, streamResponseSha256(raw));

    // Not failed over: the same stack, B asked for directly.
    const res3 = await rs.chat({ model: B, messages: [{ role: 'user', content: 'Hi' }] });
    const tr3 = (await res3.json()).tresor;
    const d3 = await fetchVerified(rs.gw, rs.key, tr3.receipt_id, jwksR);
    assert.equal(d3.payload.failover, false);
    assert.equal(d3.payload.routed_model, B);
    assert.equal(d3.payload.requested_route, B);
  });
});

describe('receipts: TTL', { timeout: 60_000 }, () => {
  test('an expired receipt → 404 receipt_not_found, like an unknown one', async () => {
    const t = await startStack({
      content: CONTENT,
      configHook: (c) => { c.receipts = { ttl_seconds: 2 }; return c; },
    });
    const res = await t.chat(chatBody(ROUTE_GPT));
    const issuedAt = performance.now();
    const id = (await res.json()).tresor.receipt_id;
    assert.match(id, RECEIPT_ID_RE);
    const first = await fetchReceipt(t.gw, t.key, id);
    // Only meaningful if the fetch happened well within the TTL (slow CI: skip that check).
    if (performance.now() - issuedAt < 900) assert.equal(first.status, 200, first.text);
    const unknown = await expectNotFound(t.gw, t.key, randomUUID());
    await waitFor(async () => (await fetchReceipt(t.gw, t.key, id)).status === 404,
      { timeoutMs: 10_000, intervalMs: 200, what: 'the receipt to expire (ttl_seconds: 2)' });
    assert.equal(await expectNotFound(t.gw, t.key, id), unknown);
    await t.gw.stop();
    await t.fake.stop();
  });
});

describe('receipts: signing-key rotation', { timeout: 60_000 }, () => {
  test('restart with key 2 + key 1 retired: JWKS lists both, old receipts still fetch and verify, new ones use kid router-receipt-2', async () => {
    let config;
    const t = await startStack({
      content: CONTENT,
      configHook: (c) => { c.receipts = { kid: 'router-receipt-1' }; config = c; return c; },
    });
    const dir = path.dirname(t.gw.configPath);
    const key1 = path.join(dir, 'state', 'receipt-es256.pem');
    const key2 = path.join(dir, 'state', 'receipt-es256-2.pem');
    assert.ok(existsSync(key1), 'the default signing key file was created');
    assert.equal(statSync(key1).mode & 0o777, 0o600, 'signing key created 0600');
    const jwks1 = (await fetchJwks(t.gw)).json;
    assert.deepEqual(jwks1.keys.map((k) => k.kid), ['router-receipt-1']);

    const res1 = await t.chat(chatBody(ROUTE_GPT));
    const id1 = (await res1.json()).tresor.receipt_id;
    const old = await fetchVerified(t.gw, t.key, id1, jwks1);
    assert.equal(old.header.kid, 'router-receipt-1');
    const oldPem = readFileSync(key1, 'utf8');

    await t.gw.stop();
    const gw2 = await restartGateway(t.gw, {
      config: {
        ...config,
        receipts: {
          signing_key_file: 'state/receipt-es256-2.pem',
          kid: 'router-receipt-2',
          retired_keys: [{ kid: 'router-receipt-1', public_key_file: key1 }],
        },
      },
      env: { FAKE_PROVIDER_KEY: t.providerKey },
    });
    assert.ok(existsSync(key2), 'the new signing key file was created');
    assert.equal(statSync(key2).mode & 0o777, 0o600);
    assert.equal(readFileSync(key1, 'utf8'), oldPem, 'the retired key file is left alone');

    for (const p of ['/.well-known/jwks.json', '/v1/verify/jwks.json']) {
      const j = await fetchJwks(gw2, p);
      assert.equal(j.status, 200);
      assert.equal(j.headers.get('cache-control'), 'public, max-age=300');
      assert.deepEqual(j.json.keys.map((k) => k.kid), ['router-receipt-2', 'router-receipt-1'], `${p}: active first, then retired`);
      assert.deepEqual(j.json.keys[1], jwks1.keys[0], `${p}: the retired key is published unchanged`);
      assert.notEqual(j.json.keys[0].x, jwks1.keys[0].x, 'a new key');
    }
    const jwks2 = (await fetchJwks(gw2)).json;

    // The old receipt: same JWS from the same store, verifies with the new JWKS (by kid 1).
    const oldAgain = await fetchVerified(gw2, t.key, id1, jwks2);
    assert.equal(oldAgain.jws, old.jws);
    assert.equal(oldAgain.header.kid, 'router-receipt-1');

    // A new receipt: kid 2, verifies; not with key 1.
    const res2 = await fetch(gw2.url('/v1/chat/completions'), {
      method: 'POST', headers: t.authHeaders(), body: JSON.stringify(chatBody(ROUTE_GPT)),
    });
    const id2 = (await res2.json()).tresor.receipt_id;
    const fresh = await fetchVerified(gw2, t.key, id2, jwks2);
    assert.equal(fresh.headerText, '{"alg":"ES256","kid":"router-receipt-2"}');
    const asKey1 = { keys: [{ ...jwks1.keys[0], kid: 'router-receipt-2' }] };
    assert.throws(() => verifyJws(fresh.jws, asKey1), /does not verify/);
    assert.equal(decodeJws(fresh.jws).payload.jti, id2);
    await gw2.stop();
    await t.fake.stop();
  });
});

// ---------------------------------------------------------------------------------------------
// Lazy signing. receipts.signing: on_fetch (the default) stores the claims at completion with
// an empty jws and signs at the first GET /v1/receipts/{id}, storing the JWS so that later
// fetches return the same bytes; at_issue signs before storing. tresor_receipts_issued_total
// counts receipts accepted for storing, tresor_receipts_signed_total signatures made.

/** An unlabelled sample from GET /metrics; fails when the gateway does not expose it. */
async function metricValue(gw, name) {
  const res = await fetch(gw.url('/metrics'));
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} is not in /metrics`);
  return Number(m[1]);
}

async function receiptCounters(gw) {
  return {
    issued: await metricValue(gw, 'tresor_receipts_issued_total'),
    stored: await metricValue(gw, 'tresor_receipts_stored_total'),
    signed: await metricValue(gw, 'tresor_receipts_signed_total'),
  };
}

/** `after` minus `before`, counter by counter. */
const delta = (before, after) => Object.fromEntries(Object.keys(before).map((k) => [k, after[k] - before[k]]));

/** A receipt's stored row, { jws, claims } exactly (read as hex: nothing trimmed or split). */
function storedRow(db, id) {
  assert.match(id, RECEIPT_ID_RE); // also what makes it safe to quote below
  const out = sqliteQuery(db, `SELECT hex(jws) || '|' || hex(claims) FROM receipts WHERE id = '${id}';`);
  assert.ok(out, `no stored row for receipt ${id}`);
  const [jws, claims] = out.split('|').map((h) => Buffer.from(h, 'hex').toString('utf8'));
  return { jws, claims };
}

/** One successful completion (JSON, or a stream with `stream`) on stack `t`; returns its receipt id. */
async function receiptIdOf(t, { stream = false } = {}) {
  const res = await t.chat(chatBody(ROUTE_GPT, stream ? { stream: true } : {}));
  assert.equal(res.status, 200);
  let id;
  if (stream) {
    const { raw } = await readSse(res);
    const fin = sseDataPayloads(raw).map((p) => JSON.parse(p)).find((c) => c.choices?.[0]?.finish_reason);
    id = fin?.tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE, `receipt_id on the finish chunk: ${raw}`);
  } else {
    const text = await res.text();
    id = JSON.parse(text).tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE, `tresor.receipt_id: ${text}`);
  }
  return id;
}

describe('receipts: lazy signing (receipts.signing: on_fetch, the default)', { timeout: 60_000 }, () => {
  let t;
  let db;
  let keys;
  before(async () => {
    t = await startStack({ content: CONTENT });
    db = defaultStorePath(t.gw);
    keys = (await fetchJwks(t.gw)).json;
  });

  test('3 completions: 3 issued and stored, none signed (jws empty, claims stored); the first fetch signs (+1) and stores the JWS, a second fetch returns the same bytes (+0)', async () => {
    const c0 = await receiptCounters(t.gw);
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await receiptIdOf(t));
    const c1 = await receiptCounters(t.gw);
    assert.deepEqual(delta(c0, c1), { issued: 3, stored: 3, signed: 0 }, 'issued and stored +3, nothing signed yet');
    for (const id of ids) {
      const row = storedRow(db, id);
      assert.equal(row.jws, '', `receipt ${id} is stored unsigned`);
      const claims = JSON.parse(row.claims);
      assert.equal(claims.jti, id);
      assert.deepEqual(Object.keys(claims), RECEIPT_CLAIMS, 'the claims are stored at completion');
    }

    const first = await fetchVerified(t.gw, t.key, ids[1], keys);
    const c2 = await receiptCounters(t.gw);
    assert.deepEqual(delta(c1, c2), { issued: 0, stored: 0, signed: 1 }, 'the first fetch made one signature');
    const row = storedRow(db, ids[1]);
    assert.equal(row.jws, first.jws, 'the fetched receipt\'s JWS is stored');
    assert.equal(row.claims, first.payloadText, 'the stored claims are the JWS payload');
    assert.ok(Buffer.from(row.claims, 'utf8').equals(b64urlDecode(first.parts[1])), 'byte for byte');
    for (const id of [ids[0], ids[2]]) assert.equal(storedRow(db, id).jws, '', `the unfetched receipt ${id} stays unsigned`);

    const again = await fetchVerified(t.gw, t.key, ids[1], keys);
    assert.equal(again.jws, first.jws, 'a second fetch returns the byte-identical JWS');
    assert.equal(again.text, first.text);
    const c3 = await receiptCounters(t.gw);
    assert.deepEqual(delta(c1, c3), { issued: 0, stored: 0, signed: 1 }, 'no second signature');
    assert.equal(storedRow(db, ids[1]).jws, first.jws);
  });

  test('receipt ids are time-ordered (UUIDv7): issued one after the other, their first 13 characters never decrease and hold the issue time in ms', async () => {
    const ids = [];
    for (let i = 0; i < 8; i++) {
      const before = Date.now();
      const id = await receiptIdOf(t, { stream: i % 2 === 1 });
      const after = Date.now();
      const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
      assert.ok(ms >= before - 2 && ms <= after + 2, `receipt id ${id}: timestamp ${ms} outside the request's [${before}, ${after}] ms`);
      ids.push(id);
    }
    for (let i = 1; i < ids.length; i++) {
      assert.ok(ids[i].slice(0, 13) >= ids[i - 1].slice(0, 13), `ids in issue order must not decrease:\n  ${ids.join('\n  ')}`);
    }
  });
});

describe('receipts: receipts.signing: at_issue', { timeout: 60_000 }, () => {
  test('signed before storing: signed_total +1 with the request, the row holds the JWS before any fetch; the fetch serves it unchanged (+0)', async () => {
    const t = await startStack({
      content: CONTENT,
      configHook: (c) => { c.receipts = { signing: 'at_issue' }; return c; },
    });
    const db = defaultStorePath(t.gw);
    const keys = (await fetchJwks(t.gw)).json;
    const c0 = await receiptCounters(t.gw);
    const id = await receiptIdOf(t);
    const c1 = await receiptCounters(t.gw);
    assert.deepEqual(delta(c0, c1), { issued: 1, stored: 1, signed: 1 }, 'signed at issue');
    const row = storedRow(db, id);
    assert.notEqual(row.jws, '', 'the JWS is stored with the receipt');
    const d = verifyJws(row.jws, keys);
    assert.equal(d.payload.jti, id);
    assert.equal(row.claims, d.payloadText, 'the stored claims are the JWS payload');

    const fetched = await fetchVerified(t.gw, t.key, id, keys);
    assert.equal(fetched.jws, row.jws, 'the fetch serves the stored JWS');
    const c2 = await receiptCounters(t.gw);
    assert.deepEqual(delta(c1, c2), { issued: 0, stored: 0, signed: 0 }, 'no signature at fetch');
    await t.gw.stop();
    await t.fake.stop();
  });
});
