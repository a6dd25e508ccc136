// Issue 16, acceptance 2: a stream abandoned after 6 of its 20 events is billed (> 0 and
// at most the whole stream's price), and an upstream that reports no usage gives an
// estimated amount that /v1/usage and the receipt mark as such.
//
// Fixture: the fake counts a word as a token; the gateway estimates ceil(bytes / 4) when
// it has no usage. The answer is made of 3-letter words ("abc " = 4 bytes = 1 estimated
// token = 1 fake token) and the prompt of 1-letter words (2 bytes each), so an estimate
// over any prefix of the answer never exceeds the upstream's count for the whole answer:
// "≤ the full stream's price" tests the billing, not the estimator's accuracy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, readSse, waitFor, parseEventJson, ROUTE_GPT,
} from './harness.mjs';
import { chatCostNanos, fakeWords, nanosText, readUsage, receiptClaims, decimalToNanos } from './money-support.mjs';

const CONTENT = Array.from({ length: 40 }, (_, i) => ['abc', 'def', 'ghi', 'jkl'][i % 4]).join(' ');
const PROMPT = Array.from({ length: 40 }, () => 'a').join(' ');
const CHUNKS = 20;
const PRICES = { inputNanosPerMtok: 100_000n * 1_000_000_000n, outputNanosPerMtok: 200_000n * 1_000_000_000n };
const FULL_PRICE = chatCostNanos(PRICES, fakeWords(PROMPT), fakeWords(CONTENT));
const MESSAGES = [{ role: 'user', content: PROMPT }];

let s;

before(async () => {
  s = await startStack({
    content: CONTENT,
    fakeOpts: { chunks: CHUNKS },
    configHook: (config) => {
      config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
      config.auth.customers = { acme: { credit: 100000, currency: 'eur' } };
      return config;
    },
  });
});
after(stopAll);

const estimate = (bytes) => Math.ceil(bytes / 4);

// Runs `fn` and returns the change it made to the customer's spent and estimated amounts,
// once every hold it made is settled or released (reserved back to 0).
async function spendOf(fn) {
  const before_ = await readUsage(s.gw, s.key);
  const result = await fn();
  const after_ = await waitFor(async () => {
    const u = await readUsage(s.gw, s.key);
    return u.reserved === 0n && u;
  }, { timeoutMs: 15_000, what: 'reserved back to 0' });
  return { result, spent: after_.spent - before_.spent, estimated: after_.estimated - before_.estimated };
}

describe('cut streams and answers without usage', { timeout: 90_000 }, () => {
  test('the whole 20-event stream is billed the upstream usage', async () => {
    const { result, spent, estimated } = await spendOf(async () => {
      const res = await s.chat({ model: ROUTE_GPT, messages: MESSAGES, stream: true });
      assert.equal(res.status, 200);
      return readSse(res);
    });
    const content = result.events.map(parseEventJson).filter(Boolean)
      .map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(content, CONTENT);
    assert.equal(nanosText(spent), nanosText(FULL_PRICE));
    assert.equal(estimated, 0n);
  });

  test('a stream abandoned after 6 of 20 events is billed > 0 and ≤ the full price', async () => {
    await s.fake.reset();
    const { result, spent, estimated } = await spendOf(async () => {
      const ac = new AbortController();
      // Paced, so that the client leaves while most of the stream is still to come.
      const res = await s.chat({ model: ROUTE_GPT, messages: MESSAGES, stream: true, fake: { pace_ms: 150 } },
        { signal: ac.signal });
      assert.equal(res.status, 200);
      let seen = 0;
      const got = await readSse(res, { onEvent: () => ++seen === 6 });
      ac.abort();
      // The gateway noticed and gave up the upstream stream before its end.
      await waitFor(async () => (await s.fake.stats()).streams_aborted_by_client === 1,
        { timeoutMs: 15_000, what: 'the upstream stream cancelled' });
      return got;
    });
    assert.equal(result.events.length, 6);
    const stats = await s.fake.stats();
    assert.equal(stats.streams_completed, 0, 'the upstream stream did not run to its end');
    assert.ok(spent > 0n, `a cut stream is billed (spent ${nanosText(spent)})`);
    assert.ok(spent <= FULL_PRICE, `billed ${nanosText(spent)} ≤ the full price ${nanosText(FULL_PRICE)}`);
    assert.equal(estimated, spent, 'no usage arrived: the whole amount is estimated and marked');
  });

  test('a completed stream without upstream usage: estimated, marked in /v1/usage and the receipt', async () => {
    const { result, spent, estimated } = await spendOf(async () => {
      const res = await s.chat({ model: ROUTE_GPT, messages: MESSAGES, stream: true, fake: { no_usage: 1 } });
      assert.equal(res.status, 200);
      return readSse(res);
    });
    const chunks = result.events.map(parseEventJson).filter(Boolean);
    assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join(''), CONTENT);
    assert.ok(spent > 0n, 'billed');
    assert.equal(estimated, spent, `/v1/usage marks the amount estimated (${nanosText(estimated)} of ${nanosText(spent)})`);
    const id = chunks.find((c) => c.tresor?.receipt_id)?.tresor.receipt_id;
    assert.ok(id, 'a completed stream has a receipt');
    const { payload } = await receiptClaims(s.gw, s.key, id);
    assert.equal(payload.usage_estimated, true);
    assert.equal(decimalToNanos(payload.cost), spent, 'the receipt states what was billed');
    // The documented estimate: ceil(bytes / 4) of the answer text.
    assert.equal(payload.completion_tokens, estimate(Buffer.byteLength(CONTENT)));
    assert.ok(payload.prompt_tokens > 0);
  });

  test('a JSON answer without upstream usage: estimated, marked in /v1/usage and the receipt', async () => {
    const { result, spent, estimated } = await spendOf(async () => {
      const res = await s.chat({ model: ROUTE_GPT, messages: MESSAGES, fake: { no_usage: 1 } });
      assert.equal(res.status, 200);
      return res.json();
    });
    assert.equal(result.usage, undefined, 'fixture: the upstream sent no usage');
    assert.ok(spent > 0n, 'billed');
    assert.equal(estimated, spent);
    const { payload } = await receiptClaims(s.gw, s.key, result.tresor.receipt_id);
    assert.equal(payload.usage_estimated, true);
    assert.equal(decimalToNanos(payload.cost), spent);
    assert.equal(payload.completion_tokens, estimate(Buffer.byteLength(CONTENT)));
    assert.equal(payload.prompt_tokens, estimate(Buffer.byteLength(JSON.stringify(MESSAGES))),
      'prompt estimate: ceil(bytes of the messages member / 4)');
  });

  test('/metrics: spend, its estimated part and the cut streams, exactly as /v1/usage has them', async () => {
    // Runs last in this file: every request above was settled (spendOf waits for it).
    const usage = await readUsage(s.gw, s.key);
    const text = await (await fetch(s.gw.url('/metrics'))).text();
    const value = (name) => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`route="${ROUTE_GPT}"`));
      assert.ok(line, `${name} for ${ROUTE_GPT} in /metrics`);
      return line.slice(line.lastIndexOf(' ') + 1);
    };
    assert.equal(BigInt(value('tresor_spend_nanos_total')), usage.spent, 'settled spend, to the nano');
    assert.equal(BigInt(value('tresor_spend_estimated_nanos_total')), usage.estimated);
    assert.ok(Number(value('tresor_cut_streams_billed_total')) >= 1, 'the abandoned stream was billed as cut');
  });
});
