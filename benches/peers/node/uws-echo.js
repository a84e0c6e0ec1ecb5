'use strict';
// uWebSockets.js echo server, used only for benchmark comparison with bidir.
// uWebSockets.js is loaded from its native binary (common.js: loadUws). Echoes
// text and binary preserving the type; pings answered by uWS; 16 MiB maxPayloadLength;
// idleTimeout 0 (off); 1 GiB maxBackpressure. uSockets sets TCP_NODELAY on accepted sockets.
//
//   node uws-echo.js [--port N] [--compression off|shared|dedicated]
//
// --compression (permessage-deflate): off (uWS.DISABLED, the default); shared
// (uWS.SHARED_COMPRESSOR: one compressor for all sockets, no context takeover, with uWS's
// shared decompressor); dedicated (uWS.DEDICATED_COMPRESSOR, a 32 KiB sliding window per
// socket, with uWS.DEDICATED_DECOMPRESSOR, 32 KiB per socket). Every echo is sent with
// compress = true when compression is on.

const { MAX_PAYLOAD, parsePort, checkFdLimit, loadUws } = require('./common');

const NAME = 'uws-echo';
const args = process.argv.slice(2);
let mode = 'off';
const at = args.indexOf('--compression');
if (at >= 0) {
  mode = args[at + 1];
  args.splice(at, 2);
  process.argv.splice(2, process.argv.length - 2, ...args);
}
const port = parsePort(NAME);
const nofile = checkFdLimit(NAME);
const { uWS, native } = loadUws(NAME);
const COMPRESSION = {
  off: uWS.DISABLED,
  shared: uWS.SHARED_COMPRESSOR | uWS.SHARED_DECOMPRESSOR,
  dedicated: uWS.DEDICATED_COMPRESSOR | uWS.DEDICATED_DECOMPRESSOR,
}[mode];
const COMPRESS = mode !== 'off';
if (COMPRESSION === undefined) {
  console.error(`${NAME}: --compression must be off, shared or dedicated, not ${mode}`);
  process.exit(2);
}

const app = uWS.App().ws('/*', {
  compression: COMPRESSION,
  maxPayloadLength: MAX_PAYLOAD,
  idleTimeout: 0,
  maxBackpressure: 1024 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  sendPingsAutomatically: false,
  message: (ws, message, isBinary) => {
    // uWS compresses a send only when asked (its third argument), where negotiated.
    ws.send(message, isBinary, COMPRESS);
  },
});

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`${NAME}: failed to listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`${NAME}: listening on ws://127.0.0.1:${port}/ (any path; compression ${mode}; node ${process.version}; native ${native}; nofile ${nofile})`);
});
