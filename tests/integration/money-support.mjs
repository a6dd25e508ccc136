// Shared by the money acceptance tests (issue 16): exact decimals as BigInt nanos, the
// /v1/usage document read without binary floating point, prices as the gateway computes
// them, receipts' claims, and a redis-server on loopback.
//
// Imported by tests/integration/*.test.mjs and tests/client/billing.test.mjs; Node built-ins only.
import { spawn } from 'node:child_process';
import { closedPort, decodeJws, fetchReceipt, redisPing, waitFor } from './harness.mjs';

const NANOS = 1_000_000_000n;

/** An exact decimal text ("1.1", "-0.000000123", "3") as integer nanos (BigInt). */
export function decimalToNanos(text) {
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?$/.exec(String(text).trim());
  if (!m) throw new Error(`not a plain decimal with at most 9 fraction digits: ${JSON.stringify(text)}`);
  const frac = (m[3] || '').padEnd(9, '0');
  const v = BigInt(m[2]) * NANOS + BigInt(frac);
  return m[1] ? -v : v;
}

/** Nanos (BigInt) as a plain decimal, for messages. */
export function nanosText(n) {
  const neg = n < 0n;
  const a = neg ? -n : n;
  const frac = String(a % NANOS).padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${a / NANOS}${frac ? `.${frac}` : ''}`;
}

// The raw number text of member `name` in a JSON object text (first occurrence).
function rawMember(text, name) {
  const m = new RegExp(`"${name}":(null|-?[0-9.eE+-]+)`).exec(text);
  if (!m) throw new Error(`no numeric member "${name}" in ${text.slice(0, 400)}`);
  return m[1];
}

/**
 * GET /v1/usage, read exactly: { status, text, json, credit, spent, estimated, reserved,
 * remaining } — the amounts as BigInt nanos (null when the document says null), parsed from
 * the raw text (never through a JS number). Throws if an amount is not a plain decimal.
 */
export async function readUsage(gw, key) {
  const res = await fetch(gw.url('/v1/usage'), { headers: { authorization: `Bearer ${key}` } });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/v1/usage answered ${res.status}: ${text.slice(0, 300)}`);
  const top = text.slice(0, text.indexOf('"by_route"'));
  const out = { status: res.status, text, json: JSON.parse(text) };
  for (const name of ['credit', 'spent', 'estimated', 'reserved', 'remaining']) {
    const raw = rawMember(top, name);
    out[name] = raw === 'null' ? null : decimalToNanos(raw);
  }
  return out;
}

/** A chat answer's cost in nanos as the gateway prices it: per-million prices given in nanos, half up. */
export function chatCostNanos({ inputNanosPerMtok, outputNanosPerMtok }, promptTokens, completionTokens) {
  const total = BigInt(promptTokens) * BigInt(inputNanosPerMtok) + BigInt(completionTokens) * BigInt(outputNanosPerMtok);
  return (total + 500_000n) / 1_000_000n;
}

/** Words as the fake upstream counts them (its token count): runs of non-blank characters. */
export function fakeWords(text) {
  return (String(text).match(/[^ \n\t\r]+/g) || []).length;
}

/** The receipt of `id` fetched and decoded: { status, payload } (payload: the JWS claims). */
export async function receiptClaims(gw, key, id) {
  const r = await fetchReceipt(gw, key, id);
  if (r.status !== 200) return { status: r.status, payload: null, text: r.text };
  return { status: r.status, payload: decodeJws(r.json.receipt).payload };
}

/** Starts a throwaway redis-server on a loopback port: { port, url, proc, stop() }. */
export async function startRedis() {
  const port = await closedPort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => redisPing(port), { what: 'redis-server PING' });
  return { port, url: `redis://127.0.0.1:${port}/0`, proc, stop: () => { try { proc.kill('SIGKILL'); } catch { /* gone */ } } };
}

/** The SSE data payloads of a raw body that are JSON chunks carrying a `usage` object. */
export function usageChunks(raw) {
  return raw.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim())
    .filter((d) => d !== '[DONE]').map((d) => { try { return JSON.parse(d); } catch { return null; } })
    .filter((o) => o && o.usage);
}
