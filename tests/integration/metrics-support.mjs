// Helpers for the /metrics tests of issue 20 (metrics-genai, metrics-cardinality): a reader
// of the Prometheus text format, a scrape, and promtool. metrics.test.mjs uses them too.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

/**
 * Parses exposition text (0.0.4) into { types: Map(family → type), help: Map, samples: [{ name,
 * labels, value }] } where labels is a plain object. Throws on a line it cannot read.
 */
export function parseExposition(text) {
  const types = new Map();
  const help = new Map();
  const samples = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (TYPE|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (m && m[1] === 'TYPE') types.set(m[2], m[3]);
      else if (m) help.set(m[2], m[3]);
      continue;
    }
    const nm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!nm) throw new Error(`line ${i + 1}: no metric name: ${JSON.stringify(line)}`);
    let pos = nm[1].length;
    const labels = {};
    if (line[pos] === '{') {
      pos++;
      for (;;) {
        while (line[pos] === ' ') pos++;
        if (line[pos] === '}') { pos++; break; }
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(pos));
        if (!lm) throw new Error(`line ${i + 1}: bad label at ${pos}: ${JSON.stringify(line)}`);
        pos += lm[0].length;
        let value = '';
        for (;;) {
          const c = line[pos++];
          if (c === undefined) throw new Error(`line ${i + 1}: unterminated label value: ${JSON.stringify(line)}`);
          if (c === '"') break;
          if (c === '\\') {
            const e = line[pos++];
            value += e === 'n' ? '\n' : e;
          } else {
            value += c;
          }
        }
        labels[lm[1]] = value;
        while (line[pos] === ' ') pos++;
        if (line[pos] === ',') pos++;
      }
    }
    const rest = line.slice(pos).trim().split(/\s+/);
    if (rest.length < 1 || rest.length > 2) throw new Error(`line ${i + 1}: bad value part: ${JSON.stringify(line)}`);
    const v = rest[0];
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : v === 'NaN' ? NaN : Number(v);
    if (Number.isNaN(value) && v !== 'NaN') throw new Error(`line ${i + 1}: bad value ${v}`);
    samples.push({ name: nm[1], labels, value });
  }
  return { types, help, samples };
}

export const labelKey = (labels) => JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
const sameLabels = (a, b) => labelKey(a) === labelKey(b);

/** A parsed scrape: types (family → type), help, samples, and lookups. */
export class Scrape {
  constructor(text) {
    this.text = text;
    Object.assign(this, parseExposition(text));
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
  value(name, labels = {}) {
    const found = this.samples.filter((x) => x.name === name && sameLabels(x.labels, labels));
    assert.ok(found.length <= 1, `${name}${labelKey(labels)} appears ${found.length} times`);
    return found[0]?.value;
  }

  /** Whether a sample of `name` with exactly these labels is there. */
  has(name, labels = {}) {
    return this.samples.some((x) => x.name === name && sameLabels(x.labels, labels));
  }

  /** Every sample of `name`. */
  series(name) {
    return this.samples.filter((x) => x.name === name);
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
