// Route holds and config reloads (routing issue, follow-ups):
//   * a Retry-After above retry.max_retry_after_seconds parks the route, but for at most
//     retry.max_route_hold_seconds: `Retry-After: 999999999` does not take it away for years;
//   * a SIGHUP reload clears the hold and the breaker of every route whose route entry or
//     provider entry changed, and of no other;
//   * a reload applies receipts.ttl_seconds and receipts.signing to new receipts, and names the
//     settings it cannot apply (receipts.retired_keys, attestation) in a warning.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  startRoutingStack, stopAll, chatBody, timedChat, expectAttempts, waitFor, toYaml, defaultStorePath, sqliteQuery,
} from './harness.mjs';

const A = 'eu/prova/m1';
const B = 'eu/provb/m1';
const HUGE = 999999999; // seconds: 31 years
after(stopAll);

/** Writes `config` over the gateway's file, sends SIGHUP and waits for the reload's log line. */
async function reload(stack, config) {
  writeFileSync(stack.gw.configPath, toYaml(config));
  const seen = stack.gw.proc.stderr.length;
  stack.gw.proc.signal('SIGHUP');
  await waitFor(() => stack.gw.proc.stderr.slice(seen).includes('config reloaded from'),
    { timeoutMs: 20_000, what: 'the reload line' });
  return stack.gw.proc.stderr.slice(seen);
}

describe('Retry-After holds are bounded by retry.max_route_hold_seconds', { timeout: 90_000 }, () => {
  const HOLD_S = 2;
  let s;
  before(async () => {
    s = await startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      retry: { attempts_per_route: 2, backoff_ms: 50, max_retry_after_seconds: 1, max_route_hold_seconds: HOLD_S },
      breaker: { consecutive_failures: 1000, cooldown_seconds: 10 },
    });
  });

  test(`Retry-After: ${HUGE} parks the route for ${HOLD_S} s, not 31 years; then it is tried again`, async () => {
    const fa = s.fakes.prova;
    await fa.behaviour({ status: 503, retry_after: HUGE, times: 1 });
    const body = chatBody(A, { failover: [B] });
    const t0 = performance.now();
    const r1 = await timedChat(s, body);
    assert.equal(r1.status, 200, r1.text);
    expectAttempts(r1.attemptsHeader, [[A, 503], [B, 'ok']]);

    const r2 = await timedChat(s, body);
    assert.equal(r2.status, 200, r2.text);
    expectAttempts(r2.attemptsHeader, [[A, 'skipped_retry_after'], [B, 'ok']]);

    // Polls (one request per 200 ms) until A is attempted again: bounded well below any
    // "years", and not before the hold is over.
    const back = await waitFor(async () => {
      const r = await timedChat(s, body);
      assert.equal(r.status, 200, r.text);
      return r.json.tresor.routed_model === A ? { r, at: performance.now() - t0 } : null;
    }, { timeoutMs: 20_000, intervalMs: 200, what: `${A} to be tried again` });
    console.log(`held route back after ${back.at.toFixed(0)} ms, X-Tresor-Attempts: ${back.r.attemptsHeader}`);
    expectAttempts(back.r.attemptsHeader, [[A, 'ok']]);
    assert.equal(back.r.json.tresor.failover, false);
    assert.ok(back.at >= HOLD_S * 1000 - 100, `tried again after ${back.at.toFixed(0)} ms: the hold is ${HOLD_S} s`);
  });
});

describe('SIGHUP: a reload clears the holds and breakers of the routes it changed', { timeout: 120_000 }, () => {
  let s;
  before(async () => {
    s = await startRoutingStack({
      providers: ['prova', 'provb'],
      routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
      // Long holds and cool-downs: only the reload can bring the routes back within the test.
      retry: { attempts_per_route: 1, backoff_ms: 50, max_retry_after_seconds: 1, max_route_hold_seconds: 3600 },
      breaker: { consecutive_failures: 1, cooldown_seconds: 3600 },
    });
  });

  test('a held route comes back after a reload that changed it, not after one that did not', async () => {
    const fa = s.fakes.prova;
    await fa.behaviour({ status: 503, retry_after: HUGE, times: 1 });
    const body = chatBody(A, { failover: [B] });
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 503], [B, 'ok']]);
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 'skipped_retry_after'], [B, 'ok']]);

    // A reload that leaves A's route and provider alone (B's upstream_model changes) keeps A held.
    const unrelated = structuredClone(s.config);
    unrelated.routes.find((r) => r.id === B).upstream_model = 'provb-m1-v2';
    let log = await reload(s, unrelated);
    assert.ok(!log.includes(`route ${A} changed`), log);
    assert.match(log, new RegExp(`route ${B} changed; its breaker and Retry-After hold are cleared`));
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 'skipped_retry_after'], [B, 'ok']]);

    // A's route entry changes: its hold is gone with the next request.
    const changed = structuredClone(unrelated);
    changed.routes.find((r) => r.id === A).upstream_model = 'prova-m1-v2';
    log = await reload(s, changed);
    assert.match(log, new RegExp(`route ${A} changed; its breaker and Retry-After hold are cleared`));
    const r = await timedChat(s, body);
    assert.equal(r.status, 200, r.text);
    expectAttempts(r.attemptsHeader, [[A, 'ok']]);
    assert.equal(r.json.model, 'prova-m1-v2', 'served with the new route entry');
    s.config = changed;
  });

  test('an open breaker is cleared by a reload that changed the route\'s provider entry', async () => {
    const fa = s.fakes.prova;
    await fa.behaviour({ status: 500, times: 1 });
    const body = chatBody(A, { failover: [B] });
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 500], [B, 'ok']]);
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 'skipped_breaker'], [B, 'ok']]);

    const next = structuredClone(s.config);
    next.providers.prova.max_connections = 31; // same upstream, another provider entry
    const log = await reload(s, next);
    assert.match(log, new RegExp(`route ${A} changed; its breaker and Retry-After hold are cleared`));
    assert.ok(!log.includes(`route ${B} changed`), log);
    expectAttempts((await timedChat(s, body)).attemptsHeader, [[A, 'ok']]);
    s.config = next;
  });

  test('receipts.ttl_seconds and receipts.signing apply to new receipts; retired_keys and attestation are named as restart-only', async () => {
    const db = defaultStorePath(s.gw);
    const issue = async () => {
      const r = await timedChat(s, chatBody(B));
      assert.equal(r.status, 200, r.text);
      const id = r.json.tresor.receipt_id;
      // Stored before the id left the router (durability: sync).
      const [expires, signed] = sqliteQuery(db, `SELECT expires_at, jws != '' FROM receipts WHERE id = '${id}';`).split('|');
      return { expiresIn: Number(expires) - Date.now() / 1000, signed: signed === '1' };
    };
    const before = await issue();
    assert.ok(before.expiresIn > 604800 - 60, `default ttl: expires in ${before.expiresIn} s`);
    assert.equal(before.signed, false, 'signing: on_fetch stores the receipt unsigned');

    const next = structuredClone(s.config);
    next.receipts = {
      ttl_seconds: 3600, signing: 'at_issue', retired_keys: [{ kid: 'old-1', public_key_file: 'retired-1.pem' }],
    };
    next.attestation = { max_age_seconds: 60 };
    const log = await reload(s, next);
    assert.match(log, /config reload: receipts\.ttl_seconds \(now 3600\) applies to receipts issued from now on/);
    assert.match(log, /config reload: receipts\.signing \(now at_issue\) applies to receipts issued from now on/);
    assert.match(log, /config reload: receipts\.retired_keys changed; that takes a restart/);
    assert.match(log, /config reload: attestation changed; that takes a restart/);
    const after = await issue();
    assert.ok(after.expiresIn > 3600 - 60 && after.expiresIn <= 3600 + 5, `new ttl: expires in ${after.expiresIn} s`);
    assert.equal(after.signed, true, 'signing: at_issue now');
  });
});
