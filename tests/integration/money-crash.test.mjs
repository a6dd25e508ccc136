// Issue 16, acceptance 6: kill -9 under load — slow requests holding reservations, and a
// stream of quick answers — on SQLite (one gateway, restarted) and on Redis (two replicas,
// one killed):
//   * no reservation leaks forever: after the restart (SQLite: holds live in memory, a
//     restart gives them all back) / on the surviving replica once the dead replica's holds
//     expire (Redis: a hold expires at the request budget X-Tresor-Timeout-Seconds + 60 s,
//     and the next operation on the customer gives it back);
//   * no settled spend is lost: every answer a client received in full before the kill is
//     in the spend (its receipt's jti has its spend_ledger row with the receipt's cost on
//     SQLite), and spent is exactly the sum of the settled rows.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, tempDir,
  waitFor, killHard, restartGateway, defaultStorePath, sqliteQuery, performance, ROUTE_GPT,
} from './harness.mjs';
import { chatCostNanos, fakeWords, decimalToNanos, nanosText, readUsage, receiptClaims, startRedis } from './money-support.mjs';

const CONTENT = 'crash safe money';
const PROMPT = 'hello';
const PRICES = { inputNanosPerMtok: 100_000n * 1_000_000_000n, outputNanosPerMtok: 200_000n * 1_000_000_000n };
const ANSWER_COST = chatCostNanos(PRICES, fakeWords(PROMPT), fakeWords(CONTENT));
const SLOW = 8;            // slow requests holding reservations at the kill
const QUICK_BEFORE = 6;    // quick answers received in full before the kill, at least
// Redis: the slow requests' budget; their holds expire BUDGET_S + 60 s after they were made.
const BUDGET_S = 5;
const HOLD_MARGIN_S = 60;

let fake;
let providerKey;
let redis;

before(async () => {
  providerKey = makeProviderKey();
  fake = await startFakeUpstream({ requireKey: providerKey, content: CONTENT });
  redis = await startRedis();
});
after(async () => {
  await stopAll();
  redis?.stop();
});

function crashConfig(key, store) {
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    server: { max_connections: 512 },
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
  });
  config.providers.fake.max_connections = 64;
  config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
  config.auth.customers = { acme: { credit: 100000, currency: 'eur' } };
  if (store) {
    config.store = store;
    config.receipts = { signing_key_file: `${tempDir('tresor-crash-key-')}/receipt-es256.pem`, kid: 'crash-1' };
  }
  return config;
}

const post = (gw, key, body, headers = {}) => fetch(gw.url('/v1/chat/completions'), {
  method: 'POST',
  headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

// Load on `gw`: SLOW requests the fake holds for 60 s, and two workers sending quick
// requests one after the other until the gateway dies (`headers` on all of them: a quick
// request in flight at the kill holds a reservation too). received: the receipt ids of the
// quick answers that arrived in full.
function startLoad(gw, key, { headers = {} } = {}) {
  const load = { received: [], slow: [], stopped: false };
  for (let i = 0; i < SLOW; i++) {
    load.slow.push(post(gw, key, { model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }], fake: { delay_ms: 60_000 } },
      headers).then((r) => r.text()).catch((e) => e));
  }
  const worker = async () => {
    while (!load.stopped) {
      try {
        const res = await post(gw, key, { model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }] }, headers);
        const body = await res.json();
        if (res.status === 200) load.received.push(body.tresor.receipt_id);
      } catch {
        return; // the gateway died under us: this answer was not received in full
      }
    }
  };
  load.workers = Promise.all([worker(), worker()]);
  return load;
}

// Waits until the slow requests hold their reservations and enough quick answers arrived.
async function underLoad(load, gw, key) {
  await waitFor(async () => {
    const st = await fake.stats();
    const u = await readUsage(gw, key);
    return load.received.length >= QUICK_BEFORE && st.requests >= SLOW && u.reserved > 0n;
  }, { timeoutMs: 20_000, what: 'slow requests holding reservations and quick answers flowing' });
}

describe('kill -9 under load', { timeout: 240_000 }, () => {
  test('SQLite: after a restart no hold is left and every received answer is in the spend', async () => {
    await fake.reset();
    const key = makeKey();
    const gw = await startGateway({ config: crashConfig(key), env: { FAKE_PROVIDER_KEY: providerKey } });
    const load = startLoad(gw, key);
    await underLoad(load, gw, key);
    await killHard(gw);
    load.stopped = true;
    await load.workers;
    await Promise.all(load.slow);
    const received = [...load.received];

    const again = await restartGateway(gw, { env: { FAKE_PROVIDER_KEY: providerKey } });
    const u = await readUsage(again, key);
    assert.equal(u.reserved, 0n, 'no hold survives the restart');
    const db = defaultStorePath(again);
    const ledgerSum = BigInt(sqliteQuery(db, "SELECT coalesce(sum(amount_nanos), 0) FROM spend_ledger WHERE customer = 'acme';"));
    assert.equal(nanosText(u.spent), nanosText(ledgerSum), 'spent = the settled rows');
    assert.ok(u.spent >= ANSWER_COST * BigInt(received.length),
      `spent ${nanosText(u.spent)} covers the ${received.length} answers received in full`);
    for (const id of received) {
      const amount = sqliteQuery(db, `SELECT amount_nanos FROM spend_ledger WHERE request_id = '${id}';`);
      assert.equal(amount, String(ANSWER_COST), `the received answer ${id} is in the ledger`);
      const { status, payload } = await receiptClaims(again, key, id);
      assert.equal(status, 200, `its receipt ${id} survived`);
      assert.equal(decimalToNanos(payload.cost), ANSWER_COST);
    }
    // The credit is usable again: a new request is answered and charged.
    const res = await post(again, key, { model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }] });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    assert.equal((await readUsage(again, key)).spent, u.spent + ANSWER_COST);
    await again.stop();
  });

  test(`Redis: the dead replica's holds are released once expired (budget ${BUDGET_S} s + ${HOLD_MARGIN_S} s); no spend lost`, async (t) => {
    await fake.reset();
    const key = makeKey();
    const config = crashConfig(key, redis.url);
    const env = { FAKE_PROVIDER_KEY: providerKey };
    const gwA = await startGateway({ config, env, name: 'gateway-A' });
    const gwB = await startGateway({ config, env, name: 'gateway-B' });
    // Quick answers through the survivor too, before and during the load.
    for (let i = 0; i < 3; i++) {
      const res = await post(gwB, key, { model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }] });
      await res.arrayBuffer();
      assert.equal(res.status, 200);
    }
    const load = startLoad(gwA, key, { headers: { 'x-tresor-timeout-seconds': String(BUDGET_S) } });
    await underLoad(load, gwA, key);
    await killHard(gwA);
    const killedAt = performance.now();
    load.stopped = true;
    await load.workers;
    await Promise.all(load.slow);
    const received = load.received.length + 3;

    const leaked = await readUsage(gwB, key);
    t.diagnostic(`right after the kill: reserved ${nanosText(leaked.reserved)}`);
    assert.ok(leaked.reserved > 0n, 'the dead replica\'s holds are still there right after the kill');
    assert.ok(leaked.spent >= ANSWER_COST * BigInt(received),
      `spent ${nanosText(leaked.spent)} covers the ${received} answers received in full`);
    // Expiry: BUDGET_S + 60 s after each hold was made (before the kill), + slack for a loaded machine.
    const u = await waitFor(async () => {
      const x = await readUsage(gwB, key);
      return x.reserved === 0n && x;
    }, { timeoutMs: (BUDGET_S + HOLD_MARGIN_S + 30) * 1000, intervalMs: 1000, what: 'the dead replica\'s holds released' });
    const ms = performance.now() - killedAt;
    t.diagnostic(`released ${Math.round(ms / 1000)} s after the kill`);
    assert.equal(nanosText(u.spent), nanosText(leaked.spent), 'the release changed no settled spend');
    assert.equal(u.spent % ANSWER_COST, 0n, 'spent is whole answers only (the slow ones were never charged)');
    const res = await post(gwB, key, { model: ROUTE_GPT, messages: [{ role: 'user', content: PROMPT }] });
    await res.arrayBuffer();
    assert.equal(res.status, 200, 'the survivor serves the customer');
    assert.equal((await readUsage(gwB, key)).spent, u.spent + ANSWER_COST);
  });
});
