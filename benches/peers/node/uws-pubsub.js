'use strict';
// uWebSockets.js pub/sub server, used only for benchmark comparison with bidir
// (the fanout cell: one event to every subscriber). A connection to /sub is
// subscribed to the topic 'bench' on open; each message a connection to /pub
// sends is published as-is to every subscriber with app.publish (uWS encodes
// the frame once and queues it to each subscriber, flushing at the end of the
// loop iteration). Same settings as uws-echo.js: uWebSockets.js loaded from its
// native binary (common.js: loadUws), compression DISABLED, 16 MiB
// maxPayloadLength, idleTimeout 0 (off), 1 GiB maxBackpressure, no automatic
// pings. Other paths get a 404 on upgrade.

const { MAX_PAYLOAD, parsePort, checkFdLimit, loadUws } = require('./common');

const NAME = 'uws-pubsub';
const TOPIC = 'bench';
const port = parsePort(NAME);
const nofile = checkFdLimit(NAME);
const { uWS, native } = loadUws(NAME);

const settings = {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_PAYLOAD,
  idleTimeout: 0,
  maxBackpressure: 1024 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  sendPingsAutomatically: false,
};

const app = uWS.App()
  .ws('/sub', {
    ...settings,
    open: (ws) => {
      ws.subscribe(TOPIC);
    },
  })
  .ws('/pub', {
    ...settings,
    message: (ws, message, isBinary) => {
      app.publish(TOPIC, message, isBinary);
    },
  })
  .any('/*', (res) => {
    res.writeStatus('404 Not Found').end('no such path: /sub and /pub serve WebSocket upgrades\n');
  });

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`${NAME}: failed to listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`${NAME}: subscribers on ws://127.0.0.1:${port}/sub, publisher on /pub (node ${process.version}; native ${native}; nofile ${nofile})`);
});
