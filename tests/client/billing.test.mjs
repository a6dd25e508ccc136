// Issue 16, acceptance 1: with the official `openai` npm SDK and its defaults (no
// stream_options), a stream is billed exactly the price of the upstream's usage, its
// receipt carries the upstream's token counts, and the client sees no usage chunk; with
// stream_options.include_usage it sees exactly one. The gateway asks the upstream for
// usage either way (the fake's recorded request body shows it).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack, stopAll, ROUTE_GPT } from '../integration/harness.mjs';
import {
  chatCostNanos, fakeWords, nanosText, readUsage, receiptClaims, decimalToNanos,
} from '../integration/money-support.mjs';

// The fake counts words: the prompt below is 4 prompt tokens, the answer 10 completion tokens.
const CONTENT = 'Streams are billed from the upstream usage, always and exactly.';
const PROMPT = 'How are streams billed?';
// 0.1 and 0.2 per token (prices per million tokens, scaled up so amounts are visible).
const PRICES = { inputNanosPerMtok: 100_000n * 1_000_000_000n, outputNanosPerMtok: 200_000n * 1_000_000_000n };
const PROMPT_TOKENS = fakeWords(PROMPT);
const COMPLETION_TOKENS = fakeWords(CONTENT);
const PRICE = chatCostNanos(PRICES, PROMPT_TOKENS, COMPLETION_TOKENS);

let s;
let client;

before(async () => {
  s = await startStack({
    content: CONTENT,
    fakeOpts: { chunks: 4 },
    configHook: (config) => {
      config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
      config.auth.customers = { acme: { credit: 1000, currency: 'eur' } };
      return config;
    },
  });
  client = new OpenAI({ apiKey: s.key, baseURL: `http://127.0.0.1:${s.gw.port}/v1` });
});
after(stopAll);

// Streams one answer with the SDK; returns every chunk it yielded.
async function streamChunks(extra = {}) {
  const stream = await client.chat.completions.create({
    model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }], stream: true, ...extra,
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

// The last chat request the fake received, its body parsed.
async function lastUpstreamBody() {
  const reqs = await s.fake.requests();
  assert.ok(reqs.length > 0, 'the fake saw a request');
  return JSON.parse(reqs[reqs.length - 1].body);
}

describe('billing with the OpenAI SDK defaults', { timeout: 60_000 }, () => {
  test('fixture: the price of one answer is known exactly', () => {
    assert.equal(PROMPT_TOKENS, 4);
    assert.equal(COMPLETION_TOKENS, 10);
    assert.equal(nanosText(PRICE), '2.4');
  });

  test('a default stream is billed the upstream usage; receipt counts equal; no usage chunk', async () => {
    const before_ = await readUsage(s.gw, s.key);
    const chunks = await streamChunks();
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, CONTENT);
    assert.deepEqual(chunks.filter((c) => c.usage), [], 'the client did not ask for usage: no usage chunk');
    assert.ok(chunks.every((c) => c.choices.length > 0), 'no choices:[] chunk reached the client');

    const upstream = await lastUpstreamBody();
    assert.deepEqual(upstream.stream_options, { include_usage: true }, 'the gateway asked the upstream for usage');

    const after_ = await readUsage(s.gw, s.key);
    assert.equal(nanosText(after_.spent - before_.spent), nanosText(PRICE), 'billed exactly the upstream usage');
    assert.equal(after_.estimated - before_.estimated, 0n, 'nothing estimated');
    assert.equal(after_.reserved, 0n, 'no hold left behind');

    const receiptId = chunks.find((c) => c.tresor?.receipt_id)?.tresor.receipt_id;
    assert.ok(receiptId, 'the finish chunk names the receipt');
    const { status, payload } = await receiptClaims(s.gw, s.key, receiptId);
    assert.equal(status, 200);
    assert.equal(payload.prompt_tokens, PROMPT_TOKENS, 'receipt prompt_tokens = the upstream usage');
    assert.equal(payload.completion_tokens, COMPLETION_TOKENS, 'receipt completion_tokens = the upstream usage');
    assert.equal(payload.usage_estimated, false);
    assert.equal(decimalToNanos(payload.cost), PRICE, `receipt cost ${payload.cost}`);
    assert.equal(payload.currency, 'eur');
  });

  test('with stream_options.include_usage the client sees the usage exactly once', async () => {
    const before_ = await readUsage(s.gw, s.key);
    const chunks = await streamChunks({ stream_options: { include_usage: true } });
    const withUsage = chunks.filter((c) => c.usage);
    assert.equal(withUsage.length, 1, 'exactly one usage chunk');
    assert.equal(withUsage[0].usage.prompt_tokens, PROMPT_TOKENS);
    assert.equal(withUsage[0].usage.completion_tokens, COMPLETION_TOKENS);
    const upstream = await lastUpstreamBody();
    assert.equal(upstream.stream_options?.include_usage, true);
    const after_ = await readUsage(s.gw, s.key);
    assert.equal(nanosText(after_.spent - before_.spent), nanosText(PRICE));
  });

  test('a non-stream answer through the SDK is billed the same price', async () => {
    const before_ = await readUsage(s.gw, s.key);
    const answer = await client.chat.completions.create({ model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }] });
    assert.deepEqual([answer.usage.prompt_tokens, answer.usage.completion_tokens], [PROMPT_TOKENS, COMPLETION_TOKENS]);
    const after_ = await readUsage(s.gw, s.key);
    assert.equal(nanosText(after_.spent - before_.spent), nanosText(PRICE));
    const { payload } = await receiptClaims(s.gw, s.key, answer.tresor.receipt_id);
    assert.equal(decimalToNanos(payload.cost), PRICE);
    assert.equal(payload.usage_estimated, false);
  });
});
