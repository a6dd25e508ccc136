// `tresor-router check-config FILE` and `tresor-router hash-key KEY`.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { gatewayConfig, toYaml, writeConfig, runRouterCli, makeKey, sha256Hex } from './harness.mjs';

const ENV = { ...process.env, FAKE_PROVIDER_KEY: 'sk-provider-check' };

function baseYaml() {
  return toYaml(gatewayConfig({
    fakeUrl: 'http://127.0.0.1:9/v1',
    keys: [{ sha256: sha256Hex(makeKey()), customer: 'acme' }],
  }));
}

/** 1-based line number of the first line of yaml matching re. */
function lineOf(yaml, re) {
  const i = yaml.split('\n').findIndex((l) => re.test(l));
  assert.ok(i >= 0, `no line matches ${re}`);
  return i + 1;
}

function escapeRe(str) { return str.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

describe('check-config', { timeout: 60_000 }, () => {
  test('valid config → exit 0', () => {
    const file = writeConfig(baseYaml());
    const r = runRouterCli(['check-config', file], { env: ENV });
    assert.equal(r.status, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  });

  test('unknown key inside a section → exit 1 with FILE:LINE:COL naming the key', () => {
    const yaml = baseYaml().replace('  threads: 2\n', '  threads: 2\n  thread_count: 4\n');
    const file = writeConfig(yaml);
    const r = runRouterCli(['check-config', file], { env: ENV });
    assert.equal(r.status, 1, `stderr: ${r.stderr}`);
    const line = lineOf(yaml, /thread_count/);
    assert.match(r.stderr, new RegExp(`${escapeRe(file)}:${line}:\\d+: .*thread_count`), r.stderr);
  });

  test('unknown top-level key → exit 1 with FILE:LINE:COL', () => {
    const yaml = baseYaml() + 'telemetry:\n  enabled: true\n';
    const file = writeConfig(yaml);
    const r = runRouterCli(['check-config', file], { env: ENV });
    assert.equal(r.status, 1, `stderr: ${r.stderr}`);
    const line = lineOf(yaml, /^telemetry:/);
    assert.match(r.stderr, new RegExp(`${escapeRe(file)}:${line}:\\d+: .*telemetry`), r.stderr);
  });

  test('unknown key in a route entry → exit 1 with its line', () => {
    const yaml = baseYaml().replace('    type: "chat"\n', '    type: "chat"\n    weight: 3\n');
    const file = writeConfig(yaml);
    const r = runRouterCli(['check-config', file], { env: ENV });
    assert.equal(r.status, 1, `stderr: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${escapeRe(file)}:${lineOf(yaml, /weight: 3/)}:\\d+: .*weight`), r.stderr);
  });

  test('missing environment variable → exit 1 naming the variable', () => {
    const yaml = baseYaml().replace('${FAKE_PROVIDER_KEY}', '${TRESOR_TEST_UNSET_VAR_X}');
    const file = writeConfig(yaml);
    const env = { ...ENV };
    delete env.TRESOR_TEST_UNSET_VAR_X;
    const r = runRouterCli(['check-config', file], { env });
    assert.equal(r.status, 1, `stderr: ${r.stderr}`);
    const line = lineOf(yaml, /TRESOR_TEST_UNSET_VAR_X/);
    assert.match(r.stderr, new RegExp(`${escapeRe(file)}:${line}:\\d+: .*TRESOR_TEST_UNSET_VAR_X`), r.stderr);
  });

  test('the same config with the variable set → exit 0', () => {
    const yaml = baseYaml().replace('${FAKE_PROVIDER_KEY}', '${TRESOR_TEST_UNSET_VAR_X}');
    const file = writeConfig(yaml);
    const r = runRouterCli(['check-config', file], { env: { ...ENV, TRESOR_TEST_UNSET_VAR_X: 'sk-x' } });
    assert.equal(r.status, 0, r.stderr);
  });

  test('YAML syntax error → exit 1 with FILE:LINE:COL', () => {
    const yaml = baseYaml().replace('  threads: 2\n', '  threads: [2\n');
    const file = writeConfig(yaml);
    const r = runRouterCli(['check-config', file], { env: ENV });
    assert.equal(r.status, 1, `stderr: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${escapeRe(file)}:\\d+:\\d+: `), r.stderr);
  });
});

describe('hash-key', { timeout: 30_000 }, () => {
  test('prints the lowercase hex SHA-256 of the key string', () => {
    const key = makeKey();
    const r = runRouterCli(['hash-key', key]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), sha256Hex(key));
  });
});
