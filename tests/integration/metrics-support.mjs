// Helpers for the /metrics tests of issue 20 (metrics-genai, metrics-cardinality): a reader
// of the Prometheus text format, a scrape, and promtool.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

/** One sample line → { name, labels (object), value }. Throws on a line it cannot read. */
function parseSample(line) {
  const nm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!nm) throw new Error(`no metric name: ${JSON.stringify(line)}`);
  let pos = nm[1].length;
  const labels = {};
  if (line[pos] === '{') {
    pos++;
    while (line[pos] !== '}') {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(pos));
      if (!lm) throw new Error(`bad label at ${pos}: ${JSON.stringify(line)}`);
      pos += lm[0].length;
      let value = '';
      for (;;) {
        const c = line[pos++];
        if (c === undefined) throw new Error(`unterminated label value: ${JSON.stringify(line)}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[pos++];
          value += e === 'n' ? '\n' : e;
        } else {
          value += c;
        }
      }
      labels[lm[1]] = value;
      if (line[pos] === ',') pos++;
    }
    pos++;
  }
  const v = line.slice(pos).trim().split(/\s+/)[0];
  const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
  if (Number.isNaN(value) && v !== 'NaN') throw new Error(`bad value ${v}: ${JSON.stringify(line)}`);
  return { name: nm[1], labels, value };
}

export const labelKey = (labels) => JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));

/** A parsed scrape: types (family → type), samples, and lookups. */
export class Scrape {
  constructor(text) {
    this.text = text;
    this.types = new Map();
    this.samples = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      const t = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
      if (t) this.types.set(t[1], t[2]);
      if (!line.startsWith('#')) this.samples.push(parseSample(line));
    }
  }

  /** The samples of `name` whose labels include every label in `match`. */
  select(name, match = {}) {
    return this.samples.filter((x) => x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v));
  }

  /** The sum of the samples of `name` matching `match` (0 when none). */
  sum(name, match = {}) {
    return this.select(name, match).reduce((a, x) => a + x.value, 0);
  }

  /** The value of the one sample of `name` with exactly these labels (undefined when absent). */
  value(name, labels) {
    const found = this.samples.filter((x) => x.name === name && labelKey(x.labels) === labelKey(labels));
    assert.ok(found.length <= 1, `${name}${labelKey(labels)} appears ${found.length} times`);
    return found[0]?.value;
  }

  /** Every series as "name{sorted labels}", values left out. */
  seriesSet() {
    return new Set(this.samples.map((x) => `${x.name}${labelKey(x.labels)}`));
  }
}

export async function scrape(gw) {
  const res = await fetch(gw.url('/metrics'));
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return new Scrape(text);
}

/** Runs `promtool check metrics` with `text` on stdin; resolves { code, stdout, stderr }. A
 * missing promtool rejects (spawn ENOENT): the test fails, it does not skip. */
export function promtoolCheck(text) {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.on('error', () => { /* promtool gone early: its exit code tells */ });
    p.stdin.end(text);
  });
}
