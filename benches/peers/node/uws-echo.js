'use strict';
// uWebSockets.js echo server, used only for benchmark comparison with bidir.
// uWebSockets.js is loaded from its native binary (common.js: loadUws). Echoes
// text and binary preserving the type; pings answered by uWS; 16 MiB maxPayloadLength;
// idleTimeout 0 (off); 1 GiB maxBackpressure. uSockets sets TCP_NODELAY on accepted sockets.
//
//   node uws-echo.js [--port N] [--compression off|shared|dedicated] [--tls CERT.pem KEY.pem]
//
// --compression (permessage-deflate): off (uWS.DISABLED, the default); shared
// (uWS.SHARED_COMPRESSOR: one compressor for all sockets, no context takeover, with uWS's
// shared decompressor); dedicated (uWS.DEDICATED_COMPRESSOR, a 32 KiB sliding window per
// socket, with uWS.DEDICATED_DECOMPRESSOR, 32 KiB per socket). Every echo is sent with
// compress = true when compression is on. --tls serves wss:// with uWS.SSLApp (uSockets over
// its bundled BoringSSL) from the PEM certificate chain and key.

const { MAX_PAYLOAD, parsePort, checkFdLimit, loadUws } = require('./common');

const NAME = 'uws-echo';
const args = process.argv.slice(2);
// Takes `flag` and its `count` values out of the arguments (parsePort reads the rest).
function take(flag, count) {
  const at = args.indexOf(flag);
  if (at < 0) return undefined;
  const values = args.slice(at + 1, at + 1 + count);
  if (values.length < count) {
    console.error(`${NAME}: ${flag} needs ${count} value(s)`);
    process.exit(2);
  }
  args.splice(at, count + 1);
  return values;
}
const mode = (take('--compression', 1) || ['off'])[0];
const tls = take('--tls', 2);
process.argv.splice(2, process.argv.length - 2, ...args);
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

const app = (tls ? uWS.SSLApp({ cert_file_name: tls[0], key_file_name: tls[1] }) : uWS.App()).ws('/*', {
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
  const scheme = tls ? 'wss' : 'ws';
  console.error(`${NAME}: listening on ${scheme}://127.0.0.1:${port}/ (any path; compression ${mode}; node ${process.version}; native ${native}; nofile ${nofile})`);
});
