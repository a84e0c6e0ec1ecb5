// What the browser checks share: Chromium launched headless, and the schemes of the WebSockets
// a page opens checked against the page's own.
const { chromium } = require('playwright-core');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Launches /usr/bin/chromium headless, with the arguments in CHROMIUM_ARGS (separated by
 * spaces) besides: check.sh's https runs pass `--ignore-certificate-errors-spki-list=HASH`
 * there, which trusts the test certificate's key and no other.
 */
function launch() {
  const extra = (process.env.CHROMIUM_ARGS || '').split(/\s+/).filter((a) => a);
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: [...ARGS, ...extra] });
}

/**
 * Records the URL of every WebSocket `page` opens from now on. The returned `check(pageUrl)`
 * throws unless the page opened one at least and each with the page's security: wss: from an
 * https: page, ws: from an http: one. It returns the URLs.
 */
function sockets(page) {
  const urls = [];
  page.on('websocket', (ws) => urls.push(ws.url()));
  return {
    check(pageUrl) {
      const want = new URL(pageUrl).protocol === 'https:' ? 'wss:' : 'ws:';
      if (!urls.length || urls.some((u) => new URL(u).protocol !== want)) {
        throw new Error(`a page at ${pageUrl} must open ${want}// WebSockets; it opened ${JSON.stringify(urls)}`);
      }
      return urls;
    },
  };
}

module.exports = { launch, sockets };
