'use strict';
// Smoke client for the peer echo servers: node smoke-client.js --url ws://127.0.0.1:PORT/path [--idle N]
// Checks echoes of text, binary, a fragmented text message, 1 MiB text and
// binary, a 16 MiB binary message, ping -> pong, no permessage-deflate, then opens N concurrent idle
// connections and checks none is refused and the server still echoes, then a
// clean close. Exits 0 on success, 1 on failure. Bounded by a 120 s timeout.

const crypto = require('crypto');
const WebSocket = require('ws');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}
const url = arg('--url');
const idle = Number(arg('--idle', '2000'));
const concurrency = 200;
if (!url) {
  console.error('usage: node smoke-client.js --url ws://127.0.0.1:PORT/path [--idle N]');
  process.exit(2);
}

const deadline = setTimeout(() => fail('timed out after 120 s'), 120_000);
function fail(msg) {
  console.error(`FAIL ${url}: ${msg}`);
  process.exit(1);
}
function ok(msg) {
  console.log(`  ok  ${msg}`);
}

function open(u) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(u, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, handshakeTimeout: 30_000 });
    ws.once('open', () => { ws.removeAllListeners('error'); ws.on('error', () => {}); resolve(ws); });
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

// Receives messages in order; next() resolves with {data, isBinary}.
function receiver(ws) {
  const queue = [];
  const waiting = [];
  let closed = null;
  ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    if (waiting.length) waiting.shift().resolve(m); else queue.push(m);
  });
  ws.on('close', (code) => {
    closed = code;
    while (waiting.length) waiting.shift().reject(new Error(`connection closed (${code}) while waiting for an echo`));
  });
  return {
    next() {
      if (queue.length) return Promise.resolve(queue.shift());
      if (closed !== null) return Promise.reject(new Error(`connection closed (${closed})`));
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
  };
}

async function expectEcho(rx, label, payload, isBinary) {
  const m = await rx.next();
  if (m.isBinary !== isBinary) fail(`${label}: echoed as ${m.isBinary ? 'binary' : 'text'}, sent as ${isBinary ? 'binary' : 'text'}`);
  const want = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  if (!Buffer.from(m.data).equals(want)) fail(`${label}: echo differs (got ${m.data.length} bytes, want ${want.length})`);
  ok(`${label} (${want.length} bytes, ${isBinary ? 'binary' : 'text'})`);
}

async function main() {
  const ws = await open(url);
  const rx = receiver(ws);

  const text = 'hello, échos ✓ 🚀';
  ws.send(text);
  await expectEcho(rx, 'text', text, false);

  const bin = crypto.randomBytes(1000);
  ws.send(bin);
  await expectEcho(rx, 'binary', bin, true);

  const empty = Buffer.alloc(0);
  ws.send(empty, { binary: true });
  await expectEcho(rx, 'empty binary', empty, true);

  // Fragmented text: three frames, echoed as one whole message.
  ws.send('frag-one ', { fin: false });
  ws.send('frag-two ', { fin: false });
  ws.send('frag-three', { fin: true });
  await expectEcho(rx, 'fragmented text', 'frag-one frag-two frag-three', false);

  const mibText = 'x'.repeat(1024 * 1024 - 3) + '✓';
  ws.send(mibText);
  await expectEcho(rx, '1 MiB text', mibText, false);

  const mib = crypto.randomBytes(1024 * 1024);
  ws.send(mib);
  await expectEcho(rx, '1 MiB binary', mib, true);

  const big = crypto.randomBytes(16 * 1024 * 1024);
  ws.send(big);
  await expectEcho(rx, '16 MiB binary', big, true);

  // Interleaving: text and binary back to back keep order and type.
  ws.send('a'); ws.send(Buffer.from([1, 2, 3])); ws.send('b');
  await expectEcho(rx, 'interleaved text', 'a', false);
  await expectEcho(rx, 'interleaved binary', Buffer.from([1, 2, 3]), true);
  await expectEcho(rx, 'interleaved text', 'b', false);

  const pingData = Buffer.from('ping-payload');
  const pong = new Promise((resolve) => ws.once('pong', resolve));
  ws.ping(pingData);
  const got = await Promise.race([pong, new Promise((r) => setTimeout(() => r(null), 5000))]);
  if (!got || !Buffer.from(got).equals(pingData)) fail('ping: no pong with the ping payload within 5 s');
  ok('ping -> pong');

  // No compression: an offer of permessage-deflate must be declined.
  const offer = new WebSocket(url, { perMessageDeflate: true });
  const ext = await new Promise((resolve, reject) => {
    offer.once('open', () => resolve(offer.extensions));
    offer.once('error', reject);
  });
  if (ext !== '') fail(`compression: server accepted extensions "${ext}"`);
  offer.terminate();
  ok('permessage-deflate offer declined');

  // Idle connections.
  const idleSockets = [];
  let failures = 0;
  let firstError = null;
  const t0 = Date.now();
  let next = 0;
  async function worker() {
    while (next < idle) {
      const i = next++;
      try {
        idleSockets.push(await open(`${url}${url.includes('?') ? '&' : '?'}idle=${i}`));
      } catch (e) {
        failures++;
        if (!firstError) firstError = e;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, idle) }, worker));
  if (failures) fail(`${failures} of ${idle} idle connections failed (first: ${firstError.message})`);
  ok(`${idle} concurrent idle connections open (${Date.now() - t0} ms)`);
  await new Promise((r) => setTimeout(r, 500));
  const dropped = idleSockets.filter((s) => s.readyState !== WebSocket.OPEN).length;
  if (dropped) fail(`${dropped} idle connections were closed by the server`);
  ws.send('still here');
  await expectEcho(rx, 'echo with idle connections held', 'still here', false);
  if (idleSockets.length) {
    const last = idleSockets[idleSockets.length - 1];
    const lrx = receiver(last);
    last.send(Buffer.from('last'));
    await expectEcho(lrx, 'echo on the last idle connection', Buffer.from('last'), true);
  }
  for (const s of idleSockets) s.terminate();

  // Close handshake.
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  ws.close(1000, 'bye');
  const code = await Promise.race([closed, new Promise((r) => setTimeout(() => r(null), 5000))]);
  if (code !== 1000) fail(`close: got ${code === null ? 'no close within 5 s' : code}, want 1000`);
  ok('close 1000');

  clearTimeout(deadline);
  console.log(`PASS ${url}`);
  process.exit(0);
}

main().catch((e) => fail(e.stack || String(e)));
