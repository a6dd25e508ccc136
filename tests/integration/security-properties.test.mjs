// Security properties (issue 9, item 5) that the other files do not already pin down:
//   * no config key turns TLS verification off: `insecure`, `verify: false`, `tls_verify`, …
//     under a provider (or at the top level) are refused when the config loads. The TLS
//     behaviour itself (test CA → 200, no CA → 502, wrong host name → 502) is tls.test.mjs;
//   * receipts and spend of one customer are invisible to another, on the SQLite store and on
//     a real redis-server: another customer's receipt id gets the very same 404 body as an
//     unknown id, and GET /v1/usage shows no spend of the other customer;
//   * the signing key file is created 0600 even under umask 000, and its private material
//     (PEM, DER base64, the JWK `d` scalar in base64url, base64 and hex) is registered as a
//     canary, so the harness scan proves it is in no log line and no response; the JWKS
//     carries no private member;
//   * the canary scan reaches what the harness does not scan: the SQLite store files (db and
//     WAL), a full Redis dump (RDB, uncompressed), and the SSE bodies read here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, chatBody,
  registerCanary, findCanaries, canarySecrets, redactCanaries, readSse, parseEventJson, fetchReceipt, fetchJwks, defaultStorePath,
  runRouterCli, writeConfig, routerBin, tempDir, waitFor, closedPort, ROUTE_GPT, STARTUP_TIMEOUT_MS,
  redisCommand, redisPing, getUsage, toNanos,
} from './harness.mjs';

// ---------------------------------------------------------------------------------------------
// TLS verification cannot be configured away

describe('no config key disables upstream TLS verification', { timeout: 60_000 }, () => {
  const providerKey = makeProviderKey();
  const env = { ...process.env, FAKE_PROVIDER_KEY: providerKey };
  const baseConfig = () => gatewayConfig({
    fakeUrl: 'https://127.0.0.1:9/v1', keys: [{ sha256: sha256Hex(makeKey()), customer: 'acme' }],
  });

  test('the unmodified config is accepted (so the refusals below are about the added key)', () => {
    const r = runRouterCli(['check-config', writeConfig(baseConfig())], { env });
    assert.equal(r.status, 0, r.stderr);
  });

  const providerKeys = [
    ['insecure', true], ['verify', false], ['tls_verify', false], ['verify_tls', false], ['ssl_verify', false],
    ['insecure_skip_verify', true], ['skip_verify', true], ['tls_insecure', true], ['verify_peer', false],
    ['tls', { verify: false }], ['ca_file_optional', true],
  ];
  for (const [k, v] of providerKeys) {
    test(`providers.fake.${k}: ${JSON.stringify(v)} → check-config refuses the file`, () => {
      const c = baseConfig();
      c.providers.fake[k] = v;
      const r = runRouterCli(['check-config', writeConfig(c)], { env });
      assert.notEqual(r.status, 0, `accepted a provider with ${k}: ${JSON.stringify(v)}`);
      assert.match(r.stderr, new RegExp(`unknown key '${k}'`), r.stderr);
    });
  }

  for (const [k, v] of [['tls_verify', false], ['insecure', true], ['upstream_tls', { verify: false }]]) {
    test(`top-level ${k} → refused`, () => {
      const c = baseConfig();
      c[k] = v;
      const r = runRouterCli(['check-config', writeConfig(c)], { env });
      assert.notEqual(r.status, 0, `accepted top-level ${k}`);
      assert.match(r.stderr, /unknown key/, r.stderr);
    });
  }

  test('the server itself refuses to start with providers.fake.insecure: true (exits, serves nothing)', async () => {
    const c = baseConfig();
    c.providers.fake.insecure = true;
    const file = writeConfig(c);
    // In the config's temp dir: were it to start, its default state must not land in the repo.
    const child = spawn(routerBin(), ['--config', file], { env, cwd: path.dirname(file), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const timer = setTimeout(() => child.kill('SIGKILL'), STARTUP_TIMEOUT_MS);
    const { code, signal } = await exited;
    clearTimeout(timer);
    assert.equal(signal, null, `still running after ${STARTUP_TIMEOUT_MS} ms: ${redactCanaries(out.slice(-500))}`);
    assert.notEqual(code, 0, redactCanaries(out));
    assert.doesNotMatch(out, /listening on/);
    assert.deepEqual(findCanaries(out), []);
  });
});

// ---------------------------------------------------------------------------------------------
// Two gateways: SQLite store (started under umask 000 with a fresh signing key), Redis store.

/** Starts a gateway whose process runs under umask 000 (a shell wrapper that execs the router). */
async function startGatewayUmask0(opts) {
  const wrapper = path.join(tempDir('tresor-umask-'), 'tresor-router-umask0');
  writeFileSync(wrapper, `#!/bin/sh\numask 000\nexec ${JSON.stringify(routerBin())} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const saved = process.env.TRESOR_ROUTER_BIN;
  process.env.TRESOR_ROUTER_BIN = wrapper;
  // The harness resolves the binary synchronously when it spawns: restore right after.
  const started = startGateway(opts);
  if (saved === undefined) delete process.env.TRESOR_ROUTER_BIN; else process.env.TRESOR_ROUTER_BIN = saved;
  return started;
}

/** Every form the signing key's private material could take in a log line or a body. */
function privateKeyForms(pem) {
  const der64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const jwk = createPrivateKey(pem).export({ format: 'jwk' });
  const d = Buffer.from(jwk.d, 'base64url');
  const lines = pem.split('\n').filter((l) => l.length >= 12 && !l.startsWith('-----'));
  return { der64, d: jwk.d, forms: [pem.trim(), der64, ...lines, jwk.d, d.toString('base64'), d.toString('hex')] };
}

const PRICING = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
// The fake answers `Hello!` with usage 1 prompt + 5 completion tokens: 0.1 + 1.0 at PRICING.
const PRICE_PER_ANSWER = 1_100_000_000n; // nanos
let fake; let providerKey; let redis; let redisPort; let redisDir;
let sqlite; let red; // { gw, keyA, keyB }
let keyDir; let keyFile; let keyForms;
const issuedReceipts = { sqlite: [], redis: [] }; // ids, to prove the store scans see real rows

before(async () => {
  providerKey = makeProviderKey();
  fake = await startFakeUpstream({ requireKey: providerKey });
  redisPort = await closedPort();
  redisDir = tempDir('tresor-redis-');
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', redisDir, '--dbfilename', 'dump.rdb', '--rdbcompression', 'no'], { stdio: 'ignore' });
  await waitFor(() => redisPing(redisPort), { what: 'redis-server PING' });

  const gatewayFor = (store, extra = {}) => {
    const keyA = makeKey();
    const keyB = makeKey();
    const config = gatewayConfig({
      fakeUrl: fake.baseUrl(),
      keys: [{ sha256: sha256Hex(keyA), customer: 'acme' }, { sha256: sha256Hex(keyB), customer: 'globex' }],
    });
    config.routes[0].pricing = PRICING;
    if (store) config.store = store;
    Object.assign(config, extra);
    return { keyA, keyB, config };
  };

  keyDir = path.join(tempDir('tresor-signing-'), 'not', 'yet');
  keyFile = path.join(keyDir, 'receipt-es256.pem');
  const s = gatewayFor(undefined, { receipts: { signing_key_file: keyFile, kid: 'router-receipt-1' } });
  const r = gatewayFor(`redis://127.0.0.1:${redisPort}/0`);
  const gwS = await startGatewayUmask0({ config: s.config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-sqlite' });
  // Registered before any response is read, so every fetch below is scanned for it.
  keyForms = privateKeyForms(readFileSync(keyFile, 'utf8'));
  for (const f of keyForms.forms) registerCanary(f);
  const gwR = await startGateway({ config: r.config, env: { FAKE_PROVIDER_KEY: providerKey }, name: 'gateway-redis' });
  // Its default signing key (state/ in its config dir) must stay out of Redis and the logs too.
  const redisGwKey = path.join(path.dirname(gwR.configPath), 'state', 'receipt-es256.pem');
  for (const f of privateKeyForms(readFileSync(redisGwKey, 'utf8')).forms) registerCanary(f);
  sqlite = { gw: gwS, keyA: s.keyA, keyB: s.keyB };
  red = { gw: gwR, keyA: r.keyA, keyB: r.keyB };
});

after(async () => {
  try {
    await stopAll();
  } finally {
    if (redis) redis.kill('SIGKILL'); // also when stopAll() reports a leaked canary
  }
});

describe('signing key file', { timeout: 60_000 }, () => {
  test('the gateway really ran under umask 000', () => {
    const status = readFileSync(`/proc/${sqlite.gw.proc.pid}/status`, 'utf8');
    assert.match(status, /^Umask:\s+0000$/m);
  });

  test('created with mode 0600 in a directory that did not exist', () => {
    assert.ok(existsSync(keyFile));
    assert.equal((statSync(keyFile).mode & 0o777).toString(8), '600');
  });

  test('the JWKS has the public key only (no d or any other private member)', async () => {
    const j = await fetchJwks(sqlite.gw);
    assert.equal(j.status, 200);
    assert.equal(j.json.keys.length, 1);
    for (const k of j.json.keys) {
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.ok(!(priv in k), `JWKS key has "${priv}"`);
      assert.deepEqual(Object.keys(k).filter((m) => !['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use'].includes(m)), []);
    }
    assert.ok(!j.text.includes(keyForms.d));
  });

  test('private key material is in no response and no log line (after traffic that signs receipts)', async () => {
    const res = await fetch(sqlite.gw.url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${sqlite.keyA}`, 'content-type': 'application/json' },
      body: JSON.stringify(chatBody(ROUTE_GPT)),
    });
    const id = (await res.json()).tresor.receipt_id;
    assert.equal((await fetchReceipt(sqlite.gw, sqlite.keyA, id)).status, 200);
    for (const p of ['/attestation', '/metrics', '/v1/models', '/v1/verify/jwks.json']) await (await fetch(sqlite.gw.url(p))).text();
    // The harness checks these same canaries in every gateway's output at stopAll(); check
    // here too so the failure names this test.
    assert.deepEqual(findCanaries(sqlite.gw.proc.stdout + sqlite.gw.proc.stderr).map((c) => c.length), []);
  });
});

// ---------------------------------------------------------------------------------------------

async function chatAs(gw, key, extra = {}) {
  const res = await fetch(gw.url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(chatBody(ROUTE_GPT, extra)),
  });
  return res;
}

/** /v1/usage with its amounts as exact decimal strings (harness parseJsonExact). */
async function usageOf(gw, key) {
  const { status, text, usage } = await getUsage(gw, key);
  assert.equal(status, 200, text);
  return usage;
}

for (const storeName of ['sqlite', 'redis']) {
  describe(`customer isolation, ${storeName} store`, { timeout: 60_000 }, () => {
    const ctx = () => (storeName === 'sqlite' ? sqlite : red);

    test("another customer's receipt id → the same 404 body as an unknown id; the owner fetches it", async () => {
      const { gw, keyA, keyB } = ctx();
      const res = await chatAs(gw, keyA);
      const id = (await res.json()).tresor.receipt_id;
      issuedReceipts[storeName].push(id);
      assert.equal((await fetchReceipt(gw, keyA, id)).status, 200, 'the owner fetches it');
      const foreign = await fetchReceipt(gw, keyB, id);
      const unknown = await fetchReceipt(gw, keyB, randomUUID());
      assert.equal(foreign.status, 404);
      assert.equal(foreign.json.error.code, 'receipt_not_found');
      assert.equal(foreign.text, unknown.text, 'foreign and unknown ids must be indistinguishable');
      assert.equal(foreign.headers.get('content-type'), unknown.headers.get('content-type'));
      assert.equal(foreign.headers.get('content-length'), unknown.headers.get('content-length'));
      // HEAD too: same status, no body either way.
      const head = async (k, rid) => (await fetch(gw.url(`/v1/receipts/${rid}`), { method: 'HEAD', headers: { authorization: `Bearer ${k}` } })).status;
      assert.equal(await head(keyB, id), await head(keyB, randomUUID()));
    });

    test("/v1/usage of one customer never shows another's spend", async () => {
      const { gw, keyA, keyB } = ctx();
      for (let i = 0; i < 2; i++) await (await chatAs(gw, keyA)).arrayBuffer();
      // Spend may reach a shared store a moment after the answer: wait until A sees it.
      const a = await waitFor(async () => { const u = await usageOf(gw, keyA); return toNanos(u.spent) > 0n ? u : null; },
        { what: 'customer A spend in /v1/usage' });
      assert.equal(a.customer, 'acme');
      assert.ok(toNanos(a.by_route[ROUTE_GPT].spent) > 0n);
      const b = await usageOf(gw, keyB);
      assert.equal(b.customer, 'globex');
      // No credit configured: unlimited, no currency.
      assert.deepEqual([b.credit, b.remaining, 'currency' in b], [null, null, false], JSON.stringify(b));
      assert.equal(toNanos(b.spent), 0n, `B sees spend: ${JSON.stringify(b)}`);
      assert.deepEqual(b.by_route, {});
      // B then spends once: its own figure, not A's plus its own.
      await (await chatAs(gw, keyB)).arrayBuffer();
      const b2 = await waitFor(async () => { const u = await usageOf(gw, keyB); return toNanos(u.spent) > 0n ? u : null; },
        { what: 'customer B spend' });
      const a2 = await usageOf(gw, keyA);
      assert.equal(toNanos(b2.spent), PRICE_PER_ANSWER, `B is charged for its one answer only: ${JSON.stringify(b2)}`);
      assert.ok(toNanos(a2.spent) >= toNanos(a.spent), 'A keeps its own spend');
    });

    test('an SSE answer carries no secret (read and scanned here: the harness skips SSE)', async () => {
      const { gw, keyA } = ctx();
      const res = await chatAs(gw, keyA, { stream: true, stream_options: { include_usage: true } });
      assert.equal(res.status, 200);
      const { raw, events } = await readSse(res);
      assert.match(raw, /data: \[DONE\]/);
      // The text the client reassembles too: a secret cut across events is in no raw event.
      const text = events.map((e) => parseEventJson(e)?.choices?.[0]?.delta?.content ?? '').join('');
      assert.equal(text, 'Hello from the fake upstream.');
      assert.deepEqual([...findCanaries(raw), ...findCanaries(text)].map(redactCanaries), []);
    });
  });
}

describe('the stores hold no secret', { timeout: 60_000 }, () => {
  /** Canary hits in a file's bytes, reported by their first characters only (never the secret). */
  const hitsIn = (file) => findCanaries(readFileSync(file).toString('latin1')).map((c) => `${path.basename(file)}: ${c.slice(0, 6)}…`);
  // Positive control: the scan reads the stored values as plain bytes (no compression or
  // encoding hides them), shown by a receipt id that was stored and fetched above.
  const holds = (files, text) => files.some((f) => readFileSync(f).toString('latin1').includes(text));

  test('SQLite store (db, WAL, SHM): no client key, provider key or signing key material', () => {
    const db = defaultStorePath(sqlite.gw);
    assert.ok(existsSync(db), db);
    const dir = path.dirname(db);
    const files = readdirSync(dir).filter((f) => f.startsWith(path.basename(db))).map((f) => path.join(dir, f));
    assert.ok(files.length >= 1);
    // It does hold receipts: the scan looks at real rows, not an empty file.
    assert.equal(issuedReceipts.sqlite.length, 1);
    assert.ok(holds(files, issuedReceipts.sqlite[0]), 'the scanned bytes hold the stored receipt id');
    assert.ok(canarySecrets().includes(sqlite.keyA) && canarySecrets().includes(providerKey));
    assert.deepEqual(files.flatMap(hitsIn), []);
  });

  test('Redis store (full RDB dump, uncompressed): no client key, provider key or signing key material', async () => {
    const reply = await redisCommand(redisPort, 'SAVE');
    assert.match(reply, /^\+OK/);
    const dump = path.join(redisDir, 'dump.rdb');
    const keys = await redisCommand(redisPort, 'DBSIZE');
    assert.ok(Number(keys.slice(1)) > 0, `the store holds keys: ${keys}`);
    assert.equal(issuedReceipts.redis.length, 1);
    assert.ok(holds([dump], issuedReceipts.redis[0]), 'the dump holds the stored receipt id');
    assert.deepEqual(hitsIn(dump), []);
  });
});
