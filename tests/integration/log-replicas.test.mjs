// Issue 19 acceptance, "10,000 receipts across two replicas sharing Redis": one log, no
// fork, every receipt included exactly once, a witness cosigns throughout.
//
// One real redis-server on loopback, two gateway replicas on it (same receipt signing key,
// same log key file and origin, checkpoints every 200 ms), one fake upstream. 10,000
// non-streaming chat requests alternate between the replicas (32 in flight, keep-alive)
// while a poller per replica collects every checkpoint it serves and a witness process
// (`tresor-router witness`, pointed at replica A) verifies and cosigns them. Then:
//   - both replicas serve a checkpoint of size 10,000 with the same root;
//   - the entry bundles hold exactly the 10,000 receipts' entries (SHA-256 of each JWS
//     payload), each once, each at the log_index its GET /v1/receipts/{id} names, and every
//     inclusion proof it returns verifies; the level-0 tiles recompute the root;
//   - every checkpoint either poller saw is consistent with the final one (so all of them
//     pairwise: they are prefixes of one log), no poller saw a rollback;
//   - the witness never printed REFUSED, accepted the final checkpoint, and its cosignature was
//     served on checkpoints during the load and, through the store, by both replicas at the end.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, waitFor, tempDir,
  closedPort, redisPing, routerBin, chatBody, RECEIPT_ID_RE, ROUTE_GPT, performance,
} from './harness.mjs';
import {
  openCheckpoint, receiptEntry, leafHash, mth, verifyInclusion, getLog, leavesFromTiles, entriesFromBundles,
  pollCheckpoints, httpRequest, pool, inconsistentCheckpoints, cosignedBy,
} from './log-support.mjs';

const TOTAL = 10_000;
const CONCURRENCY = 32;
const ORIGIN = 'tresor.test/receipts';
const WITNESS = 'witness.test/w1';

let redis;
let witness;
let witnessErr = '';
let gwA;
let gwB;
let key;
let logVkey;
let witnessVkey;
let witnessState; // the witness's saved checkpoint
const agents = [];
const pollers = []; // stopped in after(), also when a test failed
let run; // the load test's pollers, for the cosignature test
/** How many checkpoints the witness has handled (accepted or refused). */
const witnessPolls = () => (witnessErr.match(/^witness: (cosigned|the log did not accept|REFUSED|.* superseded)/gm) ?? []).length;

before(async () => {
  const port = await closedPort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => redisPing(port), { what: 'redis-server PING' });
  const providerKey = makeProviderKey();
  const fake = await startFakeUpstream({ requireKey: providerKey, chunks: 2 });
  key = makeKey();
  const dir = tempDir('tresor-logrep-');
  const witnessKey = path.join(dir, 'witness.pem');
  witnessVkey = execFileSync(routerBin(), ['witness-key', '--key', witnessKey, '--name', WITNESS],
    { encoding: 'utf8' }).trim();
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
    providerFake: { max_connections: CONCURRENCY },
  });
  config.store = `redis://127.0.0.1:${port}/0`;
  // One deployment: both replicas sign receipts and checkpoints with the same key files.
  config.receipts = { signing_key_file: path.join(dir, 'receipt-es256.pem'), kid: 'router-receipt-1' };
  config.log = {
    enabled: true, origin: ORIGIN, key_file: path.join(dir, 'log-ed25519.pem'),
    // A checkpoint stays the latest for 2 s: a witness cycle (fetch, verify, consistency
    // proof, cosign, POST) fits in that even on 2 loaded cores under ASan, so cosignatures
    // are accepted during the load instead of all arriving after their checkpoint was replaced.
    checkpoint_interval_ms: 2000,
    witnesses: [witnessVkey],
  };
  gwA = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-A' });
  gwB = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-B' });
  logVkey = (await getLog(gwA, '/v1/log/key')).text.trim();
  assert.equal((await getLog(gwB, '/v1/log/key')).text.trim(), logVkey, 'one log key for both replicas');

  witnessState = path.join(dir, 'wstate', 'tresor.test_receipts.checkpoint');
  witness = spawn(routerBin(), ['witness', '--log', gwA.origin, '--log-key', logVkey, '--state', path.join(dir, 'wstate'),
    '--key', witnessKey, '--name', WITNESS, '--interval-ms', '100'], { stdio: ['ignore', 'ignore', 'pipe'] });
  witness.stderr.setEncoding('utf8');
  witness.stderr.on('data', (d) => { witnessErr += d; });
});

after(async () => {
  for (const a of agents) a.destroy();
  for (const p of pollers) await p.stop();
  if (witness) witness.kill('SIGKILL');
  await stopAll();
  if (redis) redis.kill('SIGKILL');
});

/** The served checkpoint of `gw`, verified with the log key. */
async function checkpointOf(gw) {
  const r = await getLog(gw, '/v1/log/checkpoint');
  assert.equal(r.status, 200, r.text);
  return openCheckpoint(r.text, logVkey);
}

describe('transparency log: 10,000 receipts, two replicas on one Redis, a witness', { timeout: 600_000 }, () => {
  test('one log, no fork, every receipt exactly once, witnessed throughout', async () => {
    const t0 = performance.now();
    const pollA = pollCheckpoints(() => gwA, logVkey, { witnessVkey, intervalMs: 10 });
    pollers.push(pollA);
    const pollB = pollCheckpoints(() => gwB, logVkey, { witnessVkey, intervalMs: 10 });
    pollers.push(pollB);
    // The witness accepts the log's first checkpoint (trust on first use) before the load.
    await waitFor(() => openCheckpoint(readFileSync(witnessState, 'utf8'), logVkey),
      { timeoutMs: 15_000, what: 'the witness accepting the first checkpoint' });

    // 1. The load: TOTAL requests alternating between the replicas, CONCURRENCY in flight.
    const agentA = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const agentB = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    agents.push(agentA, agentB);
    const body = JSON.stringify(chatBody(ROUTE_GPT));
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const ids = new Array(TOTAL);
    const failures = [];
    await pool(TOTAL, CONCURRENCY, async (i) => {
      const [gw, agent] = i % 2 ? [gwB, agentB] : [gwA, agentA];
      try {
        const r = await httpRequest(agent, gw.port, { method: 'POST', path: '/v1/chat/completions', headers, body });
        if (r.status !== 200) { failures.push(`request ${i}: HTTP ${r.status} ${r.text.slice(0, 200)}`); return; }
        const id = JSON.parse(r.text).tresor?.receipt_id;
        if (!RECEIPT_ID_RE.test(id ?? '')) failures.push(`request ${i}: no receipt id`);
        else ids[i] = id;
      } catch (e) {
        failures.push(`request ${i}: ${e.message}`);
      }
    });
    const loadMs = performance.now() - t0;
    console.log(`log-replicas: ${TOTAL} requests in ${(loadMs / 1000).toFixed(1)} s ` +
      `(${(TOTAL / (loadMs / 1000)).toFixed(0)}/s); checkpoints seen A ${pollA.seen.size}, B ${pollB.seen.size}`);
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} requests failed`);
    assert.equal(new Set(ids).size, TOTAL, 'every request got its own receipt id');

    // 2. Both replicas converge on one checkpoint of the whole log (bounded wait).
    let final;
    await waitFor(async () => {
      const [a, b] = [await checkpointOf(gwA), await checkpointOf(gwB)];
      if (a.size !== TOTAL || b.size !== TOTAL) return false;
      assert.ok(a.root.equals(b.root), `replicas serve size ${TOTAL} with different roots: a fork`);
      final = a;
      return true;
    }, { timeoutMs: 30_000, intervalMs: 100, what: `both replicas serving a checkpoint of size ${TOTAL}` });

    // 3. Every receipt: its log_index, entry and inclusion proof (fetched from either replica).
    const agentR = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    agents.push(agentR);
    const entryOf = new Array(TOTAL);
    const indexOf = new Array(TOTAL);
    const receiptProblems = [];
    const checkpointCache = new Map();
    await pool(TOTAL, CONCURRENCY, async (i) => {
      const gw = i % 3 ? gwA : gwB; // not the replica it was issued by, for a third of them
      const r = await httpRequest(agentR, gw.port, {
        path: `/v1/receipts/${ids[i]}`, headers: { authorization: `Bearer ${key}` },
      });
      if (r.status !== 200) { receiptProblems.push(`${ids[i]}: HTTP ${r.status}`); return; }
      const j = JSON.parse(r.text);
      entryOf[i] = receiptEntry(j.receipt);
      indexOf[i] = j.log_index;
      if (!Number.isInteger(j.log_index) || j.inclusion_proof === undefined) {
        receiptProblems.push(`${ids[i]}: no log_index/inclusion proof after the final checkpoint: ${r.text.slice(0, 200)}`);
        return;
      }
      let c = checkpointCache.get(j.checkpoint);
      if (!c) { c = openCheckpoint(j.checkpoint, logVkey); checkpointCache.set(j.checkpoint, c); }
      const proof = j.inclusion_proof.map((p) => Buffer.from(p, 'base64'));
      if (!verifyInclusion(j.log_index, c.size, leafHash(entryOf[i]), proof, c.root)) {
        receiptProblems.push(`${ids[i]}: inclusion proof at ${j.log_index} in size ${c.size} does not verify`);
      }
    });
    assert.deepEqual(receiptProblems.slice(0, 5), [], `${receiptProblems.length} receipts without a valid proof`);

    // 4. The entries: exactly the receipts' entries, each once, each at its receipt's index.
    const entries = await entriesFromBundles(gwB, final.size);
    assert.equal(entries.length, TOTAL);
    const entriesA = await entriesFromBundles(gwA, final.size);
    assert.ok(entries.every((e, n) => e.equals(entriesA[n])), 'both replicas serve the same entry bundles');
    const hex = entries.map((e) => e.toString('hex'));
    assert.equal(new Set(hex).size, TOTAL, 'no entry is logged twice');
    assert.deepEqual([...hex].sort(), entryOf.map((e) => e.toString('hex')).sort(),
      'the entries are exactly the receipts\' SHA-256(JWS payload)');
    const misplaced = indexOf.map((n, i) => (hex[n] === entryOf[i].toString('hex') ? null : `${ids[i]}@${n}`))
      .filter(Boolean);
    assert.deepEqual(misplaced.slice(0, 5), [], `${misplaced.length} receipts whose log_index holds another entry`);
    const leaves = await leavesFromTiles(gwA, final.size);
    assert.ok(leaves.every((l, n) => l.equals(leafHash(entries[n]))), 'level-0 tiles are the entries\' leaf hashes');
    assert.ok(mth(leaves).equals(final.root), 'the tiles recompute the final root');

    // 5. Every checkpoint served during the run extends into the final one; no rollback.
    const [seenA, seenB] = [await pollA.stop(), await pollB.stop()];
    const all = [...seenA.seen.values(), ...seenB.seen.values()];
    console.log(`log-replicas: ${seenA.polls}+${seenB.polls} polls, ${seenA.seen.size}+${seenB.seen.size} distinct ` +
      `checkpoints, cosigned checkpoints served: ${seenA.cosigned.length}+${seenB.cosigned.length}; ` +
      `total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.deepEqual([...seenA.badNotes, ...seenB.badNotes], [], 'every served checkpoint verifies with the log key');
    assert.deepEqual([...seenA.rollbacks, ...seenB.rollbacks], [], 'no poller saw a rollback');
    // Checkpoints come every 2 s (for the witness, above): on a fast machine the load is over
    // in a few of them. At least the one from before the load and one covering all of it.
    assert.ok(seenA.seen.size >= 2 && seenB.seen.size >= 2, 'checkpoints were published as the log grew');
    const sizes = new Map();
    for (const c of all) {
      const other = sizes.get(c.size);
      assert.ok(!other || other.equals(c.root), `two roots for size ${c.size}: a fork`);
      sizes.set(c.size, c.root);
    }
    assert.deepEqual(await inconsistentCheckpoints(gwB, all, final), []);

    // 6. The witness verified every checkpoint it polled and never refused one; neither replica
    //    stopped signing (the log says so on stderr when the store disagrees with a checkpoint).
    assert.ok(!witnessErr.includes('REFUSED'), `the witness refused:\n${witnessErr.slice(-2000)}`);
    assert.equal(witness.exitCode, null, `the witness is still running:\n${witnessErr.slice(-2000)}`);
    assert.ok(witnessPolls() >= 5, `the witness polled throughout:\n${witnessErr.slice(-2000)}`);
    // It accepted the final checkpoint: verified against its saved one, and saved in its place.
    await waitFor(() => {
      const saved = openCheckpoint(readFileSync(witnessState, 'utf8'), logVkey);
      return saved.size === TOTAL && saved.text === final.text;
    }, { timeoutMs: 15_000, what: 'the witness\'s state holding the final checkpoint' });
    for (const gw of [gwA, gwB]) {
      assert.doesNotMatch(gw.proc.stderr, /transparency log .*no checkpoint is signed/, gw.proc.name);
    }
    run = { seenA, seenB };
  });

  test('the witness cosigned during the run: its cosignature was served on a checkpoint', async () => {
    assert.ok(run, 'the load test ran');
    assert.match(witnessErr, /witness: cosigned tresor\.test\/receipts size \d+/, witnessErr.slice(-2000));
    // Sizes below TOTAL were served while the load ran.
    const during = new Set([...run.seenA.cosigned, ...run.seenB.cosigned].filter((n) => n < TOTAL));
    const accepted = new Set([...witnessErr.matchAll(/^witness: cosigned \S+ size (\d+)$/gm)].map((m) => Number(m[1])));
    const superseded = (witnessErr.match(/was superseded before the cosignature arrived/g) ?? []).length;
    console.log(`log-replicas: witness cosignatures accepted for ${[...accepted].filter((n) => n < TOTAL).length} ` +
      `checkpoints during the load (${superseded} superseded before they arrived); ${during.size} of them seen served`);
    assert.ok([...accepted].some((n) => n < TOTAL), 'the gateway accepted a cosignature during the load');
    assert.ok(during.size > 0, 'a checkpoint carrying the witness\'s cosignature was served during the load');
    // Cosignatures are shared through the store: replica B serves the witness's line too.
    for (const gw of [gwA, gwB]) {
      await waitFor(async () => {
        const r = await getLog(gw, '/v1/log/checkpoint');
        return openCheckpoint(r.text, logVkey).size === TOTAL && cosignedBy(r.text, witnessVkey);
      }, { timeoutMs: 15_000, what: `${gw.proc.name}: the final checkpoint cosigned by the witness` });
    }
  });
});
