// Issue 17, item 4: the shared store authenticated and encrypted. A real redis-server with
// TLS only (`--port 0 --tls-port`, client certificates required) and an ACL user, with
// certificates made here with openssl; two gateway replicas on it through
// `rediss://app:${REDIS_PASSWORD}@127.0.0.1:PORT/0` and store.tls. Receipts, a request
// limit and a credit balance are shared exactly across both, and the password is in no
// line of either gateway's output nor in /metrics (canary scan). At startup a wrong
// password and a CA that does not verify Redis's certificate are errors naming what
// failed; a Redis that is not running is not (the gateway starts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import {
  startFakeUpstream, startGateway, gatewayConfig, stopAll, makeKey, makeProviderKey, sha256Hex, waitFor, tempDir,
  ROUTE_GPT, closedPort, getUsage, nanosDecimal, toNanos, registerCanary, findCanaries, writeConfig, routerBin,
} from './harness.mjs';

// '@' and '/' in the password: it goes into the URL through ${REDIS_PASSWORD} unencoded.
const PASSWORD = registerCanary(`pw@/${randomBytes(16).toString('hex')}`);
const WRONG_PASSWORD = registerCanary(`wrong-${randomBytes(16).toString('hex')}`);
const LIMIT = 5;
// As in redis-replicas.test.mjs: the fake's usage costs 1.1 per answer; the credit fits
// the reservation of a third answer after two, and no fourth after three.
const PAID_BODY = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 };
const PRICE_PER_ANSWER = 1_100_000_000n;
const RESERVATION = BigInt(Buffer.byteLength(JSON.stringify(PAID_BODY))) * 100_000_000n + 5n * 200_000_000n;
const CREDIT = 2n * PRICE_PER_ANSWER + RESERVATION + 500_000_000n;

let pki;
let redis;
let redisPort;
let providerKey;
let fake;
let gwA;
let gwB;
let key;
let limitedKey;
let payingKey;

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

// A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and a
// second CA that signed nothing here.
function makePki() {
  const dir = tempDir('tresor-redis-pki-');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const ca of ['ca', 'other-ca']) {
    openssl(['req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '2', '-subj', `/CN=${ca}`], dir);
  }
  const leaf = (name) => {
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
    return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  };
  execFileSync('sh', ['-c', 'printf "subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n" > server.ext; ' +
    'printf "extendedKeyUsage=clientAuth\\n" > client.ext'], { cwd: dir });
  return {
    ca: path.join(dir, 'ca.pem'),
    otherCa: path.join(dir, 'other-ca.pem'),
    server: leaf('server'),
    client: leaf('client'),
  };
}

// Answers once the TLS port completes a handshake and Redis replies (NOAUTH: the default
// user is off).
function tlsRedisAnswers(port) {
  return new Promise((resolve) => {
    const sock = tls.connect({
      host: '127.0.0.1', port, ca: readFileSync(pki.ca), cert: readFileSync(pki.client.cert),
      key: readFileSync(pki.client.key),
    });
    sock.setTimeout(1000, () => { sock.destroy(); resolve(false); });
    sock.once('error', () => resolve(false));
    sock.once('data', (d) => { sock.destroy(); resolve(/^(\+PONG|-NOAUTH)/.test(d.toString())); });
    sock.once('secureConnect', () => sock.write('PING\r\n'));
  });
}

function storeConfig(port, { ca = pki.ca, client = true } = {}) {
  return {
    url: `rediss://app:\${REDIS_PASSWORD}@127.0.0.1:${port}/0`,
    tls: client ? { ca_file: ca, cert_file: pki.client.cert, key_file: pki.client.key } : { ca_file: ca },
    connect_timeout_ms: 3000,
    command_timeout_ms: 3000,
  };
}

function baseConfig(store) {
  const config = gatewayConfig({
    fakeUrl: fake.baseUrl(),
    keys: [
      { sha256: sha256Hex(key), customer: 'acme' },
      { sha256: sha256Hex(limitedKey), customer: 'initech', limits: { per_minute: LIMIT } },
      { sha256: sha256Hex(payingKey), customer: 'hooli' },
    ],
  });
  config.routes[0].pricing = { input_per_mtok: 100000, output_per_mtok: 200000, currency: 'eur' };
  config.auth.customers = { hooli: { credit: Number(nanosDecimal(CREDIT)), currency: 'eur' } };
  config.store = store;
  return config;
}

// Runs the gateway until it exits (a startup error) or `timeoutMs` passes (it started:
// killed, status null). Its output is checked for the passwords.
async function runToExit(config, env, timeoutMs = 20_000) {
  const file = writeConfig(config);
  const child = spawn(routerBin(), ['--config', file], { cwd: path.dirname(file), env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  assert.deepEqual(findCanaries(out), [], 'a password is in the gateway output');
  return { code, out };
}

before(async () => {
  pki = makePki();
  redisPort = await closedPort();
  redis = spawn('redis-server', [
    '--port', '0', '--tls-port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--tls-cert-file', pki.server.cert, '--tls-key-file', pki.server.key, '--tls-ca-cert-file', pki.ca,
    '--tls-auth-clients', 'yes',
    '--user', 'default', 'off',
    '--user', 'app', 'on', `>${PASSWORD}`, '~*', '+@all',
  ], { stdio: 'ignore' });
  await waitFor(() => tlsRedisAnswers(redisPort), { what: 'redis-server (TLS) to answer' });
  providerKey = makeProviderKey();
  fake = await startFakeUpstream({ requireKey: providerKey });
  key = makeKey();
  limitedKey = makeKey();
  payingKey = makeKey();
  const config = baseConfig(storeConfig(redisPort));
  // Both replicas sign with the same key file, as replicas of one deployment do.
  config.receipts = { signing_key_file: `${tempDir('tresor-redis-key-')}/receipt-es256.pem`, kid: 'router-receipt-1' };
  const env = { FAKE_PROVIDER_KEY: providerKey, REDIS_PASSWORD: PASSWORD };
  gwA = await startGateway({ config, env, name: 'gateway-A' });
  gwB = await startGateway({ config, env, name: 'gateway-B' });
});

after(async () => {
  await stopAll();
  if (redis) redis.kill('SIGKILL');
});

const chatVia = (gw, k, body = { model: ROUTE_GPT, messages: [{ role: 'user', content: 'hi' }] }) =>
  fetch(gw.url('/v1/chat/completions'), {
    method: 'POST',
    headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('two replicas on Redis over TLS with an ACL user', { timeout: 120_000 }, () => {
  test('a receipt issued by one replica is fetched from the other', async () => {
    const r = await chatVia(gwA, key);
    const answer = await r.json();
    assert.equal(r.status, 200);
    const id = answer.tresor.receipt_id;
    assert.ok(id, 'a receipt id: the receipt was stored in Redis');
    const fromB = await fetch(gwB.url(`/v1/receipts/${id}`), { headers: { authorization: `Bearer ${key}` } });
    const body = await fromB.json();
    assert.equal(fromB.status, 200);
    assert.equal(body.id, id);
  });

  test('a per-minute limit shared by both replicas admits exactly the limit', async () => {
    const secondsLeft = 60 - (Math.floor(Date.now() / 1000) % 60);
    if (secondsLeft < 8) await new Promise((r) => setTimeout(r, secondsLeft * 1000 + 100)); // pacing, not sync
    const statuses = [];
    for (let i = 0; i < 2 * LIMIT; i++) {
      const r = await chatVia(i % 2 ? gwB : gwA, limitedKey);
      await r.arrayBuffer();
      statuses.push(r.status);
    }
    assert.equal(statuses.filter((s) => s === 200).length, LIMIT, `statuses: ${statuses}`);
    assert.equal(statuses.filter((s) => s === 429).length, LIMIT, `statuses: ${statuses}`);
    assert.deepEqual(statuses.slice(0, LIMIT), Array(LIMIT).fill(200));
  });

  test('two replicas draw down one credit balance', async () => {
    for (let i = 1; i <= 3; i++) {
      const r = await chatVia(i % 2 ? gwA : gwB, payingKey, PAID_BODY);
      await r.arrayBuffer();
      assert.equal(r.status, 200, `answer ${i}`);
      const other = i % 2 ? gwB : gwA;
      await waitFor(async () => {
        const { usage } = await getUsage(other, payingKey);
        return toNanos(usage.spent) === BigInt(i) * PRICE_PER_ANSWER && toNanos(usage.reserved) === 0n;
      }, { what: `charge ${i} seen by the other replica` });
    }
    for (const gw of [gwA, gwB]) {
      const r = await chatVia(gw, payingKey, PAID_BODY);
      const json = await r.json();
      assert.equal(r.status, 402, 'the balance is gone on both replicas');
      assert.equal(json.error.code, 'balance_exceeded');
    }
  });

  test('the password is in no log line and not in /metrics', async () => {
    for (const gw of [gwA, gwB]) {
      const r = await fetch(gw.url('/metrics'));
      const text = await r.text();
      assert.equal(r.status, 200);
      assert.deepEqual(findCanaries(text), [], 'a password is in /metrics');
      // Positive control: the logs do name the store, masked.
      assert.match(gw.proc.stderr + gw.proc.stdout, /rediss:\/\/app:\*\*\*@127\.0\.0\.1:\d+\/0/);
    }
    assert.ok(!(gwA.proc.stderr + gwA.proc.stdout + gwB.proc.stderr + gwB.proc.stdout).includes(PASSWORD));
    // stopAll() scans both gateways' whole output again for every canary, the passwords included.
  });
});

describe('startup against the TLS Redis', { timeout: 120_000 }, () => {
  test('a wrong password: the gateway exits non-zero naming authentication', async () => {
    const { code, out } = await runToExit(baseConfig(storeConfig(redisPort)),
      { FAKE_PROVIDER_KEY: providerKey, REDIS_PASSWORD: WRONG_PASSWORD });
    assert.ok(code !== null && code !== 0, `exit code ${code}: ${out.slice(-2000)}`);
    assert.match(out, /authentication failed/);
    assert.match(out, /rediss:\/\/app:\*\*\*@/);
    assert.doesNotMatch(out, /listening on/);
  });

  test('a CA that did not sign the server certificate: the gateway exits non-zero naming TLS and the certificate',
    async () => {
      const { code, out } = await runToExit(baseConfig(storeConfig(redisPort, { ca: pki.otherCa })),
        { FAKE_PROVIDER_KEY: providerKey, REDIS_PASSWORD: PASSWORD });
      assert.ok(code !== null && code !== 0, `exit code ${code}: ${out.slice(-2000)}`);
      assert.match(out, /TLS handshake .* failed: .*certificate/);
      assert.doesNotMatch(out, /listening on/);
    });

  test('Redis not running: the gateway starts and answers /healthz', async () => {
    const down = await closedPort();
    const file = writeConfig(baseConfig(storeConfig(down)));
    const child = spawn(routerBin(), ['--config', file], { cwd: path.dirname(file),
      env: { ...process.env, FAKE_PROVIDER_KEY: providerKey, REDIS_PASSWORD: PASSWORD },
      stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    try {
      const origin = await waitFor(() => {
        if (child.exitCode !== null) throw new Error(`the gateway exited (${child.exitCode}): ${out.slice(-2000)}`);
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        return m && m[1];
      }, { timeoutMs: 20_000, what: 'the listening line' });
      const healthz = await waitFor(async () => {
        const r = await fetch(`${origin}/healthz`);
        await r.arrayBuffer();
        return r.status === 200 && r;
      }, { what: '/healthz 200' });
      assert.equal(healthz.status, 200);
      assert.match(out, /unreachable|refused/);
    } finally {
      child.kill('SIGKILL');
    }
    assert.deepEqual(findCanaries(out), [], 'a password is in the gateway output');
  });
});
