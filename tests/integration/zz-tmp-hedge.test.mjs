import { after, before, test } from 'node:test';
import { startRoutingStack, stopAll, chatBody, timedChat, parseEventJson, waitFor } from './harness.mjs';
let s;
before(async () => {
  s = await startRoutingStack({
    providers: ['pa', 'pb'],
    routes: [{ id: 'eu/pa/m1', provider: 'pa' }, { id: 'eu/pb/m1', provider: 'pb' }],
    retry: { backoff_ms: 50, attempts_per_route: 1 },
    content: 'hello there friend',
    fakeOpts: { chunks: 3 },
  });
});
after(stopAll);
for (const stream of [true, false]) test('hedge ' + stream, async () => {
  await s.clearFakes();
  await s.fakes.pa.behaviour({ lag_first_ms: 5000, delay_ms: stream ? 0 : 5000 });
  const r = await timedChat(s, chatBody('eu/pa/m1', { stream, failover: ['eu/pb/m1'] }), { timeoutMs: 20000, headers: { 'X-Tresor-Hedge-After-Ms': '500' } });
  console.log(stream, r.status, r.ms.toFixed(0), 'ms; hdr', r.attemptsHeader, (r.text || '').slice(0, 200));
  await waitFor(async () => { const st = await s.fakes.pa.stats(); console.log(JSON.stringify(st)); return st.requests_aborted_by_client === 1; }, { timeoutMs: 3000, what: 'abort' });
});
