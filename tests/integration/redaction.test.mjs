// Secrets never leak (operations issue): neither a provider api key nor a client key shows up
// in a response or in the gateway's log, even when we provoke the errors most likely to echo
// them: an upstream that repeats our Authorization header in its error body (400 relayed, 401 /
// 403 / 500 → 502, a mid-stream error event), a TLS failure, a connection refused, an invalid
// client key, a client key pasted into the JSON body or the query string. The harness checks
// the registered canaries (makeKey / makeProviderKey) over every response and log anyway; the
// provider keys an upstream is *made* to echo here are checked by these tests themselves.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import {
  startFakeUpstream, startGateway, stopAll, makeKey, makeProviderKey, sha256Hex, chatBody, readSse,
  closedPort, waitFor, RawConnection, requestHead, selfSignedCert,
} from './harness.mjs';

const CHAT = '/v1/chat/completions';
const FAKE = 'eu/fake/m1';
const ECHO_FAKE = 'eu/echofake/m1'; // a fake upstream answering 401 with the provider key as its error code
const TLS = 'eu/tlsbad/m1'; // HTTPS with a certificate the gateway does not trust
const DEAD = 'eu/dead/m1'; // connection refused
const hostileRoute = (behaviour) => `eu/hostile/${behaviour}`;
const HOSTILE = ['s400', 's401', 's403', 's404', 's422', 's429', 's500', 'stream-error', 'not-json'];

// Registered canaries (the harness fails the file if they appear anywhere).
const clientKey = makeKey();
const fakeKey = makeProviderKey();
const tlsKey = makeProviderKey();
const deadKey = makeProviderKey();
// Keys that upstreams are made to echo: not registered, so that a leak is reported by the test
// that provokes it (with the offending lines) rather than by the file's after().
const unregistered = (prefix, bytes) => prefix + randomBytes(bytes).toString('hex');
const echoFakeKey = unregistered('sk-provider-echo-', 16);
const hostileKey = unregistered('sk-provider-hostile-', 16);

let gw;
let fake;
let hostile;
const hostileRequests = [];

/**
 * An upstream that repeats whatever Authorization it got in every error it gives, per model:
 * sNNN → HTTP NNN with the header in error.message, error.code and error.param (and a header);
 * stream-error → one chunk, then an error event carrying it; not-json → 200 text carrying it.
 */
function startHostileUpstream() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      hostileRequests.push({ url: req.url, headers: req.headers, body });
      const auth = req.headers.authorization || '';
      let model = '';
      try { model = JSON.parse(body).model; } catch { /* not JSON */ }
      const echo = `invalid credentials: you sent "${auth}"`;
      const status = /^s(\d{3})$/.exec(model);
      if (status) {
        res.writeHead(Number(status[1]), { 'content-type': 'application/json', 'x-echo-authorization': auth });
        res.end(JSON.stringify({ error: { message: echo, type: 'invalid_request_error', code: auth, param: auth } }));
      } else if (model === 'stream-error') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model,
          choices: [{ index: 0, delta: { role: 'assistant', content: 'Hel' }, finish_reason: null }] })}\n\n`);
        res.end(`data: ${JSON.stringify({ error: { message: echo, type: 'server_error', code: auth } })}\n\n`);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`not json; ${echo}`);
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

before(async () => {
  const tls = selfSignedCert();
  const [f, echoFake, tlsFake, h] = await Promise.all([
    startFakeUpstream({ name: 'fake', requireKey: fakeKey }),
    startFakeUpstream({ name: 'fake-echo', requireKey: echoFakeKey }),
    startFakeUpstream({ name: 'fake-tls', requireKey: tlsKey, ...tls }),
    startHostileUpstream(),
  ]);
  fake = f;
  hostile = h;
  const provider = (baseUrl, env) => ({ base_url: baseUrl, api_key: `\${${env}}`, ca_file: '', max_connections: 8 });
  const config = {
    server: { listen: '127.0.0.1:0', threads: 2, max_body_bytes: 1048576, max_header_bytes: 8192 },
    timeouts: { default_seconds: 30, max_seconds: 60, connect_ms: 2000, attempt_first_event_seconds: 10, stream_idle_seconds: 5 },
    retry: { attempts_per_route: 1, backoff_ms: 10, max_retry_after_seconds: 1 },
    breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    providers: {
      fake: provider(fake.baseUrl(), 'KEY_FAKE'),
      echofake: provider(echoFake.baseUrl(), 'KEY_ECHO_FAKE'),
      tlsbad: provider(tlsFake.baseUrl(), 'KEY_TLS'),
      dead: provider(`http://127.0.0.1:${await closedPort()}/v1`, 'KEY_DEAD'),
      hostile: provider(`http://127.0.0.1:${hostile.address().port}/v1`, 'KEY_HOSTILE'),
    },
    routes: [
      { id: FAKE, provider: 'fake', upstream_model: 'm1', type: 'chat' },
      { id: ECHO_FAKE, provider: 'echofake', upstream_model: 'm1', type: 'chat' },
      { id: TLS, provider: 'tlsbad', upstream_model: 'm1', type: 'chat' },
      { id: DEAD, provider: 'dead', upstream_model: 'm1', type: 'chat' },
      ...HOSTILE.map((b) => ({ id: hostileRoute(b), provider: 'hostile', upstream_model: b, type: 'chat' })),
    ],
    auth: { keys: [{ sha256: sha256Hex(clientKey), customer: 'acme' }] },
  };
  gw = await startGateway({
    config,
    env: { KEY_FAKE: fakeKey, KEY_ECHO_FAKE: echoFakeKey, KEY_TLS: tlsKey, KEY_DEAD: deadKey, KEY_HOSTILE: hostileKey },
  });
});

after(async () => {
  if (hostile) {
    hostile.closeAllConnections();
    await new Promise((resolve) => hostile.close(resolve));
  }
  await stopAll();
});

const PROVIDER_KEYS = () => ({ fakeKey, echoFakeKey, tlsKey, deadKey, hostileKey });

/** The names of the secrets found in `text` (never the secrets themselves). */
function secretsIn(text, secrets) {
  return Object.entries(secrets).filter(([, v]) => String(text).includes(v)).map(([k]) => k);
}

/** The gateway's log so far (stdout + stderr). */
const gatewayLog = () => gw.proc.stdout + gw.proc.stderr;

/** The log lines written since `mark` (a length of gatewayLog()) that contain one of the secrets. */
function leakingLogLines(mark, secrets) {
  return gatewayLog().slice(mark).split('\n').filter((l) => secretsIn(l, secrets).length > 0)
    .map((l) => { let out = l; for (const [k, v] of Object.entries(secrets)) out = out.split(v).join(`<${k}>`); return out.slice(0, 300); });
}

/** Waits until the access line of request `id` is written (so the request's log lines are all out). */
async function logged(id) {
  await waitFor(() => gatewayLog().includes(`"request_id":"${id}"`), { timeoutMs: 10_000, what: `the access line of ${id}` });
}

async function chat(body, { headers = {}, key = clientKey, query = '' } = {}) {
  const id = `redaction-${randomBytes(6).toString('hex')}`;
  const res = await fetch(gw.url(CHAT + query), {
    method: 'POST',
    headers: { ...(key === null ? {} : { authorization: `Bearer ${key}` }), 'content-type': 'application/json', 'x-request-id': id, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const headerText = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
  const text = /^text\/event-stream/.test(res.headers.get('content-type') || '') ? (await readSse(res)).raw : await res.text();
  await logged(id);
  return { status: res.status, text, headerText, id };
}

describe('provider keys echoed by an upstream', { timeout: 60_000 }, () => {
  test('upstream 400 repeating the key in message / code / param → relayed 400 with the key scrubbed', async () => {
    const r = await chat(chatBody(hostileRoute('s400')));
    assert.equal(r.status, 400, r.text);
    assert.match(r.text, /"code":"upstream_rejected"/);
    assert.match(r.text, /\[redacted\]/, `the upstream's message is relayed with the key scrubbed: ${r.text}`);
    assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), [], 'no provider key in the response');
  });

  for (const b of ['s404', 's422']) {
    test(`upstream ${b.slice(1)} repeating the key → relayed with the key scrubbed`, async () => {
      const r = await chat(chatBody(hostileRoute(b)));
      assert.equal(r.status, Number(b.slice(1)), r.text);
      assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), [], `no provider key in ${r.text}`);
    });
  }

  for (const b of ['s401', 's403', 's429', 's500', 'not-json']) {
    test(`upstream ${b.replace(/^s(?=\d)/, '')} repeating the key → 502, no key in the response`, async () => {
      const r = await chat(chatBody(hostileRoute(b)));
      assert.equal(r.status, 502, r.text);
      assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), [], `no provider key in ${r.text}`);
    });
  }

  test('fake upstream 401 whose error body carries the provider key → 502 without it', async () => {
    const r = await chat(chatBody(ECHO_FAKE, { fake: { status: 401, error_code: echoFakeKey } }));
    assert.equal(r.status, 502, r.text);
    assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), [], `no provider key in ${r.text}`);
  });

  test('the upstream did get the provider key (the echo is real), and never the client key', async () => {
    assert.ok(hostileRequests.length > 0);
    for (const req of hostileRequests) {
      assert.equal(req.headers.authorization, `Bearer ${hostileKey}`);
      assert.deepEqual(secretsIn(JSON.stringify(req.headers) + req.url, { clientKey }), [], 'no client key upstream');
    }
  });

  test('a mid-stream upstream error event repeating the key reaches the client scrubbed', async () => {
    const r = await chat(chatBody(hostileRoute('stream-error'), { stream: true }));
    assert.equal(r.status, 200);
    assert.match(r.text, /"error"/, 'the client is told the stream failed');
    assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), [],
      `provider key in the stream: ${r.text.split(hostileKey).join('<hostileKey>').slice(0, 600)}`);
  });

  test('the gateway log never contains a key an upstream echoed (400, 401, 403, 429, 500, fake 401)', async () => {
    const mark = gatewayLog().length;
    for (const b of ['s400', 's401', 's403', 's429', 's500']) await chat(chatBody(hostileRoute(b)));
    await chat(chatBody(ECHO_FAKE, { fake: { status: 401, error_code: echoFakeKey } }));
    const leaks = leakingLogLines(mark, PROVIDER_KEYS());
    assert.deepEqual(leaks, [], `log lines with a provider key:\n${leaks.join('\n')}`);
  });
});

describe('transport failures', { timeout: 60_000 }, () => {
  test('TLS handshake failure (untrusted certificate) → 502; the key is neither in the answer nor in the log', async () => {
    const mark = gatewayLog().length;
    const r = await chat(chatBody(TLS));
    assert.equal(r.status, 502, r.text);
    assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), []);
    assert.match(gatewayLog().slice(mark), /tls_failed|TLS/i, 'the TLS failure is logged');
    assert.deepEqual(leakingLogLines(mark, PROVIDER_KEYS()), []);
  });

  test('connection refused → 502; no key in the answer or the log', async () => {
    const mark = gatewayLog().length;
    const r = await chat(chatBody(DEAD));
    assert.equal(r.status, 502, r.text);
    assert.deepEqual(secretsIn(r.text + r.headerText, PROVIDER_KEYS()), []);
    assert.deepEqual(leakingLogLines(mark, PROVIDER_KEYS()), []);
  });
});

describe('client keys', { timeout: 60_000 }, () => {
  test('invalid keys in Authorization, in every shape → 401; never echoed, never logged', async () => {
    const wrong = makeKey();
    const mark = gatewayLog().length;
    const shapes = {
      'Bearer <unknown key>': `Bearer ${wrong}`,
      '<unknown key> without scheme': wrong,
      'bearer (lower case) <unknown key>': `bearer ${wrong}`,
      'Bearer <key + 1 char>': `Bearer ${clientKey}0`,
      'Bearer <key truncated>': `Bearer ${clientKey.slice(0, -1)}`,
      'Basic base64(<key>)': `Basic ${Buffer.from(`${clientKey}:`).toString('base64')}`,
      'Bearer <key> twice': `Bearer ${wrong} Bearer ${wrong}`,
    };
    for (const [what, authorization] of Object.entries(shapes)) {
      const r = await chat(chatBody(FAKE), { key: null, headers: { authorization } });
      assert.ok([400, 401].includes(r.status), `${what}: ${r.status} ${r.text}`);
      assert.deepEqual(secretsIn(r.text + r.headerText, { clientKey, wrong }), [], `${what}: echoed in ${r.text}`);
      assert.ok(!r.text.includes(clientKey.slice(3, 40)) && !r.text.includes(wrong.slice(3, 40)), `${what}: no part of the key echoed`);
    }
    // The key sent in another header than Authorization.
    const r = await chat(chatBody(FAKE), { key: null, headers: { 'x-api-key': wrong, 'api-key': clientKey } });
    assert.equal(r.status, 401, r.text);
    assert.deepEqual(secretsIn(r.text + r.headerText, { clientKey, wrong }), []);
    const leaks = leakingLogLines(mark, { clientKey, wrong });
    assert.deepEqual(leaks, [], `log lines with a client key:\n${leaks.join('\n')}`);
  });

  test('an invalid key on a raw connection with a body: the 401 and the log do not contain it', async () => {
    const wrong = makeKey();
    const mark = gatewayLog().length;
    const conn = await RawConnection.connect(gw.port);
    const id = `redaction-${randomBytes(6).toString('hex')}`;
    try {
      const body = JSON.stringify(chatBody(FAKE));
      await conn.write(requestHead('POST', `${CHAT}?key=${wrong}`, {
        Authorization: `Bearer ${wrong}`, 'Content-Type': 'application/json', 'Content-Length': String(body.length),
        'X-Request-Id': id,
      }) + body);
      const res = await conn.readResponse();
      assert.equal(res.status, 401);
      assert.deepEqual(secretsIn(JSON.stringify(res.headers) + res.text, { wrong }), []);
    } finally {
      conn.destroy();
    }
    await logged(id);
    assert.deepEqual(leakingLogLines(mark, { wrong }), []);
  });

  test('a client key inside the JSON body (message, extra fields, bad values, broken JSON): not in the answer, not in the log', async () => {
    const mark = gatewayLog().length;
    const before0 = (await fake.stats()).requests;
    const cases = {
      'message content': { body: { model: FAKE, messages: [{ role: 'user', content: `my key is ${clientKey}` }] }, status: 200 },
      'an api_key member': { body: { ...chatBody(FAKE), api_key: clientKey }, status: 200 },
      'the user member': { body: { ...chatBody(FAKE), user: clientKey }, status: 200 },
      'temperature (wrong type)': { body: { ...chatBody(FAKE), temperature: clientKey }, status: 400 },
      'messages (wrong type)': { body: { model: FAKE, messages: clientKey }, status: 400 },
      'stream (wrong type)': { body: { ...chatBody(FAKE), stream: clientKey }, status: 400 },
      'broken JSON': { body: `{"model":"${FAKE}","api_key":"${clientKey}","messages":[`, status: 400 },
      'JSON with a bad escape after the key': { body: `{"model":"${FAKE}","x":"${clientKey}\\q"}`, status: 400 },
      'stream: true with the key in a message': {
        body: { model: FAKE, stream: true, messages: [{ role: 'user', content: clientKey }] }, status: 200,
      },
    };
    for (const [what, c] of Object.entries(cases)) {
      const r = await chat(c.body);
      assert.equal(r.status, c.status, `${what}: ${r.text.slice(0, 300)}`);
      assert.deepEqual(secretsIn(r.text + r.headerText, { clientKey }), [], `${what}: the key in the answer`);
    }
    const leaks = leakingLogLines(mark, { clientKey });
    assert.deepEqual(leaks, [], `log lines with the client key:\n${leaks.join('\n')}`);
    assert.ok((await fake.stats()).requests > before0, 'the valid ones reached the upstream');
  });

  test('a key-like string in model / failover / region is not logged (the answer names what the client sent)', async () => {
    // Not a registered canary: the 404/400 message repeats the client's own model string to it.
    const pasted = unregistered('tr-', 48);
    const mark = gatewayLog().length;
    for (const body of [chatBody(pasted), chatBody(`eu/fake/${pasted}`), chatBody(FAKE, { failover: [pasted] }),
      chatBody('m1', { region: pasted }), chatBody('m1', { provider: pasted })]) {
      const r = await chat(body);
      assert.ok([400, 404].includes(r.status), r.text);
    }
    const leaks = leakingLogLines(mark, { pasted });
    assert.deepEqual(leaks, [], `log lines with the pasted key:\n${leaks.join('\n')}`);
  });

  test('a client key in the query string or the path: not in the answer, not in the log, not sent upstream', async () => {
    const wrong = makeKey();
    const mark = gatewayLog().length;
    await fake.reset();
    const served = await chat(chatBody(FAKE), { query: `?api_key=${clientKey}&key=${wrong}` });
    assert.equal(served.status, 200, served.text);
    const noAuth = await chat(chatBody(FAKE), { key: null, query: `?api_key=${clientKey}` });
    assert.equal(noAuth.status, 401, noAuth.text);
    const others = [
      `/v1/models?api_key=${clientKey}`, `/v1/models?region=${clientKey}`, `/healthz?key=${clientKey}`,
      `/metrics?key=${wrong}`, `/${clientKey}`, `/v1/receipts/${clientKey}`, `/v1/usage?api_key=${wrong}`,
      `/.well-known/jwks.json?k=${clientKey}`,
    ];
    for (const p of others) {
      const id = `redaction-${randomBytes(6).toString('hex')}`;
      const headers = { 'x-request-id': id, ...(p.startsWith('/v1/receipts') ? { authorization: `Bearer ${clientKey}` } : {}) };
      const res = await fetch(gw.url(p), { headers });
      const text = await res.text();
      assert.ok(res.status < 500, `${p.replace(clientKey, '<key>')}: ${res.status}`);
      assert.deepEqual(secretsIn(text + [...res.headers].join('\n'), { clientKey, wrong }), [],
        `${p.replace(clientKey, '<key>')}: the key in the answer`);
      await logged(id);
    }
    const leaks = leakingLogLines(mark, { clientKey, wrong });
    assert.deepEqual(leaks, [], `log lines with a client key:\n${leaks.join('\n')}`);
    const upstream = await fake.requests();
    assert.ok(upstream.length >= 1);
    for (const req of upstream) {
      assert.equal(req.target, '/v1/chat/completions', 'the query string is not forwarded');
      assert.deepEqual(secretsIn(JSON.stringify(req.headers), { clientKey, wrong }), [], 'no client key in the upstream headers');
      assert.equal(req.headers.authorization, `Bearer ${fakeKey}`, 'the upstream gets the provider key only');
    }
  });
});
