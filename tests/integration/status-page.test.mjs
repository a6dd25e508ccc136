// The operator status page (issue 20 part 3; server/status_page.h): GET /status and its data
// endpoint /status/data behind status.admin_key. Off (404) without the key; 401 with a
// browser challenge without it or with a wrong one (a client API key is not the admin key);
// the JSON lists exactly the configured routes with their breaker, rates, percentiles, the
// failovers with their reasons; an unknown model name never becomes a key. The page itself
// in a real browser: tests/browser/status-page.test.mjs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chatBody, readErrorEnvelope, startStack, stopAll, timedChat, waitFor } from './harness.mjs';
import { A, B, BREAKER, basic, bearer, chatA, drive, startStatusStack, statusData } from './status-support.mjs';

let s;
before(async () => { s = await startStatusStack(); });
after(stopAll);

describe('status page', { timeout: 120_000 }, () => {
  test('404 on both paths when status.admin_key is not configured', async () => {
    const plain = await startStack();
    for (const p of ['/status', '/status/data']) {
      const res = await fetch(plain.gw.url(p), { headers: { authorization: `Bearer ${plain.key}` } });
      await readErrorEnvelope(res, { status: 404 });
    }
  });

  test('401 with a Basic challenge without the admin key, with a wrong one, or with a client API key', async () => {
    const cases = [
      [null, 'missing_admin_key'],
      [bearer(`${s.adminKey}x`), 'invalid_admin_key'],
      [basic(`x${s.adminKey}`), 'invalid_admin_key'],
      [bearer(s.key), 'invalid_admin_key'], // a client key opens the API, not the status page
      ['Basic !!!not-base64', 'invalid_admin_key'],
      [`Digest ${s.adminKey}`, 'invalid_admin_key'],
    ];
    for (const p of ['/status', '/status/data']) {
      for (const [authorization, code] of cases) {
        const res = await fetch(s.gw.url(p), { headers: authorization ? { authorization } : {} });
        const challenge = res.headers.get('www-authenticate') || '';
        const err = await readErrorEnvelope(res, { status: 401 });
        assert.equal(err.type, 'authentication_error', `${p} ${code}`);
        assert.equal(err.code, code, `${p}`);
        assert.match(challenge, /^Basic realm="tresor-router status"/, `${p}: a browser must be able to log in`);
        assert.equal(res.headers.get('cache-control'), 'no-store');
      }
    }
  });

  test('200 with the key as Bearer or as the Basic password; the page loads nothing from elsewhere', async () => {
    for (const authorization of [bearer(s.adminKey), basic(s.adminKey), basic(s.adminKey, 'anyone')]) {
      const res = await fetch(s.gw.url('/status'), { headers: { authorization } });
      const html = await res.text();
      assert.equal(res.status, 200, html.slice(0, 300));
      assert.match(res.headers.get('content-type'), /^text\/html; charset=utf-8/);
      assert.match(html, /<tbody id="routes">/);
      // No external script, style, image or font: no src/href attributes (but the empty
      // data: icon), no @import or url().
      assert.doesNotMatch(html, /\s(src|href)=(?!"data:,")|@import|url\(/i);
      const csp = res.headers.get('content-security-policy');
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'/);
      const data = await statusData(s.gw, authorization);
      assert.equal(data.status, 200, data.text);
    }
    const head = await fetch(s.gw.url('/status'), { method: 'HEAD', headers: { authorization: bearer(s.adminKey) } });
    assert.equal(head.status, 200);
  });

  test('the snapshot: configured routes only, rates and percentiles, a failover with its reason, the breaker opening and closing', async () => {
    const auth = bearer(s.adminKey);
    // Healthy traffic: a non-stream and a stream request on A, and a junk model name.
    assert.equal((await chatA(s)).status, 200);
    assert.equal((await chatA(s, { stream: true })).status, 200);
    const junk = await timedChat(s, chatBody('eu/nosuch/model-from-a-client'));
    assert.equal(junk.status, 404, junk.text);
    const first = await statusData(s.gw, auth);
    assert.ok(!first.text.includes('nosuch'), 'a client model string never becomes a key');
    let d = first.json;
    assert.deepEqual(Object.keys(d).sort(), ['events', 'in_flight_streams', 'log', 'now_unix_ms', 'rate_seconds',
      'routes', 'spark_step_seconds', 'window_seconds']);
    assert.deepEqual(d.routes.map((r) => r.id), [A, B], 'exactly the configured routes, in config order');
    const a = d.routes[0];
    assert.equal(a.breaker, 'closed');
    assert.equal(a.hold_seconds, 0);
    assert.equal(a.attempts, 2);
    assert.equal(a.served, 2);
    assert.equal(a.errors, 0);
    assert.ok(a.requests_per_second > 0, JSON.stringify(a));
    assert.ok(a.latency_ms.p50 >= 0 && a.latency_ms.p95 >= a.latency_ms.p50, JSON.stringify(a));
    assert.ok(a.ttft_ms && a.ttft_ms.p95 >= a.ttft_ms.p50, `the stream's time to first token: ${JSON.stringify(a)}`);
    assert.equal(a.spark_attempts.length, d.window_seconds / d.spark_step_seconds);
    assert.equal(a.spark_attempts.reduce((x, y) => x + y, 0), 2);
    assert.equal(d.routes[1].attempts, 0);
    assert.equal(d.routes[1].latency_ms, null);
    assert.equal(d.in_flight_streams, 0);
    assert.equal(typeof d.log?.consistent, 'boolean', 'the receipts log is on by default: its checkpoint is shown');

    // A fails with 503: each request fails over to B until the breaker opens.
    await s.fakes.prova.behaviour({ status: 503 });
    const load = drive(s);
    let results;
    try {
      d = await waitFor(async () => {
        const j = (await statusData(s.gw, auth)).json;
        // The breaker counts a failure when the attempt ends, the board when its request ends:
        // wait for both (the request that opened it may still be finishing on B).
        const failed503 = j.events.filter((e) => e.kind === 'failover' && e.reason === '503')
          .reduce((n, e) => n + e.count, 0);
        return j.routes[0].breaker === 'open' && failed503 >= BREAKER.consecutive_failures && j;
      }, { timeoutMs: 20_000, what: 'route A breaker open and its failovers in /status/data' });
      // The failovers before it opened (503) and after (skipped_breaker), each one line with a count.
      const open = d.routes[0];
      assert.ok(open.hold_seconds > 0 && open.hold_seconds <= BREAKER.cooldown_seconds, JSON.stringify(open));
      assert.ok(open.errors >= BREAKER.consecutive_failures && open.error_rate > 0, JSON.stringify(open));
      const failovers = d.events.filter((e) => e.kind === 'failover' && e.reason === '503');
      assert.ok(failovers.length >= 1, JSON.stringify(d.events));
      for (const f of failovers) assert.deepEqual([f.route, f.to], [A, B]);
      assert.ok(failovers.reduce((n, f) => n + f.count, 0) >= BREAKER.consecutive_failures, JSON.stringify(d.events));
      assert.ok(d.events.length <= 20);

      // Healed: the half-open probe succeeds and the breaker closes.
      await s.fakes.prova.behaviour({});
      d = await waitFor(async () => {
        const j = (await statusData(s.gw, auth)).json;
        return j.routes[0].breaker === 'closed' && j;
      }, { timeoutMs: 20_000, what: 'route A breaker closed again' });
    } finally {
      results = await load.stop(); // also when a wait failed: no request left running
    }
    assert.ok(results.every((r) => r.status === 200), 'every request was served (by B while A was down)');
    assert.ok(d.routes[1].served > 0);
  });
});
