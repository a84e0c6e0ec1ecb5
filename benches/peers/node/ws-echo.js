'use strict';
// `ws` (Node) echo server, used only for benchmark comparison with bidir.
// Echoes text and binary messages preserving the type; pings are answered by
// ws (autoPong); no permessage-deflate; 16 MiB maxPayload. ws sets TCP_NODELAY
// on every upgraded socket.

const { WebSocketServer } = require('ws');
const { MAX_PAYLOAD, parsePort, checkFdLimit } = require('./common');

const NAME = 'ws-echo';
const port = parsePort(NAME);
const nofile = checkFdLimit(NAME);

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 4096,
  maxPayload: MAX_PAYLOAD,
  perMessageDeflate: false,
  clientTracking: false,
  // any path is accepted (no `path` option)
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  // Which masking code ws picked (see ws/lib/buffer-util.js): bufferutil is
  // installed (an optional dependency of the uWebSockets.js package, prebuilt).
  let mask = 'js';
  if (require('http').websocketMask) mask = 'node:http';
  else if (!process.env.WS_NO_BUFFER_UTIL) {
    try { require('bufferutil'); mask = 'bufferutil'; } catch {}
  }
  console.error(`${NAME}: listening on ws://127.0.0.1:${port}/ (any path; node ${process.version}; ws ${require('ws/package.json').version}; masking via ${mask}; nofile ${nofile})`);
});

wss.on('error', (e) => {
  console.error(`${NAME}: ${e.message}`);
  process.exit(1);
});
