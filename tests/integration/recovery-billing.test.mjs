// Issue 18: a recovered stream pays for every attempt that streamed to the client, exactly
// once, and never more than its hold (spent ≤ credit); the receipt states that amount and
// the recovery; /metrics counts recoveries by the route that failed.
//
// Fixture: the fake counts a word as a token. Route A streams 60 one-word chunks and is
// cut after 40 (no usage: its part is the gateway's estimate, ceil(bytes / 4)); route B
// answers the same text with usage. The gateway's estimate of A's part is computed here
// the same way, from the bytes the client received before the seam.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRoutingStack, stopAll, readSse, waitFor, parseEventJson } from './harness.mjs';
import { chatCostNanos, fakeWords, nanosText, readUsage, receiptClaims } from './money-support.mjs';

const WORDS = Array.from({ length: 60 }, (_, i) => `w${String(i).padStart(2, '0')}`).join(' ');
const A = 'eu/pa/m1';
const B = 'eu/pb/m1';
const PRICES = { inputNanosPerMtok: 100_000n * 1_000_000_000n, outputNanosPerMtok: 200_000n * 1_000_000_000n };
const MESSAGES = [{ role: 'user', content: 'say the words' }];
const estimate = (bytes) => Math.ceil(bytes / 4);

let s;
before(async () => {
  s = await startRoutingStack({
    providers: ['pa', 'pb'],
    routes: [{ id: A, provider: 'pa' }, { id: B, provider: 'pb' }],
    retry: { backoff_ms: 50, attempts_per_route: 1 },
    content: WORDS,
    fakeOpts: { chunks: 60 },
    configHook: (config) => {
      for (const r of config.routes) {
        r.pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
        r.max_output_tokens = 100;
      }
      config.auth.customers = { acme: { credit: 100000, currency: 'eur' } };
      return config;
    },
  });
});
after(stopAll);

async function settled() {
  return waitFor(async () => {
    const u = await readUsage(s.gw, s.key);
    return u.reserved === 0n && u;
  }, { timeoutMs: 15_000, what: 'reserved back to 0' });
}

describe('billing a recovered stream', { timeout: 60_000 }, () => {
  test('both attempts are billed once; the receipt states the amount and the recovery', async () => {
    await s.fakes.pa.behaviour({ cut_after: 40, no_usage: 1 });
    const before_ = await readUsage(s.gw, s.key);
    const body = { model: A, messages: MESSAGES, stream: true, failover: [B] };
    const res = await s.chat(body);
    assert.equal(res.status, 200);
    const { events } = await readSse(res);
    const chunks = events.filter((e) => e.data !== '[DONE]').map(parseEventJson);
    assert.equal(events.at(-1).data, '[DONE]');
    const text = chunks.map((c) => c?.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(text, WORDS, 'the client has the whole answer');
    const finish = chunks.find((c) => c?.choices?.[0]?.finish_reason);
    assert.equal(finish.tresor.recovered_from, A);
    const after_ = await settled();

    // A's part: the estimate over its prompt and the text it streamed before the cut;
    // B's: its usage (the fake's word counts) for the whole answer.
    const promptBytes = JSON.stringify(MESSAGES).length;
    const aText = WORDS.split(' ').slice(0, 40).join(' ') + ' ';
    const aCompletion = estimate(Buffer.byteLength(aText.slice(0, aText.length)));
    const aPart = chatCostNanos(PRICES, estimate(promptBytes), aCompletion);
    const bPart = chatCostNanos(PRICES, fakeWords(MESSAGES[0].content), fakeWords(WORDS));
    const spent = after_.spent - before_.spent;
    console.log(`recovered stream: spent ${nanosText(spent)} (A estimated ~${nanosText(aPart)}, B ${nanosText(bPart)})`);
    assert.ok(spent > bPart, `both attempts billed: ${nanosText(spent)} > B's ${nanosText(bPart)}`);
    assert.ok(spent <= bPart + chatCostNanos(PRICES, estimate(promptBytes), estimate(Buffer.byteLength(WORDS))),
      `A's part is at most an estimate of the text it streamed: ${nanosText(spent)}`);
    assert.equal(after_.estimated - before_.estimated, spent, 'an estimated part makes the charge estimated');

    const { payload } = await receiptClaims(s.gw, s.key, finish.tresor.receipt_id);
    assert.equal(payload.routed_model, B);
    assert.equal(payload.usage_estimated, true);
    assert.equal(payload.completion_tokens > fakeWords(WORDS), true, 'completion tokens of both attempts');
    assert.equal(BigInt(Math.round(Number(payload.cost) * 1e9)), spent, `receipt cost ${payload.cost}`);
    assert.equal(payload.recoveries.length, 1);
    assert.equal(payload.recoveries[0].from, A);
    assert.equal(payload.recoveries[0].to, B);
    assert.equal(payload.recoveries[0].mode, 'replay');
    assert.ok(payload.recoveries[0].offset > 0 && payload.recoveries[0].offset < Buffer.byteLength(WORDS));

    const metrics = await (await fetch(s.gw.url('/metrics'))).text();
    assert.match(metrics, new RegExp(`^tresor_stream_recoveries_total\\{route="${A}",result="recovered"\\} 1$`, 'm'));
  });

  test('a recovery never charges more than the hold (what was reserved before the first attempt)', async () => {
    await s.fakes.pa.behaviour({ cut_after: 40 });
    // max_tokens 40: the hold is the body's bytes as prompt tokens and 40 output tokens,
    // less than A's 40 estimated tokens plus B's 60.
    const body = { model: A, messages: MESSAGES, stream: true, failover: [B], max_tokens: 40 };
    const hold = chatCostNanos(PRICES, JSON.stringify(body).length, 40);
    const usage0 = await readUsage(s.gw, s.key);
    const res = await s.chat(body);
    const { events } = await readSse(res);
    assert.equal(events.at(-1).data, '[DONE]');
    const usage1 = await settled();
    const spent = usage1.spent - usage0.spent;
    console.log(`capped recovery: spent ${nanosText(spent)}, hold ${nanosText(hold)}`);
    assert.equal(spent, hold, 'charged the hold: both attempts cost more than was reserved');
  });
});
