// The OpenAI-SDK guide's chat samples, ported to the official JS SDK unchanged except for the
// base URL and the key, run against a real tresor-router + tresor-fake-upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack, stopAll, makeKey } from '../integration/harness.mjs';

const CONTENT = 'Hallo! Wie kann ich helfen?';
let s;
let baseURL;

before(async () => {
  s = await startStack({ content: CONTENT, fakeOpts: { chunks: 4 } });
  baseURL = `http://127.0.0.1:${s.gw.port}/v1`;
});
after(stopAll);

describe('OpenAI JS SDK against tresor-router', { timeout: 60_000 }, () => {
  test('guide sample: streaming chat completion with a bare model key', async () => {
    const client = new OpenAI({
      apiKey: s.key,
      baseURL,
    });

    const stream = await client.chat.completions.create({
      model: 'gpt-oss-120b',
      messages: [{ role: 'user', content: 'Hello!' }],
      stream: true,
    });

    let text = '';
    let finish;
    for await (const chunk of stream) {
      if (chunk.choices[0].delta.content) {
        text += chunk.choices[0].delta.content;
      }
      if (chunk.choices[0].finish_reason) finish = chunk;
    }

    assert.equal(text, CONTENT);
    assert.ok(finish, 'a finish chunk');
    assert.equal(finish.choices[0].finish_reason, 'stop');
    assert.equal(finish.tresor?.requested_route, 'auto/auto/gpt-oss-120b');
    assert.equal(finish.tresor?.routed_model, 'eu/fake/gpt-oss-120b');
    assert.equal(finish.tresor?.failover, false);
  });

  test('guide sample: long-running non-stream request with failover and timeout header', async () => {
    await s.fake.reset();
    const client = new OpenAI({
      apiKey: s.key,
      baseURL,
    });

    const resp = await client.chat.completions.create(
      {
        model: 'eu/privatemode/gemma-4-31b',
        stream: false,
        messages: [{ role: 'user', content: 'Translate the attached policy into German.' }],
        failover: ['auto/auto/gemma-4-31b'],
      },
      { headers: { 'X-Tresor-Timeout-Seconds': '600' } },
    );

    assert.equal(resp.choices[0].message.content, CONTENT);
    assert.equal(resp.tresor.routed_model, 'eu/privatemode/gemma-4-31b');
    assert.equal(resp.tresor.requested_route, 'eu/privatemode/gemma-4-31b');
    assert.equal(resp.tresor.failover, false);

    // What the provider saw: its own key, the upstream model name, no Tresor-only fields.
    const reqs = await s.fake.requests();
    assert.equal(reqs.length, 1);
    const body = JSON.parse(reqs[0].body);
    assert.equal(body.model, 'google/gemma-4-31b');
    assert.ok(!('failover' in body), 'failover must be stripped');
    assert.equal(reqs[0].headers.authorization, `Bearer ${s.providerKey}`);
  });

  test('a bad key raises AuthenticationError (401)', async () => {
    const client = new OpenAI({ apiKey: makeKey(), baseURL, maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-oss-120b', messages: [{ role: 'user', content: 'Hello!' }] }),
      (err) => {
        assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 401);
        assert.equal(err.code, 'invalid_api_key');
        assert.equal(err.type, 'authentication_error');
        return true;
      },
    );
  });
});

describe('client.models.retrieve (GET /v1/models/{id})', { timeout: 60_000 }, () => {
  test('a compound route id (the SDK sends its slashes percent-encoded) → the model object of /v1/models', async () => {
    const client = new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0 });
    const listed = [];
    for await (const m of client.models.list()) listed.push(m);
    const want = listed.find((m) => m.id === 'eu/fake/gpt-oss-120b');
    assert.ok(want, `eu/fake/gpt-oss-120b listed: ${JSON.stringify(listed)}`);
    const got = await client.models.retrieve('eu/fake/gpt-oss-120b');
    assert.deepEqual({ ...got }, { ...want });
    assert.equal(got.object, 'model');
    assert.equal(got.owned_by, 'fake');
  });

  test('an unknown id raises NotFoundError (404 model_not_found)', async () => {
    const client = new OpenAI({ apiKey: s.key, baseURL, maxRetries: 0 });
    await assert.rejects(client.models.retrieve('eu/fake/no-such-model'), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.code, 'model_not_found');
      return true;
    });
  });
});
