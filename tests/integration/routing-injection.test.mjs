// Routing injection (issue 9, item 5): no request field, form field, header or request target
// can steer the upstream call away from the configured provider. A second "evil" fake upstream
// runs on loopback but is in no config; every attempt below names it (or another path, scheme
// or port of the good one). After each attempt:
//   * the evil fake has accepted no connection at all (its /_fake/stats);
//   * every request the good fake received has exactly the configured target
//     (base_url path + /chat/completions or /audio/transcriptions), the Host of base_url, and
//     no header but the ones the router itself sets;
//   * the client got a normal answer or a documented 4xx envelope: never a 5xx, never a crash.
// Unknown body fields (`base_url`, `api_base`, `url`, …) are forwarded upstream as opaque JSON
// (byte-equal values) and never interpreted; `provider`, `region` and `failover` are consumed
// by the router and stripped. Multipart text fields behave the same way (`provider`, `region`
// consumed; other fields forwarded as they came).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, chatBody,
  readErrorEnvelope, rawRequest, findCanaries, readSse, ROUTE_GPT, ROUTE_GEMMA, ROUTE_WHISPER, UPSTREAM_GPT,
  UPSTREAM_GEMMA,
} from './harness.mjs';

let good; let evil; let gw; let key; let providerKey; let goodHost;
let evilControlConnections = 0;
const CHAT_TARGET = '/v1/chat/completions';
const AUDIO_TARGET = '/v1/audio/transcriptions';
// Everything the router itself puts on an upstream request (providers/upstream_client.cpp).
const ROUTER_HEADERS = new Set(['host', 'user-agent', 'authorization', 'content-type', 'accept', 'accept-encoding',
  'content-length']);

before(async () => {
  providerKey = makeProviderKey();
  key = makeKey();
  good = await startFakeUpstream({ name: 'fake-good', requireKey: providerKey });
  // No --require-key: if anything ever reached it, it would answer 200 and the test could
  // only notice through its stats, which is exactly what is checked.
  evil = await startFakeUpstream({ name: 'fake-evil' });
  goodHost = `127.0.0.1:${good.port}`;
  const config = gatewayConfig({ fakeUrl: good.baseUrl(), keys: [{ sha256: sha256Hex(key), customer: 'acme' }] });
  gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
});
after(stopAll);

const evilUrl = () => `http://127.0.0.1:${evil.port}/v1`;
const evilHost = () => `127.0.0.1:${evil.port}`;

/** The evil fake saw nothing, and what the good one saw is the configured call only. */
async function assertUpstreamsClean(label, expectedTarget) {
  const st = await evil.stats();
  // The fake counts the test's own control connections too (one per stats call, each
  // counted when accepted): anything beyond those came from the gateway.
  evilControlConnections += 1;
  assert.equal(st.connections_accepted, evilControlConnections, `${label}: the evil upstream was connected to`);
  assert.equal(st.requests, 0, `${label}: the evil upstream received a request`);
  const reqs = await good.requests();
  for (const r of reqs) {
    assert.equal(r.method, 'POST', label);
    assert.equal(r.target, expectedTarget, `${label}: upstream target`);
    assert.equal(r.headers.host, goodHost, `${label}: upstream Host`);
    const extra = Object.keys(r.headers).filter((h) => !ROUTER_HEADERS.has(h));
    assert.deepEqual(extra, [], `${label}: client headers reached the upstream`);
    assert.equal(r.headers.authorization, `Bearer ${providerKey}`, label);
    // The router's own value, never the client's (fetch sends "gzip, deflate").
    assert.equal(r.headers['accept-encoding'], 'identity', `${label}: upstream Accept-Encoding`);
    assert.deepEqual(findCanaries(JSON.stringify(r)).filter((c) => c !== providerKey), [],
      `${label}: a client secret reached the upstream`);
  }
  return reqs;
}

/** 200, or a documented 4xx envelope; returns { status, json } (`error` for 4xx). */
async function acceptable(label, status, text) {
  assert.ok(status === 200 || (status >= 400 && status < 500), `${label}: status ${status}: ${text.slice(0, 300)}`);
  assert.deepEqual(findCanaries(text), [], `${label}: a secret in the response`);
  if (status === 200) return { status, json: JSON.parse(text) };
  const error = await readErrorEnvelope({ status, text });
  return { status, error };
}

const chat = (body, headers = {}) => fetch(gw.url('/v1/chat/completions'), {
  method: 'POST',
  headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

describe('routing injection: chat body fields', { timeout: 60_000 }, () => {
  // Fields no OpenAI-compatible server must interpret as a destination. The router forwards
  // them as opaque JSON to the configured upstream: the upstream sees the same value.
  const opaque = ['base_url', 'api_base', 'api_base_url', 'baseURL', 'baseUrl', 'endpoint', 'url', 'host',
    'upstream', 'upstream_url', 'proxy', 'api_url', 'scheme', 'port', 'path'];
  for (const field of opaque) {
    test(`"${field}": a URL of another upstream → 200 from the configured one, forwarded as opaque JSON`, async () => {
      await good.reset();
      const value = field === 'port' ? evil.port : field === 'scheme' ? 'https'
        : field === 'path' ? '/v2/../../x' : field === 'host' ? evilHost() : evilUrl();
      const res = await chat(chatBody(ROUTE_GPT, { [field]: value }));
      const text = await res.text();
      const out = await acceptable(field, res.status, text);
      assert.equal(out.status, 200, text);
      const [r, ...more] = await assertUpstreamsClean(field, CHAT_TARGET);
      assert.equal(more.length, 0);
      const fwd = JSON.parse(r.body);
      assert.deepEqual(fwd[field], value, `${field} is forwarded unchanged (opaque)`);
      assert.equal(fwd.model, UPSTREAM_GPT);
    });
  }

  test('all of them at once, nested too, in a stream → configured upstream; SSE body has no secret', async () => {
    await good.reset();
    const extra = {
      base_url: evilUrl(), api_base: evilUrl(), endpoint: evilUrl(),
      extra_body: { base_url: evilUrl() }, options: { baseURL: evilUrl(), headers: { Host: evilHost() } },
      stream: true,
    };
    const res = await chat(chatBody(ROUTE_GPT, extra));
    assert.equal(res.status, 200);
    const { raw } = await readSse(res);
    assert.match(raw, /data: \[DONE\]/);
    assert.deepEqual(findCanaries(raw), [], 'a secret in the SSE body');
    const [r] = await assertUpstreamsClean('nested', CHAT_TARGET);
    assert.deepEqual(JSON.parse(r.body).options, extra.options);
  });

  // Router-consumed fields only select among configured routes: a URL matches no route (404)
  // or is no valid route id (400). A failover entry shaped like a route id whose provider
  // segment is host:port is a pattern that matches nothing; the primary serves the request.
  const consumed = [
    ['provider = a URL', () => ({ provider: evilUrl() }), 'gpt-oss-120b', [404, 'model_not_found']],
    ['provider = a URL, model a route id', () => ({ provider: evilUrl() }), ROUTE_GPT, [200]],
    ['region = a URL', () => ({ region: evilUrl() }), 'gpt-oss-120b', [404, 'model_not_found']],
    ['provider = evil host:port', () => ({ provider: evilHost() }), 'gpt-oss-120b', [404, 'model_not_found']],
    ['failover = [URL]', () => ({ failover: [evilUrl()] }), ROUTE_GPT, [400, 'invalid_failover']],
    ['failover = URL string', () => ({ failover: evilUrl() }), ROUTE_GPT, [400, 'invalid_failover']],
    ['failover = [eu/host:port/…]', () => ({ failover: [`eu/${evilHost()}/gpt-oss-120b`] }), ROUTE_GPT, [200]],
    ['failover = [eu/http://…/x]', () => ({ failover: [`eu/${evilUrl()}/x`] }), ROUTE_GPT, [400, 'invalid_failover']],
  ];
  for (const [label, extra, model, [status, code]] of consumed) {
    test(`${label} → ${status} ${code ?? ''}, never the evil upstream, stripped when forwarded`, async () => {
      await good.reset();
      const res = await chat(chatBody(model, extra()));
      const text = await res.text();
      const out = await acceptable(label, res.status, text);
      assert.equal(out.status, status, text);
      if (code) assert.equal(out.error.code, code);
      const reqs = await assertUpstreamsClean(label, CHAT_TARGET);
      assert.equal(reqs.length, status === 200 ? 1 : 0);
      for (const r of reqs) {
        const fwd = JSON.parse(r.body);
        for (const f of ['provider', 'region', 'failover']) assert.ok(!(f in fwd), `${label}: ${f} forwarded`);
      }
    });
  }

  // A failing primary makes the router walk the failover list: an entry naming the evil
  // upstream's host:port is skipped (no such route), the next configured route serves.
  test('primary fails (503 twice), failover = [eu/<evil host:port>/…, a configured route] → served by the configured route', async () => {
    await good.reset();
    await good.behaviour({ status: 503, times: 2 }); // both attempts on the primary route
    const res = await chat(chatBody(ROUTE_GPT, { failover: [`eu/${evilHost()}/gpt-oss-120b`, ROUTE_GEMMA] }));
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).tresor.routed_model, ROUTE_GEMMA);
    const reqs = await assertUpstreamsClean('failover after failure', CHAT_TARGET);
    assert.deepEqual(reqs.map((r) => JSON.parse(r.body).model), [UPSTREAM_GPT, UPSTREAM_GPT, UPSTREAM_GEMMA]);
  });

  // A model is a bare model key or exactly region/provider/model_key of plain segments.
  const models = [
    ['model = URL', () => evilUrl(), [400, 'invalid_parameter']],
    ['model = eu/http://…/x', () => `eu/${evilUrl()}/x`, [400, 'invalid_parameter']],
    ['model = eu/127.0.0.1:port/x', () => `eu/${evilHost()}/gpt-oss-120b`, [404, 'model_not_found']],
    ['model with ..', () => `${ROUTE_GPT}/../../x`, [400, 'invalid_parameter']],
    ['model = ../../x', () => '../../gpt-oss-120b', [404, 'model_not_found']],
    ['model with %2e%2e', () => 'eu/fake/%2e%2e%2fgpt-oss-120b', [404, 'model_not_found']],
    ['model with %2f', () => 'eu%2ffake%2fgpt-oss-120b', [404, 'model_not_found']],
    ['model with #', () => `${ROUTE_GPT}#${evilHost()}`, [404, 'model_not_found']],
    ['model with ?', () => `${ROUTE_GPT}?base_url=${evilUrl()}`, [400, 'invalid_parameter']],
    ['model with @', () => `eu/fake@${evilHost()}/gpt-oss-120b`, [404, 'model_not_found']],
    ['model with backslash', () => 'eu\\fake\\gpt-oss-120b', [404, 'model_not_found']],
    ['model with CRLF', () => `${ROUTE_GPT}\r\nHost: ${evilHost()}`, [400, 'invalid_parameter']],
  ];
  for (const [label, model, [status, code]] of models) {
    test(`${label} → ${status} ${code}, nothing sent upstream`, async () => {
      await good.reset();
      const res = await chat(chatBody(model()));
      const text = await res.text();
      const out = await acceptable(label, res.status, text);
      assert.equal(out.status, status, text);
      assert.equal(out.error.code, code);
      assert.equal((await assertUpstreamsClean(label, CHAT_TARGET)).length, 0, `${label}: an upstream request was made`);
    });
  }
});

describe('routing injection: headers', { timeout: 60_000 }, () => {
  const body = JSON.stringify(chatBody(ROUTE_GPT));
  const base = () => [['Authorization', `Bearer ${key}`], ['Content-Type', 'application/json']];
  // [label, headers, expected status]. Host is never read for routing; RFC 9112 §3.2 makes
  // two Hosts or a Host that is not host[:port] a 400 (a hop in front may route by it).
  const cases = [
    ['Host: evil', () => [['Host', evilHost()]], 200],
    ['Host: a name', () => [['Host', 'evil.example']], 200],
    ['Host: a URL', () => [['Host', evilUrl()]], 400],
    ['Host: user@evil', () => [['Host', `user@${evilHost()}`]], 400],
    ['two Host headers', () => [['Host', goodHost], ['Host', evilHost()]], 400],
    ['Host: a list', () => [['Host', `${goodHost}, ${evilHost()}`]], 400],
    ['X-Forwarded-Host', () => [['X-Forwarded-Host', evilHost()]], 200],
    ['X-Forwarded-Proto/Port', () => [['X-Forwarded-Proto', 'https'], ['X-Forwarded-Port', String(evil.port)]], 200],
    ['X-Forwarded-Prefix', () => [['X-Forwarded-Prefix', '/v2']], 200],
    ['X-Original-URL', () => [['X-Original-URL', `${evilUrl()}/chat/completions`]], 200],
    ['X-Rewrite-URL', () => [['X-Rewrite-URL', '/v2/../x/chat/completions']], 200],
    ['Forwarded', () => [['Forwarded', `host=${evilHost()};proto=https`]], 200],
    ['OpenAI-Base-URL', () => [['OpenAI-Base-URL', evilUrl()]], 200],
    ['X-Upstream / X-Target-URL', () => [['X-Upstream', evilUrl()], ['X-Target-URL', evilUrl()]], 200],
    ['Via / Max-Forwards', () => [['Via', `1.1 ${evilHost()}`], ['Max-Forwards', '0']], 200],
  ];
  for (const [label, headers, want] of cases) {
    test(`${label} → ${want === 200 ? '200 from the configured upstream, header not forwarded' : '400 bad_request, nothing sent upstream'}`, async () => {
      await good.reset();
      const { res, conn } = await rawRequest(gw.port, { headers: [...headers(), ...base()], body });
      conn.destroy();
      const out = await acceptable(label, res.status, res.text);
      const reqs = await assertUpstreamsClean(label, CHAT_TARGET);
      assert.equal(out.status, want, `${label}: ${res.text.slice(0, 200)}`);
      if (want === 200) {
        assert.equal(reqs.length, 1);
      } else {
        assert.equal(out.error.code, 'bad_request', label);
        assert.equal(reqs.length, 0, `${label}: nothing may reach an upstream`);
        assert.equal(res.headers.connection, 'close', `${label}: the connection is closed after the 400`);
      }
    });
  }
});

describe('routing injection: request targets', { timeout: 60_000 }, () => {
  const body = JSON.stringify(chatBody(ROUTE_GPT));
  const auth = () => [['Authorization', `Bearer ${key}`], ['Content-Type', 'application/json']];
  // Every one of these is either not the chat path (exact match → 404/405/400), the chat
  // path with a query (dropped), or an absolute-form target (served as its origin form):
  // the upstream target never changes.
  const targets = [
    ['absolute-form to the evil upstream', 'POST', () => `http://${evilHost()}/v1/chat/completions`],
    ['absolute-form https to the good one', 'POST', () => `https://${goodHost}/v1/chat/completions`],
    ['scheme-relative //evil', 'POST', () => `//${evilHost()}/v1/chat/completions`],
    ['dot segments /v1/../v1/…', 'POST', () => '/v1/../v1/chat/completions'],
    ['trailing ../../x', 'POST', () => '/v1/chat/completions/../../x'],
    ['percent-encoded slash', 'POST', () => '/v1/chat%2Fcompletions'],
    ['percent-encoded letters', 'POST', () => '/v1/%63hat/completions'],
    ['percent-encoded dots', 'POST', () => '/v1/chat/completions/%2e%2e/%2e%2e/x'],
    ['double slash', 'POST', () => '//v1/chat/completions'],
    ['trailing slash', 'POST', () => '/v1/chat/completions/'],
    ['query string with a URL', 'POST', () => `/v1/chat/completions?base_url=${encodeURIComponent(evilUrl())}`],
    ['query string with dot segments', 'POST', () => '/v1/chat/completions?/../../x'],
    ['asterisk-form', 'OPTIONS', () => '*'],
    ['CONNECT to the evil upstream', 'CONNECT', () => evilHost()],
    ['CONNECT to the good upstream', 'CONNECT', () => goodHost],
  ];
  for (const [label, method, target] of targets) {
    test(`${method} ${label} → never a tunnel or another upstream`, async () => {
      await good.reset();
      const { res, conn } = await rawRequest(gw.port, { method, target: target(), headers: auth(), body });
      conn.destroy();
      const out = await acceptable(label, res.status, res.text);
      const reqs = await assertUpstreamsClean(label, CHAT_TARGET);
      if (label.startsWith('query string') || label.startsWith('absolute-form')) {
        // An absolute-form target is served like its origin form (RFC 9112 §3.2.2, issue 17):
        // by the configured upstream, whatever authority it names; the evil one is untouched.
        assert.equal(out.status, 200, res.text);
        assert.equal(reqs.length, 1);
      } else {
        assert.equal(out.status, 404, `${label}: ${res.text.slice(0, 200)}`);
        assert.equal(out.error.code, 'not_found');
        assert.equal(reqs.length, 0, `${label}: an upstream request was made`);
      }
    });
  }
});

describe('routing injection: transcription form fields', { timeout: 60_000 }, () => {
  const FILE = randomBytes(2048);
  function multipart(fields) {
    const boundary = `----tresor-inj-${randomBytes(8).toString('hex')}`;
    const parts = [];
    for (const [name, value] of fields) {
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
    }
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n` +
      'Content-Type: audio/wav\r\n\r\n'), FILE, Buffer.from(`\r\n--${boundary}--\r\n`));
    return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
  }
  const transcribe = async (fields, target = '/v1/audio/transcriptions') => {
    const mp = multipart(fields);
    const res = await fetch(gw.url(target), {
      method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': mp.contentType }, body: mp.body,
    });
    return { status: res.status, text: await res.text() };
  };

  const opaque = ['base_url', 'api_base', 'baseURL', 'endpoint', 'url', 'host'];
  for (const field of opaque) {
    test(`form field "${field}" = a URL → 200 from the configured upstream, forwarded as a plain field`, async () => {
      await good.reset();
      const r = await transcribe([['model', ROUTE_WHISPER], [field, evilUrl()]]);
      const out = await acceptable(field, r.status, r.text);
      assert.equal(out.status, 200, r.text);
      const [rec, ...more] = await assertUpstreamsClean(field, AUDIO_TARGET);
      assert.equal(more.length, 0);
      assert.equal(rec.transcription.fields[field], evilUrl(), `${field} forwarded unchanged`);
      assert.equal(rec.transcription.fields.model, 'whisper');
    });
  }

  const refused = [
    ['provider = a URL', () => [['model', 'whisper-large-v3'], ['provider', evilUrl()]], [404, 'model_not_found']],
    ['region = a URL', () => [['model', 'whisper-large-v3'], ['region', evilUrl()]], [404, 'model_not_found']],
    ['model = a URL', () => [['model', evilUrl()]], [400, 'invalid_parameter']],
    ['model = eu/http://…/x', () => [['model', `eu/${evilUrl()}/x`]], [400, 'invalid_parameter']],
    ['model with ..', () => [['model', `${ROUTE_WHISPER}/../../x`]], [400, 'invalid_parameter']],
    ['failover[] = a URL', () => [['model', ROUTE_WHISPER], ['failover[]', evilUrl()]], [400, 'failover_not_supported']],
  ];
  for (const [label, fields, [status, code]] of refused) {
    test(`form ${label} → ${status} ${code}, nothing sent upstream`, async () => {
      await good.reset();
      const r = await transcribe(fields());
      const out = await acceptable(label, r.status, r.text);
      assert.equal(out.status, status, r.text);
      assert.equal(out.error.code, code);
      assert.equal((await assertUpstreamsClean(label, AUDIO_TARGET)).length, 0);
    });
  }

  test('form provider = a URL next to a full route id → 200, provider not forwarded', async () => {
    await good.reset();
    const r = await transcribe([['model', ROUTE_WHISPER], ['provider', evilUrl()], ['region', evilUrl()]]);
    const out = await acceptable('provider + route id', r.status, r.text);
    assert.equal(out.status, 200, r.text);
    const [rec] = await assertUpstreamsClean('provider + route id', AUDIO_TARGET);
    assert.ok(!('provider' in rec.transcription.fields) && !('region' in rec.transcription.fields),
      JSON.stringify(rec.transcription.fields));
  });

  test('absolute-form transcription target naming the evil upstream → served by the configured one', async () => {
    await good.reset();
    const mp = multipart([['model', ROUTE_WHISPER]]);
    const { res, conn } = await rawRequest(gw.port, {
      target: `http://${evilHost()}/v1/audio/transcriptions`,
      headers: [['Authorization', `Bearer ${key}`], ['Content-Type', mp.contentType]],
      body: mp.body,
    });
    conn.destroy();
    const out = await acceptable('absolute-form transcription', res.status, res.text);
    assert.equal(out.status, 200, res.text);
    assert.equal((await assertUpstreamsClean('absolute-form transcription', AUDIO_TARGET)).length, 1);
  });
});
