// Test audio made at test time (issue #6): espeak-ng speaks a sentence into WAV, then sox and
// ffmpeg convert it into the other containers the gateway accepts. Files land in a temp dir
// that the caller removes with the returned cleanup(). Node built-ins only, so both the
// integration and the client suites import it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SENTENCE = 'Tresor transcribes this meeting recording.';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`${cmd} could not run (${r.error.message}); scripts/setup.sh installs it`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

// What each format is made with. `type` is the media type the gateway must forward upstream.
export const AUDIO_FORMATS = Object.freeze([
  { ext: 'wav', type: 'audio/wav', make: (wav, out) => run('sox', [wav, out]) },
  { ext: 'flac', type: 'audio/flac', make: (wav, out) => run('sox', [wav, out]) },
  { ext: 'ogg', type: 'audio/ogg', make: (wav, out) => run('sox', [wav, out]) },
  { ext: 'mp3', type: 'audio/mpeg', make: (wav, out) => run('sox', [wav, out]) },
  { ext: 'webm', type: 'audio/webm', make: (wav, out) => run('ffmpeg', ['-loglevel', 'error', '-y', '-i', wav, '-c:a', 'libopus', out]) },
  { ext: 'm4a', type: 'audio/m4a', make: (wav, out) => run('ffmpeg', ['-loglevel', 'error', '-y', '-i', wav, '-c:a', 'aac', out]) },
  { ext: 'mp4', type: 'audio/mp4', make: (wav, out) => run('ffmpeg', ['-loglevel', 'error', '-y', '-i', wav, '-c:a', 'aac', '-f', 'mp4', out]) },
]);

/**
 * Generates one file per format. Returns { dir, files: { ext: { path, bytes, type } }, cleanup }.
 * `only` limits the formats (e.g. ['wav']).
 */
export function makeTestAudio({ only } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tresor-audio-'));
  const speech = path.join(dir, 'speech.wav');
  run('espeak-ng', ['-w', speech, SENTENCE]);
  const files = {};
  for (const f of AUDIO_FORMATS) {
    if (only && !only.includes(f.ext)) continue;
    const out = path.join(dir, `meeting.${f.ext}`);
    f.make(speech, out);
    files[f.ext] = { path: out, bytes: readFileSync(out), type: f.type };
  }
  return { dir, files, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
