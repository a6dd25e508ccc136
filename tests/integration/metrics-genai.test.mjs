// Issue 20, metrics that status codes cannot show: after a known mix of traffic (chat JSON, a
// paced stream, an upstream 503 failed over, a stream cut and recovered, a stream cut whose
// recovery diverged, an unknown model) /metrics passes `promtool check metrics` without a
// single warning and the per-route series (OpenTelemetry GenAI names where the conventions
// have one, tresor_ otherwise) moved by what the traffic did, on the route that did it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRoutingStack, stopAll, chatBody, readSse, readErrorEnvelope, waitFor } from './harness.mjs';
import { scrape, promtoolCheck } from './metrics-support.mjs';

const A = 'eu/pa/m1';
const B = 'eu/pb/m1';
const CHAT = '/v1/chat/completions';
// A route's GenAI attributes as labels (startRoutingStack: upstream_model = <provider>-<key>).
const genai = (route, provider) => ({
  gen_ai_operation_name: 'chat', gen_ai_provider_name: provider, gen_ai_request_model: `${provider}-m1`,
  tresor_route: route,
});
const LA = genai(A, 'pa');
const LB = genai(B, 'pb');

let s;
before(async () => {
  s = await startRoutingStack({
    providers: ['pa', 'pb'],
    routes: [{ id: A, provider: 'pa' }, { id: B, provider: 'pb' }],
    retry: { attempts_per_route: 1, backoff_ms: 50 },
    fakeOpts: { chunks: 6 },
    content: 'one two three four five six seven eight nine ten eleven twelve',
    configHook: (config) => {
      for (const r of config.routes) r.pricing = { input_per_mtok: 1, output_per_mtok: 2, currency: 'eur' };
      return config;
    },
  });
});
after(stopAll);

async function stream(body) {
  const res = await s.chat({ ...body, stream: true });
  assert.equal(res.status, 200);
  return readSse(res);
}

describe('per-route stream, token and upstream series', { timeout: 120_000 }, () => {
  test('promtool accepts /metrics after traffic; each new series moved on the route that did it', async () => {
    const base = await scrape(s.gw);
    // Every configured route has its series from the start, at 0.
    for (const labels of [LA, LB]) {
      assert.equal(base.value('gen_ai_server_time_to_first_token_seconds_count', labels), 0);
      assert.equal(base.value('gen_ai_client_token_usage_count', { ...labels, gen_ai_token_type: 'input' }), 0);
      assert.equal(base.value('gen_ai_client_operation_duration_seconds_count', labels), 0);
    }
    assert.equal(base.value('tresor_stream_upstream_failures_total', { route: A, reason: 'stream_cut' }), 0);

    // 1. chat JSON on A.
    let r = await s.chat(chatBody(A));
    assert.equal(r.status, 200, await r.text());
    // 2. a stream on A, 40 ms between chunks.
    await s.fakes.pa.behaviour({ pace_ms: 40, times: 1 });
    assert.equal((await stream(chatBody(A))).events.at(-1).data, '[DONE]');
    // 3. A answers 503: failed over to B.
    await s.fakes.pa.behaviour({ status: 503, times: 1 });
    r = await s.chat(chatBody(A, { failover: [B] }));
    assert.equal(r.status, 200, await r.text());
    // 4. A's stream is cut after 2 chunks, B recovers it.
    await s.fakes.pa.behaviour({ cut_after: 2, times: 1 });
    assert.equal((await stream(chatBody(A, { failover: [B] }))).events.at(-1).data, '[DONE]');
    // 5. A's stream is cut again; B would answer another text: the recovery diverges.
    await s.fakes.pa.behaviour({ cut_after: 2, times: 1 });
    await s.fakes.pb.behaviour({ content: 'a completely different answer from the other provider', times: 1 });
    const diverged = await stream(chatBody(A, { failover: [B] }));
    assert.notEqual(diverged.events.at(-1).data, '[DONE]', 'a diverged recovery ends with an error event');
    // 6. an unknown model.
    await readErrorEnvelope(await s.chat(chatBody('eu/nowhere/m9')), { status: 404, code: 'model_not_found' });

    let m;
    await waitFor(async () => {
      m = await scrape(s.gw);
      return m.sum('tresor_requests_total', { endpoint: CHAT }) - base.sum('tresor_requests_total', { endpoint: CHAT }) === 6;
    }, { timeoutMs: 15_000, what: 'the six chat requests in /metrics' });

    const check = await promtoolCheck(m.text);
    assert.equal(check.code, 0, `promtool check metrics exited ${check.code}:\n${check.stdout}${check.stderr}`);
    assert.equal(`${check.stdout}${check.stderr}`.trim(), '', 'promtool has no lint warning');

    for (const [family, type] of Object.entries({
      gen_ai_server_time_to_first_token_seconds: 'histogram',
      gen_ai_server_time_per_output_token_seconds: 'histogram',
      gen_ai_client_token_usage: 'histogram',
      gen_ai_client_operation_duration_seconds: 'histogram',
      tresor_stream_chunk_gap_seconds: 'histogram',
      tresor_stream_upstream_failures_total: 'counter',
    })) assert.equal(m.types.get(family), type, `# TYPE ${family}`);

    // Time to first token: the three streams all got their first content from A.
    assert.equal(m.value('gen_ai_server_time_to_first_token_seconds_count', LA), 3);
    assert.equal(m.value('gen_ai_server_time_to_first_token_seconds_count', LB), 0);
    const ttftSum = m.value('gen_ai_server_time_to_first_token_seconds_sum', LA);
    assert.ok(ttftSum > 0 && ttftSum < 30, `TTFT sum ${ttftSum} s`);
    // Gaps between writes: the paced stream's are ≥ 40 ms each (bucket le=0.04 holds at most
    // the other streams' gaps, which are not paced).
    const gaps = m.value('tresor_stream_chunk_gap_seconds_count', { route: A });
    assert.ok(gaps >= 5, `at least the paced stream's gaps: ${gaps}`);
    assert.equal(m.value('tresor_stream_chunk_gap_seconds_bucket', { route: A, le: '+Inf' }), gaps);
    assert.ok(m.value('tresor_stream_chunk_gap_seconds_sum', { route: A }) >= 0.04 * 4, 'the paced gaps add up');
    assert.equal(m.value('tresor_stream_chunk_gap_seconds_count', { route: B }), 0);
    // Time per output token: the completed streams (2 and 4) on the route of their first token.
    assert.equal(m.value('gen_ai_server_time_per_output_token_seconds_count', LA), 2);
    // Upstream failures after the 200: two cuts on A, one diverged recovery on B.
    assert.equal(m.value('tresor_stream_upstream_failures_total', { route: A, reason: 'stream_cut' }), 2);
    assert.equal(m.value('tresor_stream_upstream_failures_total', { route: A, reason: 'stream_stalled' }), 0);
    assert.equal(m.value('tresor_stream_upstream_failures_total', { route: B, reason: 'recovery_diverged' }), 1);
    assert.equal(m.value('tresor_stream_upstream_failures_total', { route: B, reason: 'stream_cut' }), 0);
    // Recoveries (issue 18's series, still there): one recovered, one diverged, both of A's stream.
    assert.equal(m.value('tresor_stream_recoveries_total', { route: A, result: 'recovered' }), 1);
    assert.equal(m.value('tresor_stream_recoveries_total', { route: A, result: 'diverged' }), 1);
    assert.ok(m.types.get('tresor_hedges_total'), 'hedges are there');
    // Upstream operations per attempt: A ok twice (1, 2), A 503 once, A cut twice; B ok ≥ 2.
    assert.equal(m.value('gen_ai_client_operation_duration_seconds_count', LA), 2);
    assert.equal(m.value('gen_ai_client_operation_duration_seconds_count', { ...LA, error_type: 'http_5xx' }), 1);
    assert.equal(m.value('gen_ai_client_operation_duration_seconds_count', { ...LA, error_type: 'stream_cut' }), 2);
    assert.ok(m.value('gen_ai_client_operation_duration_seconds_count', LB) >= 2);
    // Tokens in and out, by the route that served: A answered 1 and 2, B 3 and 4.
    for (const type of ['input', 'output']) {
      assert.ok(m.value('gen_ai_client_token_usage_count', { ...LA, gen_ai_token_type: type }) >= 2, `A ${type}`);
      assert.ok(m.value('gen_ai_client_token_usage_count', { ...LB, gen_ai_token_type: type }) >= 2, `B ${type}`);
      assert.ok(m.value('gen_ai_client_token_usage_sum', { ...LA, gen_ai_token_type: type }) > 0, `A ${type} tokens`);
    }
    // Spend by route and currency (exists since the money issue).
    assert.ok(m.value('tresor_spend_nanos_total', { route: A, currency: 'eur' }) > 0);
    assert.ok(m.value('tresor_spend_nanos_total', { route: B, currency: 'eur' }) > 0);
    // Only configured routes and providers in the new families; the unknown model nowhere.
    for (const x of m.samples.filter((x) => x.name.startsWith('gen_ai_') || x.name.startsWith('tresor_stream_'))) {
      const route = x.labels.tresor_route ?? x.labels.route;
      assert.ok([A, B].includes(route), `${x.name} route ${route}`);
      if (x.labels.gen_ai_provider_name) assert.ok(['pa', 'pb'].includes(x.labels.gen_ai_provider_name));
    }
    assert.ok(!m.text.includes('nowhere'), 'the unknown model is in no label');
  });
});
