// Issue 19 acceptance, "kill -9 during load, then restart": the tree size never goes
// backwards, every receipt whose id a client received is in the log, and the witness still
// accepts the next checkpoint.
//
// One gateway on the SQLite store (its default state dir) on a fixed loopback port, so that a
// witness process (`tresor-router witness`, polling every 200 ms) and a checkpoint poller keep
// running across the crashes. ROUNDS times: chat load at 32 in flight, SIGKILL once KILL_AFTER
// answers arrived (more are in flight), restart on the same config. After each restart:
//   - the first checkpoint served is at least as large as the largest one served before the
//     crash, and consistent with every checkpoint served before (the poller never saw a
//     smaller size or another root for a size);
//   - every receipt id received so far (all rounds) is fetched: its answer carries log_index,
//     a checkpoint signed by the log key and an inclusion proof that verifies against it;
//   - the witness accepts a checkpoint published after the restart (its saved state moves on
//     to it, the gateway serves its cosignature) and never printed REFUSED.
// At the end: every stored receipt has exactly one leaf (log_entries rows = receipts rows,
// entries distinct).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  startStack, stopAll, chatBody, killHard, restartGateway, waitFor, tempDir, closedPort, routerBin,
  defaultStorePath, sqliteQuery, RECEIPT_ID_RE, ROUTE_GPT, performance,
} from './harness.mjs';
import {
  openCheckpoint, receiptEntry, leafHash, verifyInclusion, getLog, pollCheckpoints, httpRequest, pool,
  inconsistentCheckpoints, cosignedBy, entriesFromBundles,
} from './log-support.mjs';

const ROUNDS = 3;
const CONCURRENCY = 32;
const PER_ROUND = 3000; // an upper bound: the kill ends the round
const KILL_AFTER = 800;
const ORIGIN = 'tresor.test/receipts';
const WITNESS = 'witness.test/w1';

const agents = [];
const pollers = []; // stopped in after(), also when a test failed
let witness;
let witnessErr = '';
after(async () => {
  for (const a of agents) a.destroy();
  for (const p of pollers) await p.stop();
  if (witness) witness.kill('SIGKILL');
  await stopAll();
});

/** One round of load against `s.gw`; SIGKILLs it after KILL_AFTER answers. Returns the ids. */
async function loadUntilKilled(s) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  agents.push(agent);
  const body = JSON.stringify(chatBody(ROUTE_GPT));
  const headers = { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' };
  const ids = [];
  const beforeKill = []; // failures before the SIGKILL: none expected
  let inFlight = 0;
  let inFlightAtKill = -1;
  let killed = null;
  await pool(PER_ROUND, CONCURRENCY, async () => {
    inFlight++;
    try {
      const r = await httpRequest(agent, s.gw.port, { method: 'POST', path: '/v1/chat/completions', headers, body });
      if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.text.slice(0, 200)}`);
      const id = JSON.parse(r.text).tresor?.receipt_id;
      if (!RECEIPT_ID_RE.test(id ?? '')) throw new Error(`no receipt id: ${r.text.slice(0, 200)}`);
      ids.push(id);
      if (ids.length >= KILL_AFTER && !killed) {
        inFlightAtKill = inFlight - 1;
        killed = killHard(s.gw); // SIGKILL is sent synchronously, here
      }
    } catch (e) {
      if (!killed) beforeKill.push(e.message);
    } finally {
      inFlight--;
    }
  }, () => killed !== null);
  agent.destroy();
  assert.deepEqual(beforeKill.slice(0, 5), [], `${beforeKill.length} requests failed before the SIGKILL`);
  assert.ok(killed, 'the gateway was killed during the load');
  assert.equal((await killed).signal, 'SIGKILL');
  assert.ok(inFlightAtKill > 0, 'requests were in flight at the SIGKILL');
  return ids;
}

/** Every id's receipt carries log_index and an inclusion proof verifying against its checkpoint. */
async function assertAllIncluded(s, ids, vkey, minSize) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  agents.push(agent);
  const problems = [];
  const indexes = new Set();
  const checkpoints = new Map();
  await pool(ids.length, CONCURRENCY, async (i) => {
    const r = await httpRequest(agent, s.gw.port, { path: `/v1/receipts/${ids[i]}`, headers: { authorization: `Bearer ${s.key}` } });
    if (r.status !== 200) { problems.push(`${ids[i]}: HTTP ${r.status} ${r.text.slice(0, 120)}`); return; }
    const j = JSON.parse(r.text);
    if (!Number.isInteger(j.log_index) || !j.inclusion_proof) {
      problems.push(`${ids[i]}: not covered: ${r.text.slice(0, 200)}`);
      return;
    }
    indexes.add(j.log_index);
    let c = checkpoints.get(j.checkpoint);
    if (!c) { c = openCheckpoint(j.checkpoint, vkey); checkpoints.set(j.checkpoint, c); }
    if (c.size < minSize) problems.push(`${ids[i]}: proof against size ${c.size} < ${minSize}`);
    const proof = j.inclusion_proof.map((p) => Buffer.from(p, 'base64'));
    if (!verifyInclusion(j.log_index, c.size, leafHash(receiptEntry(j.receipt)), proof, c.root)) {
      problems.push(`${ids[i]}: inclusion proof at ${j.log_index} in size ${c.size} does not verify`);
    }
  });
  agent.destroy();
  assert.deepEqual(problems.slice(0, 5), [], `${problems.length} of ${ids.length} received receipts not proven in the log`);
  assert.equal(indexes.size, ids.length, 'each receipt has its own leaf');
}

describe('transparency log: kill -9 during load, restart', { timeout: 240_000 }, () => {
  test('no rollback, every received receipt is in the log, the witness accepts the next checkpoint', async () => {
    const t0 = performance.now();
    const dir = tempDir('tresor-logcrash-');
    const witnessKey = path.join(dir, 'witness.pem');
    const witnessVkey = execFileSync(routerBin(), ['witness-key', '--key', witnessKey, '--name', WITNESS],
      { encoding: 'utf8' }).trim();
    const port = await closedPort(); // fixed: the witness and the poller follow the restarts
    const s = await startStack({
      configOverrides: { server: { listen: `127.0.0.1:${port}` }, providerFake: { max_connections: CONCURRENCY } },
      configHook: (c) => ({
        ...c,
        log: { enabled: true, origin: ORIGIN, key_file: 'state/log-ed25519.pem', checkpoint_interval_ms: 200,
          witnesses: [witnessVkey] },
      }),
    });
    const vkey = (await getLog(s.gw, '/v1/log/key')).text.trim();
    const witnessState = path.join(dir, 'wstate', 'tresor.test_receipts.checkpoint');
    witness = spawn(routerBin(), ['witness', '--log', s.gw.origin, '--log-key', vkey, '--state', path.join(dir, 'wstate'),
      '--key', witnessKey, '--name', WITNESS, '--interval-ms', '200'], { stdio: ['ignore', 'ignore', 'pipe'] });
    witness.stderr.setEncoding('utf8');
    witness.stderr.on('data', (d) => { witnessErr += d; });
    const savedByWitness = () => openCheckpoint(readFileSync(witnessState, 'utf8'), vkey);
    await waitFor(() => savedByWitness(), { timeoutMs: 15_000, what: 'the witness accepting the first checkpoint' });

    const poller = pollCheckpoints(() => s.gw, vkey, { intervalMs: 25, witnessVkey });
    pollers.push(poller);
    const received = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const roundStart = performance.now();
      received.push(...await loadUntilKilled(s));
      const beforeCrash = [...poller.seen.values()];
      const maxBefore = Math.max(...beforeCrash.map((c) => c.size));
      s.gw = await restartGateway(s.gw, { env: { FAKE_PROVIDER_KEY: s.providerKey } });
      assert.equal(s.gw.port, port);

      // The restarted gateway's checkpoint: never smaller, and every earlier one extends into it.
      let first;
      await waitFor(async () => {
        const r = await getLog(s.gw, '/v1/log/checkpoint'); // 503 until the log has read the store
        if (r.status === 200) first = openCheckpoint(r.text, vkey);
        return first;
      }, { what: `round ${round}: a checkpoint served after the restart` });
      assert.ok(first.size >= maxBefore, `round ${round}: first checkpoint after the restart ${first.size} < ${maxBefore}`);
      let now;
      await waitFor(async () => {
        now = openCheckpoint((await getLog(s.gw, '/v1/log/checkpoint')).text, vkey);
        return now.size >= received.length;
      }, { timeoutMs: 15_000, what: `a checkpoint covering the ${received.length} received receipts` });
      assert.deepEqual(await inconsistentCheckpoints(s.gw, beforeCrash, now), [], `round ${round}`);

      await assertAllIncluded(s, received, vkey, maxBefore);

      // The witness, polling across the crash, accepts a checkpoint published after the restart.
      await waitFor(() => {
        if (witnessErr.includes('REFUSED')) throw new Error(`the witness refused: ${witnessErr.match(/witness: REFUSED.*/)[0]}`);
        return savedByWitness().size >= now.size;
      },
        { timeoutMs: 15_000, what: `round ${round}: the witness accepting checkpoint ${now.size}` });
      assert.ok(!witnessErr.includes('REFUSED'), `round ${round}: the witness refused:\n${witnessErr.slice(-2000)}`);
      assert.equal(witness.exitCode, null, `round ${round}: the witness kept running:\n${witnessErr.slice(-2000)}`);
      // ... and the restarted gateway takes its cosignature and serves it.
      await waitFor(async () => {
        const r = await getLog(s.gw, '/v1/log/checkpoint');
        return openCheckpoint(r.text, vkey).size >= now.size && cosignedBy(r.text, witnessVkey);
      }, { timeoutMs: 15_000, what: `round ${round}: the witness's cosignature served after the restart` });
      console.log(`log-crash round ${round}: ${received.length} receipt ids so far; checkpoint before the crash ` +
        `${maxBefore}, first after ${first.size}, now ${now.size}; round ${((performance.now() - roundStart) / 1000).toFixed(1)} s`);
    }

    const seen = await poller.stop();
    assert.deepEqual(seen.badNotes, [], 'every served checkpoint verifies with the log key');
    assert.deepEqual(seen.rollbacks, [], 'no checkpoint size went backwards, no size changed its root');
    // Every stored receipt is a leaf, exactly once (the store's own rows, with the gateway running).
    const db = defaultStorePath(s.gw);
    const rows = Number(sqliteQuery(db, 'SELECT count(*) FROM receipts;'));
    const leaves = Number(sqliteQuery(db, 'SELECT count(*) FROM log_entries;'));
    assert.equal(leaves, rows, 'one leaf per stored receipt');
    let final;
    await waitFor(async () => {
      final = openCheckpoint((await getLog(s.gw, '/v1/log/checkpoint')).text, vkey);
      return final.size === leaves;
    }, { timeoutMs: 15_000, what: `a checkpoint of all ${leaves} leaves` });
    const entries = await entriesFromBundles(s.gw, final.size);
    assert.equal(new Set(entries.map((e) => e.toString('hex'))).size, final.size, 'no entry twice');

    console.log(`log-crash: ${ROUNDS} kills, ${received.length} receipt ids, ${rows} stored, log size ${final.size}, ` +
      `cosigned checkpoints served ${new Set(seen.cosigned).size}; total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });
});
