'use strict';
// uWebSockets.js echo server, used only for benchmark comparison with bidir.
// uWebSockets.js comes from @trufflesuite/uws-js-unofficial, which ships native
// binaries for Node ABIs 93/108/115 (Node 16/18/20). Its package entry point
// silently falls back to a slow pure-JS implementation when the native binary
// does not load, so this script loads the native binary directly and exits if
// it cannot. Echoes text and binary preserving the type; pings answered by
// uWS; compression DISABLED; 16 MiB maxPayloadLength; idleTimeout 0 (off);
// 1 GiB maxBackpressure. uSockets sets TCP_NODELAY on accepted sockets.

const path = require('path');
const { MAX_PAYLOAD, parsePort, checkFdLimit } = require('./common');

const NAME = 'uws-echo';
const port = parsePort(NAME);
const nofile = checkFdLimit(NAME);

const pkgDir = path.dirname(require.resolve('uWebSockets.js/package.json'));
const binary = path.join(pkgDir, 'binaries',
  `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
let uWS;
try {
  uWS = require(binary);
} catch (e) {
  console.error(`${NAME}: native uWebSockets.js binary not loadable for node ${process.version} (ABI ${process.versions.modules}): ${e.message}`);
  console.error(`${NAME}: use Node 20 (ABI 115), 18 (108) or 16 (93); scripts/peers/build.sh provisions Node 20`);
  process.exit(1);
}

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
  console.error(`${NAME}: listening on ws://127.0.0.1:${port}/ (any path; node ${process.version}; native ${path.basename(binary)}; nofile ${nofile})`);
});
