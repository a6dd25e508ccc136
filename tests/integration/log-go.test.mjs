// Transparency log, independent verification (issue 19 acceptance): tests/log-verify, a Go
// program on golang.org/x/mod/sumdb/tlog and sumdb/note (Debian golang-golang-x-mod-dev: code none
// of us wrote), checks a running gateway's log: the checkpoint's note signature under the log key
// (pinned here from the key file, not taken from the gateway), the root recomputed from the C2SP
// tiles and from the entry bundles, every entry against its level-0 tile hash, and for every
// receipt fetched through the API: its entry (SHA-256 of the JWS payload) at its log_index, its
// inclusion_proof against the checkpoint it came with, that checkpoint's consistency with the
// latest, and a proof built from the tiles.
//
// 300 receipts: one full 256-entry tile plus a partial one. The first 150 receipts are fetched
// as soon as a checkpoint covers them, so they carry an older checkpoint than the last 150.
//
// Needs `go` and the Go sources of golang.org/x/mod under /usr/share/gocode (scripts/setup.sh
// installs golang-go and golang-golang-x-mod-dev); fails, never skips, without them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startStack, stopAll, chatBody, fetchReceipt, tempDir, waitFor, REPO_ROOT, RECEIPT_ID_RE, ROUTE_GPT,
} from './harness.mjs';

const ORIGIN = 'tresor-router.test/log-go';
const FIRST = 150;
const TOTAL = 300;
const CONCURRENCY = 6;
// Debian's golang-golang-x-mod-dev puts the sources here; the program builds in GOPATH mode,
// offline (no go.mod, no module proxy).
const GOPATH = '/usr/share/gocode';

let s;
let keyFile;
let verifier; // path of the built Go program
let work;

/** C2SP signed-note verifier key of an Ed25519 public key (32 raw bytes), as sumdb/note builds it. */
function vkeyOf(name, pub) {
  const keyed = Buffer.concat([Buffer.from([0x01]), pub]);
  const hash = createHash('sha256').update(Buffer.concat([Buffer.from(`${name}\n`), keyed])).digest();
  return `${name}+${hash.subarray(0, 4).toString('hex')}+${keyed.toString('base64')}`;
}

function rawPublicKey(publicKey) {
  return Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
}

/** Builds tests/log-verify into `dir`; throws with what to install when Go or x/mod is missing. */
function buildVerifier(dir) {
  const out = path.join(dir, 'log-verify');
  const r = spawnSync('go', ['build', '-o', out, path.join(REPO_ROOT, 'tests', 'log-verify', 'main.go')], {
    encoding: 'utf8',
    timeout: 240_000,
    env: {
      ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: path.join(dir, 'gocache'), GOFLAGS: '',
      GOPROXY: 'off', GOTOOLCHAIN: 'local',
    },
  });
  const hint = 'install golang-go and golang-golang-x-mod-dev (scripts/setup.sh does)';
  if (r.error && r.error.code === 'ENOENT') throw new Error(`the go command is not installed: ${hint}`);
  if (r.error) throw r.error;
  if (r.status !== 0) {
    throw new Error(`go build tests/log-verify failed (exit ${r.status}; ${hint}):\n${r.stderr}`);
  }
  return out;
}

/** Runs the Go verifier (asynchronously: the gateway's output pipes keep draining). */
function runVerifier(args) {
  return new Promise((resolve) => {
    execFile(verifier, args, { encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr });
    });
  });
}

async function checkpointSize() {
  const r = await fetch(s.gw.url('/v1/log/checkpoint'));
  const text = await r.text();
  if (r.status !== 200) throw new Error(`GET /v1/log/checkpoint: ${r.status} ${text}`);
  return Number(text.split('\n')[1]);
}

/** `count` chat completions; returns their receipt ids in completion order. */
async function completions(count) {
  const ids = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const res = await s.chat(chatBody(ROUTE_GPT));
      const text = await res.text();
      assert.equal(res.status, 200, text);
      const id = JSON.parse(text).tresor?.receipt_id;
      assert.match(id ?? '', RECEIPT_ID_RE, text);
      ids.push(id);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return ids;
}

/** Waits until the latest checkpoint covers `size` leaves, then fetches each receipt (JSON text). */
async function coveredReceipts(ids, size) {
  await waitFor(async () => (await checkpointSize()) >= size,
    { timeoutMs: 30_000, intervalMs: 50, what: `a checkpoint of size ≥ ${size}` });
  const answers = [];
  for (const id of ids) {
    const r = await fetchReceipt(s.gw, s.key, id);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.json), ['id', 'receipt', 'log_index', 'checkpoint', 'inclusion_proof'], r.text);
    answers.push(r.text);
  }
  return answers;
}

before(async () => {
  work = tempDir('tresor-log-go-');
  verifier = buildVerifier(work); // first: a missing toolchain fails fast, with the fix
  keyFile = path.join(work, 'log-ed25519.pem');
  s = await startStack({
    configHook: (c) => ({ ...c, log: { enabled: true, origin: ORIGIN, key_file: keyFile, checkpoint_interval_ms: 100 } }),
  });
});
after(stopAll);

describe('transparency log: verified by Go sumdb/tlog and note', { timeout: 240_000 }, () => {
  let vkey;
  let receiptsFile;

  test(`${TOTAL} receipts: the Go verifier checks the signature, tiles, entries and every inclusion proof`, async () => {
    // The operator's pinned key: derived from the key file, and the gateway's /v1/log/key agrees.
    assert.ok(existsSync(keyFile), 'the gateway created the log key file');
    vkey = vkeyOf(ORIGIN, rawPublicKey(createPublicKey(createPrivateKey(readFileSync(keyFile)))));
    const served = await fetch(s.gw.url('/v1/log/key'));
    assert.equal((await served.text()).trim(), vkey);

    const early = await coveredReceipts(await completions(FIRST), FIRST);
    const late = await coveredReceipts(await completions(TOTAL - FIRST), TOTAL);
    const sizes = (answers) => answers.map((t) => Number(JSON.parse(t).checkpoint.split('\n')[1]));
    assert.ok(Math.max(...sizes(early)) < TOTAL, 'the early receipts carry an older checkpoint (consistency is checked)');
    assert.ok(sizes(late).every((n) => n === TOTAL), `the late receipts carry the size-${TOTAL} checkpoint`);

    receiptsFile = path.join(work, 'receipts.jsonl');
    writeFileSync(receiptsFile, [...early, ...late].join('\n') + '\n');
    const r = await runVerifier(['--url', s.gw.origin, '--vkey', vkey, '--receipts', receiptsFile]);
    assert.equal(r.code, 0, `log-verify failed:\n${r.stderr}${r.stdout}`);
    assert.match(r.stdout, new RegExp(`^PASS ${ORIGIN} size ${TOTAL} root \\S+: tiles and ${TOTAL} entries verified, ` +
      `${TOTAL} receipts included\\n$`));
  });

  test('a checkpoint checked with another key is rejected', async () => {
    assert.ok(vkey, 'needs the first test');
    const other = vkeyOf(ORIGIN, rawPublicKey(generateKeyPairSync('ed25519').publicKey));
    const r = await runVerifier(['--url', s.gw.origin, '--vkey', other, '--receipts', receiptsFile]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^FAIL: checkpoint: note signature by tresor-router\.test\/log-go: note has no verifiable signatures\n$/);
    assert.equal(r.stdout, '');
  });

  test('a receipt whose inclusion proof was altered fails the check', async () => {
    assert.ok(receiptsFile, 'needs the first test');
    const answers = readFileSync(receiptsFile, 'utf8').trim().split('\n').map((t) => JSON.parse(t));
    const victim = answers.find((a) => a.inclusion_proof.length > 0);
    const first = Buffer.from(victim.inclusion_proof[0], 'base64');
    first[0] ^= 1;
    victim.inclusion_proof[0] = first.toString('base64');
    const altered = path.join(work, 'altered.jsonl');
    writeFileSync(altered, answers.map((a) => JSON.stringify(a)).join('\n') + '\n');
    const r = await runVerifier(['--url', s.gw.origin, '--vkey', vkey, '--receipts', altered]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`^FAIL: receipt ${victim.id}: inclusion_proof for index ${victim.log_index} ` +
      'in size \\d+: invalid transparency proof\\n$'));
  });
});
