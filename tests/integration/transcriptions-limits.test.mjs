// POST /v1/audio/transcriptions under size limits, memory pressure and hostile uploads
// (issue #6, contract §4 size, §5 spool): 413 file_too_large for a Content-Length over
// server.max_body_bytes (before the body is read) and for a chunked body the moment it crosses
// the cap; the gateway's peak RSS stays flat while 25 MiB uploads stream through it (measured
// from /proc/<pid>/status: clear_refs resets VmHWM, VmHWM after the load minus VmRSS before);
// failover replays a 20 MiB upload byte for byte; malformed multipart is answered 400 (never a
// hang); the spool is an unnamed O_TMPFILE file (visible only as a "(deleted)" fd of the gateway)
// that is always released: on success, error, client disconnect and body timeout;
// server.upload_memory_bytes decides memory vs file.
//
// Each gateway gets its own fresh spool directory so that its fds and entries can be counted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import {
  startFakeUpstream, startGateway, gatewayConfig, startRoutingStack, stopAll, makeKey, makeProviderKey,
  sha256Hex, tempDir, waitFor, readErrorEnvelope, RawConnection, requestHead, chunk, performance, ROUTE_WHISPER,
} from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * 1024;
const MAX_BODY = 25 * MiB; // 26214400, server.max_body_bytes of every gateway here
const PATH = '/v1/audio/transcriptions';
const BODY_TIMEOUT_S = 2;

const mib = (bytes) => (bytes / MiB).toFixed(2);

// On the AddressSanitizer pass of CI (ASAN_OPTIONS is ignored by a normal build), freed memory
// sits in ASan's quarantine instead of being reused, so peak RSS would measure the bytes the
// gateway allocated over time rather than what it holds at once. Without the quarantine the
// RSS bounds below mean the same on both builds. Set before any process is spawned (children
// inherit process.env).
process.env.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=0', 'thread_local_quarantine_size_kb=0']
  .filter(Boolean).join(':');

// ---------------------------------------------------------------------------------------------
// /proc helpers (Linux): memory, the spool's fds, socket queues

function procStatus(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/**
 * Runs fn() and measures the gateway's peak RSS growth during it: VmHWM is reset to the current
 * RSS (clear_refs 5) right before, then VmHWM after minus VmRSS before.
 */
async function measurePeakGrowth(gw, fn) {
  const pid = gw.proc.pid;
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const before = procStatus(pid);
  const result = await fn();
  const afterStatus = procStatus(pid);
  return { result, rssBefore: before.rss, hwmAfter: afterStatus.hwm, growth: afterStatus.hwm - before.rss };
}

/** The gateway's open fds that point into the spool directory (readlink targets). */
function spoolFds(gw) {
  const dir = `/proc/${gw.proc.pid}/fd`;
  const out = [];
  let names = [];
  try { names = readdirSync(dir); } catch { return out; }
  for (const n of names) {
    try {
      const target = readlinkSync(`${dir}/${n}`);
      if (target.startsWith(gw.spoolDir + '/')) out.push(target);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

const spoolEntries = (gw) => readdirSync(gw.spoolDir);

/**
 * True once every byte the client wrote on `conn` has been read by the gateway: the client
 * socket has nothing unacknowledged (tx_queue) and the gateway's socket has nothing unread
 * (rx_queue), per /proc/net/tcp (loopback, IPv4).
 */
function gatewayReadEverything(gw, conn) {
  const hexPort = (p) => p.toString(16).toUpperCase().padStart(4, '0');
  const lo = (p) => `0100007F:${hexPort(p)}`;
  let client;
  let server;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const [tx, rx] = f[4].split(':').map((h) => parseInt(h, 16));
    if (f[1] === lo(conn.localPort) && f[2] === lo(gw.port)) client = { tx, rx };
    if (f[1] === lo(gw.port) && f[2] === lo(conn.localPort)) server = { tx, rx };
  }
  if (!client || !server) throw new Error(`connection :${conn.localPort} → :${gw.port} not in /proc/net/tcp`);
  return client.tx === 0 && server.rx === 0;
}

/** No spool entry ever (O_TMPFILE), and the spool fds back to `baseline` (closing is async). */
async function assertSpoolReleased(gw, baseline, what) {
  assert.deepEqual(spoolEntries(gw), [], `${what}: the spool directory must stay empty`);
  await waitFor(() => spoolFds(gw).length === baseline,
    { timeoutMs: 5000, what: `${what}: spool fds back to ${baseline} (now ${JSON.stringify(spoolFds(gw))})` });
  assert.deepEqual(spoolEntries(gw), [], `${what}: the spool directory must stay empty`);
}

/**
 * The spool fd count of an idle gateway (no upload in progress): 0, once the previous
 * request's spool has been closed (that happens just after its answer went out).
 */
async function idleSpoolFds(gw) {
  await waitFor(() => spoolFds(gw).length === 0,
    { timeoutMs: 5000, what: `an idle gateway without spool fds (now ${JSON.stringify(spoolFds(gw))})` });
  return 0;
}

async function healthy(gw) {
  const r = await fetch(gw.url('/healthz'), { signal: AbortSignal.timeout(5000) });
  await r.arrayBuffer();
  return r.status === 200 && gw.proc.alive;
}

// ---------------------------------------------------------------------------------------------
// Multipart bodies

const newBoundary = () => `----tresor-limits-${randomBytes(12).toString('hex')}`;

function fieldPart(boundary, name, value) {
  return `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
}

function fileHead(boundary, { filename = 'big.wav', contentType = 'audio/wav', extraHeaders = '' } = {}) {
  return `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
    `Content-Type: ${contentType}\r\n${extraHeaders}\r\n`;
}

/** The body up to the first file byte: the model field, then the file part's head. */
function uploadPrefix(boundary, model = ROUTE_WHISPER, fileOpts = {}) {
  return Buffer.from(fieldPart(boundary, 'model', model) + fileHead(boundary, fileOpts), 'latin1');
}

const closing = (boundary) => Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');

/** Request head for an upload; `length` (Content-Length) or chunked. */
function uploadHead(key, boundary, { length, chunked = false, contentType } = {}) {
  const headers = [
    ['Authorization', `Bearer ${key}`],
    ['Content-Type', contentType ?? `multipart/form-data; boundary=${boundary}`],
  ];
  if (chunked) headers.push(['Transfer-Encoding', 'chunked']);
  else headers.push(['Content-Length', String(length)]);
  return requestHead('POST', PATH, headers);
}

/** Random file content produced piece by piece (never held whole), hashed as it goes. */
class RandomFile {
  constructor(size) {
    this.size = size;
    this.produced = 0;
    this.hash = createHash('sha256');
  }

  /** The next piece of at most n bytes; null at the end. */
  next(n = MiB) {
    const len = Math.min(n, this.size - this.produced);
    if (len <= 0) return null;
    const b = randomBytes(len);
    this.hash.update(b);
    this.produced += len;
    return b;
  }

  get sha256() {
    if (this.digest === undefined) this.digest = this.hash.digest('hex');
    return this.digest;
  }
}

/**
 * One complete upload of `fileSize` random bytes over a raw connection, the file streamed in
 * 1 MiB pieces with backpressure (each write awaited). Returns { res, sha256, size, ms }.
 */
async function upload(gw, key, fileSize, { chunked = false, model = ROUTE_WHISPER, filename = 'big.wav', timeoutMs = 60_000 } = {}) {
  const boundary = newBoundary();
  const prefix = uploadPrefix(boundary, model, { filename });
  const tail = closing(boundary);
  const file = new RandomFile(fileSize);
  const conn = await RawConnection.connect(gw.port);
  const t0 = performance.now();
  try {
    const enc = (b) => (chunked ? chunk(b) : b);
    const head = uploadHead(key, boundary, { length: prefix.length + fileSize + tail.length, chunked });
    assert.ok(await conn.write(Buffer.concat([Buffer.from(head, 'latin1'), enc(prefix)])), 'write head');
    for (let piece = file.next(); piece; piece = file.next()) {
      if (!(await conn.write(enc(piece)))) {
        throw new Error(`upload write failed after ${file.produced} file bytes: ${conn.error?.message ?? 'closed'}; ` +
          `got ${JSON.stringify(conn.buf.toString('latin1').slice(0, 300))}`);
      }
    }
    await conn.write(chunked ? Buffer.concat([chunk(tail), Buffer.from('0\r\n\r\n')]) : tail);
    const res = await conn.readResponse({ timeoutMs });
    return { res, sha256: file.sha256, size: fileSize, ms: performance.now() - t0 };
  } finally {
    conn.destroy();
  }
}

/** The 200 answer names the size and digest the fake upstream received. */
function assertTranscribed(r, what) {
  assert.equal(r.res.status, 200, `${what}: ${r.res.text.slice(0, 500)}`);
  const text = JSON.parse(r.res.text).text;
  assert.match(text, new RegExp(`bytes=${r.size} sha256=${r.sha256}`), `${what}: transcript ${text}`);
}

/** The fake's records of transcriptions whose file had this digest. */
async function fakeRecords(fake, sha256) {
  return (await fake.requests()).filter((q) => q.target.endsWith('/audio/transcriptions') &&
    q.transcription?.file?.sha256 === sha256);
}

// ---------------------------------------------------------------------------------------------
// Stacks: one fake upstream behind three gateways (main / upload_memory_bytes 0 with a short
// body timeout / upload_memory_bytes 8 MiB) and a two-provider routing stack for failover.

const key = makeKey();
let fake;
let gwMain;
let gwZero;
let gwBig;
let routing;

async function uploadGateway(server) {
  const spoolDir = realpathSync(tempDir('tresor-spool-'));
  const providerKey = fake.providerKey;
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
    server: { max_body_bytes: MAX_BODY, upload_spool_dir: spoolDir, ...server },
  });
  const gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
  gw.spoolDir = spoolDir;
  return gw;
}

before(async () => {
  const providerKey = makeProviderKey();
  fake = await startFakeUpstream({ requireKey: providerKey });
  fake.providerKey = providerKey;
  const routingSpool = realpathSync(tempDir('tresor-spool-'));
  [gwMain, gwZero, gwBig, routing] = await Promise.all([
    uploadGateway({}),
    uploadGateway({ upload_memory_bytes: 0, body_timeout_seconds: BODY_TIMEOUT_S }),
    uploadGateway({ upload_memory_bytes: 8 * MiB }),
    startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [
        // The primary always answers 503 (after reading the whole upload): 2 attempts, then provb.
        { id: 'eu/prova/whisper', provider: 'prova', type: 'transcription', upstream_model: 'whisper?status=503' },
        { id: 'eu/provb/whisper', provider: 'provb', type: 'transcription', upstream_model: 'whisper' },
      ],
      retry: { attempts_per_route: 2, backoff_ms: 50, max_retry_after_seconds: 5 },
      breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
      server: { max_body_bytes: MAX_BODY, upload_spool_dir: routingSpool },
    }),
  ]);
  routing.gw.spoolDir = routingSpool;
  // Warm-up: one spooled upload and one early 413 per gateway, so that one-time allocations
  // (malloc arenas, the upstream connection pool) are not counted as growth later.
  for (const gw of [gwMain, gwZero, gwBig]) {
    assertTranscribed(await upload(gw, key, MiB), 'warm-up upload');
  }
});
after(stopAll);

// ---------------------------------------------------------------------------------------------

describe('size limit: 413 file_too_large without buffering', { timeout: 60_000 }, () => {
  test('26 MiB upload with Content-Length → 413 at once, from the head alone; RSS flat', async (t) => {
    const gw = gwMain;
    const fdsBefore = await idleSpoolFds(gw);
    const SIZE = 26 * MiB;
    // Warm-up of the same shape (head only).
    {
      const conn = await RawConnection.connect(gw.port);
      await conn.write(uploadHead(key, newBoundary(), { length: SIZE }));
      await readErrorEnvelope(await conn.readResponse({ timeoutMs: 10_000 }), { status: 413 });
      conn.destroy();
    }
    let headOnlyMs;
    let streamingMs;
    let closedMs;
    const m = await measurePeakGrowth(gw, async () => {
      // (a) Only the head: the answer cannot depend on the body.
      const boundary = newBoundary();
      const prefix = uploadPrefix(boundary);
      const total = prefix.length + SIZE + closing(boundary).length;
      const a = await RawConnection.connect(gw.port);
      try {
        const t0 = performance.now();
        await a.write(uploadHead(key, boundary, { length: total }));
        const res = await a.readResponse({ timeoutMs: 10_000 });
        headOnlyMs = performance.now() - t0;
        await readErrorEnvelope(res, { status: 413, type: 'invalid_request_error', code: 'file_too_large', param: 'file' });
        assert.match(res.headers.connection || '', /close/i, 'the connection cannot be reused after an unread body');
      } finally {
        a.destroy();
      }
      // (b) A naive client streaming the 26 MiB of random ".wav" right behind the head.
      const b = await RawConnection.connect(gw.port);
      try {
        const t0 = performance.now();
        const file = new RandomFile(SIZE);
        const writes = (async () => {
          await b.write(Buffer.concat([Buffer.from(uploadHead(key, boundary, { length: total }), 'latin1'), prefix]));
          for (let p = file.next(); p && b.buf.length === 0; p = file.next()) {
            if (!(await b.write(p))) break;
          }
        })();
        const res = await b.readResponse({ timeoutMs: 10_000 });
        streamingMs = performance.now() - t0;
        await readErrorEnvelope(res, { status: 413, code: 'file_too_large', param: 'file' });
        // Half-close plus a drain of at most 2 s, then the connection is gone.
        await b.waitUntil(() => b.closed, 2000 + 3000, 'the gateway to close after 413');
        closedMs = performance.now() - t0;
        await writes;
      } finally {
        b.destroy();
      }
    });
    console.log(`[transcriptions-limits] 26 MiB Content-Length upload: 413 after ${headOnlyMs.toFixed(1)} ms (head only), ` +
      `${streamingMs.toFixed(1)} ms (body streaming), closed after ${closedMs.toFixed(0)} ms; peak RSS growth ` +
      `${mib(m.growth)} MiB (VmRSS before ${mib(m.rssBefore)} MiB, VmHWM after ${mib(m.hwmAfter)} MiB)`);
    assert.ok(headOnlyMs < 2000, `413 took ${headOnlyMs.toFixed(0)} ms with only the head sent`);
    assert.ok(streamingMs < 2000, `413 took ${streamingMs.toFixed(0)} ms while the body streamed`);
    assert.ok(m.growth < 2 * MiB, `peak RSS grew by ${mib(m.growth)} MiB (limit 2 MiB)`);
    await assertSpoolReleased(gw, fdsBefore, '413 Content-Length');
    assert.ok(await healthy(gw));
  });

  test('Content-Length of max_body_bytes + 1 → 413 file_too_large', async () => {
    const conn = await RawConnection.connect(gwMain.port);
    try {
      await conn.write(uploadHead(key, newBoundary(), { length: MAX_BODY + 1 }));
      await readErrorEnvelope(await conn.readResponse({ timeoutMs: 10_000 }), { status: 413, code: 'file_too_large', param: 'file' });
    } finally {
      conn.destroy();
    }
  });

  test('chunked upload of exactly max_body_bytes is accepted, byte for byte', async () => {
    const boundary = newBoundary();
    const prefix = uploadPrefix(boundary, ROUTE_WHISPER, { filename: 'exact.wav' });
    const tail = closing(boundary);
    const size = MAX_BODY - prefix.length - tail.length;
    const fdsBefore = await idleSpoolFds(gwMain);
    const file = new RandomFile(size);
    const conn = await RawConnection.connect(gwMain.port);
    try {
      await conn.write(Buffer.concat([Buffer.from(uploadHead(key, boundary, { chunked: true }), 'latin1'), chunk(prefix)]));
      for (let p = file.next(); p; p = file.next()) assert.ok(await conn.write(chunk(p)), 'write');
      await conn.write(Buffer.concat([chunk(tail), Buffer.from('0\r\n\r\n')]));
      const res = await conn.readResponse({ timeoutMs: 30_000 });
      assertTranscribed({ res, size, sha256: file.sha256 }, 'exactly max_body_bytes');
    } finally {
      conn.destroy();
    }
    const recs = await fakeRecords(fake, file.sha256);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].transcription.file.size, size);
    await assertSpoolReleased(gwMain, fdsBefore, 'chunked upload at the cap');
  });

  test('26 MiB chunked upload → 413 the moment the cap is crossed; RSS flat; still healthy', async () => {
    const gw = gwMain;
    const fdsBefore = await idleSpoolFds(gw);
    let sentAtAnswer;
    let answerMs;
    let closedMs;
    const m = await measurePeakGrowth(gw, async () => {
      const boundary = newBoundary();
      const prefix = uploadPrefix(boundary);
      const file = new RandomFile(26 * MiB);
      const conn = await RawConnection.connect(gw.port);
      try {
        await conn.write(Buffer.concat([Buffer.from(uploadHead(key, boundary, { chunked: true }), 'latin1'), chunk(prefix)]));
        let sent = prefix.length;
        // Exactly up to the cap first (no answer is due yet)...
        while (sent < MAX_BODY) {
          const p = file.next(Math.min(MiB, MAX_BODY - sent));
          assert.ok(await conn.write(chunk(p)), `write failed at ${sent} bytes, before the cap: ${conn.buf.toString('latin1').slice(0, 300)}`);
          sent += p.length;
        }
        assert.equal(sent, MAX_BODY);
        // ...then one more 1 MiB chunk, and nothing else: the 413 must come without more bytes.
        const t0 = performance.now();
        await conn.write(chunk(file.next(MiB)));
        sentAtAnswer = sent + MiB;
        const res = await conn.readResponse({ timeoutMs: 10_000 });
        answerMs = performance.now() - t0;
        await readErrorEnvelope(res, { status: 413, type: 'invalid_request_error', code: 'file_too_large', param: 'file' });
        await conn.waitUntil(() => conn.closed, 2000 + 3000, 'the gateway to close after 413');
        closedMs = performance.now() - t0;
      } finally {
        conn.destroy();
      }
    });
    console.log(`[transcriptions-limits] chunked 26 MiB upload: 413 ${answerMs.toFixed(1)} ms after the crossing chunk ` +
      `(${mib(sentAtAnswer)} MiB sent), closed after ${closedMs.toFixed(0)} ms; peak RSS growth ${mib(m.growth)} MiB ` +
      `(VmRSS before ${mib(m.rssBefore)} MiB, VmHWM after ${mib(m.hwmAfter)} MiB)`);
    assert.ok(answerMs < 2000, `413 took ${answerMs.toFixed(0)} ms after the cap was crossed`);
    assert.ok(m.growth < 2 * MiB, `peak RSS grew by ${mib(m.growth)} MiB (limit 2 MiB)`);
    await assertSpoolReleased(gw, fdsBefore, 'chunked 413');
    assert.ok(await healthy(gw));
    assertTranscribed(await upload(gw, key, 300 * KiB), 'an upload after the 413');
    await assertSpoolReleased(gw, fdsBefore, 'the upload after the 413');
  });
});

describe('big uploads: memory stays flat, bytes arrive intact', { timeout: 90_000 }, () => {
  test('ten concurrent 20 MiB uploads → all 200 with the right digests; peak RSS growth < 20 MiB', async () => {
    const gw = gwMain;
    const N = 10;
    const SIZE = 20 * MiB;
    const fdsBefore = await idleSpoolFds(gw);
    // Warm-up of the same shape: two at once (both worker threads busy).
    for (const r of await Promise.all([upload(gw, key, SIZE), upload(gw, key, SIZE)])) assertTranscribed(r, 'warm-up');
    const t0 = performance.now();
    const m = await measurePeakGrowth(gw, () => Promise.all(
      Array.from({ length: N }, (_, i) => upload(gw, key, SIZE, { filename: `concurrent-${i}.wav`, timeoutMs: 90_000 }))));
    const ms = performance.now() - t0;
    console.log(`[transcriptions-limits] ${N} concurrent ${mib(SIZE)} MiB uploads in ${ms.toFixed(0)} ms: gateway peak RSS ` +
      `growth ${mib(m.growth)} MiB (VmRSS before ${mib(m.rssBefore)} MiB, VmHWM after ${mib(m.hwmAfter)} MiB)`);
    const results = m.result;
    assert.equal(new Set(results.map((r) => r.sha256)).size, N, 'distinct contents');
    results.forEach((r, i) => assertTranscribed(r, `upload ${i}`));
    const recorded = await fake.requests();
    for (const [i, r] of results.entries()) {
      const recs = recorded.filter((q) => q.transcription?.file?.sha256 === r.sha256);
      assert.equal(recs.length, 1, `upload ${i}: the fake saw its digest once`);
      assert.equal(recs[0].transcription.file.size, SIZE);
      assert.equal(recs[0].transcription.file.filename, `concurrent-${i}.wav`);
      assert.equal(recs[0].transcription.file.content_type, 'audio/wav');
    }
    assert.ok(m.growth < 20 * MiB, `peak RSS grew by ${mib(m.growth)} MiB over the batch (limit 20 MiB)`);
    await assertSpoolReleased(gw, fdsBefore, 'after the concurrent uploads');
    assert.ok(await healthy(gw));
  });

  test('failover replays a 20 MiB upload byte for byte (same route, then the next)', async () => {
    const { gw, fakes } = routing;
    await routing.clearFakes();
    const fdsBefore = await idleSpoolFds(gw);
    const SIZE = 20 * MiB;
    const r = await upload(gw, routing.key, SIZE, { model: 'whisper', filename: 'replay.wav' });
    assertTranscribed(r, 'failover upload');
    assert.equal(r.res.headers['x-tresor-failover'], 'true');
    assert.equal(r.res.headers['x-tresor-routed-model'], 'eu/provb/whisper');
    const a = (await fakes.prova.requests()).filter((q) => q.target.endsWith('/audio/transcriptions'));
    const b = (await fakes.provb.requests()).filter((q) => q.target.endsWith('/audio/transcriptions'));
    assert.equal(a.length, 2, 'attempts_per_route = 2 on the failing primary');
    assert.equal(b.length, 1);
    for (const [who, q] of [['prova #1', a[0]], ['prova #2', a[1]], ['provb', b[0]]]) {
      assert.ok(q.transcription, `${who}: parsed multipart (${q.multipart_error})`);
      assert.equal(q.transcription.file.size, SIZE, `${who}: full size`);
      assert.equal(q.transcription.file.sha256, r.sha256, `${who}: identical bytes`);
      assert.equal(q.transcription.file.filename, 'replay.wav');
    }
    assert.equal(a[0].transcription.fields.model, 'whisper?status=503');
    assert.equal(b[0].transcription.fields.model, 'whisper');
    await assertSpoolReleased(gw, fdsBefore, 'after the failover upload');
  });
});

describe('malformed and hostile uploads: 400 (or close), never a hang, nothing left behind', { timeout: 60_000 }, () => {
  const FILE = MiB; // above the 256 KiB default threshold: the spool is on disk when it fails
  const B = newBoundary();
  const bytes = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));
  const data = () => randomBytes(FILE);
  const IMP = { code: 'invalid_multipart' };

  // [name, request body (Buffer), expected envelope, Content-Type override]
  const cases = [
    ['no boundary parameter (answered from the head)', null, IMP, 'multipart/form-data'],
    ['boundary parameter on a non-multipart type', null, IMP, `application/octet-stream; boundary=${B}`],
    ['truncated file part (Content-Length covers what was sent)', () => bytes(uploadPrefix(B), data()), IMP],
    ['missing file part', () => bytes(fieldPart(B, 'model', ROUTE_WHISPER), fieldPart(B, 'language', 'en'), `--${B}--\r\n`),
      { code: 'missing_required_parameter', param: 'file' }],
    ['two file parts', () => bytes(uploadPrefix(B), data(), '\r\n', fileHead(B, { filename: 'second.wav' }), data(), closing(B)),
      { code: 'invalid_parameter', param: 'file' }],
    ['boundary never closed (ends after a delimiter line)', () => bytes(uploadPrefix(B), data(), `\r\n--${B}\r\n`), IMP],
    ['boundary never closed (ends on the bare delimiter)', () => bytes(uploadPrefix(B), data(), `\r\n--${B}`), IMP],
    ['garbage preamble only', () => randomBytes(64 * KiB), IMP],
    ['part without Content-Disposition', () => bytes(uploadPrefix(B), data(), `\r\n--${B}\r\nContent-Type: text/plain\r\n\r\nx`, closing(B)), IMP],
    ['part header block over 8 KiB', () => bytes(uploadPrefix(B), data(),
      `\r\n--${B}\r\nContent-Disposition: form-data; name="prompt"\r\nX-Pad: ${'p'.repeat(9 * KiB)}\r\n\r\nhello`, closing(B)), IMP],
    ['file part header block over 8 KiB', () => bytes(fieldPart(B, 'model', ROUTE_WHISPER),
      fileHead(B, { extraHeaders: `X-Pad: ${'p'.repeat(9 * KiB)}\r\n` }), data(), closing(B)), IMP],
  ];

  for (const [name, makeBody, expect, contentType] of cases) {
    test(name, async () => {
      const gw = gwMain;
      const fdsBefore = await idleSpoolFds(gw);
      const body = makeBody ? makeBody() : null;
      const conn = await RawConnection.connect(gw.port);
      let res;
      try {
        // Without a body: announce 1 MiB but send none; the answer must not wait for it.
        const head = uploadHead(key, B, { length: body ? body.length : MiB, contentType });
        await conn.write(body ? Buffer.concat([Buffer.from(head, 'latin1'), body]) : head);
        res = await conn.readResponse({ timeoutMs: 10_000 });
      } finally {
        conn.destroy();
      }
      const err = await readErrorEnvelope(res, { status: 400, type: 'invalid_request_error', ...expect });
      if (expect.param === undefined) assert.ok(err.param === null || typeof err.param === 'string');
      await assertSpoolReleased(gw, fdsBefore, name);
      assert.ok(await healthy(gw), `${name}: gateway healthy afterwards`);
    });
  }

  test('client disconnect mid-upload (5 of 20 MiB sent) releases the spool', async () => {
    const gw = gwMain;
    const fdsBefore = await idleSpoolFds(gw);
    const boundary = newBoundary();
    const prefix = uploadPrefix(boundary);
    const conn = await RawConnection.connect(gw.port);
    try {
      await conn.write(Buffer.concat([Buffer.from(uploadHead(key, boundary, { length: 20 * MiB }), 'latin1'), prefix]));
      const file = new RandomFile(5 * MiB);
      for (let p = file.next(); p; p = file.next()) assert.ok(await conn.write(p));
      await waitFor(() => spoolFds(gw).length === fdsBefore + 1, { timeoutMs: 10_000, what: 'the upload to be spooled' });
    } finally {
      conn.destroy();
    }
    await assertSpoolReleased(gw, fdsBefore, 'client disconnect');
    assert.ok(await healthy(gw));
  });

  test('the gateway still transcribes after all of the above', async () => {
    assertTranscribed(await upload(gwMain, key, 2 * MiB), 'upload after the malformed ones');
    await assertSpoolReleased(gwMain, 0, 'final upload');
  });
});

describe('spool: unnamed temp file, threshold, body timeout', { timeout: 60_000 }, () => {
  /**
   * Starts an upload of `fileSize` bytes and sends only the first `sendBytes` of the file.
   * Returns { conn, finish() → response, file, sentAt }.
   */
  async function slowUpload(gw, fileSize, sendBytes) {
    const boundary = newBoundary();
    const prefix = uploadPrefix(boundary, ROUTE_WHISPER, { filename: 'slow.wav' });
    const tail = closing(boundary);
    const file = new RandomFile(fileSize);
    const conn = await RawConnection.connect(gw.port);
    const head = Buffer.from(uploadHead(key, boundary, { length: prefix.length + fileSize + tail.length }), 'latin1');
    await conn.write(Buffer.concat([head, prefix]));
    let sent = head.length + prefix.length;
    while (file.produced < sendBytes) {
      const p = file.next(Math.min(MiB, sendBytes - file.produced));
      assert.ok(await conn.write(p), 'write');
      sent += p.length;
    }
    const sentAt = performance.now();
    return {
      conn, file, sentAt, sent,
      async finish() {
        for (let p = file.next(); p; p = file.next()) assert.ok(await conn.write(p), 'write');
        await conn.write(tail);
        const res = await conn.readResponse({ timeoutMs: 30_000 });
        conn.destroy();
        return { res, size: fileSize, sha256: file.sha256 };
      },
    };
  }

  test('a 5 MiB upload in progress is spooled to one unnamed "(deleted)" file, closed at the end', async () => {
    const gw = gwMain;
    const fdsBefore = await idleSpoolFds(gw);
    const up = await slowUpload(gw, 5 * MiB, 2.5 * MiB);
    try {
      const fds = await waitFor(() => { const f = spoolFds(gw); return f.length === fdsBefore + 1 && f; },
        { timeoutMs: 10_000, what: 'the spool fd' });
      console.log(`[transcriptions-limits] spool fd during the upload: ${fds.join(', ')}`);
      assert.match(fds.at(-1), new RegExp(`^${gw.spoolDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/#\\d+ \\(deleted\\)$`));
      assert.deepEqual(spoolEntries(gw), [], 'O_TMPFILE: no name in the directory while the upload is open');
      const r = await up.finish();
      assertTranscribed(r, 'slow upload');
    } finally {
      up.conn.destroy();
    }
    await assertSpoolReleased(gw, fdsBefore, 'slow upload finished');
  });

  test('upload_memory_bytes: 0 → even a 2 KiB upload goes to a file', async () => {
    const gw = gwZero;
    const fdsBefore = await idleSpoolFds(gw);
    const up = await slowUpload(gw, 2 * KiB, KiB);
    try {
      await waitFor(() => spoolFds(gw).length === fdsBefore + 1, { timeoutMs: 10_000, what: 'a spool fd for 1 KiB received' });
      assert.match(spoolFds(gw)[0], / \(deleted\)$/);
      assert.deepEqual(spoolEntries(gw), []);
      assertTranscribed(await up.finish(), 'tiny upload, threshold 0');
    } finally {
      up.conn.destroy();
    }
    await assertSpoolReleased(gw, fdsBefore, 'threshold 0');
  });

  test('upload_memory_bytes: 8 MiB → a 1 MiB upload never touches the spool', async () => {
    const gw = gwBig;
    const fdsBefore = await idleSpoolFds(gw);
    const up = await slowUpload(gw, MiB, MiB); // the whole file, only the closing delimiter held back
    try {
      // Wait until the gateway has read everything sent so far (socket queues drained).
      await waitFor(() => gatewayReadEverything(gw, up.conn), { timeoutMs: 10_000, what: `the gateway to read all ${up.sent} bytes sent` });
      assert.deepEqual(spoolFds(gw), [], 'a 1 MiB upload under an 8 MiB threshold stays in memory');
      assertTranscribed(await up.finish(), '1 MiB upload, threshold 8 MiB');
    } finally {
      up.conn.destroy();
    }
    assert.deepEqual(spoolFds(gw), []);
    assert.deepEqual(spoolEntries(gw), []);
  });

  test(`body_timeout_seconds: ${BODY_TIMEOUT_S} → a stalled upload is cut off and its spool released`, async () => {
    const gw = gwZero;
    const fdsBefore = await idleSpoolFds(gw);
    const up = await slowUpload(gw, 2 * MiB, 512 * KiB);
    let closedAfter;
    try {
      await waitFor(() => spoolFds(gw).length === fdsBefore + 1, { timeoutMs: 5000, what: 'the spool fd of the stalled upload' });
      await up.conn.waitUntil(() => up.conn.closed || up.conn.ended || up.conn.error !== null,
        BODY_TIMEOUT_S * 1000 + 5000, 'the gateway to cut the stalled upload off');
      closedAfter = performance.now() - up.sentAt;
    } finally {
      up.conn.destroy();
    }
    console.log(`[transcriptions-limits] stalled upload cut off ${closedAfter.toFixed(0)} ms after its last byte ` +
      `(body_timeout_seconds ${BODY_TIMEOUT_S})` + (up.conn.buf.length ? `, answer: ${up.conn.buf.toString('latin1').split('\r\n')[0]}` : ', no answer'));
    assert.ok(closedAfter >= BODY_TIMEOUT_S * 1000 - 1000, `cut off after only ${closedAfter.toFixed(0)} ms`);
    assert.ok(closedAfter < BODY_TIMEOUT_S * 1000 + 1500, `cut off after ${closedAfter.toFixed(0)} ms (limit ${BODY_TIMEOUT_S} s + 1.5 s)`);
    if (up.conn.buf.length) assert.doesNotMatch(up.conn.buf.toString('latin1'), /^HTTP\/1\.1 2/, 'no success for a cut-off upload');
    await assertSpoolReleased(gw, fdsBefore, 'body timeout');
    assert.ok(await healthy(gw));
  });
});
