// The stack the status page tests share (status-page.test.mjs, tests/browser/): two
// providers, a primary route A whose fake takes injected faults and its fallback B, a
// gateway with status.admin_key from the environment, and a short breaker so that it opens
// and closes within seconds.
import { randomBytes } from 'node:crypto';
import { chatBody, registerCanary, startRoutingStack, timedChat } from './harness.mjs';

export const A = 'eu/prova/m1'; // the primary that fails and heals
export const B = 'eu/provb/m1'; // its fallback
export const BREAKER = Object.freeze({ consecutive_failures: 3, cooldown_seconds: 2 });

/** A fresh admin key (a canary: it must never appear in the gateway's output). */
export function makeAdminKey() {
  return registerCanary(`adm-${randomBytes(24).toString('hex')}`);
}

/** The routing stack with status.admin_key = ${TRESOR_TEST_ADMIN_KEY} (adminKey: null: no status section). */
export async function startStatusStack({ adminKey = makeAdminKey() } = {}) {
  if (adminKey) process.env.TRESOR_TEST_ADMIN_KEY = adminKey;
  const stack = await startRoutingStack({
    providers: ['prova', 'provb'],
    routes: [{ id: A, provider: 'prova' }, { id: B, provider: 'provb' }],
    retry: { attempts_per_route: 1, backoff_ms: 50 },
    breaker: BREAKER,
    configHook: (config) => (adminKey ? { ...config, status: { admin_key: '${TRESOR_TEST_ADMIN_KEY}' } } : config),
  });
  return { ...stack, adminKey };
}

/** One chat request for A with B as its fallback (stream or not); resolves with timedChat's result. */
export function chatA(stack, { stream = false } = {}) {
  return timedChat(stack, chatBody(A, { failover: [B], ...(stream ? { stream: true } : {}) }));
}

/** Authorization header values for the admin key. */
export const bearer = (key) => `Bearer ${key}`;
export const basic = (key, user = 'admin') => `Basic ${Buffer.from(`${user}:${key}`).toString('base64')}`;

/** GET /status/data with `authorization` (null: none); resolves { status, headers, json, text }. */
export async function statusData(gw, authorization) {
  const res = await fetch(gw.url('/status/data'), { headers: authorization ? { authorization } : {} });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * Sends chatA every intervalMs (pacing the load, not synchronisation) until stop() is called;
 * stop() resolves with every result once the last request has ended.
 */
export function drive(stack, { intervalMs = 100 } = {}) {
  let running = true;
  const pending = [];
  const loop = (async () => {
    while (running) {
      pending.push(chatA(stack).catch((e) => ({ error: e })));
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return { stop: async () => { running = false; await loop; return Promise.all(pending); } };
}
