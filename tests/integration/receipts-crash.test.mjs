// Receipt durability under a crash (spec §5, receipts.durability: sync, the default): a receipt
// is committed to the SQLite store (WAL, synchronous=FULL) before the response carrying its id
// is sent. So after `kill -9` of the gateway in the middle of a load, every receipt_id that any
// client received must be fetchable from a gateway restarted on the same config and state dir.
//
// 2,000 non-stream requests at concurrency 32 over keep-alive connections; SIGKILL once ~1,000
// responses have arrived (the other ~31 requests are in flight); restart; fetch every id.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startStack, stopAll, chatBody, fetchJwks, verifyJws, killHard, restartGateway, defaultStorePath,
  receiptRowCount, RECEIPT_ID_RE, ROUTE_GPT, performance, httpRequest,
} from './harness.mjs';

const TOTAL = 2000;
const CONCURRENCY = 32;
const KILL_AFTER = 1000;

const agents = [];
after(async () => {
  for (const a of agents) a.destroy();
  await stopAll();
});

function keepAliveAgent() {
  const a = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  agents.push(a);
  return a;
}


/** Runs `count` jobs with `concurrency` workers; job(i) is awaited; stop() ends the loop early. */
async function pool(count, concurrency, job, stop = () => false) {
  let next = 0;
  const worker = async () => {
    while (!stop() && next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe('receipts: durability across kill -9', { timeout: 120_000 }, () => {
  test('every receipt_id a client received before/at the SIGKILL is fetchable after a restart', async () => {
    const t0 = performance.now();
    // Default receipts config: durability sync, store sqlite:state/tresor.db, key state/receipt-es256.pem.
    const s = await startStack({
      fakeOpts: { chunks: 2 },
      configOverrides: { providerFake: { max_connections: CONCURRENCY } },
    });
    const port = s.gw.port;
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    const headers = { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' };
    const agent = keepAliveAgent();

    const ids = [];
    let completed = 0; // complete responses received
    let non200 = 0;
    let withoutId = 0;
    let failed = 0; // requests that got no complete response (the crash)
    const failedBeforeKill = []; // errors before the SIGKILL: none expected
    let inFlight = 0;
    let inFlightAtKill = -1;
    let killed = null; // the kill promise, once sent
    let killedAtMs = 0;

    await pool(TOTAL, CONCURRENCY, async () => {
      inFlight++;
      try {
        const r = await httpRequest(agent, port, { method: 'POST', path: '/v1/chat/completions', headers, body });
        completed++;
        if (r.status !== 200) {
          non200++;
        } else {
          const id = JSON.parse(r.text).tresor?.receipt_id;
          if (id) {
            assert.match(id, RECEIPT_ID_RE);
            ids.push(id);
          } else {
            withoutId++;
          }
        }
        if (completed >= KILL_AFTER && !killed) {
          inFlightAtKill = inFlight - 1; // the others, sent and not yet answered
          killedAtMs = performance.now() - t0;
          killed = killHard(s.gw); // SIGKILL is sent synchronously, right here
        }
      } catch (e) {
        failed++;
        if (!killed) failedBeforeKill.push(`${e.code ?? ''} ${e.message}`);
      } finally {
        inFlight--;
      }
    }, () => killed !== null);
    const exit = await killed;
    agent.destroy();
    const loadMs = performance.now() - t0;

    console.log(`crash: ${completed} complete responses (${ids.length} receipt ids, ${non200} non-200, ` +
      `${withoutId} 200 without receipt_id), ${failed} requests without a complete response ` +
      `(${failedBeforeKill.length} before the kill); ` +
      `SIGKILL at ${killedAtMs.toFixed(0)} ms with ${inFlightAtKill} other requests in flight`);
    assert.deepEqual(failedBeforeKill.slice(0, 5), [], `${failedBeforeKill.length} requests failed before the SIGKILL`);
    assert.ok(killed, 'the gateway was killed');
    assert.equal(exit.signal, 'SIGKILL', `gateway exit: ${JSON.stringify(exit)}`);
    assert.ok(inFlightAtKill > 0, 'requests were in flight when the gateway was killed');
    assert.equal(non200, 0, 'every complete response before the crash was a 200');
    assert.equal(withoutId, 0, 'every 200 carried a receipt_id (sync durability never drops one)');
    assert.ok(ids.length >= KILL_AFTER, `at least ${KILL_AFTER} receipt ids received, got ${ids.length}`);
    assert.equal(new Set(ids).size, ids.length, 'receipt ids are unique');

    // Restart on the same config file and state dir (a new port).
    const gw2 = await restartGateway(s.gw, { env: { FAKE_PROVIDER_KEY: s.providerKey } });
    const restartMs = performance.now() - t0;
    const jwks = (await fetchJwks(gw2)).json;
    const agent2 = keepAliveAgent();
    let fetchedOk = 0;
    const missing = [];
    const bad = [];
    await pool(ids.length, CONCURRENCY, async (i) => {
      const id = ids[i];
      const r = await httpRequest(agent2, gw2.port, {
        path: `/v1/receipts/${id}`, headers: { authorization: `Bearer ${s.key}` },
      });
      if (r.status !== 200) {
        missing.push(`${id} → ${r.status} ${r.text.slice(0, 120)}`);
        return;
      }
      try {
        const j = JSON.parse(r.text);
        assert.equal(j.id, id);
        const d = verifyJws(j.receipt, jwks);
        assert.equal(d.payload.jti, id);
        fetchedOk++;
      } catch (e) {
        bad.push(`${id}: ${e.message}`);
      }
    });
    let rows = 'n/a';
    try { rows = receiptRowCount(defaultStorePath(gw2)); } catch (e) { rows = `n/a (${e.message})`; }
    console.log(`crash: after restart ${fetchedOk}/${ids.length} receipts fetched and verified, ` +
      `${missing.length} missing, ${bad.length} invalid; rows in the store: ${rows}; ` +
      `load+kill ${loadMs.toFixed(0)} ms, restart at ${restartMs.toFixed(0)} ms, ` +
      `total ${(performance.now() - t0).toFixed(0)} ms`);
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} received receipt ids are missing after the crash`);
    assert.deepEqual(bad.slice(0, 10), [], `${bad.length} fetched receipts did not verify`);
    assert.equal(fetchedOk, ids.length);
    if (typeof rows === 'number') assert.ok(rows >= ids.length, `rows ${rows} >= received ids ${ids.length}`);

    // The restarted gateway goes on issuing receipts.
    const r = await httpRequest(agent2, gw2.port, { method: 'POST', path: '/v1/chat/completions', headers, body });
    assert.equal(r.status, 200, r.text);
    const id = JSON.parse(r.text).tresor.receipt_id;
    const f = await httpRequest(agent2, gw2.port, { path: `/v1/receipts/${id}`, headers: { authorization: `Bearer ${s.key}` } });
    assert.equal(f.status, 200, f.text);
    await gw2.stop();
  });
});
