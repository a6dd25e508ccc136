// Issue 16, acceptance 4: after a run of mixed JSON answers, streams, streams the client
// cut, streams the upstream cut, and upstream failures (500s, resets), the customer's
// spent (/v1/usage) is exactly the sum of the settled costs in the spend ledger
// (SQLite `spend_ledger`, read with the sqlite3 CLI), and the ledger and the receipts
// agree to the nano: every completed answer's receipt (jti = spend_ledger.request_id)
// states the ledger row's amount; cut streams have a ledger row and no receipt; failures
// have neither.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, stopAll, readSse, waitFor, parseEventJson, defaultStorePath, sqliteQuery, ROUTE_GPT,
} from './harness.mjs';
import { decimalToNanos, nanosText, readUsage, receiptClaims } from './money-support.mjs';

let s;
let db;

before(async () => {
  s = await startStack({
    fakeOpts: { chunks: 12 },
    content: 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi',
    configHook: (config) => {
      // Odd prices, so that rounding to the nano happens on every answer.
      config.routes[0].pricing = { input_per_mtok: 0.37, output_per_mtok: 1.3333, currency: 'eur' };
      config.auth.customers = { acme: { credit: 1000, currency: 'eur' } };
      config.retry = { attempts_per_route: 1, backoff_ms: 50, max_retry_after_seconds: 1 };
      return config;
    },
  });
  db = defaultStorePath(s.gw);
});
after(stopAll);

const say = (text, extra = {}) => ({ model: ROUTE_GPT, messages: [{ role: 'user', content: text }], ...extra });

// Each kind of request returns { kind, receiptId? }.
async function json(text, fake) {
  const res = await s.chat(say(text, fake ? { fake } : {}));
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body).slice(0, 300));
  return { kind: 'completed', receiptId: body.tresor.receipt_id };
}

async function stream(text, extra = {}) {
  const res = await s.chat(say(text, { stream: true, ...extra }));
  assert.equal(res.status, 200);
  const { events } = await readSse(res);
  const id = events.map(parseEventJson).find((c) => c?.tresor?.receipt_id)?.tresor.receipt_id;
  assert.ok(id, 'a completed stream names its receipt');
  return { kind: 'completed', receiptId: id };
}

async function clientCut(text, after_) {
  const ac = new AbortController();
  const res = await s.chat(say(text, { stream: true, fake: { pace_ms: 100 } }), { signal: ac.signal });
  assert.equal(res.status, 200);
  let seen = 0;
  await readSse(res, { onEvent: () => ++seen === after_ });
  ac.abort();
  return { kind: 'cut' };
}

async function upstreamCut(text, fake) {
  const res = await s.chat(say(text, { stream: true, fake }));
  assert.equal(res.status, 200, 'the stream began before the upstream failed');
  const { events } = await readSse(res);
  assert.ok(events.length >= 2, 'events reached the client');
  assert.ok(!events.some((e) => e.data === '[DONE]'), 'the cut stream does not end with [DONE]');
  return { kind: 'cut' };
}

async function failure(body) {
  const res = await s.chat(body);
  const text = await res.text();
  assert.ok(res.status >= 500, `a failure: ${res.status} ${text.slice(0, 200)}`);
  return { kind: 'failed' };
}

describe('settlement adds up', { timeout: 120_000 }, () => {
  test('spent = Σ spend_ledger = Σ receipts\' cost (+ cut streams, no receipt)', async () => {
    const start = await readUsage(s.gw, s.key);
    assert.equal(start.spent, 0n);
    const done = [];
    done.push(await json('one'));
    done.push(await json('two words'));
    done.push(await json('three little words', { no_usage: 1 }));
    done.push(await stream('four'));
    done.push(await stream('five five', { stream_options: { include_usage: true } }));
    done.push(await stream('six six six', { fake: { no_usage: 1 } }));
    done.push(await clientCut('seven', 3));
    done.push(await clientCut('eight eight', 5));
    done.push(await upstreamCut('nine', { reset_after: 3 }));
    done.push(await upstreamCut('ten', { cut_after: 4 }));
    done.push(await failure(say('eleven', { fake: { status: 500 } })));
    done.push(await failure(say('twelve', { fake: { reset: 1 } })));
    done.push(await failure(say('thirteen', { stream: true, fake: { status: 503 } })));
    // Concurrency too: a few of each at once.
    done.push(...await Promise.all([json('fourteen'), stream('fifteen'), json('sixteen', { no_usage: 1 }),
      clientCut('seventeen', 4), failure(say('eighteen', { fake: { status: 500 } }))]));

    const completed = done.filter((d) => d.kind === 'completed');
    const cuts = done.filter((d) => d.kind === 'cut').length;

    // Every hold settled or released, every row on disk.
    const usage = await waitFor(async () => {
      const u = await readUsage(s.gw, s.key);
      const rows = Number(sqliteQuery(db, "SELECT count(*) FROM spend_ledger WHERE customer = 'acme';"));
      return u.reserved === 0n && rows === completed.length + cuts && u;
    }, { timeoutMs: 20_000, what: 'reserved 0 and one ledger row per completed or cut request' });

    const ledgerSum = BigInt(sqliteQuery(db, "SELECT coalesce(sum(amount_nanos), 0) FROM spend_ledger WHERE customer = 'acme';"));
    assert.equal(nanosText(usage.spent), nanosText(ledgerSum), 'spent = the sum of the ledger rows');
    const estimatedSum = BigInt(sqliteQuery(db,
      "SELECT coalesce(sum(amount_nanos), 0) FROM spend_ledger WHERE customer = 'acme' AND estimated = 1;"));
    assert.equal(nanosText(usage.estimated), nanosText(estimatedSum), 'estimated = the estimated rows');

    let receiptSum = 0n;
    for (const { receiptId } of completed) {
      const { status, payload } = await receiptClaims(s.gw, s.key, receiptId);
      assert.equal(status, 200, `receipt ${receiptId}`);
      assert.equal(payload.jti, receiptId);
      const row = sqliteQuery(db, `SELECT amount_nanos, estimated, prompt_tokens, completion_tokens FROM spend_ledger WHERE request_id = '${receiptId}';`);
      assert.ok(row, `a ledger row under the receipt's id ${receiptId}`);
      const [amount, estimated, prompt, completion] = row.split('|');
      assert.equal(decimalToNanos(payload.cost), BigInt(amount), `receipt ${receiptId}: cost ${payload.cost} vs ledger ${amount} nanos`);
      assert.equal(payload.usage_estimated, estimated === '1');
      assert.deepEqual([payload.prompt_tokens, payload.completion_tokens], [Number(prompt), Number(completion)]);
      receiptSum += BigInt(amount);
    }
    const receipts = Number(sqliteQuery(db, 'SELECT count(*) FROM receipts;'));
    assert.equal(receipts, completed.length, 'one receipt per completed answer, none for cuts and failures');
    const unreceipted = sqliteQuery(db, "SELECT amount_nanos FROM spend_ledger WHERE customer = 'acme' AND " +
      'request_id NOT IN (SELECT id FROM receipts);').split('\n').filter(Boolean).map(BigInt);
    assert.equal(unreceipted.length, cuts, 'every cut stream has its ledger row without a receipt');
    for (const a of unreceipted) assert.ok(a > 0n, 'a cut stream is billed');
    const cutSum = unreceipted.reduce((x, y) => x + y, 0n);
    assert.equal(nanosText(receiptSum + cutSum), nanosText(usage.spent), 'receipts + cut rows = spent');
  });
});
