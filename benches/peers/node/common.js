'use strict';
// Shared start-up helpers for the Node peer echo servers (benchmark comparison only).

const fs = require('fs');
const path = require('path');

const DEFAULT_PORT = 9001;
const MAX_PAYLOAD = 16 * 1024 * 1024;

function parsePort(name) {
  const usage = () => {
    console.error(`usage: node ${name} [--port N]   (listens on 127.0.0.1:N, default ${DEFAULT_PORT})`);
    process.exit(2);
  };
  let port = DEFAULT_PORT;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    let value;
    if (args[i] === '--port' || args[i] === '-p') value = args[++i];
    else if (args[i].startsWith('--port=')) value = args[i].slice('--port='.length);
    else usage();
    if (value === undefined || !/^\d+$/.test(value) || Number(value) > 65535) usage();
    port = Number(value);
  }
  return port;
}

// Node itself raises the RLIMIT_NOFILE soft limit to the hard limit at start-up
// (POSIX platform init); this reports the limit in force and warns when it
// cannot hold 10 000 connections (then raise the hard limit: `ulimit -Hn`).
function checkFdLimit(name) {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line && line.trim().split(/\s+/)[3];
    if (soft && soft !== 'unlimited' && Number(soft) < 10240) {
      console.error(`${name}: warning: open-files soft limit is ${soft}; the hard limit is too low for 10 000 connections`);
    }
    return soft;
  } catch {
    return undefined;
  }
}

// uWebSockets.js comes from @trufflesuite/uws-js-unofficial, which ships native
// binaries for Node ABIs 93/108/115 (Node 16/18/20). Its package entry point
// silently falls back to a slow pure-JS implementation when the native binary
// does not load, so this loads the native binary directly and exits if it
// cannot. Returns the module and the binary's file name.
function loadUws(name) {
  const pkgDir = path.dirname(require.resolve('uWebSockets.js/package.json'));
  const binary = path.join(pkgDir, 'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  try {
    return { uWS: require(binary), native: path.basename(binary) };
  } catch (e) {
    console.error(`${name}: native uWebSockets.js binary not loadable for node ${process.version} (ABI ${process.versions.modules}): ${e.message}`);
    console.error(`${name}: use Node 20 (ABI 115), 18 (108) or 16 (93); scripts/peers/build.sh provisions Node 20`);
    process.exit(1);
  }
}

module.exports = { DEFAULT_PORT, MAX_PAYLOAD, parsePort, checkFdLimit, loadUws };
