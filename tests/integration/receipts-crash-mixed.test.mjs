// Receipt durability under `kill -9` with a mixed load (issue 9, item 6), for both stores and
// the receipts config as shipped (durability: sync, signing: on_fetch). 16 clients send
// non-stream and stream chats back to back; the gateway is SIGKILLed once KILL_AFTER answers
// have arrived, restarted on the same config, and every receipt id a client was given must be
// fetchable:
//   - non-stream: the id in a complete 200 body (the receipt is stored before the body leaves);
//   - stream: the id on the finish chunk, complete stream or not: the gateway holds the finish
//     chunk back until the receipt is stored, so even a stream the kill cut right after its
//     finish chunk has a stored receipt.
// receipts-crash.test.mjs keeps the larger non-stream run on SQLite.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, stopAll, killHard, restartGateway, RECEIPT_ID_RE, performance } from './harness.mjs';
import { runChatLoad, fetchAll, startRedis } from './chaos-support.mjs';

const CLIENTS = 16;
const KILL_AFTER = 600;

let redis;
after(async () => {
  await stopAll();
  if (redis) await redis.stop('SIGKILL');
});

async function crashAndCount(store) {
  const t0 = performance.now();
  const s = await startStack({
    fakeOpts: { chunks: 3, paceMs: 2 },
    configOverrides: { providerFake: { max_connections: CLIENTS } },
    configHook: (c) => (store === 'redis' ? { ...c, store: redis.url } : c),
  });
  const ids = [];              // ids a client was given as valid
  const cutStreamIds = [];     // finish chunk seen, the kill came before [DONE]: stored too
  const problems = [];         // anything else before the kill
  let answered = 0;
  let killed = null;
  let inFlightAtKill = 0;
  let inFlight = 0;
  const stats = { json: 0, stream: 0, lostAtKill: 0 };

  await runChatLoad({
    port: s.gw.port, key: s.key, clients: CLIENTS, streamEvery: 2,
    stop: () => {
      if (killed) return true;
      inFlight++;
      return false;
    },
    onResult: (r) => {
      inFlight--;
      const c = r.chat;
      if (c.receiptId && r.stream && !c.done && killed) cutStreamIds.push(c.receiptId);
      if (!r.complete) {
        if (killed) stats.lostAtKill++;
        else problems.push(`request ${r.i} (stream ${r.stream}) failed before the kill: ${r.error}`);
        return;
      }
      if (r.status !== 200) {
        problems.push(`request ${r.i} → ${r.status} ${r.text.slice(0, 160)}`);
        return;
      }
      if (!c.receiptId || (r.stream && !c.done) || c.errorEvent) {
        problems.push(`request ${r.i} (stream ${r.stream}) 200 without a valid receipt: ${r.text.slice(-300)}`);
        return;
      }
      assert.match(c.receiptId, RECEIPT_ID_RE);
      ids.push(c.receiptId);
      stats[r.stream ? 'stream' : 'json']++;
      if (++answered >= KILL_AFTER && !killed) {
        inFlightAtKill = inFlight;
        killed = killHard(s.gw); // SIGKILL is sent synchronously, here
      }
    },
  });
  const exit = await killed;
  assert.equal(exit.signal, 'SIGKILL');
  assert.deepEqual(problems.slice(0, 5), [], `${problems.length} unexpected answers before the kill`);
  assert.ok(inFlightAtKill > 0, 'requests were in flight at the kill');
  assert.ok(stats.stream > KILL_AFTER / 4 && stats.json > KILL_AFTER / 4, `a mix of both kinds: ${JSON.stringify(stats)}`);
  assert.equal(new Set(ids).size, ids.length, 'receipt ids are unique');

  const gw2 = await restartGateway(s.gw, { env: { FAKE_PROVIDER_KEY: s.providerKey } });
  const { ok, missing } = await fetchAll(gw2.port, s.key, ids);
  const cut = await fetchAll(gw2.port, s.key, cutStreamIds);
  console.log(`crash (${store}): ${ids.length} receipt ids given to clients (${stats.json} JSON, ${stats.stream} ` +
    `streams with [DONE]), ${inFlightAtKill} requests in flight at the SIGKILL, ${stats.lostAtKill} cut; ` +
    `after restart ${ok} fetched, ${missing.length} lost; ${cutStreamIds.length} streams cut after their finish ` +
    `chunk (${cut.ok} of those ids fetched); ${(performance.now() - t0).toFixed(0)} ms`);
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} receipt ids given to clients are lost`);
  assert.equal(ok, ids.length);
  assert.deepEqual(cut.missing.slice(0, 10), [], `${cut.missing.length} ids on finish chunks of cut streams are lost`);
  await gw2.stop();
}

describe('receipts survive kill -9 under a mixed JSON/stream load', { timeout: 120_000 }, () => {
  test('SQLite store (default config): zero lost receipt ids', async () => {
    await crashAndCount('sqlite');
  });

  test('Redis store (durability sync, AOF appendfsync always): zero lost receipt ids', async () => {
    redis = await startRedis();
    await crashAndCount('redis');
  });
});
