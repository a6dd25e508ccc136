#!/usr/bin/env node
// Load benchmark of mid-stream recovery (issue 18): N concurrent streaming chat requests through
// tresor-router with the official OpenAI JS SDK, where the primary route's upstream cuts every
// `cut_every`-th stream half-way and a fallback route serves the same text.
//
//   node bench/stream-recovery-load.mjs [--streams 2000] [--max-rss-mb 600] [--pace-ms 20]
//        [--idle-seconds 2] [--timeout-seconds 300] [--cut-every 10] [--breaker-failures 1000] [--prefill]
//        [--recovery replay|prefill_only|off]
//
// Every client must end in one of two ways: the concatenated content equals the full text
// (served whole, or recovered), or the SDK throws an in-band error (APIError) while iterating.
// A stream that ends without an error but with a different text is a "truncated success", the
// failure this benchmark exists to catch. Exit status: 0 = every stream full or in-band error,
// no truncated success, no other failure (HTTP error, connection error, timeout) and the
// gateway's peak RSS within --max-rss-mb; 1 = one of those failed; 2 = bad usage or setup.
//
// Processes come from tests/integration/harness.mjs (startRoutingStack): two tresor-fake-upstream
// processes (route A = primary, route B = fallback) and one gateway, all on loopback, all
// stopped at the end (and killed if this process dies). See bench/README.md.
import { setMaxListeners } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, performance, startRoutingStack, stopAll } from '../tests/integration/harness.mjs';

const ROUTE_A = 'eu/prova/m1';
const ROUTE_B = 'eu/provb/m1';
const WORDS = 60;
// 60 distinct words: a dropped, repeated or reordered piece changes the text.
const FULL_TEXT = Array.from({ length: WORDS }, (_, i) => `w${String(i).padStart(2, '0')}`).join(' ');

// ------------------------------------------------------------------------------ command line

const USAGE = `usage: node bench/stream-recovery-load.mjs [options]
  --streams N            concurrent streams (default 2000)
  --max-rss-mb MB        fail if the gateway's peak RSS (VmHWM) during the run exceeds this (default 600)
  --pace-ms MS           fake upstreams' delay between events (default 20)
  --idle-seconds S       timeouts.stream_idle_seconds of the gateway (default 2)
  --timeout-seconds S    overall limit of the load phase; streams still open then count as timed out (default 300)
  --cut-every K          fake A cuts every K-th stream after 30 of 60 pieces (default 10)
  --breaker-failures F   breaker.consecutive_failures, 1..1000 (default 1000: the burst of cuts does not open
                         A's breaker, so every stream starts on A; 5 = the gateway's default)
  --prefill              route B supports_prefill: true and fake B honor_prefill: 1 (needs issue-18 config keys)
  --recovery MODE        routing.stream_recovery: replay | prefill_only | off (default: not set = gateway default)`;

function parseArgs(argv) {
  const o = { streams: 2000, maxRssMb: 600, paceMs: 20, idleSeconds: 2, timeoutSeconds: 300, cutEvery: 10,
    breakerFailures: 1000, prefill: false, recovery: undefined };
  const ints = { '--streams': 'streams', '--max-rss-mb': 'maxRssMb', '--pace-ms': 'paceMs',
    '--idle-seconds': 'idleSeconds', '--timeout-seconds': 'timeoutSeconds', '--cut-every': 'cutEvery',
    '--breaker-failures': 'breakerFailures' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
    if (a === '--prefill') { o.prefill = true; continue; }
    if (a === '--recovery') {
      o.recovery = argv[++i];
      if (!['replay', 'prefill_only', 'off'].includes(o.recovery)) usageError(`--recovery wants replay, prefill_only or off`);
      continue;
    }
    if (!(a in ints)) usageError(`unknown option ${a}`);
    const v = Number(argv[++i]);
    if (!Number.isInteger(v) || v < (a === '--pace-ms' ? 0 : 1)) usageError(`${a} wants a positive integer`);
    o[ints[a]] = v;
  }
  return o;
}

function usageError(msg) {
  console.error(`stream-recovery-load: ${msg}\n${USAGE}`);
  process.exit(2);
}

// ------------------------------------------------------------------------------ environment

// The SDK comes from tests/client (npm ci there); this repo has no bench-level node_modules.
async function loadOpenAI() {
  const entry = path.join(REPO_ROOT, 'tests', 'client', 'node_modules', 'openai', 'index.mjs');
  if (!existsSync(entry)) {
    console.error('stream-recovery-load: the openai SDK is missing; run (cd tests/client && npm ci --no-audit --no-fund)');
    process.exit(2);
  }
  return (await import(pathToFileURL(entry).href)).default;
}

// Soft "Max open files" of this process (the gateway and the fakes inherit it).
function openFileLimit() {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

// VmRSS / VmHWM of a process in KiB (null once it is gone).
function vmKb(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

// Resets the peak (VmHWM) to the current RSS, so the peak printed is the load phase's.
function resetPeak(pid) {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); return true; } catch { return false; }
}

const mib = (kb) => (kb === null ? 'n/a' : `${(kb / 1024).toFixed(1)} MiB`);

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ------------------------------------------------------------------------------ one stream

/**
 * One streaming request through the SDK. outcome:
 *   full            no error, text === FULL_TEXT
 *   in_band_error   the SDK threw an APIError while iterating (an error event in the stream)
 *   truncated       no error, text !== FULL_TEXT (the bug)
 *   http_error      create() threw: the answer was not a 200 stream
 *   transport_error the connection failed (APIConnectionError or a socket error while iterating)
 *   timed_out       still running when the overall limit hit
 */
async function oneStream(OpenAI, client, i, signal) {
  const t0 = performance.now();
  const r = { i, text: '', chunks: 0, finish: null, tresor: null, usage: null, attemptsHeader: null };
  let stream;
  try {
    const { data, response } = await client.chat.completions.create({
      model: ROUTE_A,
      messages: [{ role: 'user', content: `Say the sixty words (stream ${i}).` }],
      stream: true,
      stream_options: { include_usage: true },
      failover: [ROUTE_B],
    }, { signal }).withResponse();
    stream = data;
    r.attemptsHeader = response.headers.get('x-tresor-attempts');
  } catch (err) {
    return { ...r, ms: performance.now() - t0, ...classifyError(OpenAI, err, signal, 'http_error') };
  }
  try {
    for await (const chunk of stream) {
      r.chunks++;
      r.text += chunk.choices?.[0]?.delta?.content ?? '';
      if (chunk.choices?.[0]?.finish_reason) r.finish = chunk.choices[0].finish_reason;
      if (chunk.tresor) r.tresor = chunk.tresor;
      if (chunk.usage) r.usage = chunk.usage;
    }
  } catch (err) {
    return { ...r, ms: performance.now() - t0, ...classifyError(OpenAI, err, signal, 'in_band_error') };
  }
  // The SDK ends the iteration quietly (no throw) when the request is aborted.
  if (signal.aborted) return { ...r, ms: performance.now() - t0, outcome: 'timed_out', detail: 'aborted by --timeout-seconds' };
  return { ...r, ms: performance.now() - t0, outcome: r.text === FULL_TEXT ? 'full' : 'truncated' };
}

// An APIConnectionError (also the SDK's abort/timeout errors) is a subclass of APIError, so it
// is checked first. While iterating, an APIError that is not one is the SDK's reading of an
// `{"error":…}` event; create() throws APIError for a non-200 answer.
function classifyError(OpenAI, err, signal, apiErrorOutcome) {
  const detail = `${err?.constructor?.name}: ${err?.code ?? err?.status ?? ''} ${String(err?.message).slice(0, 160)}`;
  if (signal.aborted) return { outcome: 'timed_out', detail };
  if (err instanceof OpenAI.APIConnectionError || !(err instanceof OpenAI.APIError)) {
    return { outcome: 'transport_error', detail };
  }
  return { outcome: apiErrorOutcome, detail, code: err.code ?? null };
}

// ------------------------------------------------------------------------------ main

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const OpenAI = await loadOpenAI();
  // The gateway holds a client and an upstream socket per stream (plus fallback ones), and each
  // fake one per stream; this process one per stream.
  const needFds = 2 * o.streams + 256;
  if (openFileLimit() < needFds) {
    console.error(`stream-recovery-load: open file limit ${openFileLimit()} < ${needFds} needed for ` +
      `${o.streams} streams; raise it first (ulimit -n ${needFds}, up to ulimit -Hn)`);
    process.exit(2);
  }

  const stack = await startRoutingStack({
    providers: ['prova', 'provb'],
    routes: [{ id: ROUTE_A, provider: 'prova' }, { id: ROUTE_B, provider: 'provb' }],
    timeouts: { stream_idle_seconds: o.idleSeconds, attempt_first_event_seconds: 30 },
    // One attempt per route: a recovery continues on B (the failover list), not on A again.
    retry: { attempts_per_route: 1, backoff_ms: 50 },
    // The cuts of all streams come at the same point of their answers, before any success, so
    // with the default threshold (5) A's breaker opens while later streams are still being
    // dispatched, and those go straight to B (skipped_breaker) instead of being cut.
    breaker: { consecutive_failures: o.breakerFailures },
    content: FULL_TEXT,
    fakeOpts: { chunks: WORDS, paceMs: o.paceMs },
    configHook: (c) => {
      // The harness caps each provider's pool at 32; every concurrent stream needs its own.
      for (const p of Object.values(c.providers)) p.max_connections = o.streams + 64;
      if (o.prefill) c.routes.find((r) => r.id === ROUTE_B).supports_prefill = true;
      if (o.recovery) c.routing = { stream_recovery: o.recovery };
      return c;
    },
  });
  const gwPid = stack.gw.proc.pid;
  // maxRetries 0: every retry and recovery seen here is the gateway's, not the SDK's. Node's
  // fetch (which this SDK version uses; it has no httpAgent option) runs on undici's global
  // Agent: keep-alive, no per-origin connection cap, so all streams really run at once.
  const client = new OpenAI({
    apiKey: stack.key, baseURL: `http://127.0.0.1:${stack.gw.port}/v1`, maxRetries: 0, timeout: o.timeoutSeconds * 1000,
  });

  // Warm-up: both routes answer the full text (a setup fault is not the gateway's load failure).
  const never = new AbortController().signal;
  for (const route of [ROUTE_A, ROUTE_B]) {
    const s = await client.chat.completions.create({
      model: route, messages: [{ role: 'user', content: 'warm-up' }], stream: true,
    }, { signal: never });
    let text = '';
    for await (const c of s) text += c.choices?.[0]?.delta?.content ?? '';
    if (text !== FULL_TEXT) throw new Error(`warm-up on ${route} returned ${JSON.stringify(text)}`);
  }
  await stack.clearFakes(); // counters (and cut_every's stream count) from zero
  await stack.fakes.prova.behaviour({ chunks: WORDS, cut_after: WORDS / 2, cut_every: o.cutEvery });
  if (o.prefill) await stack.fakes.provb.behaviour({ honor_prefill: 1 });

  const rssBefore = vmKb(gwPid, 'VmRSS');
  const peakReset = resetPeak(gwPid);
  const abort = new AbortController();
  setMaxListeners(o.streams + 16, abort.signal); // one listener per stream is expected, not a leak
  const limit = setTimeout(() => abort.abort(), o.timeoutSeconds * 1000);
  console.log(`stream-recovery-load: ${o.streams} concurrent streams, fake A cuts every ${o.cutEvery}th after ` +
    `${WORDS / 2}/${WORDS} pieces, pace ${o.paceMs} ms, stream_idle_seconds ${o.idleSeconds}, ` +
    `breaker after ${o.breakerFailures} failures` +
    `${o.prefill ? ', route B prefill' : ''}${o.recovery ? `, stream_recovery ${o.recovery}` : ''}`);
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: o.streams }, (_, i) => oneStream(OpenAI, client, i, abort.signal)));
  const wallMs = performance.now() - t0;
  clearTimeout(limit);
  const rssPeak = vmKb(gwPid, 'VmHWM');
  const rssAfter = vmKb(gwPid, 'VmRSS');

  const [statsA, statsB, requestsB] = await Promise.all([
    stack.fakes.prova.stats(), stack.fakes.provb.stats(), stack.fakes.provb.requests()]);
  // How B was asked to continue: a request ending in an assistant message is a prefill one.
  const prefillsB = requestsB.filter((q) => JSON.parse(q.body).messages?.at(-1)?.role === 'assistant').length;
  const metrics = await (await fetch(stack.gw.url('/metrics'))).text();
  const recoveryMetrics = metrics.split('\n').filter((l) => l.startsWith('tresor_stream_recoveries_total'));
  const ok = report(o, results, {
    wallMs, rssBefore, rssPeak, rssAfter, peakReset, statsA, statsB, recoveryMetrics, prefillsB, recordedB: requestsB.length });
  return ok ? 0 : 1;
}

function report(o, results, m) {
  const by = (k) => results.filter((r) => r.outcome === k);
  const counts = Object.fromEntries(['full', 'in_band_error', 'truncated', 'http_error', 'transport_error', 'timed_out']
    .map((k) => [k, by(k).length]));
  const recovered = by('full').filter((r) => r.tresor?.recovered_from).length;
  const times = (rs) => rs.map((r) => r.ms).sort((a, b) => a - b);
  const fmt = (rs) => {
    const t = times(rs);
    return t.length ? `p50 ${percentile(t, 50).toFixed(0)} ms, p99 ${percentile(t, 99).toFixed(0)} ms (n=${t.length})` : 'n/a';
  };
  const errCodes = {};
  for (const r of by('in_band_error')) errCodes[r.code ?? 'null'] = (errCodes[r.code ?? 'null'] ?? 0) + 1;

  console.log(`\nresults of ${results.length} streams (wall ${(m.wallMs / 1000).toFixed(1)} s):`);
  console.log(`  full text                 ${counts.full}  (of which recovered: ${recovered})`);
  console.log(`  in-band error             ${counts.in_band_error}  ${JSON.stringify(errCodes)}`);
  console.log(`  truncated success         ${counts.truncated}  (must be 0)`);
  console.log(`  http error before stream  ${counts.http_error}`);
  console.log(`  connection error          ${counts.transport_error}`);
  console.log(`  timed out                 ${counts.timed_out}`);
  console.log(`stream time: all ${fmt(results)}`);
  console.log(`             full, not recovered ${fmt(by('full').filter((r) => !r.tresor?.recovered_from))}`);
  console.log(`             recovered ${fmt(by('full').filter((r) => r.tresor?.recovered_from))}`);
  console.log(`             in-band error ${fmt(by('in_band_error'))}`);
  // cut_every counts the stream requests fake A got (recoveries or failovers may skip it).
  console.log(`fake A: ${m.statsA.requests} requests, ${m.statsA.streams_completed} completed streams, ` +
    `${Math.floor(m.statsA.requests / o.cutEvery)} cut by design; fake B: ${m.statsB.requests} requests ` +
    `(${m.statsB.streams_completed} completed streams; ${m.prefillsB} of the ${m.recordedB} it recorded ` +
    'end with an assistant message = prefill)');
  // The attempt trail (the finish chunk's tresor.attempts after a recovery, else the
  // X-Tresor-Attempts header), times left out: how the gateway served the streams.
  const trails = {};
  for (const r of results) {
    const trail = r.tresor?.attempts ?? r.attemptsHeader;
    const t = `${r.outcome}: ${trail ? trail.replace(/;\d+/g, '') : '(no trail)'}`;
    trails[t] = (trails[t] ?? 0) + 1;
  }
  console.log('outcome: attempt trail (finish chunk tresor.attempts, else X-Tresor-Attempts):');
  for (const [t, n] of Object.entries(trails).sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`  ${String(n).padStart(6)}  ${t}`);
  if (m.recoveryMetrics.length) console.log(`gateway: ${m.recoveryMetrics.join('; ')}`);
  console.log(`gateway RSS: before ${mib(m.rssBefore)}, peak ${mib(m.rssPeak)}` +
    `${m.peakReset ? '' : ' (VmHWM since start: clear_refs not permitted)'}, after ${mib(m.rssAfter)}; bound ${o.maxRssMb} MiB`);

  const failures = [];
  if (counts.truncated) failures.push(`${counts.truncated} truncated successes`);
  for (const k of ['http_error', 'transport_error', 'timed_out']) if (counts[k]) failures.push(`${counts[k]} ${k}`);
  if (m.rssPeak === null || m.rssPeak > o.maxRssMb * 1024) failures.push(`peak RSS ${mib(m.rssPeak)} > ${o.maxRssMb} MiB`);
  for (const k of ['truncated', 'http_error', 'transport_error', 'timed_out']) {
    for (const r of by(k).slice(0, 3)) {
      console.log(`  e.g. ${k} #${r.i}: ${r.chunks} chunks, text ${JSON.stringify(r.text.slice(-40))}` +
        `${r.detail ? `, ${r.detail}` : ''}${r.finish ? `, finish ${r.finish}` : ''}`);
    }
  }
  console.log(failures.length ? `FAIL: ${failures.join(', ')}` : 'PASS: every stream full or in-band error; RSS within bound');
  return failures.length === 0;
}

// The whole run (setup included) stops by itself: the load phase has --timeout-seconds, and this
// backstop ends the process (the harness kills its children on exit) if setup or teardown hang.
const backstop = setTimeout(() => {
  console.error('stream-recovery-load: overall time limit hit, giving up');
  process.exit(1);
}, (parseArgs(process.argv.slice(2)).timeoutSeconds + 120) * 1000);
backstop.unref();

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`stream-recovery-load: ${err?.stack ?? err}`);
  code = 2;
} finally {
  await stopAll().catch((err) => console.error(`stream-recovery-load: stopping: ${err.message}`));
}
process.exit(code);
