// Issue 17, item 6: every config that startup refuses, `check-config` refuses too, with the
// same message naming the field (both run server/config_checks.cpp), and check-config
// creates nothing (no signing key, no SQLite file).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  gatewayConfig, toYaml, writeConfig, routerBin, makeKey, sha256Hex, selfSignedCert, closedPort, tempDir,
  startStack, stopAll, waitFor,
} from './harness.mjs';

after(stopAll);

const PROVIDER_KEY = 'sk-provider-check';
const ENV = { ...process.env, FAKE_PROVIDER_KEY: PROVIDER_KEY };

// Runs tresor-router in the config's folder (its default state/ lands there, not in the repo).
// A gateway that wrongly starts is ended by the timeout: status null, which the tests reject.
function run(args, file, env, timeoutMs = 15_000) {
  const r = spawnSync(routerBin(), args, { env, cwd: path.dirname(file), encoding: 'utf8', timeout: timeoutMs });
  if (r.error && r.error.code !== 'ETIMEDOUT') throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** A valid config as an object; `hook` edits it. */
function config(hook = () => {}) {
  const c = gatewayConfig({ fakeUrl: 'http://127.0.0.1:9/v1', keys: [{ sha256: sha256Hex(makeKey()), customer: 'acme' }] });
  const dir = tempDir('tresor-cc-state-');
  c.store = `sqlite:${path.join(dir, 'tresor.db')}`;
  c.receipts = { signing_key_file: path.join(dir, 'receipt.pem') };
  hook(c);
  return c;
}

function genKey(mode = 0o600) {
  const file = path.join(tempDir('tresor-cc-key-'), 'key.pem');
  const r = spawnSync(routerBin(), ['gen-signing-key', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  chmodSync(file, mode);
  return file;
}

function garbageFile(name, text = 'not a PEM file\n') {
  const file = path.join(tempDir('tresor-cc-bad-'), name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

// Each case: a config (object or YAML text), extra env, and what the message must contain.
const CASES = [
  {
    name: 'server.tls.cert_file that does not exist',
    make: () => config((c) => { c.server.tls = { cert_file: '/nonexistent/cert.pem', key_file: selfSignedCert().tlsKey }; }),
    field: /server\.tls\.cert_file.*\/nonexistent\/cert\.pem/,
  },
  {
    name: 'server.tls.cert_file that is not a certificate',
    make: () => config((c) => { c.server.tls = { cert_file: garbageFile('cert.pem'), key_file: selfSignedCert().tlsKey }; }),
    field: /server\.tls\.cert_file/,
  },
  {
    name: 'server.tls.key_file that does not belong to the certificate',
    make: () => config((c) => { c.server.tls = { cert_file: selfSignedCert().tlsCert, key_file: selfSignedCert().tlsKey }; }),
    field: /server\.tls\.key_file .*key values mismatch/,
  },
  {
    name: 'store with a bad redis port',
    make: () => config((c) => { c.store = 'redis://127.0.0.1:notaport/0'; }),
    field: /store redis:\/\/127\.0\.0\.1:notaport\/0: bad port/,
  },
  {
    name: 'store with a bad redis database',
    make: () => config((c) => { c.store = 'redis://127.0.0.1:6379/x'; }),
    field: /store .*bad database number/,
  },
  {
    // Refused today for the credentials, and for its port once they are supported; the
    // password is in neither message.
    name: 'store with a password and a bad port',
    make: () => config((c) => { c.store = 'redis://:s3cret-canary@127.0.0.1:notaport/0'; }),
    field: /store .*(credentials|bad port)/,
    secret: 's3cret-canary',
  },
  {
    name: 'rediss:// store whose store.tls.ca_file is not PEM',
    make: () => config((c) => { c.store = { url: 'rediss://127.0.0.1:6380/0', tls: { ca_file: garbageFile('ca.pem') } }; }),
    field: /store\.tls\.ca_file: cannot load '.*ca\.pem' \(PEM\)/,
  },
  {
    name: 'rediss:// store whose store.tls.cert_file cannot be read',
    make: () => config((c) => {
      const pki = selfSignedCert();
      c.store = { url: 'rediss://127.0.0.1:6380/0', tls: { cert_file: '/nonexistent/client.pem', key_file: pki.tlsKey } };
    }),
    field: /store\.tls\.cert_file: cannot read '\/nonexistent\/client\.pem'/,
  },
  {
    name: 'rediss:// store whose store.tls.key_file does not belong to the certificate',
    make: () => config((c) => {
      c.store = { url: 'rediss://:pw-canary-123@127.0.0.1:6380/0',
        tls: { cert_file: selfSignedCert().tlsCert, key_file: selfSignedCert().tlsKey } };
    }),
    field: /store\.tls\.key_file: cannot load .*key values mismatch/,
    secret: 'pw-canary-123',
  },
  {
    name: 'store.tls on a redis:// (plain) store',
    make: () => config((c) => { c.store = { url: 'redis://127.0.0.1:6379/0', tls: { ca_file: selfSignedCert().tlsCert } }; }),
    field: /store\.tls applies to a rediss:\/\/ store only/,
  },
  {
    name: 'store sqlite: without a path',
    make: () => config((c) => { c.store = 'sqlite:'; }),
    field: /store: sqlite: needs a file path/,
  },
  {
    name: 'store sqlite: under a regular file',
    make: () => config((c) => { c.store = `sqlite:${garbageFile('plain')}/sub/tresor.db`; }),
    field: /store: cannot create '.*\/plain\/sub\/tresor\.db': .*plain is not a directory/,
  },
  {
    name: 'receipts.signing_key_file under a regular file',
    make: () => config((c) => { c.receipts.signing_key_file = `${garbageFile('plain')}/state/receipt.pem`; }),
    field: /receipts\.signing_key_file: cannot create .*plain is not a directory/,
  },
  {
    name: 'two identical server.listen entries',
    make: async () => {
      const port = await closedPort();
      return config((c) => { c.server.listen = [`127.0.0.1:${port}`, `127.0.0.1:${port}`]; });
    },
    field: /server\.listen '127\.0\.0\.1:\d+' and '127\.0\.0\.1:\d+' are the same address/,
  },
  {
    // Linux refuses to bind a specific address beside a wildcard on the same port.
    name: 'a wildcard and a specific server.listen address on the same port',
    make: async () => {
      const port = await closedPort();
      return config((c) => { c.server.listen = [`0.0.0.0:${port}`, `127.0.0.1:${port}`]; });
    },
    field: /server\.listen '0\.0\.0\.0:(\d+)' and '127\.0\.0\.1:\1' overlap: the wildcard '0\.0\.0\.0:\1'/,
  },
  {
    // Checked without touching it: neither run may change the file or add a -wal/-shm/-journal.
    name: 'store sqlite: a file that is not an SQLite database',
    make: () => config((c) => { c.store = `sqlite:${garbageFile('tresor.db', 'receipts go here\n')}`; }),
    field: /store: '.*\/tresor\.db' is not an SQLite database/,
    verify: (made) => {
      const file = made.store.slice('sqlite:'.length);
      assert.equal(readFileSync(file, 'utf8'), 'receipts go here\n', 'the store file was changed');
      assert.deepEqual(readdirSync(path.dirname(file)), ['tresor.db'], 'a file was created beside the store');
    },
  },
  {
    name: 'server.spool_max_bytes below server.max_body_bytes',
    make: () => config((c) => { c.server.max_body_bytes = 2097152; c.server.spool_max_bytes = 1048576; }),
    field: /server\.spool_max_bytes \(1048576\) is below server\.max_body_bytes \(2097152\)/,
  },
  {
    name: 'server.max_body_bytes above the default server.spool_max_bytes',
    make: () => config((c) => { c.server.max_body_bytes = 2 * 1073741824; }),
    field: /server\.spool_max_bytes \(1073741824, the default\) is below server\.max_body_bytes/,
  },
  {
    name: 'receipts.signing_key_file that holds no key',
    make: () => config((c) => { c.receipts.signing_key_file = garbageFile('signing.pem'); }),
    field: /receipts\.signing_key_file: .*does not hold a readable/,
  },
  {
    name: 'receipts.signing_key_file readable by other users',
    make: () => config((c) => { c.receipts.signing_key_file = genKey(0o644); }),
    field: /receipts\.signing_key_file: .*mode 0644/,
  },
  {
    name: 'receipts.retired_keys naming a file that does not exist',
    make: () => config((c) => { c.receipts.retired_keys = [{ kid: 'old-1', public_key_file: '/nonexistent/old.pem' }]; }),
    field: /receipts\.retired_keys: .*\/nonexistent\/old\.pem/,
  },
  {
    name: 'provider base_url with a query',
    make: () => config((c) => { c.providers.fake.base_url = 'https://h.example/v1?api-version=2024-02-01'; }),
    field: /providers\.fake\.base_url must not have a query/,
  },
  {
    name: 'provider base_url with a fragment',
    make: () => config((c) => { c.providers.fake.base_url = 'https://h.example/v1#x'; }),
    field: /providers\.fake\.base_url must not have a fragment/,
  },
  {
    name: 'provider base_url with user info',
    make: () => config((c) => { c.providers.fake.base_url = 'https://user:pw@h.example/v1'; }),
    field: /providers\.fake\.base_url must not hold user info/,
  },
  {
    name: 'provider api_key from ${ENV} with CR LF inside',
    make: () => config(),
    env: { FAKE_PROVIDER_KEY: `${PROVIDER_KEY}\r\nX-Injected: 1` },
    field: /providers\.fake\.api_key: environment variable FAKE_PROVIDER_KEY contains a line break/,
  },
  {
    name: 'the same provider twice',
    make: () => toYaml(config()).replace(/^providers:\n/m,
      'providers:\n  fake:\n    base_url: "http://127.0.0.1:10/v1"\n'),
    field: /:\d+:\d+: duplicate key 'fake' in providers/,
  },
  {
    name: 'the same customer twice',
    make: () => `${toYaml(config())}\n`.replace(/^auth:\n/m,
      'auth:\n  customers:\n    acme:\n      credit: 1\n    acme:\n      credit: 1000\n'),
    field: /:\d+:\d+: duplicate key 'acme' in auth\.customers/,
  },
];

describe('check-config refuses what startup refuses, with the same message', { timeout: 300_000 }, () => {
  test('the valid base config passes both, and check-config creates no file', async () => {
    const c = config((cfg) => {
      const pki = selfSignedCert();
      cfg.server.tls = { cert_file: pki.tlsCert, key_file: pki.tlsKey };
    });
    const file = writeConfig(c);
    const r = run(['check-config', file], file, ENV);
    assert.equal(r.status, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.equal(existsSync(c.receipts.signing_key_file), false, 'check-config created the signing key');
    assert.equal(existsSync(c.store.slice('sqlite:'.length)), false, 'check-config created the store');
  });

  test('an existing, private signing key passes check-config', () => {
    const file = writeConfig(config((c) => { c.receipts.signing_key_file = genKey(0o600); }));
    const r = run(['check-config', file], file, ENV);
    assert.equal(r.status, 0, `stderr: ${r.stderr}`);
  });

  for (const k of CASES) {
    test(k.name, async () => {
      const made = await k.make();
      const file = writeConfig(made);
      const env = { ...ENV, ...(k.env || {}) };
      const check = run(['check-config', file], file, env);
      assert.equal(check.status, 1, `check-config accepted it: ${check.stdout}${check.stderr}`);
      assert.match(check.stderr, k.field);
      const message = check.stderr.trim();
      assert.ok(message.startsWith(file), `message does not name the file: ${message}`);

      const start = run(['--config', file], file, env);
      assert.ok(start.status !== null && start.status !== 0,
        `the gateway did not refuse it (status ${start.status}, signal ${start.signal}): ${start.stderr.slice(-2000)}`);
      assert.ok(start.stderr.includes(message),
        `startup's message differs from check-config's:\n  check-config: ${message}\n  startup: ${start.stderr.slice(-2000)}`);
      assert.doesNotMatch(start.stderr, /listening on/);
      if (k.secret) assert.ok(!`${check.stderr}${start.stderr}`.includes(k.secret), 'the password is in a message');
      if (k.verify) k.verify(made);
    });
  }
});

describe('a SIGHUP reload warns about what the next start would refuse', { timeout: 60_000 }, () => {
  // server.tls is restart-only: the reload applies the rest and keeps serving, but says now,
  // naming the field, that the next restart will fail.
  test('a reload with an unreadable server.tls.cert_file logs the startup error; the gateway keeps serving', async () => {
    const s = await startStack();
    const config = gatewayConfig({
      fakeUrl: s.fake.baseUrl(), keys: [{ sha256: sha256Hex(s.key), customer: 'acme' }],
      server: { tls: { cert_file: '/nonexistent/cert.pem', key_file: '/nonexistent/key.pem' } },
    });
    writeFileSync(s.gw.configPath, toYaml(config));
    const seen = s.gw.proc.stderr.length;
    s.gw.proc.signal('SIGHUP');
    const log = await waitFor(() => {
      const text = s.gw.proc.stderr.slice(seen);
      return /config reload(ed from| failed)/.test(text) ? text : null;
    }, { timeoutMs: 20_000, what: 'the reload log line' });
    assert.match(log, /config reload: the next restart would refuse this file: .*server\.tls\.cert_file: cannot read '\/nonexistent\/cert\.pem'/);
    const res = await s.chat({ model: 'eu/fake/gpt-oss-120b', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 200);
    await res.text();
  });
});
