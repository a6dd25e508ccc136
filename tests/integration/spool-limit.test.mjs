// Issue 17, item 8: the upload spool is bounded by server.spool_max_bytes, so that the spool's
// volume (a Kubernetes emptyDir with a sizeLimit) never fills and gets the pod evicted.
// Concurrent transcription uploads whose sum passes the cap: an upload that says its size
// (Content-Length) and would pass it is refused 503 spool_full (Retry-After) before its body is
// read; a chunked one is refused the moment its file crosses the cap, its spool file closed at
// once; the others are answered 200. The bytes are given back when the requests end (a new
// upload then fits), tresor_spool_bytes / tresor_spool_refusals_total show it, and the spool
// directory is empty at the end.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync, realpathSync } from 'node:fs';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, tempDir,
  waitFor, readErrorEnvelope, RawConnection, requestHead, chunk, ROUTE_WHISPER,
} from './harness.mjs';

const KiB = 1024;
const MAX_BODY = 1024 * KiB;          // server.max_body_bytes
const MEMORY = 64 * KiB;              // server.upload_memory_bytes: bigger uploads spool to disk
const SPOOL_MAX = 2560 * KiB;         // server.spool_max_bytes: two 900 KiB uploads fit, not three
const FILE_SIZE = 900 * KiB;
const PATH = '/v1/audio/transcriptions';

const key = makeKey();
let gw;

before(async () => {
  const providerKey = makeProviderKey();
  const fake = await startFakeUpstream({ requireKey: providerKey });
  const spoolDir = realpathSync(tempDir('tresor-spool-cap-'));
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
    server: {
      max_body_bytes: MAX_BODY, upload_memory_bytes: MEMORY, spool_max_bytes: SPOOL_MAX, upload_spool_dir: spoolDir,
    },
  });
  gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
  gw.spoolDir = spoolDir;
});
after(stopAll);

// ---------------------------------------------------------------------------------------------
// Observing the gateway: /metrics and the spool's fds

async function spoolMetrics() {
  const res = await fetch(gw.url('/metrics'), { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  const value = (name) => {
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
    assert.ok(m, `/metrics has no ${name}`);
    return Number(m[1]);
  };
  return {
    bytes: value('tresor_spool_bytes'),
    max: value('tresor_spool_max_bytes'),
    refusals: value('tresor_spool_refusals_total'),
  };
}

/** The gateway's open fds into the spool directory (its O_TMPFILE files show as "(deleted)"). */
function spoolFds() {
  const dir = `/proc/${gw.proc.pid}/fd`;
  const out = [];
  for (const n of readdirSync(dir)) {
    try {
      const target = readlinkSync(`${dir}/${n}`);
      if (target.startsWith(`${gw.spoolDir}/`)) out.push(target);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

/** Nothing reserved, no spool file open, nothing in the spool directory. */
async function assertSpoolEmpty(what) {
  await waitFor(async () => (await spoolMetrics()).bytes === 0 && spoolFds().length === 0,
    { timeoutMs: 10_000, what: `${what}: tresor_spool_bytes 0 and no spool fd` });
  assert.deepEqual(readdirSync(gw.spoolDir), [], `${what}: the spool directory must be empty`);
}

// ---------------------------------------------------------------------------------------------
// Uploads over raw connections, the file held back until the test lets it finish

const newBoundary = () => `----tresor-spool-${randomBytes(12).toString('hex')}`;

/**
 * An upload of `size` random bytes: start() sends the head, the form's prefix and the first
 * `first` file bytes; finish() sends the rest and reads the answer.
 */
class HeldUpload {
  constructor(size, { chunked = false } = {}) {
    this.boundary = newBoundary();
    this.chunked = chunked;
    this.file = randomBytes(size);
    this.sha256 = createHash('sha256').update(this.file).digest('hex');
    this.prefix = Buffer.from(`--${this.boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n` +
      `${ROUTE_WHISPER}\r\n--${this.boundary}\r\nContent-Disposition: form-data; name="file"; ` +
      'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n', 'latin1');
    this.tail = Buffer.from(`\r\n--${this.boundary}--\r\n`, 'latin1');
    this.length = this.prefix.length + size + this.tail.length;
    this.sent = 0;
  }

  enc(b) { return this.chunked ? chunk(b) : b; }

  async start(first) {
    this.conn = await RawConnection.connect(gw.port);
    const headers = [['Authorization', `Bearer ${key}`],
      ['Content-Type', `multipart/form-data; boundary=${this.boundary}`],
      this.chunked ? ['Transfer-Encoding', 'chunked'] : ['Content-Length', String(this.length)]];
    await this.conn.write(Buffer.concat([Buffer.from(requestHead('POST', PATH, headers), 'latin1'), this.enc(this.prefix)]));
    await this.send(first);
  }

  /** Sends the next n file bytes (in 64 KiB pieces); stops early once an answer has arrived. */
  async send(n) {
    const end = Math.min(this.file.length, this.sent + n);
    while (this.sent < end && this.conn.buf.length === 0) {
      const piece = this.file.subarray(this.sent, Math.min(end, this.sent + 64 * KiB));
      if (!(await this.conn.write(this.enc(piece)))) break;
      this.sent += piece.length;
    }
  }

  get answered() { return this.conn.buf.length > 0 || this.conn.closed; }

  async finish() {
    await this.send(this.file.length);
    await this.conn.write(this.chunked ? Buffer.concat([chunk(this.tail), Buffer.from('0\r\n\r\n')]) : this.tail);
    return this.conn.readResponse({ timeoutMs: 30_000 });
  }
}

/** The 200 answer names the size and digest of the file the fake upstream received. */
function assertTranscribed(res, upload, what) {
  assert.equal(res.status, 200, `${what}: ${res.text.slice(0, 500)}`);
  assert.match(JSON.parse(res.text).text, new RegExp(`bytes=${upload.file.length} sha256=${upload.sha256}`), what);
}

async function assertSpoolFull(res, what) {
  await readErrorEnvelope(res, { status: 503, type: 'service_unavailable', code: 'spool_full', param: null });
  assert.equal(res.headers['retry-after'], '1', `${what}: Retry-After`);
  assert.match(res.headers.connection || '', /close/i, `${what}: the unread body closes the connection`);
}

// ---------------------------------------------------------------------------------------------

describe('server.spool_max_bytes bounds the upload spool', { timeout: 120_000 }, () => {
  test('Content-Length uploads: those that would pass the cap get 503 spool_full before their body, the others 200', async () => {
    const m0 = await spoolMetrics();
    assert.equal(m0.max, SPOOL_MAX, 'tresor_spool_max_bytes is the configured cap');
    assert.equal(m0.bytes, 0);
    const uploads = [0, 1, 2, 3].map(() => new HeldUpload(FILE_SIZE));
    // One after the other, so that which ones fit is certain: each either holds its whole
    // Content-Length in the spool (seen in /metrics) or has its answer.
    let reserved = 0;
    for (const u of uploads) {
      await u.start(FILE_SIZE / 2);
      await waitFor(async () => u.answered || (await spoolMetrics()).bytes === reserved + u.length,
        { timeoutMs: 10_000, what: 'the upload reserved or answered' });
      if (!u.answered) reserved += u.length;
    }
    const held = uploads.filter((u) => !u.answered);
    const refused = uploads.filter((u) => u.answered);
    assert.equal(held.length, 2, 'two uploads of 900 KiB fit a 2.5 MiB spool');
    assert.equal(refused.length, 2);
    assert.ok(held.reduce((n, u) => n + u.length, 0) <= SPOOL_MAX);
    for (const u of refused) {
      const res = await u.conn.readResponse({ timeoutMs: 10_000 });
      await assertSpoolFull(res, 'refused upload');
      u.conn.destroy();
    }
    assert.equal((await spoolMetrics()).refusals - m0.refusals, 2, 'tresor_spool_refusals_total counts both');
    // The ones that fit complete.
    const answers = await Promise.all(held.map((u) => u.finish()));
    answers.forEach((res, i) => assertTranscribed(res, held[i], `held upload ${i}`));
    for (const u of held) u.conn.destroy();
    await assertSpoolEmpty('after the uploads ended');
    // The bytes were given back: an upload that needs most of the spool fits now.
    const again = new HeldUpload(FILE_SIZE);
    await again.start(0);
    assertTranscribed(await again.finish(), again, 'the upload after the others ended');
    again.conn.destroy();
    await assertSpoolEmpty('at the end');
  });

  test('chunked uploads: the one whose file crosses the cap mid-way gets 503 spool_full, its spool file closed', async () => {
    const m0 = await spoolMetrics();
    const a = new HeldUpload(FILE_SIZE, { chunked: true });
    const b = new HeldUpload(FILE_SIZE, { chunked: true });
    const c = new HeldUpload(FILE_SIZE, { chunked: true });
    // A and B reserve as their files are written: 1.8 MiB of 2.5 MiB once both are spooled.
    await a.start(FILE_SIZE);
    await b.start(FILE_SIZE);
    await waitFor(async () => (await spoolMetrics()).bytes === 2 * FILE_SIZE,
      { timeoutMs: 10_000, what: 'A and B spooled (tresor_spool_bytes = their file bytes)' });
    assert.equal(spoolFds().length, 2, 'A and B each have a spool file');
    // C crosses the cap at ~700 KiB of its 900 KiB.
    await c.start(FILE_SIZE);
    const res = await c.conn.readResponse({ timeoutMs: 10_000 });
    await assertSpoolFull(res, 'the upload that crossed the cap');
    assert.ok(c.sent > SPOOL_MAX - 2 * FILE_SIZE - 64 * KiB, `C was refused mid-way (after ${c.sent} bytes), not up front`);
    c.conn.destroy();
    // C's file is gone and its bytes given back at once, while A and B still hold theirs.
    await waitFor(async () => spoolFds().length === 2 && (await spoolMetrics()).bytes === 2 * FILE_SIZE,
      { timeoutMs: 10_000, what: `C's spool file closed and released (fds ${JSON.stringify(spoolFds())})` });
    assert.equal((await spoolMetrics()).refusals - m0.refusals, 1);
    assert.equal(a.answered || b.answered, false, 'A and B are still uploading');
    const [ra, rb] = await Promise.all([a.finish(), b.finish()]);
    assertTranscribed(ra, a, 'A');
    assertTranscribed(rb, b, 'B');
    a.conn.destroy();
    b.conn.destroy();
    await assertSpoolEmpty('after the chunked uploads');
    // Room again: a chunked upload of the same size passes.
    const d = new HeldUpload(FILE_SIZE, { chunked: true });
    await d.start(0);
    assertTranscribed(await d.finish(), d, 'D');
    d.conn.destroy();
    await assertSpoolEmpty('at the end');
  });
});
