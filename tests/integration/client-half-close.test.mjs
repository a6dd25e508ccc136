// A client that half-closes its socket (shutdown(SHUT_WR), Node's socket.end()) once its
// request is sent, which HTTP/1.1 allows, still gets its whole answer, JSON or SSE, also
// when the answer takes a while (the gateway's "is the client still there?" probe runs
// then). After the answer the gateway reads EOF and closes the connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startStack, stopAll, chatBody, ROUTE_GPT } from './harness.mjs';

let s;
before(async () => { s = await startStack(); });
after(stopAll);

// Sends one chat request on a raw socket, half-closes, and collects everything the gateway
// writes until it closes its side. Resolves { head, body, raw, ended }.
function halfClosedExchange(body, { timeoutMs = 15_000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(s.gw.port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within ${timeoutMs} ms; got:\n${Buffer.concat(chunks).toString()}`));
    }, timeoutMs);
    socket.on('connect', () => {
      const json = JSON.stringify(body);
      socket.write(
        'POST /v1/chat/completions HTTP/1.1\r\n' +
        `Host: 127.0.0.1:${s.gw.port}\r\n` +
        `Authorization: Bearer ${s.key}\r\n` +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(json)}\r\n\r\n` + json);
      socket.end(); // FIN after the request: we send nothing more, we still read
    });
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.on('end', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString();
      const at = raw.indexOf('\r\n\r\n');
      resolve({ raw, head: at < 0 ? raw : raw.slice(0, at), body: at < 0 ? '' : raw.slice(at + 4), ended: true });
    });
  });
}

function dechunk(body) {
  let out = '';
  let rest = body;
  for (;;) {
    const eol = rest.indexOf('\r\n');
    assert.ok(eol >= 0, `a chunk size line in ${JSON.stringify(rest.slice(0, 200))}`);
    const size = parseInt(rest.slice(0, eol), 16);
    if (size === 0) return { out, terminated: rest.slice(eol + 2).startsWith('\r\n') };
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

describe('client half-close after the request', { timeout: 60_000 }, () => {
  for (const delay of [0, 400]) {
    test(`JSON answer (upstream delay ${delay} ms) arrives whole, then the gateway closes`, async () => {
      const extra = delay ? { fake: { delay_ms: delay } } : {};
      const { head, body } = await halfClosedExchange(chatBody(ROUTE_GPT, extra));
      assert.match(head, /^HTTP\/1\.1 200 /, head);
      const json = JSON.parse(body);
      assert.equal(json.object, 'chat.completion');
      assert.equal(json.choices[0].message.content, s.content);
    });

    test(`SSE stream (upstream delay ${delay} ms) arrives whole up to [DONE], then the gateway closes`, async () => {
      const extra = delay ? { fake: { delay_ms: delay } } : {};
      const { head, body } = await halfClosedExchange(chatBody(ROUTE_GPT, { stream: true, ...extra }));
      assert.match(head, /^HTTP\/1\.1 200 /, head);
      assert.match(head, /text\/event-stream/i);
      const { out, terminated } = dechunk(body);
      assert.ok(terminated, 'the chunked body ends with its last chunk');
      const events = out.split('\n\n').filter((e) => e.startsWith('data: '));
      assert.equal(events.at(-1), 'data: [DONE]');
      const text = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)))
        .map((j) => j.choices?.[0]?.delta?.content ?? '').join('');
      assert.equal(text, s.content);
    });
  }
});
