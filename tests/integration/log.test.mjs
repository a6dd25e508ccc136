// The receipts transparency log, gateway side (issue 19): checkpoints (signed notes that a
// node:crypto Ed25519 check accepts), receipts carrying their leaf index, checkpoint and
// inclusion proof, tiles and entry bundles that recompute the root, consistency proofs
// between checkpoints, no rollback across a restart, bad ranges, log.enabled: false.
// The independent verification with Go's sumdb/tlog is log-go.test.mjs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  startStack, stopAll, chatBody, fetchReceipt, restartGateway, waitFor, readErrorEnvelope, runRouterCli, tempDir,
  ROUTE_GPT,
} from './harness.mjs';
import {
  openCheckpoint, receiptEntry, leafHash, mth, verifyInclusion, verifyConsistency, getLog, leavesFromTiles,
  entriesFromBundles,
} from './log-support.mjs';

let s;
let vkey;

before(async () => {
  s = await startStack({ configHook: (c) => { c.log = { checkpoint_interval_ms: 100 }; return c; } });
  vkey = (await getLog(s.gw, '/v1/log/key')).text.trim();
});
after(stopAll);

async function receiptIds(n) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    // s.gw, not s.chat: the gateway is restarted on another port below.
    const res = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST', headers: s.authHeaders(), body: JSON.stringify(chatBody(ROUTE_GPT)),
    });
    const j = await res.json();
    assert.equal(res.status, 200);
    ids.push(j.tresor.receipt_id);
  }
  return ids;
}

async function checkpointOf(gw) {
  const r = await getLog(gw, '/v1/log/checkpoint');
  assert.equal(r.status, 200, r.text);
  return openCheckpoint(r.text, vkey);
}

/** Waits until the receipt's answer carries its inclusion proof; returns the JSON. */
async function coveredReceipt(gw, id) {
  let json;
  await waitFor(async () => {
    json = (await fetchReceipt(gw, s.key, id)).json;
    return json && json.inclusion_proof !== undefined;
  }, { timeoutMs: 10_000, what: `receipt ${id} covered by a checkpoint` });
  return json;
}

describe('transparency log', () => {
  test('the checkpoint is a signed note over origin, size and root; the key endpoint names the origin', async () => {
    const r = await getLog(s.gw, '/v1/log/checkpoint');
    assert.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const c = openCheckpoint(r.text, vkey);
    assert.equal(c.origin, 'tresor-router.local/receipts');
    assert.ok(vkey.startsWith('tresor-router.local/receipts+'));
    assert.throws(() => openCheckpoint(r.text.replace(/\n(\d+)\n/, (m, n) => `\n${Number(n) + 1}\n`), vkey),
      /does not verify/);
  });

  test('every receipt gets a leaf; its answer carries the checkpoint and an inclusion proof that verifies', async () => {
    const ids = await receiptIds(5);
    const indexes = new Set();
    for (const id of ids) {
      const j = await coveredReceipt(s.gw, id);
      assert.equal(j.id, id);
      const c = openCheckpoint(j.checkpoint, vkey);
      assert.ok(j.log_index < c.size);
      indexes.add(j.log_index);
      const proof = j.inclusion_proof.map((p) => Buffer.from(p, 'base64'));
      assert.ok(verifyInclusion(j.log_index, c.size, leafHash(receiptEntry(j.receipt)), proof, c.root));
      // Another receipt's entry does not verify at this index.
      const other = leafHash(Buffer.alloc(32, 7));
      assert.equal(verifyInclusion(j.log_index, c.size, other, proof, c.root), false);
    }
    assert.equal(indexes.size, ids.length);
  });

  test('tiles and entry bundles recompute the checkpoint root; every entry hashes to its level-0 tile hash', async () => {
    await receiptIds(300); // a full tile (256) and a partial one, and a level-1 tile
    let c;
    await waitFor(async () => { c = await checkpointOf(s.gw); return c.size >= 300; }, { what: 'checkpoint >= 300' });
    const leaves = await leavesFromTiles(s.gw, c.size);
    assert.ok(mth(leaves).equals(c.root), 'root from the level-0 tiles');
    const entries = await entriesFromBundles(s.gw, c.size);
    assert.equal(entries.length, c.size);
    entries.forEach((e, i) => assert.ok(leafHash(e).equals(leaves[i]), `entry ${i}`));
    // The level-1 tile's first hash is the MTH of the first full level-0 tile.
    const l1 = await getLog(s.gw, '/v1/log/tile/1/000.p/1');
    assert.equal(l1.status, 200);
    assert.ok(l1.body.equals(mth(leaves.slice(0, 256))));
    assert.match(l1.headers.get('cache-control'), /immutable/);
    // Beyond the checkpoint: 404.
    assert.equal((await getLog(s.gw, '/v1/log/tile/0/999')).status, 404);
    assert.equal((await getLog(s.gw, '/v1/log/tile/0/001.p/255')).status, 404);
    assert.equal((await getLog(s.gw, '/v1/log/tile/0/1')).status, 404); // not 3 digits
  });

  test('a later checkpoint is consistent with an earlier one (proof endpoint), and bad ranges are 400', async () => {
    const before = await checkpointOf(s.gw);
    await receiptIds(3);
    let now;
    await waitFor(async () => { now = await checkpointOf(s.gw); return now.size > before.size; }, { what: 'growth' });
    const r = await getLog(s.gw, `/v1/log/proof/consistency?old=${before.size}&new=${now.size}`);
    assert.equal(r.status, 200);
    const proof = JSON.parse(r.text).proof.map((p) => Buffer.from(p, 'base64'));
    assert.ok(verifyConsistency(before.size, now.size, before.root, now.root, proof));
    assert.equal(verifyConsistency(before.size, now.size, Buffer.alloc(32), now.root, proof), false);
    for (const q of [`old=${now.size}&new=${before.size}`, `old=1&new=${now.size + 1000}`, 'old=x&new=2', 'new=2']) {
      const bad = await fetch(s.gw.url(`/v1/log/proof/consistency?${q}`));
      await readErrorEnvelope(bad, { status: 400, code: 'invalid_log_range' });
    }
  });

  test('/metrics: tree and checkpoint size, and the log consistent', async () => {
    const c = await checkpointOf(s.gw);
    const text = await (await fetch(s.gw.url('/metrics'))).text();
    const value = (name) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);
    assert.ok(value('tresor_log_checkpoint_size') >= c.size);
    assert.ok(value('tresor_log_tree_size') >= value('tresor_log_checkpoint_size'));
    assert.equal(value('tresor_log_consistent'), 1);
    assert.equal(value('tresor_log_checkpoint_cosignatures'), 0);
  });

  test('a restarted gateway continues the log: same key, never a smaller checkpoint, old proofs still hold', async () => {
    const before = await checkpointOf(s.gw);
    await s.gw.stop();
    s.gw = await restartGateway(s.gw, { env: { FAKE_PROVIDER_KEY: s.providerKey } });
    const after = await checkpointOf(s.gw);
    assert.ok(after.size >= before.size);
    const ids = await receiptIds(2);
    const j = await coveredReceipt(s.gw, ids[1]);
    const c = openCheckpoint(j.checkpoint, vkey);
    assert.ok(j.log_index >= before.size, 'new leaves come after the old ones');
    const r = await getLog(s.gw, `/v1/log/proof/consistency?old=${before.size}&new=${c.size}`);
    const proof = JSON.parse(r.text).proof.map((p) => Buffer.from(p, 'base64'));
    assert.ok(verifyConsistency(before.size, c.size, before.root, c.root, proof));
  });
});

describe('transparency log disabled (log.enabled: false)', () => {
  let off;
  before(async () => {
    off = await startStack({ configHook: (c) => { c.log = { enabled: false }; return c; } });
  });

  test('no /v1/log endpoints, no log fields on receipts, no log metrics', async () => {
    for (const p of ['/v1/log/checkpoint', '/v1/log/key', '/v1/log/tile/0/000.p/1', '/v1/log/proof/consistency?old=0&new=0']) {
      const r = await fetch(off.gw.url(p));
      await readErrorEnvelope(r, { status: 404 });
    }
    const res = await off.chat(chatBody(ROUTE_GPT));
    const id = (await res.json()).tresor.receipt_id;
    const r = await fetchReceipt(off.gw, off.key, id);
    assert.deepEqual(Object.keys(r.json), ['id', 'receipt']);
    const metrics = await (await fetch(off.gw.url('/metrics'))).text();
    assert.doesNotMatch(metrics, /tresor_log_/);
  });
});

describe('tresor-router gen-log-key', () => {
  test('writes a new Ed25519 key 0600, never over an existing file; the gateway signs with it', async () => {
    const file = path.join(tempDir('tresor-logkey-'), 'log.pem');
    const made = runRouterCli(['gen-log-key', file]);
    assert.equal(made.status, 0, made.stderr);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = runRouterCli(['gen-log-key', file]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /cannot create \(File exists\)/);

    const withKey = await startStack({ configHook: (c) => { c.log = { key_file: file }; return c; } });
    const vkey = (await getLog(withKey.gw, '/v1/log/key')).text.trim();
    const raw = createPublicKey(readFileSync(file)).export({ format: 'der', type: 'spki' }).subarray(-32);
    assert.equal(Buffer.from(vkey.split('+').slice(2).join('+'), 'base64').subarray(1).toString('hex'), raw.toString('hex'));
  });
});
