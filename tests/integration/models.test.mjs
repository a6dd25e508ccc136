// GET /v1/models (operations issue): the OpenAI model list built from the routes table, in
// config order; `?detail=true|1` adds the tresor routing data and each route's pricing; the
// region / provider / type filters match exactly (case-sensitive); no authentication; HEAD
// answers the same headers without a body; other methods are 405.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, readErrorEnvelope,
  RawConnection, requestHead,
} from './harness.mjs';

// Config order = the order /v1/models lists. The provider *segment* of an id (owned_by) is
// not necessarily the provider config name: every route here is served by provider `fake`.
const ROUTES = [
  {
    id: 'eu/fake/gpt-oss-120b', provider: 'fake', upstream_model: 'openai/gpt-oss-120b', type: 'chat',
    pricing: { input_per_mtok: 0.15, output_per_mtok: 0.6, currency: 'usd' },
  },
  { id: 'eu/privatemode/gemma-4-31b', provider: 'fake', upstream_model: 'google/gemma-4-31b', type: 'chat' },
  {
    id: 'eu/fake/whisper-large-v3', provider: 'fake', upstream_model: 'whisper', type: 'transcription',
    pricing: { billing_unit: 'audio_minute', unit_amount: 0.006, currency: 'usd' },
  },
  {
    id: 'us/acme/whisper-1', provider: 'fake', upstream_model: 'whisper-1', type: 'transcription',
    pricing: { billing_unit: 'request', unit_amount: 0.014, currency: 'eur' },
  },
  {
    id: 'global/openai/gpt-4o-transcribe', provider: 'fake', upstream_model: 'gpt-4o-transcribe', type: 'transcription',
    pricing: { input_per_mtok: 2.5, output_per_mtok: 10, currency: 'usd' },
  },
  {
    id: 'us/fake/tiny-chat', provider: 'fake', upstream_model: 'tiny', type: 'chat',
    pricing: { input_per_mtok: 0.014, output_per_mtok: 0.0000001, currency: 'usd' },
  },
];
const IDS = ROUTES.map((r) => r.id);

let gw;
let key;
let startedAt;

before(async () => {
  const providerKey = makeProviderKey();
  key = makeKey();
  const fake = await startFakeUpstream({ requireKey: providerKey });
  const config = gatewayConfig({ fakeUrl: fake.baseUrl(), keys: [{ sha256: sha256Hex(key), customer: 'acme' }] });
  config.routes = ROUTES;
  startedAt = Math.floor(Date.now() / 1000);
  gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
});
after(stopAll);

/** GET /v1/models + query; returns { status, headers, text, json }. */
async function models(query = '', { headers = {}, method = 'GET' } = {}) {
  const res = await fetch(gw.url(`/v1/models${query}`), { method, headers });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

function assertList(r, ids, what) {
  assert.equal(r.status, 200, `${what}: ${r.text}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/i, what);
  assert.deepEqual(Object.keys(r.json), ['object', 'data'], `${what}: top-level members ${r.text}`);
  assert.equal(r.json.object, 'list', what);
  assert.ok(Array.isArray(r.json.data), `${what}: data is an array`);
  assert.deepEqual(r.json.data.map((m) => m.id), ids, `${what}: ids in config order`);
}

function expectedDetail(route) {
  const [region, provider, modelKey] = route.id.split('/');
  const t = { model_key: modelKey, region, provider, type: route.type };
  if (route.pricing) t.pricing = route.pricing;
  return t;
}

describe('GET /v1/models', { timeout: 60_000 }, () => {
  test('lists every route in config order as OpenAI model objects (id, object, created, owned_by)', async () => {
    const r = await models();
    assertList(r, IDS, 'no query');
    const created = r.json.data[0].created;
    assert.ok(Number.isInteger(created), `created is an integer: ${created}`);
    assert.ok(created >= startedAt - 5 && created <= Math.ceil(Date.now() / 1000) + 5,
      `created ${created} is the config's load time (gateway started at ${startedAt})`);
    r.json.data.forEach((m, i) => {
      assert.deepEqual(Object.keys(m), ['id', 'object', 'created', 'owned_by'], `members of ${m.id}: no tresor without detail`);
      assert.equal(m.object, 'model');
      assert.equal(m.created, created, 'one created value for the whole config');
      assert.equal(m.owned_by, ROUTES[i].id.split('/')[1], `owned_by of ${m.id} is the id's provider segment`);
    });
    // The provider segment, not the provider config name (`fake` serves every route).
    assert.equal(r.json.data[1].owned_by, 'privatemode');
    assert.equal(r.json.data[3].owned_by, 'acme');
  });

  test('?detail=true adds tresor {model_key, region, provider, type, pricing?} per route', async () => {
    const r = await models('?detail=true');
    assertList(r, IDS, 'detail=true');
    r.json.data.forEach((m, i) => {
      assert.deepEqual(Object.keys(m), ['id', 'object', 'created', 'owned_by', 'tresor'], `members of ${m.id}`);
      assert.deepEqual(m.tresor, expectedDetail(ROUTES[i]), `tresor of ${m.id}`);
    });
    const byId = Object.fromEntries(r.json.data.map((m) => [m.id, m.tresor]));
    // Chat: per-million-token prices.
    assert.deepEqual(byId['eu/fake/gpt-oss-120b'].pricing, { input_per_mtok: 0.15, output_per_mtok: 0.6, currency: 'usd' });
    // Unpriced route: no pricing member at all.
    assert.equal('pricing' in byId['eu/privatemode/gemma-4-31b'], false, 'an unpriced route has no pricing member');
    // Transcriptions: unit-priced (per audio minute, per request) and token-priced.
    assert.deepEqual(byId['eu/fake/whisper-large-v3'].pricing, { billing_unit: 'audio_minute', unit_amount: 0.006, currency: 'usd' });
    assert.deepEqual(byId['us/acme/whisper-1'].pricing, { billing_unit: 'request', unit_amount: 0.014, currency: 'eur' });
    assert.deepEqual(byId['global/openai/gpt-4o-transcribe'].pricing, { input_per_mtok: 2.5, output_per_mtok: 10, currency: 'usd' });
    assert.equal(byId['global/openai/gpt-4o-transcribe'].type, 'transcription');
    // Numbers are printed in their shortest form, as written in the config.
    assert.ok(r.text.includes('"unit_amount":0.014'), `0.014 printed as is: ${r.text}`);
    assert.ok(r.text.includes('"input_per_mtok":0.014'), `0.014 printed as is: ${r.text}`);
    assert.ok(r.text.includes('"unit_amount":0.006'), r.text);
    assert.ok(!/\d[eE][-+]?0*2\b/.test(r.text), `no exponent form for 0.014 / 0.006: ${r.text}`);
    assert.equal(byId['us/fake/tiny-chat'].pricing.output_per_mtok, 0.0000001, 'a tiny price survives the round trip');
  });

  test('?detail=1 is detail=true; detail=false / 0 / yes / empty add nothing', async () => {
    const full = await models('?detail=true');
    const one = await models('?detail=1');
    assert.equal(one.status, 200);
    assert.deepEqual(one.json, full.json, 'detail=1 answers exactly what detail=true does');
    for (const q of ['?detail=false', '?detail=0', '?detail=yes', '?detail=', '?detail']) {
      const r = await models(q);
      assertList(r, IDS, q);
      for (const m of r.json.data) assert.equal('tresor' in m, false, `${q}: no tresor member on ${m.id}`);
    }
  });

  describe('filters (exact, case-sensitive, combinable)', () => {
    const cases = [
      ['?region=eu', ['eu/fake/gpt-oss-120b', 'eu/privatemode/gemma-4-31b', 'eu/fake/whisper-large-v3']],
      ['?region=us', ['us/acme/whisper-1', 'us/fake/tiny-chat']],
      ['?region=global', ['global/openai/gpt-4o-transcribe']],
      ['?provider=fake', ['eu/fake/gpt-oss-120b', 'eu/fake/whisper-large-v3', 'us/fake/tiny-chat']],
      ['?provider=privatemode', ['eu/privatemode/gemma-4-31b']],
      ['?provider=acme', ['us/acme/whisper-1']],
      ['?type=chat', ['eu/fake/gpt-oss-120b', 'eu/privatemode/gemma-4-31b', 'us/fake/tiny-chat']],
      ['?type=transcription', ['eu/fake/whisper-large-v3', 'us/acme/whisper-1', 'global/openai/gpt-4o-transcribe']],
      // Combined: every filter must match.
      ['?region=eu&type=transcription', ['eu/fake/whisper-large-v3']],
      ['?region=eu&provider=fake', ['eu/fake/gpt-oss-120b', 'eu/fake/whisper-large-v3']],
      ['?type=chat&provider=fake&region=us', ['us/fake/tiny-chat']],
      ['?region=us&type=transcription&detail=true', ['us/acme/whisper-1']],
      // Percent-encoded values are decoded (e%75 = eu).
      ['?region=e%75&type=ch%61t', ['eu/fake/gpt-oss-120b', 'eu/privatemode/gemma-4-31b']],
      // Unknown parameters are ignored.
      ['?limit=1&order=desc', IDS],
    ];
    for (const [q, ids] of cases) {
      test(`${q} → ${ids.length === IDS.length ? 'every route' : ids.join(', ')}`, async () => {
        const r = await models(q);
        assertList(r, ids, q);
        const detail = /detail=true/.test(q);
        for (const m of r.json.data) assert.equal('tresor' in m, detail, `${q}: tresor member only with detail`);
        if (detail) for (const m of r.json.data) assert.deepEqual(m.tresor, expectedDetail(ROUTES.find((x) => x.id === m.id)));
      });
    }

    const empty = [
      '?region=EU', '?region=mars', '?region=', '?provider=Fake', '?provider=openai-compatible', '?provider=',
      '?type=Chat', '?type=audio', '?type=transcriptions', '?type=',
      '?region=us&provider=privatemode', '?region=global&type=chat', '?region=eu&type=transcription&provider=acme',
      '?region=e', '?provider=fak', '?region=eu/fake',
    ];
    for (const q of empty) {
      test(`${q} (no route matches) → 200 with an empty list`, async () => {
        const r = await models(q);
        assertList(r, [], q);
        assert.equal(r.text, '{"object":"list","data":[]}', `${q}: ${r.text}`);
      });
    }
  });

  test('no authentication needed: no key, a valid key, an invalid key or another scheme all get the same list', async () => {
    const plain = await models('?detail=true');
    assertList(plain, IDS, 'no Authorization');
    for (const authorization of [`Bearer ${key}`, `Bearer ${makeKey()}`, 'Bearer not-a-key', 'Basic dXNlcjpwYXNz', 'garbage']) {
      const r = await models('?detail=true', { headers: { authorization } });
      assert.equal(r.status, 200, `Authorization ${authorization.split(' ')[0]}…: ${r.text}`);
      assert.deepEqual(r.json, plain.json, 'same answer whatever the Authorization header');
      assert.equal(r.headers.get('www-authenticate'), null, 'no auth challenge');
    }
  });

  test('HEAD /v1/models: 200 with the headers of the GET and no body', async () => {
    const get = await models('?region=eu');
    const head = await models('?region=eu', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '', 'no body');
    assert.match(head.headers.get('content-type') || '', /^application\/json/i);
    // On the wire: Content-Length of the GET body, and no body bytes (the connection stays usable).
    const conn = await RawConnection.connect(gw.port);
    try {
      await conn.write(requestHead('HEAD', '/v1/models?region=eu', {}));
      const res = await conn.readResponse({ method: 'HEAD' });
      assert.equal(res.status, 200);
      assert.equal(Number(res.headers['content-length']), Buffer.byteLength(get.text), 'Content-Length of the GET answer');
      await conn.write(requestHead('GET', '/v1/models?region=eu', {}));
      const again = await conn.readResponse({ method: 'GET' });
      assert.equal(again.status, 200, 'the next request on the same connection is parsed cleanly');
      assert.equal(again.text, get.text);
    } finally {
      conn.destroy();
    }
  });

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    test(`${method} /v1/models → 405 method_not_allowed with Allow: GET, HEAD`, async () => {
      const res = await fetch(gw.url('/v1/models'), {
        method,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: method === 'DELETE' ? undefined : '{}',
      });
      assert.equal(res.headers.get('allow'), 'GET, HEAD', 'Allow header');
      await readErrorEnvelope(res, { status: 405, code: 'method_not_allowed' });
    });
  }
});

describe('GET /v1/models/{id} (the SDKs\' models.retrieve)', { timeout: 60_000 }, () => {
  test('each route, with its slashes as sent or percent-encoded (any hex case), is the same object as its /v1/models entry', async () => {
    const list = (await models()).json.data;
    const detailed = (await models('?detail=true')).json.data;
    for (const [i, id] of IDS.entries()) {
      for (const form of [id, encodeURIComponent(id), id.replaceAll('/', '%2f')]) {
        const r = await models(`/${form}`);
        assert.equal(r.status, 200, `${form}: ${r.text}`);
        assert.match(r.headers.get('content-type') || '', /^application\/json/i);
        assert.deepEqual(r.json, list[i], form);
        assert.deepEqual(Object.keys(r.json), ['id', 'object', 'created', 'owned_by']);
      }
      assert.deepEqual((await models(`/${encodeURIComponent(id)}?detail=true`)).json, detailed[i], `${id} detail`);
    }
  });

  test('unknown ids → 404 model_not_found in the error envelope', async () => {
    for (const id of ['eu/fake/no-such-model', 'gpt-oss-120b', 'EU/fake/gpt-oss-120b', 'eu%2Ffake%2Fnope', 'eu/fake/gpt-oss-120b/', 'x',
      'eu%2Ffake%2Fgpt-oss-120b%FF', '%00', 'a'.repeat(300)]) {
      const r = await fetch(gw.url(`/v1/models/${id}`));
      const bytes = Buffer.from(await r.arrayBuffer());
      assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(bytes), `${id}: the body is valid UTF-8`);
      await readErrorEnvelope({ status: r.status, text: bytes.toString('utf8') },
        { status: 404, type: 'invalid_request_error', code: 'model_not_found' });
    }
  });

  test('no key needed, like the list; POST is 405 with Allow: GET, HEAD', async () => {
    const r = await models(`/${encodeURIComponent(IDS[0])}`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(r.status, 200, r.text);
    const res = await fetch(gw.url(`/v1/models/${IDS[0]}`), { method: 'POST', body: '{}' });
    assert.equal(res.headers.get('allow'), 'GET, HEAD');
    await readErrorEnvelope(res, { status: 405, code: 'method_not_allowed' });
  });
});
