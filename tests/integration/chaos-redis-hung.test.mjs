// A Redis that accepts connections and never answers (a partition, a stuck primary), and
// one that applies a command but whose reply is lost (issue 17, items 1-3). The gateway
// reaches a real redis-server through a loopback switch that can pass traffic, hang
// (accept, read, never answer) or stall (pass commands to Redis, swallow its replies).
//
// Kept: under 50 concurrent requests with a 5 s budget and a hung Redis, every request
// ends within its budget + 1 s as store.outage says (rate limits open: 200 without a
// receipt id, the tresor object saying receipt_unavailable; credits closed: 503
// store_unavailable); /readyz stays 200 "degraded"; a replica started meanwhile starts
// and serves the same way. After a stall, the request was counted exactly once although
// its count was sent twice, and every key in Redis has a TTL.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import {
  startStack, startGateway, stopAll, waitFor, makeKey, closedPort, sha256Hex, chatBody, performance,
} from './harness.mjs';
import { startRedis } from './chaos-support.mjs';

const BUDGET_SECONDS = 5;
const SLACK_MS = 1000;
const CONCURRENT = 50;

// A loopback TCP switch in front of Redis. mode: 'pass' | 'hang' | 'stall' | 'refuse'
// (refuse: accepts and closes at once).
async function startSwitch(redisPort) {
  const sw = { mode: 'pass', evalsWhileStalled: 0, sockets: new Set() };
  const server = net.createServer((client) => {
    if (sw.mode === 'refuse') return client.destroy();
    sw.sockets.add(client);
    const upstream = net.connect(redisPort, '127.0.0.1');
    sw.sockets.add(upstream);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    // Stall: from the first script call on, this connection's replies are swallowed (a
    // SCRIPT LOAD before it still gets its answer, so the script does run in Redis).
    let stalled = false;
    client.on('data', (d) => {
      if (sw.mode === 'hang') return;  // read and never answer
      if (sw.mode === 'stall') {
        const evals = d.toString('latin1').split('EVAL').length - 1;
        sw.evalsWhileStalled += evals;
        if (evals > 0) stalled = true;
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (sw.mode === 'pass') stalled = false;
      if (sw.mode === 'hang' || stalled) return;
      client.write(d);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  sw.port = server.address().port;
  sw.close = () => {
    for (const s of sw.sockets) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  };
  return sw;
}

function redisCli(port, ...args) {
  const r = spawnSync('redis-cli', ['-p', String(port), '--raw', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l !== '');
}

let redis;
let sw;
let s;
const payerKey = makeKey();    // a customer with a credit: credits fail closed
const countedKey = makeKey();  // only used for the stall
let config;

before(async () => {
  redis = await startRedis();
  sw = await startSwitch(redis.port);
  s = await startStack({
    configOverrides: { providerFake: { max_connections: 64 } },
    configHook: (c) => {
      c.store = {
        url: `redis://127.0.0.1:${sw.port}/0`,
        connect_timeout_ms: 500,
        command_timeout_ms: 500,
        outage: { rate_limits: 'open', credits: 'closed', receipts: 'open' },
      };
      c.auth.keys[0].limits = { per_minute: 1_000_000 };
      c.auth.keys.push({ sha256: sha256Hex(payerKey), customer: 'payer', limits: { per_minute: 1_000_000 } });
      c.auth.keys.push({ sha256: sha256Hex(countedKey), customer: 'counted', limits: { per_minute: 1000 } });
      c.auth.customers = { payer: { credit: 1000, currency: 'eur' } };
      c.routes[0].pricing = { input_per_mtok: 1, output_per_mtok: 1, currency: 'eur' };
      config = c;
      return c;
    },
  });
});

after(async () => {
  await stopAll();
  if (sw) await sw.close();
  if (redis) await redis.stop('SIGKILL');
});

async function ready(gw) {
  const r = await fetch(gw.url('/readyz'));
  return { status: r.status, body: await r.json() };
}

function chat(gw, key) {
  const t0 = performance.now();
  return fetch(gw.url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json',
      'x-tresor-timeout-seconds': String(BUDGET_SECONDS) },
    body: JSON.stringify(chatBody()),
  }).then(async (res) => ({ res, text: await res.text(), ms: performance.now() - t0 }));
}

describe('a hung or stalling Redis', { timeout: 120_000 }, () => {
  test('hung: 50 concurrent requests end within budget + 1 s, as the outage policy says', async () => {
    sw.mode = 'hang';
    const keys = Array.from({ length: CONCURRENT }, (_, i) => (i % 5 === 0 ? payerKey : s.key));
    const answers = await Promise.all(keys.map((k) => chat(s.gw, k)));
    const late = answers.filter((a) => a.ms > BUDGET_SECONDS * 1000 + SLACK_MS).map((a) => a.ms.toFixed(0));
    const slowest = Math.max(...answers.map((a) => a.ms));
    console.log(`hung Redis: ${CONCURRENT} concurrent requests, budget ${BUDGET_SECONDS} s: slowest ${slowest.toFixed(0)} ms; ` +
      `${answers.filter((a) => a.res.status === 200).length} × 200, ${answers.filter((a) => a.res.status === 503).length} × 503`);
    assert.deepEqual(late, [], 'requests that ended after budget + 1 s');
    for (const [i, a] of answers.entries()) {
      if (keys[i] === payerKey) {
        assert.equal(a.res.status, 503, a.text);
        assert.equal(JSON.parse(a.text).error.code, 'store_unavailable');
        assert.equal(a.res.headers.get('retry-after'), '1');
      } else {
        assert.equal(a.res.status, 200, a.text);
        const tresor = JSON.parse(a.text).tresor;
        assert.equal(tresor.receipt_id, undefined, 'no receipt id for a receipt that was not stored');
        assert.equal(tresor.receipt_unavailable, true);
        // Served without the limit: no limit headers rather than a made-up "0".
        assert.equal(a.res.headers.get('x-ratelimit-limit'), null);
      }
    }
    // A stream: complete, its finish chunk's tresor object says the receipt is unavailable.
    const streamed = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${s.key}`, 'content-type': 'application/json',
        'x-tresor-timeout-seconds': String(BUDGET_SECONDS) },
      body: JSON.stringify(chatBody(undefined, { stream: true })),
    });
    assert.equal(streamed.status, 200);
    const events = (await streamed.text()).split('\n\n').filter((e) => e.startsWith('data: '))
      .map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const withTresor = events.slice(0, -1).map((e) => JSON.parse(e)).filter((e) => e.tresor);
    assert.equal(withTresor.length, 1);
    assert.equal(withTresor[0].tresor.receipt_id, undefined);
    assert.equal(withTresor[0].tresor.receipt_unavailable, true);
    // Ready, but saying it is degraded: every replica sees the same outage.
    await waitFor(async () => { const r = await ready(s.gw); return r.status === 200 && r.body.status === 'degraded'; },
      { what: '/readyz 200 degraded' });
    const metrics = await (await fetch(s.gw.url('/metrics'))).text();
    assert.match(metrics, /^tresor_store_up 0$/m);
    const served = Number(/^tresor_store_outage_served_total\{function="rate_limits"\} (\d+)$/m.exec(metrics)[1]);
    assert.ok(served >= CONCURRENT * 4 / 5, `served without rate limits: ${served}`);
    assert.match(metrics, /^tresor_reservation_refusals_total\{reason="store_unavailable"\} [1-9]/m);
    // The breaker is open now: a request no longer pays any store timeout.
    const quick = await chat(s.gw, s.key);
    assert.equal(quick.res.status, 200);
    assert.ok(quick.ms < 1000, `a request with the breaker open took ${quick.ms.toFixed(0)} ms`);
    console.log(`hung Redis, breaker open: one request took ${quick.ms.toFixed(0)} ms`);
  });

  test('a replica started while Redis hangs, drops connections or is not listening starts and serves', async () => {
    for (const mode of ['hang', 'refuse', 'down']) {
      sw.mode = mode === 'down' ? 'pass' : mode;
      const replicaConfig = structuredClone(config);
      if (mode === 'down') replicaConfig.store.url = `redis://127.0.0.1:${await closedPort()}/0`;
      const t0 = performance.now();
      const gw = await startGateway({ config: replicaConfig, env: { FAKE_PROVIDER_KEY: s.providerKey },
        name: `replica-${mode}` });
      const started = performance.now() - t0;
      const a = await chat(gw, s.key);
      assert.equal(a.res.status, 200, `${mode}: ${a.text}`);
      assert.ok(a.ms <= BUDGET_SECONDS * 1000 + SLACK_MS, `${mode}: ${a.ms.toFixed(0)} ms`);
      const p = await chat(gw, payerKey);
      assert.equal(p.res.status, 503, `${mode}: ${p.text}`);
      assert.equal(JSON.parse(p.text).error.code, 'store_unavailable');
      const r = await ready(gw);
      assert.equal(r.status, 200, `${mode}: /readyz ${JSON.stringify(r.body)} after starting in ${started.toFixed(0)} ms`);
      await gw.stop();
    }
  });

  test('every function closed: 503 store_unavailable within budget + 1 s, and /readyz 503', async () => {
    sw.mode = 'hang';
    const closedConfig = structuredClone(config);
    closedConfig.store.outage = { rate_limits: 'closed', credits: 'closed', receipts: 'closed' };
    const gw = await startGateway({ config: closedConfig, env: { FAKE_PROVIDER_KEY: s.providerKey }, name: 'closed' });
    const answers = await Promise.all(Array.from({ length: 10 }, () => chat(gw, s.key)));
    for (const a of answers) {
      assert.equal(a.res.status, 503, a.text);
      assert.equal(JSON.parse(a.text).error.code, 'store_unavailable');
      assert.ok(a.ms <= BUDGET_SECONDS * 1000 + SLACK_MS, `${a.ms.toFixed(0)} ms`);
    }
    // Nothing can be served under this policy: unready (the others stay ready, degraded).
    await waitFor(async () => { const r = await ready(gw); return r.status === 503 && r.body.status === 'store_unreachable'; },
      { what: '/readyz 503 with every function closed' });
    // Receipts closed alone: a request without limits or credit is refused too, while
    // the breaker is open (an answer without its receipt is what the operator refused).
    const noLimits = structuredClone(config);
    noLimits.store.outage = { rate_limits: 'open', credits: 'open', receipts: 'closed' };
    noLimits.auth.keys[0].limits = {};
    const gw2 = await startGateway({ config: noLimits, env: { FAKE_PROVIDER_KEY: s.providerKey }, name: 'receipts-closed' });
    // Opens the breaker (a receipt that cannot be stored), then is refused up front.
    await waitFor(async () => (await ready(gw2)).body.status === 'degraded' ||
      (await chat(gw2, s.key)).res.status === 503, { timeoutMs: 20_000, what: 'the breaker open' });
    const refused = await chat(gw2, s.key);
    assert.equal(refused.res.status, 503, refused.text);
    assert.equal(JSON.parse(refused.text).error.code, 'store_unavailable');
    assert.ok(refused.ms < 1000, `${refused.ms.toFixed(0)} ms`);
    await gw.stop();
    await gw2.stop();
  });

  test('stalled: the count applied but its reply lost is counted once, and every key has a TTL', async () => {
    sw.mode = 'pass';
    // Back: the breaker's probe (sent by /readyz) closes it.
    await waitFor(async () => (await ready(s.gw)).body.status === 'ok', { timeoutMs: 15_000, what: '/readyz ok' });
    sw.mode = 'stall';
    sw.evalsWhileStalled = 0;
    const a = await chat(s.gw, countedKey);
    assert.equal(a.res.status, 200, a.text);  // rate limits fail open
    assert.ok(a.ms <= BUDGET_SECONDS * 1000 + SLACK_MS, `${a.ms.toFixed(0)} ms`);
    assert.ok(sw.evalsWhileStalled >= 2, `the count was sent ${sw.evalsWhileStalled} times (expected a retry)`);
    sw.mode = 'pass';
    await waitFor(async () => (await ready(s.gw)).body.status === 'ok', { timeoutMs: 15_000, what: '/readyz ok again' });

    const counters = redisCli(redis.port, '--scan', '--pattern', 'tresor:acct:win:*');
    assert.equal(counters.length, 1, `window counters: ${counters.join(', ')}`);
    assert.deepEqual(redisCli(redis.port, 'GET', counters[0]), ['1'], 'the stalled request counted once');

    const keys = redisCli(redis.port, '--scan', '--pattern', '*');
    assert.ok(keys.length >= 3, `keys: ${keys.join(', ')}`);
    // The receipts transparency log (tresor:log:*) is kept for good by design: a checkpoint
    // commits to every entry. Everything else expires.
    const withoutTtl = keys.filter((k) => !k.startsWith('tresor:log:') && Number(redisCli(redis.port, 'TTL', k)[0]) < 0);
    assert.deepEqual(withoutTtl, [], 'keys without a TTL');
  });
});
