// Shared helpers for the end-to-end tests of tresor-router.
//
// Everything here talks to real processes over loopback:
//   * startFakeUpstream()  spawns tresor-fake-upstream and parses `LISTENING <port>`;
//   * startGateway()       writes a YAML config into a temp dir, spawns tresor-router,
//                          parses `listening on http://HOST:PORT` and polls /readyz;
//   * RawConnection        exact bytes over node:net (431, 413, chunked, slow requests);
//   * readSse()/sseRequest SSE reading with per-event timestamps;
//   * startRoutingStack()  one fake upstream per provider + a gateway routing over them, with
//                          timedChat()/parseAttempts()/expectAttempts() for X-Tresor-Attempts;
//                          fakes take runtime faults via fake.behaviour(spec) and can be
//                          stopped and restart()ed on the same port;
//   * stopAll()            kills every process this module started (use it in after()), then
//                          fails if a secret canary leaked (below);
//   * canaries             every key makeKey()/makeProviderKey() generate is registered
//                          (canarySecrets()); fetch() is wrapped once so that the responses
//                          tests read from a gateway are scanned for them, and stopAll() scans
//                          every gateway's stdout/stderr.
//
// Imported by tests/integration/*.test.mjs and by tests/client/*.test.mjs (relative path),
// so it uses nothing but Node built-ins.

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// A relative TRESOR_BUILD_DIR is relative to where the suite was started: the repo root for
// `node --test tests/integration/`, and npm's INIT_CWD for `npm --prefix tests/client test`
// (npm itself runs the script inside tests/client).
export const BUILD_DIR = process.env.TRESOR_BUILD_DIR
  ? path.resolve(process.env.INIT_CWD || process.cwd(), process.env.TRESOR_BUILD_DIR)
  : path.join(REPO_ROOT, 'build');

// Generous because CI shares 2 cores between the test runner, gateway, upstream and compiler.
export const STARTUP_TIMEOUT_MS = 20_000;
const VERBOSE = !!process.env.TRESOR_TEST_VERBOSE;

// ---------------------------------------------------------------------------------------------
// Binaries

function findBinary(name, envVar) {
  if (process.env[envVar]) return path.resolve(process.env[envVar]);
  const candidates = [
    path.join(BUILD_DIR, name),
    path.join(BUILD_DIR, 'bin', name),
    path.join(BUILD_DIR, 'server', name),
    path.join(BUILD_DIR, 'router', name),
    path.join(BUILD_DIR, 'tests', 'fake_upstream', name),
  ];
  for (const c of candidates) {
    try {
      if (statSync(c).isFile()) return c;
    } catch { /* next */ }
  }
  throw new Error(`${name} not found (looked in ${candidates.join(', ')}); ` +
    `build it or point TRESOR_BUILD_DIR / ${envVar} at it`);
}

export function routerBin() { return findBinary('tresor-router', 'TRESOR_ROUTER_BIN'); }
export function fakeUpstreamBin() { return findBinary('tresor-fake-upstream', 'TRESOR_FAKE_UPSTREAM_BIN'); }

// ---------------------------------------------------------------------------------------------
// Keys and small utilities

export function sha256Hex(s) {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** A fresh well-formed client key: `tr-` + 96 lowercase hex chars (registered as a canary). */
export function makeKey() {
  return registerCanary('tr-' + randomBytes(48).toString('hex'));
}

/** A fresh provider (upstream) api key; never a `tr-` key (registered as a canary). */
export function makeProviderKey() {
  return registerCanary('sk-provider-' + randomBytes(16).toString('hex'));
}

// ---------------------------------------------------------------------------------------------
// Secret canaries: every key the harness generates must never show up in a gateway's output
// (stdout/stderr) or in a response body/header a test read from a gateway. stopAll() fails
// the file when one did (see checkCanaries()).

const canaries = new Set();
const canaryViolations = [];

/** Adds `secret` to the canaries (idempotent); returns it. Strings shorter than 12 chars are refused. */
export function registerCanary(secret) {
  if (typeof secret !== 'string' || secret.length < 12) throw new Error('registerCanary: a canary needs ≥ 12 characters');
  canaries.add(secret);
  return secret;
}

/** Every secret generated so far by makeKey()/makeProviderKey() (or registerCanary()). */
export function canarySecrets() {
  return [...canaries];
}

/** `text` with every canary replaced by a short tag (never prints a secret). */
export function redactCanaries(text) {
  let out = String(text);
  for (const c of canaries) out = out.split(c).join(`[canary ${c.slice(0, 6)}…(${c.length} chars)]`);
  return out;
}

/** The canaries contained in `text`. */
export function findCanaries(text) {
  if (!text) return [];
  const t = String(text);
  return [...canaries].filter((c) => t.includes(c));
}

// The line of `text` around a canary, redacted and truncated, for an error message.
function canaryContext(text, secret) {
  const at = text.indexOf(secret);
  const start = text.lastIndexOf('\n', at) + 1;
  let end = text.indexOf('\n', at);
  if (end < 0) end = text.length;
  const line = redactCanaries(text.slice(start, end));
  return line.length > 300 ? `${line.slice(0, 300)}… (${line.length} chars)` : line;
}

function recordCanaryHits(where, text) {
  for (const secret of findCanaries(text)) {
    canaryViolations.push(`${where}: ${secret.slice(0, 6)}…(${secret.length} chars) in: ${canaryContext(String(text), secret)}`);
  }
}

export function tempDir(prefix = 'tresor-it-') {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/**
 * A self-signed P-256 certificate made with the openssl CLI, in a fresh temp dir. Not in any
 * trust store: a gateway without `ca_file` refuses it. `ca` is the PEM, for clients (the
 * harness's own requests) that should trust it. Default subject: CN and IP SAN 127.0.0.1.
 */
export function selfSignedCert({ cn = '127.0.0.1', san = 'IP:127.0.0.1' } = {}) {
  const dir = tempDir('tresor-tls-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', `subjectAltName=${san}`], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const tlsCert = path.join(dir, 'cert.pem');
  return { dir, tlsCert, tlsKey: path.join(dir, 'key.pem'), ca: readFileSync(tlsCert, 'utf8') };
}

/** A loopback port on which nothing listens (bound, then closed). */
export async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Poll fn() until it returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 25, what = 'condition' } = {}) {
  const deadline = performance.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
        (last instanceof Error ? ` (last error: ${last.message})` : ''));
    }
    await delay(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Process management

const liveProcs = new Set();
const tempDirs = [];

process.on('exit', () => {
  for (const p of liveProcs) {
    try { p.child.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const d of tempDirs) {
    try { rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
  }
});

class ManagedProcess {
  constructor(name, bin, args, env, cwd = undefined) {
    this.name = name;
    this.bin = bin;
    this.args = args;
    this.stdout = '';
    this.stderr = '';
    this.stopping = false;
    this.child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exit = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        liveProcs.delete(this);
        this.exitInfo = { code, signal };
        if (!this.stopping) {
          process.stderr.write(`[harness] ${name} exited unexpectedly (code=${code} signal=${signal}); ` +
            `stderr tail:\n${this.stderr.slice(-4000)}\n`);
        }
        resolve(this.exitInfo);
      });
    });
    this.spawnError = new Promise((resolve) => this.child.once('error', resolve));
    liveProcs.add(this);
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => {
      this.stdout += d;
      if (VERBOSE) process.stderr.write(`[${name} out] ${d}`);
    });
    this.child.stderr.on('data', (d) => {
      this.stderr += d;
      if (VERBOSE) process.stderr.write(`[${name} err] ${d}`);
    });
  }

  get alive() { return this.child.exitCode === null && this.child.signalCode === null; }
  get pid() { return this.child.pid; }

  /**
   * Sends `sig` (e.g. 'SIGHUP', 'SIGTERM'). With expectExit (default: true for SIGTERM, SIGINT
   * and SIGKILL) the exit that follows is not reported as unexpected. The exit itself: await
   * proc.exit → { code, signal } (also proc.exitInfo once it has exited).
   */
  signal(sig, { expectExit = ['SIGTERM', 'SIGINT', 'SIGKILL'].includes(sig) } = {}) {
    if (expectExit) this.stopping = true;
    if (!this.alive) return false;
    return this.child.kill(sig);
  }

  /** Resolves with the match once `regex` matches stdout (or stderr); rejects on exit/timeout. */
  waitForOutput(regex, { stream = 'both', timeoutMs = STARTUP_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const texts = stream === 'stdout' ? [this.stdout] : stream === 'stderr' ? [this.stderr] : [this.stdout, this.stderr];
        for (const t of texts) {
          const m = regex.exec(t);
          if (m) return m;
        }
        return null;
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout.off('data', onData);
        this.child.stderr.off('data', onData);
      };
      const onData = () => {
        const m = check();
        if (m) { cleanup(); resolve(m); }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: no output matching ${regex} within ${timeoutMs} ms.\n` +
          `stdout: ${this.stdout.slice(-2000)}\nstderr: ${this.stderr.slice(-2000)}`));
      }, timeoutMs);
      this.child.stdout.on('data', onData);
      this.child.stderr.on('data', onData);
      this.exit.then(({ code, signal }) => {
        const m = check();
        cleanup();
        if (m) resolve(m);
        else reject(new Error(`${this.name} exited (code=${code} signal=${signal}) before printing ${regex}.\n` +
          `stdout: ${this.stdout.slice(-2000)}\nstderr: ${this.stderr.slice(-4000)}`));
      });
      this.spawnError.then((err) => { cleanup(); reject(err); });
      const m = check();
      if (m) { cleanup(); resolve(m); }
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within graceMs. */
  async stop(graceMs = 5000) {
    this.stopping = true;
    if (!this.alive) return this.exitInfo;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => { if (this.alive) this.child.kill('SIGKILL'); }, graceMs);
    const info = await this.exit;
    clearTimeout(t);
    return info;
  }
}

/**
 * Stops every process started through this module (use in after()). Then checks the secret
 * canaries: throws when a generated key appeared in a gateway's stdout/stderr or in a
 * response a test read from a gateway (see checkCanaries()).
 */
export async function stopAll() {
  // Let the body scans of responses still arriving finish first (bounded: never hangs).
  await settleResponseScans(3000);
  await Promise.all([...liveProcs].map((p) => p.stop()));
  checkCanaries();
}

/**
 * Scans the output of every gateway started since the last check for canary secrets, and
 * throws (secrets redacted, lines truncated) if one was found there or in a response read
 * from a gateway. stopAll() calls it; call it yourself to check earlier.
 */
export function checkCanaries() {
  for (const proc of gatewayProcs.splice(0)) {
    recordCanaryHits(`${proc.name} (pid ${proc.pid}) stdout`, proc.stdout);
    recordCanaryHits(`${proc.name} (pid ${proc.pid}) stderr`, proc.stderr);
  }
  if (canaryViolations.length === 0) return;
  const found = canaryViolations.splice(0);
  throw new Error(`secret canaries leaked (${found.length}):\n  ${found.slice(0, 20).join('\n  ')}` +
    (found.length > 20 ? `\n  … and ${found.length - 20} more` : ''));
}

// Gateways whose output has not been checked yet; the origins whose responses are scanned.
const gatewayProcs = [];
const gatewayOrigins = new Set();
const pendingScans = new Set();
const MAX_SCANNED_BODY = 2 * 1024 * 1024;

async function settleResponseScans(timeoutMs) {
  if (pendingScans.size === 0) return;
  let timer;
  await Promise.race([
    Promise.allSettled([...pendingScans]),
    new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs); }),
  ]);
  clearTimeout(timer);
}

// Called for every fetch() response. Headers at once; for a gateway's answer that is not an
// event stream and has a Content-Length up to 2 MiB, the body through a clone: clone() tees
// the body, so the caller's Response is untouched and can be read whenever and however.
function scanResponse(input, init, res) {
  let url;
  try {
    url = new URL(res.url || (typeof input === 'string' || input instanceof URL ? String(input) : input.url));
  } catch { return; }
  if (!gatewayOrigins.has(url.origin)) return;
  const method = (init && init.method) || (input && typeof input === 'object' && input.method) || 'GET';
  const where = `response to ${method} ${url.pathname}`;
  for (const [name, value] of res.headers) recordCanaryHits(`${where}, header ${name}`, value);
  const type = res.headers.get('content-type') || '';
  const length = Number(res.headers.get('content-length'));
  if (!res.body || /^text\/event-stream/i.test(type) || !res.headers.has('content-length') ||
      !(length >= 0 && length <= MAX_SCANNED_BODY)) return;
  let clone;
  try { clone = res.clone(); } catch { return; }
  const p = clone.text().then((text) => recordCanaryHits(`${where} (status ${res.status}), body`, text), () => {});
  pendingScans.add(p);
  p.finally(() => pendingScans.delete(p));
}

// Installed once per process around the current fetch (tests simply call fetch()).
if (typeof globalThis.fetch === 'function' && !globalThis.fetch.tresorCanaryScan) {
  const innerFetch = globalThis.fetch;
  const scanningFetch = async function fetch(input, init) {
    const res = await innerFetch(input, init);
    try { scanResponse(input, init, res); } catch { /* never break the caller */ }
    return res;
  };
  scanningFetch.tresorCanaryScan = true;
  globalThis.fetch = scanningFetch;
}

// ---------------------------------------------------------------------------------------------
// Fake upstream

/**
 * Spawns tresor-fake-upstream. Options map to its flags: chunks, paceMs, requireKey, content,
 * tlsCert, tlsKey (+ ca: PEM text to trust for the control endpoints); extraArgs are appended;
 * port (optional) listens on that port instead of an ephemeral one.
 */
export async function startFakeUpstream(opts = {}) {
  // opts.port (optional): listen on this fixed port instead of an ephemeral one.
  const args = ['--listen', `127.0.0.1:${opts.port ?? 0}`];
  if (opts.tlsCert) args.push('--tls-cert', opts.tlsCert, '--tls-key', opts.tlsKey);
  if (opts.chunks !== undefined) args.push('--chunks', String(opts.chunks));
  if (opts.paceMs !== undefined) args.push('--pace-ms', String(opts.paceMs));
  if (opts.requireKey) args.push('--require-key', opts.requireKey);
  if (opts.content !== undefined) args.push('--content', opts.content);
  if (opts.extraArgs) args.push(...opts.extraArgs);
  const proc = new ManagedProcess(opts.name || 'fake-upstream', fakeUpstreamBin(), args, { ...process.env });
  const m = await proc.waitForOutput(/^LISTENING (\d+)\s*$/m, { stream: 'stdout' });
  const port = Number(m[1]);
  const scheme = opts.tlsCert ? 'https' : 'http';
  // Control endpoints (/_fake/*) are served on the same port and scheme as the chat API.
  const ctl = (p, method = 'GET', body) => controlRequest(`${scheme}://127.0.0.1:${port}${p}`, method, opts.ca, body);
  const fake = {
    proc,
    port,
    scheme,
    /** URL to use as a provider base_url. */
    baseUrl: (host = '127.0.0.1') => `${scheme}://${host}:${port}/v1`,
    requests: async () => JSON.parse(await ctl('/_fake/requests')),
    stats: async () => JSON.parse(await ctl('/_fake/stats')),
    reset: async () => { await ctl('/_fake/reset', 'POST'); },
    /**
     * POST /_fake/behaviour: a runtime fault spec for the next chat requests (`times: N` = the
     * next N only, queued in order; without `times` persistent; `{}` clears). Returns the
     * fake's view of its behaviour state.
     */
    behaviour: async (spec = {}) => JSON.parse(await ctl('/_fake/behaviour', 'POST', JSON.stringify(spec))),
    stop: () => fake.proc.stop(),
    /**
     * Starts the (stopped) fake again on the same port with the same options, e.g. to let a
     * "dead" provider recover. Replaces fake.proc; the counters start from zero.
     */
    restart: async () => {
      if (fake.proc.alive) throw new Error(`${fake.proc.name} is still running; stop() it first`);
      const again = new ManagedProcess(fake.proc.name, fakeUpstreamBin(),
        ['--listen', `127.0.0.1:${port}`, ...args.slice(2)], { ...process.env });
      await again.waitForOutput(/^LISTENING (\d+)\s*$/m, { stream: 'stdout' });
      fake.proc = again;
      return fake;
    },
  };
  return fake;
}

function controlRequest(url, method, ca, body) {
  const mod = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    // Test-internal control traffic: trust `ca` but skip the name check (one fake deliberately
    // serves a certificate for another host name).
    const headers = body === undefined ? undefined
      : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = mod.request(url, { method, headers, ca, agent: false, timeout: 10_000, checkServerIdentity: () => undefined }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => {
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(data);
        else reject(new Error(`${method} ${url} answered ${res.statusCode}: ${data.slice(0, 300)}`));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// Gateway config

/** Minimal YAML emitter for the config shape (maps, lists, scalars; strings JSON-quoted). */
export function toYaml(value, indent = 0) {
  const pad = ' '.repeat(indent);
  const scalar = (v) => {
    if (v === null) return 'null';
    if (typeof v === 'string') return JSON.stringify(v);
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    throw new Error(`toYaml: unsupported scalar ${typeof v}`);
  };
  const isScalar = (v) => v === null || typeof v !== 'object';
  if (Array.isArray(value)) {
    if (value.length === 0) return `${pad}[]\n`;
    let out = '';
    for (const item of value) {
      if (isScalar(item)) {
        out += `${pad}- ${scalar(item)}\n`;
      } else {
        const inner = toYaml(item, indent + 2);
        out += `${pad}- ${inner.slice(indent + 2)}`;
      }
    }
    return out;
  }
  let out = '';
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue;
    if (isScalar(v)) out += `${pad}${k}: ${scalar(v)}\n`;
    else if (Array.isArray(v) && v.length === 0) out += `${pad}${k}: []\n`;
    else if (!Array.isArray(v) && Object.keys(v).length === 0) out += `${pad}${k}: {}\n`;
    else out += `${pad}${k}:\n${toYaml(v, indent + 2)}`;
  }
  return out;
}

export const ROUTE_GPT = 'eu/fake/gpt-oss-120b';
export const ROUTE_GEMMA = 'eu/privatemode/gemma-4-31b';
export const ROUTE_WHISPER = 'eu/fake/whisper-large-v3';
export const UPSTREAM_GPT = 'openai/gpt-oss-120b';
export const UPSTREAM_GEMMA = 'google/gemma-4-31b';

/**
 * The config of the brief, as an object. `fakeUrl` is the provider base_url of provider `fake`.
 * keys: [{ sha256, customer }]. Use `extraProviders` / `extraRoutes` to add more, and
 * server/timeouts to override single values.
 */
export function gatewayConfig({
  fakeUrl, keys, server = {}, timeouts = {}, providerFake = {}, extraProviders = {}, extraRoutes = [],
}) {
  return {
    server: { listen: '127.0.0.1:0', threads: 2, max_body_bytes: 1048576, max_header_bytes: 8192, ...server },
    timeouts: { default_seconds: 180, max_seconds: 600, connect_ms: 2000, stream_idle_seconds: 5, ...timeouts },
    providers: {
      fake: { base_url: fakeUrl, api_key: '${FAKE_PROVIDER_KEY}', ca_file: '', max_connections: 16, ...providerFake },
      ...extraProviders,
    },
    routes: [
      { id: ROUTE_GPT, provider: 'fake', upstream_model: UPSTREAM_GPT, type: 'chat' },
      { id: ROUTE_GEMMA, provider: 'fake', upstream_model: UPSTREAM_GEMMA, type: 'chat' },
      { id: ROUTE_WHISPER, provider: 'fake', upstream_model: 'whisper', type: 'transcription' },
      ...extraRoutes,
    ],
    auth: { keys },
  };
}

/** Writes `config` (object or YAML text) to a fresh temp dir; returns the file path. */
export function writeConfig(config, name = 'tresor.yaml') {
  const dir = tempDir('tresor-cfg-');
  const file = path.join(dir, name);
  writeFileSync(file, typeof config === 'string' ? config : toYaml(config));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Gateway

/**
 * Writes the config, spawns `tresor-router --config FILE` with `env` added to the environment,
 * waits for the `listening on http://HOST:PORT` log line, then polls /readyz until 200.
 */
export async function startGateway({ config, env = {}, name = 'tresor-router' }) {
  return launchGateway(writeConfig(config), env, name);
}

// Spawns `tresor-router --config configPath`, waits for its listening line and /readyz.
// The status of a GET over HTTPS without verifying the certificate (readiness polling only:
// the tests that care verify it themselves, with their CA).
function httpsStatus(url) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { rejectUnauthorized: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
}

async function launchGateway(configPath, env, name) {
  // The gateway runs in its config's temp dir, so its default state (receipt signing key,
  // SQLite store under state/) is private to the test and removed with it.
  const proc = new ManagedProcess(name, routerBin(), ['--config', configPath], { ...process.env, ...env },
    path.dirname(configPath));
  gatewayProcs.push(proc); // stopAll() checks its output for secret canaries
  const m = await proc.waitForOutput(/listening on (https?):\/\/(\[[^\]]+\]|[^\s:/]+):(\d+)/);
  const scheme = m[1];
  const host = m[2].replace(/^\[|\]$/g, '');
  const port = Number(m[3]);
  const origin = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  gatewayOrigins.add(origin); // fetch() responses from here are checked for canaries
  await waitFor(async () => {
    if (!proc.alive) throw new Error(`${name} exited: ${proc.stderr.slice(-2000)}`);
    if (scheme === 'https') return (await httpsStatus(`${origin}/readyz`)) === 200;
    const r = await fetch(`${origin}/readyz`);
    await r.arrayBuffer();
    return r.status === 200;
  }, { timeoutMs: STARTUP_TIMEOUT_MS, what: `${name} /readyz` });
  return {
    proc,
    host,
    port,
    origin,
    configPath,
    url: (p) => origin + p,
    stop: () => proc.stop(),
  };
}

/** Runs the router binary with args (e.g. check-config, hash-key); returns {status, stdout, stderr}. */
export function runRouterCli(args, { env = process.env, timeoutMs = 20_000 } = {}) {
  const r = spawnSync(routerBin(), args, { env, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A complete fixture: fake upstream (requiring the provider key) + gateway with one client key.
 * Returns { fake, gw, key, providerKey, content, chat(), ... }.
 */
export async function startStack({
  fakeOpts = {}, configOverrides = {}, content = 'Hello from the fake upstream.', configHook,
} = {}) {
  const providerKey = makeProviderKey();
  const key = makeKey();
  const fake = await startFakeUpstream({ requireKey: providerKey, content, ...fakeOpts });
  let config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [{ sha256: sha256Hex(key), customer: 'acme' }],
    ...configOverrides,
  });
  if (configHook) config = configHook(config) || config;
  const gw = await startGateway({ config, env: { FAKE_PROVIDER_KEY: providerKey } });
  const stack = {
    fake, gw, key, providerKey, content,
    authHeaders: (extra = {}) => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json', ...extra }),
    /** POST /v1/chat/completions with fetch; body may be an object (JSON-encoded) or a string/Buffer. */
    chat: (body, { headers = {}, signal } = {}) => fetch(gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
      signal,
    }),
    async healthy() {
      const r = await fetch(gw.url('/healthz'));
      await r.arrayBuffer();
      return r.status === 200 && gw.proc.alive;
    },
  };
  return stack;
}

// ---------------------------------------------------------------------------------------------
// /v1/usage (spec §9.4): money as exact decimals

/**
 * JSON text to a value in which every number is the exact text the gateway sent (a string such
 * as "3.3"), so money is compared as exact decimals, never through a binary float.
 */
export function parseJsonExact(text) {
  const quoted = text.replace(/("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g,
    (m, str, num) => (str !== undefined ? str : JSON.stringify(num)));
  return JSON.parse(quoted);
}

/** Integer nanos (BigInt or integer Number) as the plain decimal /v1/usage writes: "3.3", "0", "-0.8". */
export function nanosDecimal(nanos) {
  const n = BigInt(nanos);
  const mag = n < 0n ? -n : n;
  const fraction = (mag % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return `${n < 0n ? '-' : ''}${mag / 1_000_000_000n}${fraction ? `.${fraction}` : ''}`;
}

/** An exact plain decimal ("3.30", "-0.8", "12") as BigInt nanos; throws on exponents or > 9 decimals. */
export function toNanos(text) {
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?$/.exec(String(text));
  if (!m) throw new Error(`not a plain decimal with at most 9 decimals: ${JSON.stringify(text)}`);
  const n = BigInt(m[2]) * 1_000_000_000n + BigInt((m[3] || '').padEnd(9, '0'));
  return m[1] ? -n : n;
}

/**
 * GET /v1/usage with `key`: { status, text, usage } where usage's numbers are exact decimal
 * strings (parseJsonExact). Asserts no amount is in exponent notation.
 */
export async function getUsage(gw, key) {
  const r = await fetch(gw.url('/v1/usage'), { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const text = await r.text();
  if (r.status === 200 && /\d[eE][+-]?\d/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""'))) {
    throw new Error(`/v1/usage amount in exponent notation: ${text}`);
  }
  return { status: r.status, text, usage: r.status === 200 ? parseJsonExact(text) : null };
}

export function chatBody(model = ROUTE_GPT, extra = {}) {
  return { model, messages: [{ role: 'user', content: 'Hello!' }], ...extra };
}

// ---------------------------------------------------------------------------------------------
// Error envelope helpers

/**
 * Reads a fetch Response (or a RawResponse) expected to be an error envelope; asserts the shape
 * and returns the parsed `error` object. Throws a descriptive error (never returns) otherwise.
 */
export async function readErrorEnvelope(res, expect = {}) {
  const text = typeof res.text === 'function' ? await res.text() : res.text;
  const status = res.status;
  const ctx = `status ${status}, body ${JSON.stringify(text.slice(0, 600))}`;
  if (expect.status !== undefined && status !== expect.status) {
    throw new Error(`expected status ${expect.status}, got ${ctx}`);
  }
  let json;
  try { json = JSON.parse(text); } catch { throw new Error(`error body is not JSON: ${ctx}`); }
  const err = json && json.error;
  if (!err || typeof err !== 'object') throw new Error(`no error object: ${ctx}`);
  if (typeof err.message !== 'string' || err.message.length === 0) throw new Error(`error.message missing: ${ctx}`);
  if (typeof err.type !== 'string') throw new Error(`error.type missing: ${ctx}`);
  if (!('code' in err)) throw new Error(`error.code missing: ${ctx}`);
  if (!('param' in err)) throw new Error(`error.param missing (envelope must carry param, null or a name): ${ctx}`);
  if (expect.type !== undefined && err.type !== expect.type) throw new Error(`expected type ${expect.type}: ${ctx}`);
  if (expect.code !== undefined) {
    const ok = Array.isArray(expect.code) ? expect.code.includes(err.code) : err.code === expect.code;
    if (!ok) throw new Error(`expected code ${JSON.stringify(expect.code)}: ${ctx}`);
  }
  if (expect.param !== undefined) {
    const ok = expect.param instanceof RegExp ? typeof err.param === 'string' && expect.param.test(err.param)
      : err.param === expect.param;
    if (!ok) throw new Error(`expected param ${expect.param}: ${ctx}`);
  }
  return { ...err, _status: status, _text: text };
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP over node:net

/**
 * One client TCP connection with an incremental HTTP/1.1 response parser.
 * write() never throws on a peer reset; the error is recorded in `this.error`.
 */
export class RawConnection {
  static connect(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      sock.once('connect', () => { sock.off('error', reject); resolve(new RawConnection(sock)); });
      sock.once('error', reject);
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.sock.setNoDelay(true);
    this.buf = Buffer.alloc(0);
    this.ended = false; // peer sent FIN
    this.closed = false;
    this.error = null;
    this.waiters = new Set();
    this.firstByteAt = null;
    sock.on('data', (d) => {
      if (this.firstByteAt === null) this.firstByteAt = performance.now();
      this.buf = Buffer.concat([this.buf, d]);
      this.notify();
    });
    sock.on('end', () => { this.ended = true; this.notify(); });
    sock.on('error', (e) => { this.error = e; this.notify(); });
    sock.on('close', () => { this.closed = true; this.notify(); });
  }

  get localPort() { return this.sock.localPort; }

  notify() { for (const w of [...this.waiters]) w(); }

  /** Waits until pred() is true, or rejects after timeoutMs. */
  waitUntil(pred, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      if (pred()) return resolve(true);
      const onChange = () => { if (pred()) { done(); resolve(true); } };
      const timer = setTimeout(() => { done(); reject(new Error(`raw connection: timed out after ${timeoutMs} ms waiting for ${what}`)); }, timeoutMs);
      const done = () => { clearTimeout(timer); this.waiters.delete(onChange); };
      this.waiters.add(onChange);
    });
  }

  /** Writes data; resolves true when flushed to the kernel, false if the socket failed. */
  write(data) {
    if (this.closed || this.sock.destroyed) return Promise.resolve(false);
    return new Promise((resolve) => {
      try {
        this.sock.write(data, (err) => resolve(!err));
      } catch {
        resolve(false);
      }
    });
  }

  end() { if (!this.sock.destroyed) this.sock.end(); }
  destroy() { this.sock.destroy(); }

  /** Resolves true once the peer has closed (FIN, reset or close) within timeoutMs, else false. */
  async waitClosed(timeoutMs = 5000) {
    try {
      await this.waitUntil(() => this.ended || this.closed || this.error !== null, timeoutMs, 'close');
      return true;
    } catch {
      return false;
    }
  }

  /** Parses the next complete response from the buffer, waiting for bytes as needed. */
  async readResponse({ timeoutMs = 10_000, method = 'POST' } = {}) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const parsed = tryParseResponse(this.buf, method, this.ended || this.closed || this.error !== null);
      if (parsed && parsed.complete) {
        this.buf = this.buf.subarray(parsed.consumed);
        if (parsed.response.status >= 100 && parsed.response.status < 200) continue; // interim
        return parsed.response;
      }
      if (parsed && parsed.invalid) throw new Error(`unparseable response: ${parsed.invalid}: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      if (this.ended || this.closed || this.error) {
        throw new Error(`connection closed (${this.error ? this.error.code : 'FIN'}) before a complete response; ` +
          `got ${this.buf.length} bytes: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`no complete response within ${timeoutMs} ms; got ${this.buf.length} bytes: ` +
          JSON.stringify(this.buf.toString('latin1').slice(0, 300)));
      }
      const len = this.buf.length;
      await this.waitUntil(() => this.buf.length !== len || this.ended || this.closed || this.error !== null, left, 'response bytes')
        .catch(() => {});
    }
  }
}

function tryParseResponse(buf, method, eof) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return null;
  const head = buf.subarray(0, headEnd).toString('latin1');
  const lines = head.split('\r\n');
  const sm = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!sm) return { invalid: `bad status line ${JSON.stringify(lines[0])}` };
  const status = Number(sm[2]);
  const headers = {};
  const headerList = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) return { invalid: `bad header line ${JSON.stringify(line)}` };
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headerList.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  let pos = headEnd + 4;
  let body;
  const noBody = method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304;
  if (noBody) {
    body = Buffer.alloc(0);
  } else if (/\bchunked\b/i.test(headers['transfer-encoding'] || '')) {
    const parts = [];
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd < 0) return null;
      const size = parseInt(buf.subarray(pos, lineEnd).toString('latin1').split(';')[0].trim(), 16);
      if (Number.isNaN(size)) return { invalid: 'bad chunk size' };
      pos = lineEnd + 2;
      if (size === 0) {
        // trailers until an empty line
        for (;;) {
          const e = buf.indexOf('\r\n', pos);
          if (e < 0) return null;
          const empty = e === pos;
          pos = e + 2;
          if (empty) break;
        }
        break;
      }
      if (buf.length < pos + size + 2) return null;
      parts.push(buf.subarray(pos, pos + size));
      pos += size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (buf.length < pos + n) return null;
    body = buf.subarray(pos, pos + n);
    pos += n;
  } else {
    if (!eof) return null; // delimited by close
    body = buf.subarray(pos);
    pos = buf.length;
  }
  const text = body.toString('utf8');
  return {
    complete: true,
    consumed: pos,
    response: {
      httpVersion: sm[1], status, statusText: sm[3] || '', headers, headerList, body, text,
      json: () => JSON.parse(text),
    },
  };
}

/** Builds the bytes of a request head. headers: array of [name, value] or object. */
export function requestHead(method, target, headers, { host = '127.0.0.1' } = {}) {
  const list = Array.isArray(headers) ? headers : Object.entries(headers);
  const hasHost = list.some(([n]) => n.toLowerCase() === 'host');
  let s = `${method} ${target} HTTP/1.1\r\n`;
  if (!hasHost) s += `Host: ${host}\r\n`;
  for (const [n, v] of list) s += `${n}: ${v}\r\n`;
  return s + '\r\n';
}

/** One request on a fresh connection; returns { res, conn } (conn still open unless the server closed it). */
export async function rawRequest(port, { method = 'POST', target = '/v1/chat/completions', headers = [], body, timeoutMs = 10_000 } = {}) {
  const conn = await RawConnection.connect(port);
  const list = Array.isArray(headers) ? [...headers] : Object.entries(headers);
  if (body !== undefined && !list.some(([n]) => /^(content-length|transfer-encoding)$/i.test(n))) {
    list.push(['Content-Length', String(Buffer.byteLength(body))]);
  }
  const head = requestHead(method, target, list);
  await conn.write(body === undefined ? head : Buffer.concat([Buffer.from(head, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body)]));
  const res = await conn.readResponse({ timeoutMs, method });
  return { res, conn };
}

/** One Redis (RESP) command over a fresh loopback socket; resolves with the raw reply text. */
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    sock.once('error', reject);
    sock.on('data', (d) => { buf += d.toString(); if (buf.endsWith('\r\n')) { sock.destroy(); resolve(buf); } });
    sock.once('connect', () => sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
  });
}

/** Whether a redis-server answers PING on this loopback port (false on refusal or 1 s of silence). */
export function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setTimeout(1000, () => { sock.destroy(); resolve(false); });
    sock.once('error', () => resolve(false));
    sock.once('data', (d) => { sock.destroy(); resolve(d.toString().startsWith('+PONG')); });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}

/** Encodes one HTTP/1.1 chunk. */
export function chunk(data) {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return Buffer.concat([Buffer.from(b.length.toString(16) + '\r\n', 'latin1'), b, Buffer.from('\r\n', 'latin1')]);
}

// ---------------------------------------------------------------------------------------------
// SSE

/**
 * Reads an SSE body from a fetch Response. Each event is { t, data, raw } where t is
 * performance.now() when the event was complete at the client. Stops early when
 * onEvent(ev) returns true. Returns { events, raw, endedCleanly }.
 */
export async function readSse(res, { onEvent, timeoutMs = 30_000 } = {}) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let pending = '';
  let raw = '';
  const events = [];
  const timer = setTimeout(() => reader.cancel(new Error('readSse timeout')).catch(() => {}), timeoutMs);
  let stoppedEarly = false;
  try {
    outer: for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const t = performance.now();
      const s = dec.decode(value, { stream: true });
      raw += s;
      pending += s;
      for (;;) {
        const m = /\r?\n\r?\n/.exec(pending);
        if (!m) break;
        const block = pending.slice(0, m.index);
        pending = pending.slice(m.index + m[0].length);
        const dataLines = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
        if (dataLines.length === 0) continue; // comment / keep-alive
        const ev = { t, data: dataLines.join('\n'), raw: block };
        events.push(ev);
        if (onEvent && onEvent(ev)) { stoppedEarly = true; break outer; }
      }
    }
  } finally {
    clearTimeout(timer);
    if (stoppedEarly) await reader.cancel().catch(() => {});
  }
  return { events, raw, trailing: pending, stoppedEarly };
}

export function parseEventJson(ev) {
  try { return JSON.parse(ev.data); } catch { return undefined; }
}

// ---------------------------------------------------------------------------------------------
// Routing / failover: several providers, each served by its own fake upstream process

/** The routing-related config defaults of the contract (README config schema). */
export const ROUTING_DEFAULTS = Object.freeze({
  timeouts: Object.freeze({
    default_seconds: 180, max_seconds: 600, connect_ms: 2000,
    attempt_first_event_seconds: 10, attempt_first_byte_seconds: 0, stream_idle_seconds: 20,
  }),
  retry: Object.freeze({ attempts_per_route: 2, backoff_ms: 250, max_retry_after_seconds: 5 }),
  breaker: Object.freeze({ consecutive_failures: 5, cooldown_seconds: 10 }),
});

/**
 * Starts one fake upstream per provider and a gateway routing over them.
 *
 *   providers: { name: { dead?: true, port?: number, fakeOpts?: {...} } } or an array of names.
 *              `dead` = base_url on a loopback port nobody listens on (connection refused);
 *              `port` = start that provider's fake on this fixed port (so it can be restarted).
 *   routes:    [{ id, provider, upstream_model? }] in config order; upstream_model defaults to
 *              `<provider>-<model_key>` so the top-level `model` tells the serving provider.
 *   timeouts / retry / breaker: merged over ROUTING_DEFAULTS.
 *
 * Returns { fakes: {name: fake}, deadPorts: {name: port}, gw, key, config, chat(), clearFakes() }.
 */
export async function startRoutingStack({
  providers, routes, timeouts = {}, retry = {}, breaker = {}, fakeOpts = {}, content, server = {}, configHook,
} = {}) {
  const provs = Array.isArray(providers) ? Object.fromEntries(providers.map((n) => [n, {}])) : providers;
  const key = makeKey();
  const env = {};
  const fakes = {};
  const deadPorts = {};
  const providerCfg = {};
  let i = 0;
  await Promise.all(Object.entries(provs).map(async ([name, o]) => {
    const envName = `TRESOR_TEST_PROVIDER_KEY_${i++}`;
    const pk = makeProviderKey();
    env[envName] = pk;
    let baseUrl;
    if (o.dead) {
      deadPorts[name] = o.port ?? await closedPort();
      baseUrl = `http://127.0.0.1:${deadPorts[name]}/v1`;
    } else {
      const fake = await startFakeUpstream({
        name: `fake-${name}`, requireKey: pk, content, port: o.port, ...fakeOpts, ...(o.fakeOpts || {}),
      });
      fake.providerKey = pk;
      fakes[name] = fake;
      baseUrl = fake.baseUrl();
    }
    providerCfg[name] = { base_url: baseUrl, api_key: `\${${envName}}`, ca_file: '', max_connections: 32 };
  }));
  const routeCfg = routes.map((r) => ({
    id: r.id,
    provider: r.provider,
    upstream_model: r.upstream_model ?? `${r.provider}-${r.id.split('/')[2]}`,
    type: r.type ?? 'chat',
  }));
  let config = {
    server: { listen: '127.0.0.1:0', threads: 2, max_body_bytes: 1048576, max_header_bytes: 8192, ...server },
    timeouts: { ...ROUTING_DEFAULTS.timeouts, ...timeouts },
    retry: { ...ROUTING_DEFAULTS.retry, ...retry },
    breaker: { ...ROUTING_DEFAULTS.breaker, ...breaker },
    providers: providerCfg,
    routes: routeCfg,
    auth: { keys: [{ sha256: sha256Hex(key), customer: 'acme' }] },
  };
  if (configHook) config = configHook(config) || config;
  const gw = await startGateway({ config, env });
  return {
    fakes, deadPorts, gw, key, config,
    /** POST /v1/chat/completions with fetch; body may be an object (JSON-encoded) or a string. */
    chat: (body, { headers = {}, signal } = {}) => fetch(gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal,
    }),
    /** Clears every live fake's runtime behaviour and counters. */
    clearFakes: () => Promise.all(Object.values(fakes).filter((f) => f.proc.alive).map((f) => f.reset())),
  };
}

/**
 * Parses an X-Tresor-Attempts header (`route=outcome;ms, route=outcome;ms, …`) into
 * [{ route, outcome, ms }]. Throws on a malformed entry; null/undefined → null.
 */
export function parseAttempts(header) {
  if (header === null || header === undefined) return null;
  return header.split(', ').map((entry) => {
    const m = /^([^=,; ]+)=([^=,; ]+);(\d+)$/.exec(entry);
    if (!m) throw new Error(`malformed X-Tresor-Attempts entry ${JSON.stringify(entry)} in ${JSON.stringify(header)}`);
    return { route: m[1], outcome: m[2], ms: Number(m[3]) };
  });
}

/**
 * Checks an X-Tresor-Attempts header against [[route, outcome], …] exactly, in order (an outcome
 * may be a RegExp; numbers are compared as strings). Throws a descriptive Error otherwise;
 * returns the parsed entries (with their ms) on success.
 */
export function expectAttempts(header, expected) {
  const want = expected.map(([r, o]) => `${r}=${o instanceof RegExp ? o : String(o)}`).join(', ');
  if (header === null || header === undefined) throw new Error(`X-Tresor-Attempts header missing; expected ${want}`);
  const got = parseAttempts(header);
  const ok = got.length === expected.length && expected.every(([r, o], i) => got[i].route === r &&
    (o instanceof RegExp ? o.test(got[i].outcome) : got[i].outcome === String(o)));
  if (!ok) throw new Error(`X-Tresor-Attempts ${JSON.stringify(header)} does not match the expected ${want}`);
  return got;
}

/**
 * One timed chat request through a routing stack. Non-stream (or a non-SSE answer): reads the
 * whole body. Stream: reads the SSE events (readSse) and reports when the first one arrived.
 * Returns { status, headers, attempts, ms (until the body ended), firstEventMs, text, json,
 * events, raw }.
 */
export async function timedChat(stack, body, { headers = {}, timeoutMs = 60_000 } = {}) {
  const t0 = performance.now();
  const res = await stack.chat(body, { headers });
  const headersMs = performance.now() - t0;
  const out = {
    status: res.status,
    headers: res.headers,
    headersMs,
    attemptsHeader: res.headers.get('x-tresor-attempts'),
  };
  try { out.attempts = parseAttempts(out.attemptsHeader); } catch (e) { out.attempts = e; }
  if (/^text\/event-stream/i.test(res.headers.get('content-type') || '')) {
    const { events, raw } = await readSse(res, { timeoutMs });
    out.ms = performance.now() - t0;
    out.events = events;
    out.raw = raw;
    out.firstEventMs = events.length ? events[0].t - t0 : undefined;
    out.t0 = t0;
  } else {
    out.text = await res.text();
    out.ms = performance.now() - t0;
    try { out.json = JSON.parse(out.text); } catch { out.json = undefined; }
  }
  return out;
}

export { delay, performance };

// ---------------------------------------------------------------------------------------------
// Receipts (spec §5): JWS decoding/verification with node:crypto, the digests a client can
// recompute, the SQLite store, and restarting a gateway on the same config/state dir.

/** A lowercase UUID v4, the shape of `tresor.receipt_id` / the receipt's `jti`. */
// Receipt ids are time-ordered UUIDs (v7); generated request ids are random ones (v4).
export const RECEIPT_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const REQUEST_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * The receipt payload's claims on an unpriced chat route, in the order the gateway writes them
 * (`nonce` only if sent). A priced route adds `cost` and `currency` after `usage_estimated`
 * (RECEIPT_CLAIMS_PRICED); a transcription adds `audio_seconds` after `completion_tokens`.
 */
export const RECEIPT_CLAIMS = Object.freeze(['jti', 'iat', 'receipt_type', 'requested_route', 'routed_model',
  'failover', 'endpoint', 'prompt_tokens', 'completion_tokens', 'usage_estimated', 'request_sha256', 'response_sha256',
  'router_attestation']);
/** The claims on a priced chat route: `cost` (exact decimal string) and `currency` follow `usage_estimated`. */
export const RECEIPT_CLAIMS_PRICED = Object.freeze(RECEIPT_CLAIMS.flatMap((c) => (c === 'usage_estimated' ? [c, 'cost', 'currency'] : [c])));

/** SHA-256 of bytes (Buffer/Uint8Array) or a string (UTF-8), lowercase hex. */
export function sha256HexBytes(data) {
  return createHash('sha256').update(typeof data === 'string' ? Buffer.from(data, 'utf8') : data).digest('hex');
}

/** Strict base64url (no padding, RFC 7515 §2) to a Buffer; throws on anything else. */
export function b64urlDecode(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) {
    throw new Error(`not base64url: ${JSON.stringify(String(s).slice(0, 80))}`);
  }
  return Buffer.from(s, 'base64url');
}

/**
 * Splits a compact JWS: { parts, header, headerText, payload, payloadText, signature (Buffer),
 * signingInput }. header/payload are parsed JSON. Throws on a malformed token.
 */
export function decodeJws(jws) {
  const parts = String(jws).split('.');
  if (parts.length !== 3) throw new Error(`a compact JWS has 3 parts, got ${parts.length}: ${String(jws).slice(0, 120)}`);
  const headerText = b64urlDecode(parts[0]).toString('utf8');
  const payloadText = b64urlDecode(parts[1]).toString('utf8');
  return {
    parts,
    headerText,
    header: JSON.parse(headerText),
    payloadText,
    payload: JSON.parse(payloadText),
    signature: b64urlDecode(parts[2]),
    signingInput: `${parts[0]}.${parts[1]}`,
  };
}

/**
 * Verifies an ES256 compact JWS against a JWKS ({keys:[…]}) with node:crypto: picks the key by
 * the header's kid, requires alg ES256 and a raw R‖S (64-byte) signature. Returns the decoded
 * JWS; throws when it does not verify.
 */
export function verifyJws(jws, jwks) {
  const d = decodeJws(jws);
  if (d.header.alg !== 'ES256') throw new Error(`alg ${d.header.alg}, want ES256`);
  const jwk = (jwks.keys || []).find((k) => k.kid === d.header.kid);
  if (!jwk) throw new Error(`no key with kid ${d.header.kid} in the JWKS`);
  if (d.signature.length !== 64) throw new Error(`ES256 signature of ${d.signature.length} bytes (want raw R‖S, 64)`);
  const { kty, crv, x, y } = jwk;
  const key = createPublicKey({ key: { kty, crv, x, y }, format: 'jwk' });
  const ok = cryptoVerify('sha256', Buffer.from(d.signingInput, 'ascii'),
    { key, dsaEncoding: 'ieee-p1363' }, d.signature);
  if (!ok) throw new Error(`the ES256 signature does not verify (kid ${d.header.kid})`);
  return d;
}

/**
 * Removes the gateway's `,"tresor":{…}` member (written last, compact) from one JSON text, as
 * the receipt's response digest does. Returns { stripped, tresor } (tresor: the parsed object),
 * or null when the text has no tresor member. Throws if the member is not the last one.
 */
export function stripTresorMember(text) {
  let at = text.lastIndexOf(',"tresor":{');
  let start = at;
  if (at < 0) {
    // `{"tresor":{…}}`: the only member, no comma before it.
    at = text.lastIndexOf('"tresor":{');
    if (at < 0) return null;
    start = at;
    if (!/^\s*\{\s*$/.test(text.slice(0, at))) throw new Error(`tresor member without a comma in ${text.slice(0, 200)}`);
  }
  const open = text.indexOf('{', at);
  let depth = 0;
  let inStr = false;
  let end = -1;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (inStr) {
      if (c === '\\') i++;
      else if (c === '"') inStr = false;
    } else if (c === '"') {
      inStr = true;
    } else if (c === '{') {
      depth++;
    } else if (c === '}' && --depth === 0) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) throw new Error(`unbalanced tresor member in ${text.slice(-300)}`);
  if (!/^\s*\}\s*$/.test(text.slice(end))) throw new Error(`the tresor member is not the last member: ${text.slice(-300)}`);
  return { stripped: text.slice(0, start) + text.slice(end), tresor: JSON.parse(text.slice(open, end)) };
}

/** The data payloads of a raw SSE body (text after `data: ` to the line end), `[DONE]` excluded. */
export function sseDataPayloads(raw) {
  return raw.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''))
    .filter((d) => d !== '[DONE]');
}

/**
 * What a stream receipt's response_sha256 covers: every data payload without its tresor
 * member, concatenated in order, no separator, [DONE] excluded. Returns the hex digest.
 */
export function streamResponseSha256(raw) {
  const h = createHash('sha256');
  for (const p of sseDataPayloads(raw)) h.update(Buffer.from(stripTresorMember(p)?.stripped ?? p, 'utf8'));
  return h.digest('hex');
}

/** GET /v1/receipts/{id} (id inserted as given) with `key` (null: no Authorization). */
export async function fetchReceipt(gw, key, id, { dispatcher } = {}) {
  const res = await fetch(gw.url(`/v1/receipts/${id}`), {
    headers: key ? { authorization: `Bearer ${key}` } : {},
    dispatcher,
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * The answer's members: {id, receipt} first (tresor-verify reads that shape), then only the
 * transparency log's fields (log_index; checkpoint and inclusion_proof once a checkpoint covers
 * the leaf: log.test.mjs).
 */
export function assertReceiptShape(json) {
  const keys = Object.keys(json);
  assert.deepEqual(keys.slice(0, 2), ['id', 'receipt']);
  const extra = keys.slice(2);
  assert.ok([[], ['log_index'], ['log_index', 'checkpoint', 'inclusion_proof']].some((k) => k.join() === extra.join()),
    `unexpected members ${extra}`);
}

/** One HTTP request over `agent`; resolves { status, text } only for a complete response, else rejects. */
export function httpRequest(agent, port, { method = 'GET', path, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) h['content-length'] = String(Buffer.byteLength(body));
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', () => { /* reported through 'close' */ });
      res.on('close', () => {
        if (res.complete) resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') });
        else reject(new Error('response incomplete (connection lost)'));
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** GET a JWKS path (no auth); returns { status, headers, text, json }. */
export async function fetchJwks(gw, p = '/.well-known/jwks.json') {
  const res = await fetch(gw.url(p));
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/** The default SQLite receipt store of a harness gateway (`state/tresor.db` in its config dir). */
export function defaultStorePath(gw) {
  return path.join(path.dirname(gw.configPath), 'state', 'tresor.db');
}

/**
 * Runs one SQL query with the sqlite3 CLI (needs the `sqlite3` package) and returns stdout,
 * trimmed. Safe next to a running gateway (WAL: readers do not block the writer).
 */
export function sqliteQuery(dbPath, sql) {
  const r = spawnSync('sqlite3', ['-batch', '-noheader', dbPath, sql], { encoding: 'utf8', timeout: 20_000 });
  if (r.error && r.error.code === 'ENOENT') {
    throw new Error('the sqlite3 CLI is not installed (apt-get install -y sqlite3)');
  }
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`sqlite3 ${dbPath} ${JSON.stringify(sql)} exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Rows in the receipts table of a SQLite store. */
export function receiptRowCount(dbPath) {
  return Number(sqliteQuery(dbPath, 'SELECT count(*) FROM receipts;'));
}

/**
 * Starts tresor-router again on an existing gateway's config file and directory (the same
 * relative state: store, signing key). `config` (object or YAML text), if given, overwrites
 * the config file first. The old process must have exited. Returns a gateway like startGateway's
 * (usually on a new port).
 */
export async function restartGateway(gw, { config, env = {}, name = 'tresor-router' } = {}) {
  if (gw.proc.alive) throw new Error('restartGateway: the gateway is still running; stop or kill it first');
  if (config !== undefined) writeFileSync(gw.configPath, typeof config === 'string' ? config : toYaml(config));
  return launchGateway(gw.configPath, env, name);
}

/** SIGKILLs a gateway (or any harness process holder with .proc) and waits for it to exit. */
export async function killHard(gw) {
  gw.proc.stopping = true; // expected: no "exited unexpectedly" note
  if (gw.proc.alive) gw.proc.child.kill('SIGKILL');
  return gw.proc.exit;
}
