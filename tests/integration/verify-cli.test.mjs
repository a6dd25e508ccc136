// The operator CLI for receipts: `verify-receipt` agrees with the served JWKS and the
// digests of what the client sent and got; `gen-signing-key` writes a private 0600 key.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync, statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { startStack, stopAll, tempDir, routerBin, ROUTE_GPT } from './harness.mjs';

let s;
let dir;

function run(args, input) {
  return new Promise((resolve) => {
    const child = execFile(routerBin(), args, { timeout: 20_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }));
    if (input !== undefined) child.stdin.end(input);
  });
}

before(async () => {
  s = await startStack();
  dir = tempDir('tresor-verify-');
});
after(stopAll);

async function answerWithReceipt(body) {
  const bodyText = JSON.stringify(body);
  const r = await s.chat(bodyText);
  const text = await r.text();
  assert.equal(r.status, 200);
  const id = body.stream
    ? JSON.parse(text.split('\n').filter((l) => l.includes('"receipt_id"'))[0].slice(6)).tresor.receipt_id
    : JSON.parse(text).tresor.receipt_id;
  const fetched = await fetch(s.gw.url(`/v1/receipts/${id}`), { headers: { authorization: `Bearer ${s.key}` } });
  return { bodyText, text, receiptJson: await fetched.text() };
}

describe('verify-receipt and gen-signing-key', { timeout: 60_000 }, () => {
  for (const stream of [false, true]) {
    test(`verify-receipt PASSes a ${stream ? 'stream' : 'JSON'} receipt with both digests, FAILs tampering`, async () => {
      const { bodyText, text, receiptJson } = await answerWithReceipt(
        { model: ROUTE_GPT, stream, messages: [{ role: 'user', content: 'Grüß dich' }] });
      const req = path.join(dir, `req-${stream}.json`);
      const resp = path.join(dir, `resp-${stream}.txt`);
      const rec = path.join(dir, `receipt-${stream}.json`);
      writeFileSync(req, bodyText);
      writeFileSync(resp, text);
      writeFileSync(rec, receiptJson);
      const jwksUrl = s.gw.url('/.well-known/jwks.json');

      const ok = await run(['verify-receipt', '--jwks', jwksUrl, rec, '--request', req, '--response', resp]);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /^PASS\nReceipt type: +message\nKey ID: +router-receipt-1\n/);

      const fromStdin = await run(['verify-receipt', '--jwks', jwksUrl, '-'], JSON.parse(receiptJson).receipt);
      assert.equal(fromStdin.code, 0, 'a bare JWS on stdin verifies too');

      writeFileSync(resp, text.replace('Hello', 'Jello'));
      const wrongResponse = await run(['verify-receipt', '--jwks', jwksUrl, rec, '--response', resp]);
      assert.equal(wrongResponse.code, 1);
      assert.match(wrongResponse.stdout, /^FAIL\nresponse_sha256 does not match/);

      const jws = JSON.parse(receiptJson).receipt;
      const parts = jws.split('.');
      const flipped = parts[2][5] === 'A' ? 'B' : 'A';
      const tampered = [parts[0], parts[1], parts[2].slice(0, 5) + flipped + parts[2].slice(6)].join('.');
      const bad = await run(['verify-receipt', '--jwks', jwksUrl, '-'], tampered);
      assert.equal(bad.code, 1);
      assert.match(bad.stdout, /^FAIL\n/);
    });
  }

  test('gen-signing-key writes a 0600 PEM and never overwrites an existing key', async () => {
    const file = path.join(dir, 'new-key.pem');
    const first = await run(['gen-signing-key', file]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    const again = await run(['gen-signing-key', file]);
    assert.equal(again.code, 1);
    assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
  });
});
