// The transparency log's operator CLI (issue 19) against a running gateway: `witness --once`
// cosigns a growing log and the gateway serves the cosignature; `verify-log` checks that a
// newer checkpoint extends an older one (and, with --full, recomputes the root from the
// tiles); `verify-receipt --log-key` checks a receipt's inclusion. Tampering with the store
// while the gateway is down (a leaf's entry changed, a leaf removed, the stored checkpoint
// deleted so that the gateway re-signs what is left) makes both the witness and verify-log
// fail with a message an operator understands; so does a checkpoint signed by another key.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startStack, stopAll, tempDir, routerBin, waitFor, defaultStorePath, sqliteQuery, restartGateway, ROUTE_GPT,
} from './harness.mjs';

after(stopAll);

const ORIGIN = 'tresor.test/receipts';
const WITNESS = 'witness.test/w1';

function run(args) {
  return new Promise((resolve) => {
    execFile(routerBin(), args, { timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr, all: `${stdout}${stderr}` }));
  });
}

/** A signed-note verifier key (type 0x01) of a fresh Ed25519 key under `name`: "another key". */
function otherLogKey(name) {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const typed = Buffer.concat([Buffer.from([0x01]), raw]);
  const hash = createHash('sha256').update(Buffer.concat([Buffer.from(`${name}\n`), typed])).digest();
  return `${name}+${hash.subarray(0, 4).toString('hex')}+${typed.toString('base64')}`;
}

/** A tlog-cosignature v1 line over `text` at `time`, made here with node:crypto (not our C++). */
function cosignatureLine(text, name, keyPem, time) {
  const key = createPrivateKey(keyPem);
  const raw = key.export({ format: 'jwk' });
  const pub = Buffer.from(raw.x, 'base64url');
  const keyId = createHash('sha256').update(Buffer.concat([Buffer.from(`${name}\n`), Buffer.from([0x04]), pub]))
    .digest().subarray(0, 4);
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64BE(BigInt(time));
  const sig = sign(null, Buffer.from(`cosignature/v1\ntime ${time}\n${text}`), key);
  return `\u2014 ${name} ${Buffer.concat([keyId, ts, sig]).toString('base64')}\n`;
}

async function postCosignature(gw, body) {
  const r = await fetch(gw.url('/v1/log/cosignature'), { method: 'POST', headers: { 'content-type': 'text/plain' }, body });
  return { status: r.status, json: await r.json() };
}

/** A gateway with the log on (fast checkpoints) that accepts the witness's cosignatures. */
async function logStack() {
  const dir = tempDir('tresor-logcli-');
  const witnessKey = path.join(dir, 'witness.pem');
  const vkeyRun = await run(['witness-key', '--key', witnessKey, '--name', WITNESS]);
  assert.equal(vkeyRun.code, 0, vkeyRun.all);
  const witnessVkey = vkeyRun.stdout.trim();
  const s = await startStack({
    configHook: (config) => ({
      ...config,
      log: { enabled: true, origin: ORIGIN, key_file: 'state/log-ed25519.pem', checkpoint_interval_ms: 100,
        witnesses: [witnessVkey] },
    }),
  });
  const keyRes = await fetch(s.gw.url('/v1/log/key'));
  assert.equal(keyRes.status, 200);
  const logKey = (await keyRes.text()).trim();
  return { s, dir, witnessKey, witnessVkey, logKey, stateDir: path.join(dir, 'witness-state') };
}

/** n chat answers from the stack's current gateway (restartGateway gives it a new port). */
async function issueReceipts(s, n) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(s.gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: s.authHeaders(),
      body: JSON.stringify({ model: ROUTE_GPT, messages: [{ role: 'user', content: `receipt ${i}` }] }),
    });
    const body = await r.json();
    assert.equal(r.status, 200, JSON.stringify(body));
    ids.push(body.tresor.receipt_id);
  }
  return ids;
}

async function checkpointNote(gw) {
  const r = await fetch(gw.url('/v1/log/checkpoint'));
  assert.equal(r.status, 200);
  return r.text();
}

function noteSize(note) { return Number(note.split('\n')[1]); }

/** Waits until the served checkpoint covers at least `size` leaves; returns the note. */
async function checkpointOfAtLeast(gw, size) {
  let note;
  await waitFor(async () => {
    note = await checkpointNote(gw);
    return noteSize(note) >= size;
  }, { timeoutMs: 15_000, what: `a checkpoint of size >= ${size}` });
  return note;
}

function witnessArgs(t, gw) {
  return ['witness', '--log', gw.origin, '--log-key', t.logKey, '--state', t.stateDir, '--key', t.witnessKey,
    '--name', WITNESS, '--once'];
}

function verifyLogArgs(t, gw, oldFile, ...extra) {
  return ['verify-log', '--url', gw.origin, '--log-key', t.logKey, '--checkpoint', oldFile, ...extra];
}

/** A log of 5 receipts that the witness has cosigned; its checkpoint also saved in OLD_FILE. */
async function witnessedLog() {
  const t = await logStack();
  await issueReceipts(t.s, 5);
  await checkpointOfAtLeast(t.s.gw, 5);
  const ok = await run(witnessArgs(t, t.s.gw));
  assert.equal(ok.code, 0, ok.all);
  const oldFile = path.join(t.dir, 'old.checkpoint');
  const oldNote = await checkpointNote(t.s.gw);
  writeFileSync(oldFile, oldNote);
  return { t, oldFile, oldNote, oldSize: noteSize(oldNote) };
}

/** The store with the gateway stopped: `sql` run, then the stored checkpoint deleted, restart. */
async function tamperAndRestart(t, sql) {
  const db = defaultStorePath(t.s.gw);
  await t.s.gw.stop();
  sqliteQuery(db, `${sql}; DELETE FROM log_checkpoint;`);
  t.s.gw = await restartGateway(t.s.gw, { env: { FAKE_PROVIDER_KEY: t.s.providerKey } });
}

describe('transparency log CLI: witness, verify-log, verify-receipt --log-key', { timeout: 180_000 }, () => {
  test('a witness cosigns a growing log, the gateway serves its cosignature, verify-log and verify-receipt PASS',
    async () => {
      const t = await logStack();
      const { gw } = t.s;
      const ids = await issueReceipts(t.s, 3);
      await checkpointOfAtLeast(gw, 3);

      const first = await run(witnessArgs(t, gw));
      assert.equal(first.code, 0, first.all);
      assert.ok(first.stderr.includes(`witness: key ${t.witnessVkey}`), first.stderr);
      assert.match(first.stderr, /witness: cosigned tresor\.test\/receipts size \d+/);
      await waitFor(async () => (await checkpointNote(gw)).includes(`\n\u2014 ${WITNESS} `),
        { what: 'the cosignature on the served checkpoint' });
      assert.ok(existsSync(path.join(t.stateDir, 'tresor.test_receipts.checkpoint')));

      // First audit: no old checkpoint, so --full (root recomputed from the tiles).
      const oldFile = path.join(t.dir, 'old.checkpoint');
      const audit = await run(verifyLogArgs(t, gw, oldFile, '--full', '--save', oldFile));
      assert.equal(audit.code, 0, audit.all);
      assert.match(audit.stdout, /^PASS: tresor\.test\/receipts size \d+; root recomputed from \d+ entries\n$/);
      const noFull = await run(verifyLogArgs(t, gw, path.join(t.dir, 'missing')));
      assert.equal(noFull.code, 1);
      assert.match(noFull.stdout, /^FAIL: .*a first audit needs --full/);

      const oldSize = noteSize(readFileSync(oldFile, 'utf8'));
      await issueReceipts(t.s, 300); // more than one tile: a full tile and a partial one
      await checkpointOfAtLeast(gw, oldSize + 300);
      const second = await run(witnessArgs(t, gw));
      assert.equal(second.code, 0, second.all);
      const newFile = path.join(t.dir, 'new.checkpoint');
      const extend = await run(verifyLogArgs(t, gw, oldFile, '--full', '--save', newFile));
      assert.equal(extend.code, 0, extend.all);
      assert.match(extend.stdout, new RegExp(`^PASS: tresor\\.test/receipts size \\d+ extends size ${oldSize} \\(consistent\\)`));

      // verify-receipt --log-key: the receipt is in the log under the log's key.
      let answer;
      await waitFor(async () => {
        const r = await fetch(gw.url(`/v1/receipts/${ids[1]}`), { headers: { authorization: `Bearer ${t.s.key}` } });
        answer = await r.json();
        return answer.inclusion_proof !== undefined;
      }, { what: 'the receipt with its inclusion proof' });
      const receiptFile = path.join(t.dir, 'receipt.json');
      writeFileSync(receiptFile, JSON.stringify(answer));
      const jwks = gw.url('/.well-known/jwks.json');
      const inc = await run(['verify-receipt', '--jwks', jwks, '--log-key', t.logKey, receiptFile]);
      assert.equal(inc.code, 0, inc.all);
      assert.match(inc.stdout, new RegExp(`^PASS\\n[\\s\\S]*Log index: ${answer.log_index}\\nCheckpoint: tresor\\.test/receipts size \\d+\\n$`));
      const otherKey = await run(['verify-receipt', '--jwks', jwks, '--log-key', otherLogKey(ORIGIN), receiptFile]);
      assert.equal(otherKey.code, 1);
      assert.match(otherKey.stdout, /checkpoint signature does not verify with the given log key/);
      writeFileSync(receiptFile, JSON.stringify({ id: answer.id, receipt: answer.receipt }));
      const noFields = await run(['verify-receipt', '--jwks', jwks, '--log-key', t.logKey, receiptFile]);
      assert.equal(noFields.code, 1);
      assert.match(noFields.stdout, /has no log_index, checkpoint and inclusion_proof/);

      // A checkpoint signed by another key is rejected by verify-log and by the witness.
      const forged = otherLogKey(ORIGIN);
      const wrongKey = await run(['verify-log', '--url', gw.origin, '--log-key', forged, '--checkpoint', oldFile, '--full']);
      assert.equal(wrongKey.code, 1);
      assert.match(wrongKey.stdout, /^FAIL: .*checkpoint signature does not verify with the given log key/);
      const witnessWrongKey = await run([...witnessArgs(t, gw).map((a) => (a === t.logKey ? forged : a))]);
      assert.equal(witnessWrongKey.code, 1, witnessWrongKey.all);
      assert.match(witnessWrongKey.stderr, /witness: REFUSED tresor\.test\/receipts: checkpoint signature does not verify/);

      // An unreachable log is not a refusal: exit 2.
      await gw.stop();
      const down = await run(witnessArgs(t, gw));
      assert.equal(down.code, 2, down.all);
    });

  test('POST /v1/log/cosignature: a configured witness over the latest checkpoint only', async () => {
    const t = await logStack();
    await issueReceipts(t.s, 2);
    const oldNote = await checkpointOfAtLeast(t.s.gw, 2);
    const oldText = oldNote.split('\n\n')[0] + '\n';
    await issueReceipts(t.s, 1);
    const note = await checkpointOfAtLeast(t.s.gw, noteSize(oldNote) + 1);
    const text = note.split('\n\n')[0] + '\n';
    const pem = readFileSync(t.witnessKey);
    const now = Math.floor(Date.now() / 1000);

    const stale = await postCosignature(t.s.gw, oldNote + cosignatureLine(oldText, WITNESS, pem, now));
    assert.equal(stale.status, 409, JSON.stringify(stale.json));
    assert.equal(stale.json.error.code, 'checkpoint_superseded');
    const { privateKey } = generateKeyPairSync('ed25519');
    const stranger = await postCosignature(t.s.gw,
      note + cosignatureLine(text, WITNESS, privateKey.export({ format: 'pem', type: 'pkcs8' }), now));
    assert.equal(stranger.status, 400, JSON.stringify(stranger.json));
    assert.equal(stranger.json.error.code, 'invalid_cosignature');
    const garbage = await postCosignature(t.s.gw, 'not a note');
    assert.equal(garbage.status, 400);
    assert.equal(garbage.json.error.code, 'invalid_cosignature');
    assert.doesNotMatch(await checkpointNote(t.s.gw), new RegExp(`\n\u2014 ${WITNESS} `));

    const good = await postCosignature(t.s.gw, note + cosignatureLine(text, WITNESS, pem, now));
    assert.equal(good.status, 200, JSON.stringify(good.json));
    assert.deepEqual(good.json, { accepted: 1 });
    await waitFor(async () => (await checkpointNote(t.s.gw)).includes(`\n\u2014 ${WITNESS} `),
      { what: 'the cosignature on the served checkpoint' });
    // It stays served as the latest cosigned checkpoint after a newer checkpoint replaces it.
    await issueReceipts(t.s, 1);
    await checkpointOfAtLeast(t.s.gw, noteSize(note) + 1);
    const cosigned = await fetch(t.s.gw.url('/v1/log/checkpoint/cosigned'));
    assert.equal(cosigned.status, 200);
    const cosignedNote = await cosigned.text();
    assert.equal(noteSize(cosignedNote), noteSize(note));
    assert.ok(cosignedNote.includes(`\n\u2014 ${WITNESS} `));
  });

  test('a leaf changed in the store: the witness REFUSES and verify-log FAILs (rewritten log)', async () => {
    const { t, oldFile, oldSize } = await witnessedLog();

    await tamperAndRestart(t, 'UPDATE log_entries SET entry = randomblob(32) WHERE idx = 1');
    await issueReceipts(t.s, 1); // the log grows: the new checkpoint must extend the old one, and does not
    await checkpointOfAtLeast(t.s.gw, oldSize + 1);
    const refused = await run(witnessArgs(t, t.s.gw));
    assert.equal(refused.code, 1, refused.all);
    assert.match(refused.stderr,
      new RegExp(`witness: REFUSED tresor\\.test/receipts: consistency proof ${oldSize} -> \\d+ does not verify \\(the log was rewritten\\)`));
    const failed = await run(verifyLogArgs(t, t.s.gw, oldFile));
    assert.equal(failed.code, 1, failed.all);
    assert.match(failed.stdout, new RegExp(`^FAIL: consistency proof ${oldSize} -> \\d+ does not verify \\(the log was rewritten\\)\\n$`));
    // The witness kept its state: it refuses again rather than adopting the rewritten log.
    const again = await run(witnessArgs(t, t.s.gw));
    assert.equal(again.code, 1, again.all);
    assert.doesNotMatch(await checkpointNote(t.s.gw), new RegExp(`\n\u2014 ${WITNESS} `));
  });

  test('the last leaf removed from the store: the witness REFUSES and verify-log FAILs (rolled back, then forked)', async () => {
    const { t, oldFile, oldSize } = await witnessedLog();

    await tamperAndRestart(t, 'DELETE FROM log_entries WHERE idx = (SELECT max(idx) FROM log_entries)');
    let note;
    await waitFor(async () => { note = await checkpointNote(t.s.gw); return noteSize(note) === oldSize - 1; },
      { what: 'the re-signed, shorter checkpoint', timeoutMs: 5000 }).catch((e) => {
      throw new Error(`${e.message}; served: ${note}; gateway stderr: ${t.s.gw.proc.stderr.slice(-3000)}`);
    });
    const refused = await run(witnessArgs(t, t.s.gw));
    assert.equal(refused.code, 1, refused.all);
    assert.match(refused.stderr,
      new RegExp(`witness: REFUSED tresor\\.test/receipts: log rolled back from size ${oldSize} to ${oldSize - 1}`));
    const failed = await run(verifyLogArgs(t, t.s.gw, oldFile));
    assert.equal(failed.code, 1, failed.all);
    assert.equal(failed.stdout, `FAIL: log rolled back from size ${oldSize} to ${oldSize - 1}\n`);

    // One more receipt: the size is back, the root is not (another history of the same size).
    await issueReceipts(t.s, 1);
    await checkpointOfAtLeast(t.s.gw, oldSize);
    const forked = await run(verifyLogArgs(t, t.s.gw, oldFile));
    assert.equal(forked.code, 1, forked.all);
    assert.match(forked.stdout, new RegExp(`^FAIL: checkpoint for size ${oldSize} has root \\S+ but the witnessed root was \\S+ \\(fork\\)\n$`));
    const witnessFork = await run(witnessArgs(t, t.s.gw));
    assert.equal(witnessFork.code, 1, witnessFork.all);
    assert.match(witnessFork.stderr, /witness: REFUSED tresor\.test\/receipts: checkpoint for size \d+ has root .* \(fork\)/);
  });

  test('a leaf removed from the middle of the store: the gateway itself refuses to sign, nothing is cosigned',
    async () => {
      const { t, oldFile } = await witnessedLog();

      await tamperAndRestart(t, 'DELETE FROM log_entries WHERE idx = 2');
      // The hole is seen on the first read of the store: no checkpoint is signed over it
      // (the stored one was deleted with it), and the operator sees why.
      const consistent = async () => {
        const text = await (await fetch(t.s.gw.url('/metrics'))).text();
        return Number(/^tresor_log_consistent (\d)$/m.exec(text)?.[1]);
      };
      await waitFor(async () => (await consistent()) === 0, { what: 'tresor_log_consistent 0' });
      const r = await fetch(t.s.gw.url('/v1/log/checkpoint'));
      assert.equal(r.status, 503);
      await r.arrayBuffer();
      assert.match(t.s.gw.proc.stderr, /transparency log tresor\.test\/receipts: log entry 2 is missing from the store/);
      const witness = await run(witnessArgs(t, t.s.gw));
      assert.notEqual(witness.code, 0, witness.all);
      assert.doesNotMatch(witness.all, /cosigned/i);
      const audit = await run(verifyLogArgs(t, t.s.gw, oldFile));
      assert.notEqual(audit.code, 0, audit.all);
    });
});
