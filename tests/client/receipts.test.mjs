// Receipts (spec §5) as a client sees them: completions through the official OpenAI JS SDK,
// the receipt fetched from GET /v1/receipts/{id}, verified with `jose` against the served JWKS
// (createLocalJWKSet + compactVerify), its claims checked, and both digests recomputed from the
// bytes that were actually sent and received. Runs against a real tresor-router +
// tresor-fake-upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { compactVerify, createLocalJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import {
  startStack, stopAll, fetchReceipt, fetchJwks, stripTresorMember, streamResponseSha256, sseDataPayloads,
  sha256HexBytes, RECEIPT_ID_RE, RECEIPT_CLAIMS, readSse, ROUTE_GPT, assertReceiptShape,
} from '../integration/harness.mjs';

// Non-ASCII on purpose: the digests are over UTF-8 bytes.
const CONTENT = 'Grüß Gott! Wie kann ich helfen? — 🙂';
const KID = 'router-receipt-1';
let s;
let baseURL;
let jwks;
let keySet;

before(async () => {
  s = await startStack({ content: CONTENT, fakeOpts: { chunks: 4 } });
  baseURL = `http://127.0.0.1:${s.gw.port}/v1`;
  const j = await fetchJwks(s.gw);
  assert.equal(j.status, 200, j.text);
  jwks = j.json;
  keySet = createLocalJWKSet(jwks);
});
after(stopAll);

const nowS = () => Math.floor(Date.now() / 1000);
const words = (t) => t.split(/\s+/).filter(Boolean).length;

/**
 * A fetch for the SDK that records what went over the wire: the exact request body string and
 * the raw response text (read from a clone while the SDK consumes the original).
 */
function recordingFetch() {
  const calls = [];
  const fn = async (url, init) => {
    const call = { url: String(url), requestBody: init?.body };
    calls.push(call);
    const res = await fetch(url, init);
    call.status = res.status;
    call.responseText = res.clone().text();
    return res;
  };
  return { fn, calls };
}

/** jose verification of a fetched receipt; returns { header, claims, payloadText }. */
async function joseVerify(jws) {
  const { payload, protectedHeader } = await compactVerify(jws, keySet, { algorithms: ['ES256'] });
  const payloadText = new TextDecoder().decode(payload);
  return { header: protectedHeader, claims: JSON.parse(payloadText), payloadText };
}

async function getReceipt(id) {
  const r = await fetchReceipt(s.gw, s.key, id);
  assert.equal(r.status, 200, `GET /v1/receipts/${id}: ${r.text}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assertReceiptShape(r.json);
  assert.equal(r.json.id, id);
  assert.match(r.json.receipt, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'a compact JWS');
  return r.json.receipt;
}

function checkHeader(jws, header) {
  assert.deepEqual(header, { alg: 'ES256', kid: KID });
  // Exactly this header, byte for byte (no typ, this key order).
  assert.equal(Buffer.from(jws.split('.')[0], 'base64url').toString('utf8'), `{"alg":"ES256","kid":"${KID}"}`);
  assert.equal(Buffer.from(jws.split('.')[2], 'base64url').length, 64, 'ES256 raw R‖S signature');
}

function checkClaims(claims, { id, t0, t1, requested, routed, failover, usage, requestSha, responseSha }) {
  assert.deepEqual(Object.keys(claims), RECEIPT_CLAIMS, 'claims, in order (no nonce: none was sent)');
  assert.equal(claims.jti, id, 'jti = tresor.receipt_id');
  assert.ok(Number.isInteger(claims.iat), `iat is integer seconds: ${claims.iat}`);
  assert.ok(claims.iat >= t0 && claims.iat <= t1, `iat ${claims.iat} within the test window [${t0}, ${t1}]`);
  assert.equal(claims.receipt_type, 'message');
  assert.equal(claims.requested_route, requested);
  assert.equal(claims.routed_model, routed);
  assert.equal(claims.failover, failover);
  assert.equal(claims.endpoint, '/v1/chat/completions');
  assert.equal(claims.prompt_tokens, usage.prompt_tokens, 'prompt_tokens from the upstream usage');
  assert.equal(claims.completion_tokens, usage.completion_tokens, 'completion_tokens from the upstream usage');
  assert.equal(claims.request_sha256, requestSha, 'request_sha256 = SHA-256 of the request body bytes sent');
  assert.equal(claims.response_sha256, responseSha, 'response_sha256 recomputed from the bytes received');
}

/** Re-encodes one part of a compact JWS with one byte flipped. */
function flipByte(jws, partIndex, byteIndex) {
  const parts = jws.split('.');
  const bytes = Buffer.from(parts[partIndex], 'base64url');
  bytes[byteIndex % bytes.length] ^= 0x01;
  parts[partIndex] = bytes.toString('base64url');
  return parts.join('.');
}

describe('receipts through the OpenAI JS SDK, verified with jose', { timeout: 60_000 }, () => {
  test('JWKS: one P-256 ES256 signing key, usable by jose', async () => {
    assert.equal(jwks.keys.length, 1);
    const k = jwks.keys[0];
    assert.deepEqual(Object.keys(k).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.equal(k.kty, 'EC');
    assert.equal(k.crv, 'P-256');
    assert.equal(k.kid, KID);
    assert.equal(k.use, 'sig');
    assert.equal(k.alg, 'ES256');
    assert.equal(Buffer.from(k.x, 'base64url').length, 32);
    assert.equal(Buffer.from(k.y, 'base64url').length, 32);
  });

  test('non-stream completion: receipt fetched, verified, claims and both digests match', async () => {
    const rec = recordingFetch();
    const client = new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0, fetch: rec.fn });
    const t0 = nowS();
    const resp = await client.chat.completions.create({
      model: 'gpt-oss-120b',
      messages: [{ role: 'system', content: 'Antworte auf Deutsch.' }, { role: 'user', content: 'Hallo, wer bist du?' }],
    });
    const t1 = nowS();
    assert.equal(resp.choices[0].message.content, CONTENT);
    const id = resp.tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE, `tresor.receipt_id is a lowercase UUID v4: ${JSON.stringify(resp.tresor)}`);
    assert.equal(resp.tresor.requested_route, 'auto/auto/gpt-oss-120b');
    assert.equal(resp.tresor.routed_model, ROUTE_GPT);
    assert.equal(resp.tresor.failover, false);

    assert.equal(rec.calls.length, 1);
    const sent = rec.calls[0].requestBody;
    assert.equal(typeof sent, 'string', 'the SDK sends the JSON body as a string');
    const received = await rec.calls[0].responseText;
    const cut = stripTresorMember(received);
    assert.ok(cut, 'the response carries a tresor member');
    assert.deepEqual(cut.tresor, resp.tresor);

    const jws = await getReceipt(id);
    const { header, claims } = await joseVerify(jws);
    checkHeader(jws, header);
    checkClaims(claims, {
      id, t0, t1,
      requested: 'auto/auto/gpt-oss-120b', routed: ROUTE_GPT, failover: false,
      usage: resp.usage,
      requestSha: sha256HexBytes(sent),
      responseSha: sha256HexBytes(cut.stripped),
    });
    // The fake's usage: words in the message contents / in the answer.
    assert.equal(claims.prompt_tokens, words('Antworte auf Deutsch.') + words('Hallo, wer bist du?'));
    assert.equal(claims.completion_tokens, words(CONTENT));

    // It is a valid JWT claim set too (jti/iat), and verifies as one.
    const jwt = await jwtVerify(jws, keySet, { algorithms: ['ES256'] });
    assert.equal(jwt.payload.jti, id);
  });

  test('stream through the SDK: receipt_id on the finish chunk; the receipt verifies and matches', async () => {
    const rec = recordingFetch();
    const client = new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0, fetch: rec.fn });
    const t0 = nowS();
    const stream = await client.chat.completions.create({
      model: ROUTE_GPT,
      messages: [{ role: 'user', content: 'Erzähl mir etwas.' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let finish;
    let usage;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta?.content) text += c.delta.content;
      if (c?.finish_reason) finish = chunk;
      if (chunk.usage) usage = chunk.usage;
    }
    const t1 = nowS();
    assert.equal(text, CONTENT);
    assert.ok(finish, 'a finish chunk');
    assert.ok(usage, 'a usage chunk (include_usage)');
    const id = finish.tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE, `receipt_id on the finish chunk: ${JSON.stringify(finish.tresor)}`);
    assert.equal(finish.tresor.requested_route, ROUTE_GPT);
    assert.equal(finish.tresor.routed_model, ROUTE_GPT);
    assert.equal(finish.tresor.failover, false);

    const raw = await rec.calls[0].responseText;
    const payloads = sseDataPayloads(raw);
    assert.ok(payloads.length >= 3, raw);
    assert.ok(raw.includes('data: [DONE]'), 'the stream ended with [DONE]');
    const jws = await getReceipt(id);
    const { header, claims } = await joseVerify(jws);
    checkHeader(jws, header);
    checkClaims(claims, {
      id, t0, t1,
      requested: ROUTE_GPT, routed: ROUTE_GPT, failover: false,
      usage,
      requestSha: sha256HexBytes(rec.calls[0].requestBody),
      responseSha: streamResponseSha256(raw),
    });
  });

  test('stream via plain fetch with an exact, unusual request body: both digests recomputed', async () => {
    // Pretty-printed, non-ASCII, trailing newline: the gateway must hash the bytes as sent.
    const body = `{\n  "model" : "${ROUTE_GPT}",\n  "stream": true,\n  "stream_options": {"include_usage": true},\n` +
      '  "messages": [ {"role": "user", "content": "Grüezi mitenand \\u00e4 ✓"} ]\n}\n';
    const t0 = nowS();
    const res = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST', headers: s.authHeaders(), body: Buffer.from(body, 'utf8'),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /^text\/event-stream/);
    const { events, raw } = await readSse(res);
    const t1 = nowS();
    const json = events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
    assert.equal(events.at(-1).data, '[DONE]');
    const finish = json.find((c) => c.choices?.[0]?.finish_reason);
    const usage = json.find((c) => c.usage)?.usage;
    assert.ok(finish && usage, raw);
    const id = finish.tresor?.receipt_id;
    assert.match(id ?? '', RECEIPT_ID_RE);
    // Events without a tresor member go into the digest unchanged; those with one lose
    // exactly `,"tresor":{…}`.
    const withTresor = sseDataPayloads(raw).filter((p) => stripTresorMember(p));
    assert.ok(withTresor.length >= 1);
    for (const p of withTresor) assert.deepEqual(stripTresorMember(p).tresor, finish.tresor);

    const jws = await getReceipt(id);
    const { header, claims } = await joseVerify(jws);
    checkHeader(jws, header);
    checkClaims(claims, {
      id, t0, t1,
      requested: ROUTE_GPT, routed: ROUTE_GPT, failover: false,
      usage,
      requestSha: sha256HexBytes(Buffer.from(body, 'utf8')),
      responseSha: streamResponseSha256(raw),
    });
    assert.notEqual(claims.request_sha256, sha256HexBytes(JSON.stringify(JSON.parse(body))),
      'the digest is of the bytes sent, not of a re-serialisation');
  });

  test('tampering: one flipped byte in the payload or the signature fails jose verification', async () => {
    const client = new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0 });
    const resp = await client.chat.completions.create({ model: ROUTE_GPT, messages: [{ role: 'user', content: 'Hi' }] });
    const jws = await getReceipt(resp.tresor.receipt_id);
    await joseVerify(jws); // the untouched receipt verifies

    const payloadLen = Buffer.from(jws.split('.')[1], 'base64url').length;
    for (const [part, byte] of [[1, 0], [1, Math.floor(payloadLen / 2)], [1, payloadLen - 1], [2, 0], [2, 40], [2, 63]]) {
      const bad = flipByte(jws, part, byte);
      assert.notEqual(bad, jws);
      await assert.rejects(compactVerify(bad, keySet, { algorithms: ['ES256'] }),
        (err) => {
          assert.ok(err instanceof joseErrors.JWSSignatureVerificationFailed,
            `part ${part} byte ${byte}: expected JWSSignatureVerificationFailed, got ${err?.name}: ${err?.message}`);
          return true;
        });
    }
    // A receipt signed by some other key does not verify against the served JWKS either.
    const [h, p] = jws.split('.');
    const { generateKeyPair, CompactSign } = await import('jose');
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new CompactSign(Buffer.from(p, 'base64url'))
      .setProtectedHeader(JSON.parse(Buffer.from(h, 'base64url').toString('utf8')))
      .sign(privateKey);
    await assert.rejects(compactVerify(forged, keySet, { algorithms: ['ES256'] }), joseErrors.JWSSignatureVerificationFailed);
  });
});
