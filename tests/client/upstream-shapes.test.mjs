// Legal but unusual upstream answers, seen through the official OpenAI JS SDK: whatever the
// upstream's SSE framing (multi-line data, CR / CRLF line ends, comments and other fields), its
// extra choices, missing identity fields or `"error": null`, the guide's streaming loop
// (`chunk.choices[0].delta.content`) must yield exactly the content, and an error hidden in a
// 200 must reach the SDK as an error, not as a completion without choices.
// The faults go to tresor-fake-upstream in the body's `fake` object (forwarded by the gateway).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack, stopAll } from '../integration/harness.mjs';

const CONTENT = 'Hallo, {Welt}: [eins], "zwei", drei!';
const MODEL = 'eu/fake/gpt-oss-120b';
let s;
let client;

before(async () => {
  s = await startStack({ content: CONTENT, fakeOpts: { chunks: 4 } });
  client = new OpenAI({ apiKey: s.key, baseURL: `http://127.0.0.1:${s.gw.port}/v1`, maxRetries: 0 });
});
after(stopAll);

/** The guide's loop over a stream; returns the text, every chunk and the tresor chunk. */
async function guideLoop(fake, extra = {}) {
  const stream = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'Hello!' }], stream: true, fake, ...extra,
  });
  let text = '';
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (chunk.choices[0].delta.content) text += chunk.choices[0].delta.content;
  }
  return { text, chunks, tresor: chunks.find((c) => c.tresor)?.tresor };
}

describe('OpenAI JS SDK against unusual upstream answers', { timeout: 60_000 }, () => {
  const framings = [
    ['CRLF line ends', { sse_line_ending: 'crlf' }],
    ['CR line ends', { sse_line_ending: 'cr' }],
    ['multi-line data', { multiline_data: 1 }],
    ['comments, event:, id:, retry:, data: without the space', { sse_extras: 1 }],
    ['multi-line data + CR + extras', { multiline_data: 1, sse_line_ending: 'cr', sse_extras: 1 }],
  ];
  for (const [name, fake] of framings) {
    test(`SSE framing, ${name}: the guide's loop yields the whole content and the tresor chunk`, async () => {
      const { text, tresor } = await guideLoop(fake);
      assert.equal(text, CONTENT);
      assert.equal(tresor?.routed_model, MODEL, 'the tresor member arrives');
    });
  }

  test('n: 2 upstream stream: the loop yields choice 0\'s content only', async () => {
    const { text, chunks } = await guideLoop({}, { n: 2 });
    assert.equal(text, CONTENT);
    assert.ok(chunks.every((c) => c.choices.every((ch) => ch.index === 0)), 'only choice 0');
  });

  test('chunks without id/object/created/model and without a finish chunk: the loop does not throw, identity present', async () => {
    const { text, chunks, tresor } = await guideLoop({ omit_fields: 1, no_finish: 1 });
    assert.equal(text, CONTENT);
    assert.ok(tresor, 'a tresor chunk');
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(typeof c.id, 'string');
      assert.ok(Number.isInteger(c.created));
    }
  });

  test('"error": null on every chunk and on the JSON answer: served normally', async () => {
    const { text } = await guideLoop({ error_null: 1 });
    assert.equal(text, CONTENT);
    const resp = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Hello!' }], fake: { error_null: 1 },
    });
    assert.equal(resp.choices[0].message.content, CONTENT);
  });

  test('an error envelope inside a 200 reaches the SDK as an APIError (502), JSON and stream', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hello!' }], fake: { error_in_200: 1 } }),
      (e) => e instanceof OpenAI.APIError && e.status === 502);
    await assert.rejects(guideLoop({ error_in_200: 1 }), (e) => e instanceof OpenAI.APIError && e.status === 502);
  });
});
