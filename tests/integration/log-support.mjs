// Client-side checks of the receipts transparency log (issue 19), written from the specs
// (RFC 9162 §2.1, C2SP signed-note / tlog-checkpoint) with node:crypto only, so that the
// tests verify the gateway's log with code that shares nothing with it.
import { createHash, createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { httpRequest } from './harness.mjs';

export { httpRequest };

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

export const leafHash = (entry) => sha256(Buffer.from([0]), entry);
export const nodeHash = (l, r) => sha256(Buffer.from([1]), l, r);

/** A receipt's log entry: SHA-256 of its JWS payload (the claims as issued). */
export function receiptEntry(jws) {
  return sha256(Buffer.from(jws.split('.')[1], 'base64url'));
}

/** MTH of a list of leaf hashes (RFC 9162 §2.1.1). */
export function mth(leaves) {
  if (leaves.length === 0) return sha256();
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

/** RFC 9162 §2.1.3.2. */
export function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index; let sn = size - 1; let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 §2.1.4.2. */
export function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  if (oldSize === 0) return proof.length === 0;
  if (oldSize > newSize) return false;
  if (oldSize === newSize) return proof.length === 0 && oldRoot.equals(newRoot);
  let path = proof;
  if ((oldSize & (oldSize - 1)) === 0) path = [oldRoot, ...proof];
  if (path.length === 0) return false;
  let fn = oldSize - 1; let sn = newSize - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0]; let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr); sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(oldRoot) && sr.equals(newRoot);
}

/**
 * Verifies a signed note against a vkey "<name>+<hash>+<base64(0x01||pub)>" and parses the
 * checkpoint it carries. Throws on a bad signature. Returns { origin, size, root, text, signatures }.
 */
export function openCheckpoint(note, vkey) {
  // The base64 key may itself contain '+': split at the first two only.
  const [name, hashHex, ...rest] = vkey.trim().split('+');
  const keyB64 = rest.join('+');
  const keyBytes = Buffer.from(keyB64, 'base64');
  if (keyBytes[0] !== 1 || keyBytes.length !== 33) throw new Error(`not an Ed25519 vkey: ${vkey}`);
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('note has no signature block');
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2).split('\n').filter((l) => l !== '');
  const pub = createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), keyBytes.subarray(1)]), format: 'der', type: 'spki',
  });
  let verified = false;
  for (const line of lines) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const blob = Buffer.from(m[2], 'base64');
    if (blob.subarray(0, 4).toString('hex') !== hashHex) continue;
    if (cryptoVerify(null, Buffer.from(text), pub, blob.subarray(4))) verified = true;
  }
  if (!verified) throw new Error('checkpoint signature does not verify with the log key');
  const [origin, size, root] = text.split('\n');
  return { origin, size: Number(size), root: Buffer.from(root, 'base64'), text, signatures: lines };
}

/** C2SP tlog-tiles path of tile index n: x001/x234/067. */
export function tileIndexPath(n) {
  const groups = [];
  let v = n;
  do { groups.unshift(String(v % 1000).padStart(3, '0')); v = Math.floor(v / 1000); } while (v > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join('/');
}

/** GET helper: { status, body (Buffer), text, headers }. */
export async function getLog(gw, p) {
  const res = await fetch(gw.url(p));
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString('utf8') };
}

/** All leaf hashes of the log up to `size`, read from its level-0 tiles. */
export async function leavesFromTiles(gw, size) {
  const leaves = [];
  for (let n = 0; n * 256 < size; n++) {
    const width = Math.min(256, size - n * 256);
    const p = `/v1/log/tile/0/${tileIndexPath(n)}${width < 256 ? `.p/${width}` : ''}`;
    const r = await getLog(gw, p);
    if (r.status !== 200) throw new Error(`${p}: HTTP ${r.status}`);
    for (let i = 0; i < width; i++) leaves.push(r.body.subarray(i * 32, (i + 1) * 32));
  }
  return leaves;
}

/** All entries up to `size`, read from the entry bundles (uint16 length-prefixed). */
export async function entriesFromBundles(gw, size) {
  const entries = [];
  for (let n = 0; n * 256 < size; n++) {
    const width = Math.min(256, size - n * 256);
    const p = `/v1/log/tile/entries/${tileIndexPath(n)}${width < 256 ? `.p/${width}` : ''}`;
    const r = await getLog(gw, p);
    if (r.status !== 200) throw new Error(`${p}: HTTP ${r.status}`);
    let off = 0;
    while (off < r.body.length) {
      const len = r.body.readUInt16BE(off);
      entries.push(r.body.subarray(off + 2, off + 2 + len));
      off += 2 + len;
    }
  }
  return entries;
}

/**
 * Whether `note` carries a valid C2SP tlog-cosignature (Ed25519 v1) by the witness `wvkey`
 * ("<name>+<keyid hex>+<base64(0x04||pub32)>") over its checkpoint text: the signed message
 * is "cosignature/v1\ntime <T>\n" + text, the line "— <name> base64(keyid4 || u64 BE T || sig64)".
 */
export function cosignedBy(note, wvkey) {
  const [name, idHex, ...rest] = wvkey.trim().split('+');
  const keyBytes = Buffer.from(rest.join('+'), 'base64');
  if (keyBytes[0] !== 4 || keyBytes.length !== 33) throw new Error(`not a cosignature vkey: ${wvkey}`);
  const split = note.lastIndexOf('\n\n');
  if (split < 0) return false;
  const text = note.slice(0, split + 1);
  const pub = createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), keyBytes.subarray(1)]), format: 'der', type: 'spki',
  });
  for (const line of note.slice(split + 2).split('\n')) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const blob = Buffer.from(m[2], 'base64');
    if (blob.length !== 4 + 8 + 64 || blob.subarray(0, 4).toString('hex') !== idHex) continue;
    const msg = `cosignature/v1\ntime ${blob.readBigUInt64BE(4)}\n${text}`;
    if (cryptoVerify(null, Buffer.from(msg), pub, blob.subarray(12))) return true;
  }
  return false;
}

/**
 * Polls `gw()`'s /v1/log/checkpoint every `intervalMs` until stop(): verifies each note with
 * `vkey`, records every distinct (size, root), and notes a rollback (a smaller size than the
 * last one seen, or the same size with another root) and any note cosigned by `witnessVkey`.
 * `gw` is a function so that the poller follows a restarted gateway; fetch errors (a
 * gateway being down) are counted, not fatal. Stop it with `await state.stop()` (also in after()).
 */
export function pollCheckpoints(gw, vkey, { intervalMs = 50, witnessVkey } = {}) {
  const state = {
    seen: new Map(), // `${size}:${rootB64}` -> { size, root, note }
    rollbacks: [],
    badNotes: [],
    unreachable: 0,
    polls: 0,
    cosigned: [], // sizes of checkpoints served with a valid cosignature by the witness
    last: null,
  };
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const r = await getLog(gw(), '/v1/log/checkpoint');
        if (r.status === 200) {
          state.polls++;
          let c;
          try { c = openCheckpoint(r.text, vkey); } catch (e) { state.badNotes.push(`${e.message}: ${r.text}`); }
          if (c) {
            const key = `${c.size}:${c.root.toString('base64')}`;
            if (!state.seen.has(key)) state.seen.set(key, { size: c.size, root: c.root, note: r.text });
            const last = state.last;
            if (last && (c.size < last.size || (c.size === last.size && !c.root.equals(last.root)))) {
              state.rollbacks.push(`${last.size} -> ${c.size} (${key})`);
            }
            state.last = c;
            if (witnessVkey && cosignedBy(r.text, witnessVkey)) state.cosigned.push(c.size);
          }
        }
      } catch {
        state.unreachable++;
      }
      // The polling period, not a sync; unref'd: a poller a failed test did not stop never keeps
      // the test process alive.
      await new Promise((res) => { setTimeout(res, intervalMs).unref(); });
    }
  })();
  state.stop = async () => { running = false; await loop; return state; };
  return state;
}


/** Runs `count` jobs with `concurrency` workers; job(i) is awaited; stop() ends the loop early. */
export async function pool(count, concurrency, job, stop = () => false) {
  let next = 0;
  const worker = async () => {
    while (!stop() && next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/**
 * Checks that every checkpoint in `checkpoints` ({size, root}) is consistent with `final`
 * (and so, the log being one prefix chain, all of them pairwise), using consistency proofs
 * fetched from `gw`. Returns the list of failures (empty when all hold).
 */
export async function inconsistentCheckpoints(gw, checkpoints, final) {
  const failures = [];
  for (const c of checkpoints) {
    if (c.size > final.size) { failures.push(`size ${c.size} > final ${final.size}`); continue; }
    const r = await getLog(gw, `/v1/log/proof/consistency?old=${c.size}&new=${final.size}`);
    if (r.status !== 200) { failures.push(`proof ${c.size}->${final.size}: HTTP ${r.status} ${r.text}`); continue; }
    const proof = JSON.parse(r.text).proof.map((p) => Buffer.from(p, 'base64'));
    if (!verifyConsistency(c.size, final.size, c.root, final.root, proof)) {
      failures.push(`checkpoint ${c.size} (${c.root.toString('base64')}) is not consistent with ${final.size}`);
    }
  }
  return failures;
}
