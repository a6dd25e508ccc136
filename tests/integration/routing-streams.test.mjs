// Streams once the first event went out (spec §1.1, §3.2, routing issue): no failover any more;
// a mid-stream cut, reset, stall past stream_idle_seconds, upstream error event or an end
// without [DONE] gives a final `data: {"error":{…}}` event and no [DONE] (never a fake
// finish_reason) — except after a finish chunk (and the usage, when asked for), where an
// upstream that closes or stays silent for 500 ms is complete and the gateway sends [DONE].
// Invalid JSON events are dropped. This is the contract with `routing.stream_recovery: off`;
// recovery (the default, issue 18) is tested in tests/client/stream-recovery.test.mjs. Each case has its own primary fake (they run concurrently);
// every primary has a failover route on the shared healthy `provb`, with its own model key so
// that provb's by_model counters tell whether a case (wrongly) failed over.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRoutingStack, stopAll, chatBody, timedChat, expectAttempts, parseEventJson, waitFor,
} from './harness.mjs';

const IDLE_S = 2;
const CHUNKS = 6;
const PACE_MS = 20;
const CONTENT = 'one two three four five six seven eight nine ten eleven twelve';
const DONE_GRACE_MS = 500; // silence after the finish (+ usage) that completes a stream
// What the gateway controls is the timer; the slack absorbs a loaded 2-core machine (the
// sanitizer pass of CI measured 129 ms over a 500 ms timer) and stays far below the idle
// limit (2 s) that a missing completion timer would fall back to.
const SLACK_MS = 400;

const CASES = ['cut', 'rst', 'stl', 'err', 'nd', 'ndc', 'ndu', 'ndf', 'nfn', 'nfc', 'nuc', 'bad'];
const prim = (x) => `eu/${x}/m1`;
const fall = (x) => `eu/provb/${x}`;

let s;
before(async () => {
  s = await startRoutingStack({
    providers: [...CASES, 'provb'],
    routes: [
      ...CASES.map((x) => ({ id: prim(x), provider: x })),
      ...CASES.map((x) => ({ id: fall(x), provider: 'provb' })),
    ],
    timeouts: { stream_idle_seconds: IDLE_S },
    retry: { backoff_ms: 50 },
    breaker: { consecutive_failures: 1000 },
    content: CONTENT,
    fakeOpts: { chunks: CHUNKS, paceMs: PACE_MS },
    configHook: (c) => ({ ...c, routing: { stream_recovery: 'off' } }),
  });
});
after(stopAll);

/** Starts the case's stream with fault spec `behaviour` on its primary; returns the timed result. */
async function run(x, behaviour, extra = {}) {
  await s.fakes[x].behaviour(behaviour);
  const r = await timedChat(s, chatBody(prim(x), { stream: true, failover: [fall(x)], ...extra }), { timeoutMs: 20_000 });
  assert.equal(r.status, 200, `status ${r.status}: ${r.text}`);
  assert.ok(r.events, `not an SSE answer: ${r.text}`);
  r.data = r.events.filter((e) => e.data !== '[DONE]').map((e) => ({ ...e, json: parseEventJson(e) }));
  return r;
}

function gapsLine(r) {
  return r.events.map((e) => `${(e.t - r.t0).toFixed(0)}ms ${e.data.slice(0, 60)}`).join('\n  ');
}

async function assertNoFailover(x, r) {
  expectAttempts(r.attemptsHeader, [[prim(x), 'ok']]);
  assert.equal((await s.fakes.provb.stats()).by_model[`provb-${x}`] ?? 0, 0, 'no failover once the stream has started');
}

function assertErrorEnd(r) {
  const last = r.data.at(-1);
  assert.ok(last?.json?.error && typeof last.json.error === 'object', `final event must be {"error":{…}}:\n  ${gapsLine(r)}`);
  assert.equal(typeof last.json.error.message, 'string');
  assert.ok(!r.events.some((e) => e.data === '[DONE]'), `no [DONE] after an error:\n  ${gapsLine(r)}`);
  assert.ok(!r.data.some((e) => e.json?.choices?.[0]?.finish_reason != null), `no (fake) finish_reason:\n  ${gapsLine(r)}`);
  for (const e of r.data) assert.ok(e.json !== undefined, `invalid JSON relayed: ${e.data}`);
  assert.ok(!r.raw.includes(s.fakes[CASES[0]].providerKey), 'provider key leaked');
  return last;
}

function assertCleanDone(r) {
  assert.equal(r.events.at(-1).data, '[DONE]', `stream must end with [DONE]:\n  ${gapsLine(r)}`);
  assert.equal(r.events.filter((e) => e.data === '[DONE]').length, 1);
  assert.ok(!r.data.some((e) => e.json?.error), `no error event:\n  ${gapsLine(r)}`);
  for (const e of r.data) assert.ok(e.json !== undefined, `invalid JSON relayed: ${e.data}`);
  const text = r.data.map((e) => e.json.choices?.[0]?.delta?.content ?? '').join('');
  assert.equal(text, CONTENT, 'the whole answer arrives');
  const finish = r.data.filter((e) => e.json.choices?.[0]?.finish_reason != null);
  assert.equal(finish.length, 1, `one finish chunk:\n  ${gapsLine(r)}`);
  assert.equal(finish[0].json.choices[0].finish_reason, 'stop');
  assert.equal(finish[0].json.tresor?.routed_model, r.routed, `tresor on the finish chunk: ${finish[0].data}`);
  assert.equal(finish[0].json.tresor?.failover, false);
  // The time from the last upstream event to [DONE] (the gateway's completion grace).
  return r.events.at(-1).t - r.events.at(-2).t;
}

const contentOf = (r) => r.data.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');

describe('mid-stream failures and completion', { timeout: 60_000, concurrency: true }, () => {
  test('upstream cut mid-answer → final error event, no [DONE], no failover', async () => {
    const x = 'cut';
    const r = await run(x, { cut_after: 2 });
    const ms = r.data.at(-1).t - r.data.at(-2).t;
    console.log(`cut: error event ${ms.toFixed(0)} ms after the last relayed event; X-Tresor-Attempts: ${r.attemptsHeader}`);
    assertErrorEnd(r);
    assert.ok(contentOf(r).length > 0, 'the content before the cut is relayed');
    assert.ok(ms < 1000, `error event ${ms.toFixed(0)} ms after the cut`);
    await assertNoFailover(x, r);
  });

  test('upstream reset mid-answer → final error event, no [DONE], no failover', async () => {
    const x = 'rst';
    const r = await run(x, { reset_after: 2 });
    console.log(`reset mid-stream: total ${r.ms.toFixed(0)} ms; X-Tresor-Attempts: ${r.attemptsHeader}`);
    assertErrorEnd(r);
    assert.ok(contentOf(r).length > 0);
    await assertNoFailover(x, r);
  });

  test(`upstream stalls mid-answer → error event after stream_idle_seconds (${IDLE_S} s) + slack; upstream closed`, async () => {
    const x = 'stl';
    const r = await run(x, { stall_after: 2 });
    const gap = r.data.at(-1).t - r.data.at(-2).t;
    console.log(`stall: error event ${gap.toFixed(0)} ms after the last content event (idle ${IDLE_S * 1000} ms)`);
    assertErrorEnd(r);
    assert.ok(gap >= IDLE_S * 1000 - 50, `error after ${gap.toFixed(0)} ms of silence, idle limit is ${IDLE_S} s`);
    assert.ok(gap <= IDLE_S * 1000 + SLACK_MS, `error after ${gap.toFixed(0)} ms of silence, idle limit is ${IDLE_S} s`);
    await assertNoFailover(x, r);
    await waitFor(async () => (await s.fakes[x].stats()).streams_aborted_by_client === 1,
      { timeoutMs: 2000, what: 'the gateway to close the stalled upstream stream' });
  });

  test('upstream error event mid-stream → final error event, no [DONE], no failover', async () => {
    const x = 'err';
    const r = await run(x, { error_event_after: 2 });
    console.log(`error event: total ${r.ms.toFixed(0)} ms; X-Tresor-Attempts: ${r.attemptsHeader}`);
    assertErrorEnd(r);
    assert.ok(contentOf(r).length > 0);
    await assertNoFailover(x, r);
  });

  test('finish chunk, then the upstream hangs without [DONE] → [DONE] within 500 ms + slack', async () => {
    const x = 'nd';
    const r = await run(x, { no_done: 1 });
    r.routed = prim(x);
    const gap = assertCleanDone(r);
    console.log(`no [DONE], upstream open: [DONE] ${gap.toFixed(0)} ms after the finish chunk`);
    assert.ok(gap <= DONE_GRACE_MS + SLACK_MS, `[DONE] ${gap.toFixed(0)} ms after the last event`);
    assert.ok(parseEventJson(r.events.at(-2))?.choices?.[0]?.finish_reason === 'stop', 'the finish chunk is the last event before [DONE]');
    await assertNoFailover(x, r);
  });

  test('finish chunk, then the upstream closes without [DONE] → [DONE] within 500 ms + slack', async () => {
    const x = 'ndc';
    const r = await run(x, { no_done_close: 1 });
    r.routed = prim(x);
    const gap = assertCleanDone(r);
    console.log(`no [DONE], upstream closed: [DONE] ${gap.toFixed(0)} ms after the finish chunk`);
    assert.ok(gap <= DONE_GRACE_MS + SLACK_MS, `[DONE] ${gap.toFixed(0)} ms after the last event`);
    await assertNoFailover(x, r);
  });

  test('include_usage: finish + usage chunk, then the upstream hangs → usage forwarded (with tresor), [DONE] within 500 ms + slack', async () => {
    const x = 'ndu';
    const r = await run(x, { no_done: 1 }, { stream_options: { include_usage: true } });
    r.routed = prim(x);
    const gap = assertCleanDone(r);
    console.log(`include_usage, no [DONE]: [DONE] ${gap.toFixed(0)} ms after the usage chunk`);
    const usage = r.data.filter((e) => e.json.usage && Array.isArray(e.json.choices) && e.json.choices.length === 0);
    assert.equal(usage.length, 1, `one usage chunk:\n  ${gapsLine(r)}`);
    assert.equal(typeof usage[0].json.usage.total_tokens, 'number');
    assert.equal(usage[0].json.tresor?.routed_model, prim(x), `tresor on the usage chunk: ${usage[0].data}`);
    assert.equal(r.data.at(-1), usage[0], 'the usage chunk is the last event before [DONE]');
    assert.ok(gap <= DONE_GRACE_MS + SLACK_MS, `[DONE] ${gap.toFixed(0)} ms after the last event`);
    await assertNoFailover(x, r);
  });

  test('include_usage with the usage on the finish chunk, then the upstream hangs → [DONE] within 500 ms + slack', async () => {
    const x = 'ndf';
    const r = await run(x, { no_done: 1, usage_in_finish: 1 }, { stream_options: { include_usage: true } });
    r.routed = prim(x);
    const gap = assertCleanDone(r);
    console.log(`usage in finish, no [DONE]: [DONE] ${gap.toFixed(0)} ms after the finish chunk`);
    const finish = r.data.find((e) => e.json.choices?.[0]?.finish_reason != null);
    assert.equal(typeof finish.json.usage?.total_tokens, 'number', `usage kept on the finish chunk: ${finish.data}`);
    assert.ok(gap <= DONE_GRACE_MS + SLACK_MS, `[DONE] ${gap.toFixed(0)} ms after the last event`);
    await assertNoFailover(x, r);
  });

  test(`no finish chunk and no [DONE], upstream hangs → in-band error after the idle timer (${IDLE_S} s) + slack`, async () => {
    const x = 'nfn';
    const r = await run(x, { no_done: 1, no_finish: 1 });
    const gap = r.data.at(-1).t - r.data.at(-2).t;
    console.log(`no finish, no [DONE], upstream open: error ${gap.toFixed(0)} ms after the last content event`);
    assertErrorEnd(r);
    assert.equal(contentOf(r), CONTENT, 'every content chunk before the error');
    assert.ok(gap >= IDLE_S * 1000 - 50 && gap <= IDLE_S * 1000 + SLACK_MS, `error after ${gap.toFixed(0)} ms of silence`);
    await assertNoFailover(x, r);
  });

  test('no finish chunk, upstream closes cleanly without [DONE] → in-band error at once, no [DONE]', async () => {
    const x = 'nfc';
    const r = await run(x, { no_done_close: 1, no_finish: 1 });
    const gap = r.data.at(-1).t - r.data.at(-2).t;
    console.log(`no finish, upstream closed: error ${gap.toFixed(0)} ms after the last content event`);
    assertErrorEnd(r);
    assert.ok(gap < 1000, `error ${gap.toFixed(0)} ms after the close`);
    await assertNoFailover(x, r);
  });

  test('include_usage: usage chunk but no finish chunk, then a clean close → in-band error, no [DONE]', async () => {
    const x = 'nuc';
    const r = await run(x, { no_done_close: 1, no_finish: 1 }, { stream_options: { include_usage: true } });
    console.log(`usage without finish, upstream closed: total ${r.ms.toFixed(0)} ms`);
    assertErrorEnd(r);
    await assertNoFailover(x, r);
  });

  test('one invalid JSON event in the middle → dropped; every other event and a clean finish', async () => {
    const x = 'bad';
    const r = await run(x, { bad_event_after: 3 });
    r.routed = prim(x);
    assertCleanDone(r);
    console.log(`invalid event dropped: ${r.data.length} data events, total ${r.ms.toFixed(0)} ms`);
    // role + CHUNKS content chunks + finish: everything the upstream sent except the bad event.
    assert.equal(r.data.length, 1 + CHUNKS + 1, `events:\n  ${gapsLine(r)}`);
    assert.equal(r.data[0].json.choices[0].delta.role, 'assistant');
    await assertNoFailover(x, r);
  });
});
