'use strict';
// uWebSockets.js echo server, used only for benchmark comparison with bidir.
// uWebSockets.js is loaded from its native binary (common.js: loadUws). Echoes
// text and binary preserving the type; pings answered by uWS; compression
// DISABLED; 16 MiB maxPayloadLength; idleTimeout 0 (off); 1 GiB maxBackpressure. uSockets sets TCP_NODELAY on accepted sockets.

const { MAX_PAYLOAD, parsePort, checkFdLimit, loadUws } = require('./common');

const NAME = 'uws-echo';
const port = parsePort(NAME);
const nofile = checkFdLimit(NAME);
const { uWS, native } = loadUws(NAME);

const app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_PAYLOAD,
  idleTimeout: 0,
  maxBackpressure: 1024 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  sendPingsAutomatically: false,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`${NAME}: failed to listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`${NAME}: listening on ws://127.0.0.1:${port}/ (any path; node ${process.version}; native ${native}; nofile ${nofile})`);
});
