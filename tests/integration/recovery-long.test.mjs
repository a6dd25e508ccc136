// Issue 18: a long stream is recovered exactly, also after the relay has folded what the
// client had into text (it keeps at most 32 KiB of raw chunks): 800 one-word chunks, cut
// after 700 (~100 KiB of chunks delivered), replayed by the fallback.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRoutingStack, stopAll, chatBody, timedChat, parseEventJson } from './harness.mjs';

const WORDS = Array.from({ length: 800 }, (_, i) => `wort${i}`).join(' ');
const A = 'eu/pa/m1';
const B = 'eu/pb/m1';
let s;
before(async () => {
  s = await startRoutingStack({
    providers: ['pa', 'pb'],
    routes: [{ id: A, provider: 'pa' }, { id: B, provider: 'pb' }],
    retry: { backoff_ms: 50, attempts_per_route: 1 },
    content: WORDS,
    fakeOpts: { chunks: 800 },
  });
});
after(stopAll);

test('a stream cut after 700 of 800 chunks is continued exactly, past the relay\'s fold of the delivered text', async () => {
  await s.fakes.pa.behaviour({ cut_after: 700 });
  const r = await timedChat(s, chatBody(A, { stream: true, failover: [B] }), { timeoutMs: 30_000 });
  assert.equal(r.status, 200);
  assert.equal(r.events.at(-1).data, '[DONE]');
  const chunks = r.events.filter((e) => e.data !== '[DONE]').map(parseEventJson);
  const delivered = r.events.slice(0, 700).reduce((n, e) => n + e.data.length, 0);
  assert.ok(delivered > 64 * 1024, `the client had ${delivered} bytes of chunks before the cut`);
  assert.equal(chunks.map((c) => c?.choices?.[0]?.delta?.content ?? '').join(''), WORDS);
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id throughout');
  const finish = chunks.find((c) => c?.choices?.[0]?.finish_reason);
  assert.equal(finish.tresor.recovered_from, A);
  assert.equal(finish.tresor.routed_model, B);
});
