// Drives the echo example's page in headless Chromium: check that permessage-deflate was
// negotiated, type messages (short ones, and 12 KiB) and see their echoes, send 1 MiB and get
// it back identical, close cleanly; the page's WebSocket is wss:// when the page is https://.
// Usage: [CHROMIUM_ARGS=...] node echo-check.js URL SCREENSHOT
const { launch, sockets } = require('./chromium');
const [url, screenshot] = process.argv.slice(2);
(async () => {
  const browser = await launch();
  const page = await browser.newPage();
  const opened = sockets(page);
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('status').textContent === 'open', null, { timeout: 10000 });
  const extensions = await page.textContent('#ext');
  console.log('websocket:', opened.check(url).join(' '));
  console.log('negotiated:', extensions);
  if (!extensions.includes('permessage-deflate')) {
    throw new Error(`permessage-deflate not negotiated: '${extensions}'`);
  }
  await page.fill('#text', 'hello from chromium — κόσμε');
  await page.press('#text', 'Enter');
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('echo: hello from chromium — κόσμε'), null, { timeout: 10000 });
  // Long enough to be compressed both ways, three times: with context takeover, the repeats
  // are back references into the previous messages.
  for (let i = 1; i <= 3; i++) {
    const text = `round ${i}: {"symbol":"XYZ","price":101.25,"qty":300,"side":"buy","venue":"test"} — κόσμε`;
    await page.fill('#text', text);
    await page.press('#text', 'Enter');
    await page.waitForFunction(t => document.getElementById('log').textContent.includes('echo: ' + t), text, { timeout: 10000 });
  }
  // 12 KiB of text (over 8 KiB): without context, the server compresses it in one libdeflate
  // call, whose stream ends with a final block (RFC 7692 section 7.2.3.4): Chromium must read it.
  const long = 'long: ' + Array.from({ length: 600 }, (_, i) => `{"id":${i},"ok":true}`).join(',');
  await page.fill('#text', long);
  await page.press('#text', 'Enter');
  await page.waitForFunction(t => document.getElementById('log').textContent.includes('echo: ' + t), long, { timeout: 10000 });
  await page.click('#big');
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('1048576 bytes of binary in'), null, { timeout: 20000 });
  const bigLine = await page.evaluate(() => [...document.querySelectorAll('#log div')].map(d => d.textContent).find(t => t.includes('1048576 bytes of binary in')));
  await page.click('#close');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('closed'), null, { timeout: 10000 });
  const status = await page.textContent('#status');
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log('big:', bigLine);
  console.log('status:', status);
  if (!bigLine.endsWith('identical') || status !== 'closed (1000, clean)') {
    throw new Error(`unexpected page state: ${bigLine} / ${status}`);
  }
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
