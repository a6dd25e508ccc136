// Shared pieces of the crash and chaos tests (issue 9, item 6): a load generator over
// keep-alive node:http connections that classifies every chat answer (JSON or SSE), a
// real redis-server on loopback that can be stopped and started again on its port, and
// /proc readings of a process (open fds, VmRSS).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { chatBody, closedPort, redisPing, tempDir, waitFor, ROUTE_GPT, performance } from './harness.mjs';

/**
 * One HTTP request over `agent`; never rejects. Resolves { status, headers, text, complete, ms,
 * error }: complete is false when the connection was lost before the response ended (error
 * says why), or when `timeoutMs` passed first (error 'client timeout').
 */
export function httpCall(agent, port, { method = 'GET', path, headers = {}, body, timeoutMs = 30_000 }) {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const chunks = [];
    let res;
    const finish = (complete, error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        status: res?.statusCode ?? 0, headers: res?.headers ?? {}, text: Buffer.concat(chunks).toString('utf8'),
        complete, ms: performance.now() - t0, error,
      });
    };
    const h = { ...headers };
    if (body !== undefined) h['content-length'] = String(Buffer.byteLength(body));
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: h, agent }, (r) => {
      res = r;
      r.on('data', (c) => chunks.push(c));
      r.on('error', () => { /* reported through 'close' */ });
      r.on('close', () => finish(r.complete, r.complete ? undefined : 'response incomplete (connection lost)'));
    });
    const timer = setTimeout(() => {
      finish(false, 'client timeout');
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => finish(false, `${e.code ?? ''} ${e.message}`.trim()));
    req.end(body);
  });
}

/** The data payloads of an SSE body, in order. */
export function ssePayloads(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (lines.length) out.push(lines.join('\n'));
  }
  return out;
}

/**
 * What a chat answer told its client. For JSON: { kind: 'json', receiptId, envelope }. For a
 * stream: { kind: 'stream', receiptId (from the finish/usage chunk), done ([DONE] seen),
 * errorEvent (the in-band error object, if any) }. envelope is the parsed error envelope of a
 * non-200, or null when the body is not one.
 */
export function classifyChat(r, stream) {
  const out = { kind: stream ? 'stream' : 'json', receiptId: null, done: false, errorEvent: null, envelope: null };
  if (r.status !== 200) {
    try {
      const j = JSON.parse(r.text);
      const e = j?.error;
      if (e && typeof e.message === 'string' && typeof e.type === 'string' && typeof e.code === 'string' && 'param' in e)
        out.envelope = e;
    } catch { /* not an envelope */ }
    return out;
  }
  if (!stream) {
    try { out.receiptId = JSON.parse(r.text).tresor?.receipt_id ?? null; } catch { /* cut body */ }
    return out;
  }
  for (const p of ssePayloads(r.text)) {
    if (p === '[DONE]') { out.done = true; continue; }
    let j;
    try { j = JSON.parse(p); } catch { continue; }
    if (j.error) out.errorEvent = j.error;
    if (j.tresor?.receipt_id) out.receiptId = j.tresor.receipt_id;
  }
  return out;
}

/**
 * Closed-loop load: `clients` workers, each sending chat requests back to back (every
 * `streamEvery`-th one a stream) until stop() says so. onResult(result) gets every
 * answer: { i, stream, status, complete, ms, error, startedAt, chat (classifyChat) }.
 * Each worker keeps one keep-alive connection (an agent of `clients` sockets, closed at the end).
 */
export async function runChatLoad({ port, key, clients, stop, onResult, streamEvery = 2, timeoutSeconds }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  if (timeoutSeconds) headers['x-tresor-timeout-seconds'] = String(timeoutSeconds);
  const plain = JSON.stringify(chatBody(ROUTE_GPT));
  const streaming = JSON.stringify(chatBody(ROUTE_GPT, { stream: true, stream_options: { include_usage: true } }));
  let n = 0;
  const worker = async () => {
    while (!stop()) {
      const i = n++;
      const stream = streamEvery > 0 && i % streamEvery === 1;
      const startedAt = performance.now();
      const r = await httpCall(agent, port, {
        method: 'POST', path: '/v1/chat/completions', headers, body: stream ? streaming : plain,
        timeoutMs: timeoutSeconds ? (timeoutSeconds + 15) * 1000 : 60_000,
      });
      onResult({ i, stream, startedAt, ...r, chat: classifyChat(r, stream) });
    }
  };
  await Promise.all(Array.from({ length: clients }, worker));
  agent.destroy();
}

/**
 * runChatLoad in the background until stop(): `results` fills as answers come; stop() ends
 * the workers after their current request and resolves once all have.
 */
export function startChatLoad(opts) {
  const results = [];
  let stopping = false;
  const done = runChatLoad({ ...opts, stop: () => stopping, onResult: (r) => results.push(r) });
  return {
    results,
    stop: async () => {
      stopping = true;
      await done;
    },
  };
}

/** Fetches every id with the gateway's receipt endpoint; resolves { ok, missing: [id → status] }. */
export async function fetchAll(port, key, ids, { concurrency = 16 } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const missing = [];
  let ok = 0;
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++];
      const r = await httpCall(agent, port, { path: `/v1/receipts/${id}`, headers: { authorization: `Bearer ${key}` } });
      let good = false;
      if (r.status === 200) {
        try { good = JSON.parse(r.text).id === id; } catch { /* counted missing */ }
      }
      if (good) ok++;
      else missing.push(`${id} → ${r.status} ${r.error ?? r.text.slice(0, 100)}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return { ok, missing };
}

// ---------------------------------------------------------------------------------------------
// redis-server

const redisProcs = new Set();
process.on('exit', () => {
  for (const r of redisProcs) {
    try { r.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/**
 * A redis-server on 127.0.0.1 with an append-only file fsynced on every write (the
 * durability the SQLite store has; receipts/redis_store.cpp leaves it to the operator), in a
 * temp dir. stop(signal) ends it and waits for the exit; start() starts it again on the
 * same port and dir (the data comes back from the AOF).
 */
export async function startRedis() {
  const port = await closedPort();
  const dir = tempDir('tresor-redis-');
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    child: null,
    async start() {
      const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
        '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'], { stdio: 'ignore' });
      redisProcs.add(child);
      child.once('exit', () => redisProcs.delete(child));
      redis.child = child;
      redis.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      await waitFor(() => redisPing(port), { what: 'redis-server PING', timeoutMs: 10_000 });
      return redis;
    },
    async stop(signal = 'SIGTERM') {
      if (!redis.child || redis.child.exitCode !== null || redis.child.signalCode !== null) return redis.exited;
      redis.child.kill(signal);
      return redis.exited;
    },
    ping: () => redisPing(port),
  };
  return redis.start();
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/** Open file descriptors of process `pid`. */
export function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** VmRSS of process `pid` in KiB. */
export function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmRSS in /proc/PID/status');
  return Number(m[1]);
}

/** Whether process `pid` runs with AddressSanitizer (its RSS then includes the quarantine). */
export function underAsan(pid) {
  return /libasan|libclang_rt\.asan/.test(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}
