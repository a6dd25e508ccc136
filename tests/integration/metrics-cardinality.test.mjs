// Issue 20: label values come from the configuration, never from the client. 10,000
// requests whose model names, failover entries, region/provider hints, paths and keys are
// random (unknown models → 404, unknown failover entries beside a served route, bare keys
// with random hints, unknown paths, unknown keys → 401) leave the set of series in /metrics
// exactly as it was: only values change. A warm-up round of the same shapes first creates the
// series their status codes need.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { startRoutingStack, stopAll, httpRequest, waitFor } from './harness.mjs';
import { scrape } from './metrics-support.mjs';

const A = 'eu/pa/m1';
const B = 'eu/pb/m1';
const TOTAL = 10_000;
const WORKERS = 8;

let s;
before(async () => {
  s = await startRoutingStack({
    providers: ['pa', 'pb'],
    routes: [{ id: A, provider: 'pa' }, { id: B, provider: 'pb' }],
    fakeOpts: { chunks: 2 },
  });
});
after(stopAll);

const rand = () => randomBytes(6).toString('hex');

/** Request number `i`: one of eight shapes, each with fresh random strings. */
function requestFor(i) {
  const chat = (body, key = s.key) => ({
    method: 'POST', path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': rand() },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], ...body }),
  });
  switch (i % 8) {
    case 0: return chat({ model: `eu/r${rand()}/m${rand()}` });                      // unknown route: 404
    case 1: return chat({ model: `gpt-${rand()} "ünï" {x=\\n} ${rand()}` });          // not a model id: 400
    case 2: return chat({ model: A, failover: [`eu/f${rand()}/m`, `us/${rand()}/k`], stream: i % 16 === 2 }); // 200
    case 3: return chat({ model: `eu/r${rand()}/m1`, failover: [A] });               // unknown primary: 404
    case 4: return chat({ model: 'm1', region: rand(), provider: rand() });         // hints match no route
    case 5: return chat({ model: `k${rand()}`, region: 'eu', provider: rand() });
    case 6: return { method: 'POST', path: `/v1/${rand()}/${rand()}`, headers: { 'content-type': 'application/json' }, body: '{}' };
    default: return chat({ model: A }, `sk-${rand()}`);                             // unknown key: 401
  }
}

/** Sends requests first..first+count-1 over `agent` with WORKERS in parallel; returns the statuses
 * seen (status → count) and by shape ("shape:status" → count). */
async function send(agent, first, count) {
  const statuses = new Map();
  const byShape = new Map();
  let next = first;
  const worker = async () => {
    while (next < first + count) {
      const i = next++;
      const r = await httpRequest(agent, s.gw.port, requestFor(i));
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      byShape.set(`${i % 8}:${r.status}`, (byShape.get(`${i % 8}:${r.status}`) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, worker));
  return { statuses, byShape };
}

const answered = (m) => m.samples.filter((x) => x.name === 'tresor_requests_total' && x.labels.endpoint !== '/metrics')
  .reduce((a, x) => a + x.value, 0);

describe('bounded labels', { timeout: 240_000 }, () => {
  test(`${TOTAL} requests with random model names, failover entries, hints, paths and keys add no series`, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS });
    try {
      const { statuses: warm } = await send(agent, 0, 64);
      // The baseline once the warm-up and an earlier scrape (its own series: /metrics, 200) are counted.
      let base;
      await waitFor(async () => {
        base = await scrape(s.gw);
        return answered(base) >= 64 && base.select('tresor_requests_total', { endpoint: '/metrics' }).length > 0;
      }, { timeoutMs: 10_000, what: 'the warm-up and a scrape in /metrics' });

      const started = Date.now();
      const { statuses, byShape } = await send(agent, 64, TOTAL);
      console.log(`${TOTAL} requests in ${Date.now() - started} ms; shape:status ${JSON.stringify([...byShape].sort())}`);
      assert.equal([...statuses.values()].reduce((a, n) => a + n, 0), TOTAL);
      for (const status of statuses.keys()) assert.ok(warm.has(status), `status ${status} was seen in the warm-up too`);
      assert.ok(statuses.get(200) > 0 && statuses.get(404) > 0 && statuses.get(401) > 0, 'served, unknown and refused requests');

      let m;
      await waitFor(async () => answered(m = await scrape(s.gw)) - answered(base) === TOTAL,
        { timeoutMs: 20_000, what: `the ${TOTAL} requests in /metrics` });
      const before_ = base.seriesSet();
      const after_ = m.seriesSet();
      const added = [...after_].filter((x) => !before_.has(x));
      const gone = [...before_].filter((x) => !after_.has(x));
      assert.deepEqual(added, [], 'no series added');
      assert.deepEqual(gone, [], 'no series gone');
      // The values did change: the served ones went to configured routes only.
      assert.ok(m.sum('tresor_route_requests_total', { route: A }) > base.sum('tresor_route_requests_total', { route: A }));
      for (const x of m.samples) {
        for (const [k, v] of Object.entries(x.labels)) {
          if (k === 'route' || k === 'tresor_route') assert.ok(['', A, B].includes(v), `${x.name} ${k}=${v}`);
        }
      }
    } finally {
      agent.destroy();
    }
  });
});
