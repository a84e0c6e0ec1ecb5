// Drives the chat example's page in headless Chromium: two pages join the room with their
// pseudos (each passing a callback object), each says something, and each must see both
// messages in its log, in the order they were said. Usage: node chat-check.js URL SCREENSHOT
const { chromium } = require('playwright-core');
const [url, screenshot] = process.argv.slice(2);

const timeout = 10000;

async function join(browser, pseudo) {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`[${pseudo}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[${pseudo}] page error: ${e}`));
  await page.goto(url);
  await page.waitForSelector('#pseudo', { state: 'visible', timeout });
  await page.fill('#pseudo', pseudo);
  await page.press('#pseudo', 'Enter');
  await page.waitForSelector('#text', { state: 'visible', timeout });
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** Waits until the page's log shows `lines`, in that order, and returns the log. */
async function sees(page, lines) {
  await page.waitForFunction(
    (lines) => {
      const log = [...document.querySelectorAll('#log .msg')].map((d) => d.textContent);
      let at = 0;
      for (const line of log) if (line === lines[at]) at++;
      return at === lines.length;
    },
    lines,
    { timeout },
  );
  return page.evaluate(() => [...document.querySelectorAll('#log div')].map((d) => d.textContent));
}

(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  const ada = await join(browser, 'ada');
  const bob = await join(browser, 'bob');
  await say(ada, 'hello bob — κόσμε');
  await sees(bob, ['ada: hello bob — κόσμε']);
  await say(bob, 'hi ada');
  const expected = ['ada: hello bob — κόσμε', 'bob: hi ada'];
  const adaLog = await sees(ada, expected);
  const bobLog = await sees(bob, expected);
  console.log('ada sees:', adaLog);
  console.log('bob sees:', bobLog);
  // bob leaves (its callback is released with its connection); ada goes on talking alone.
  await bob.close();
  await say(ada, 'still here');
  await sees(ada, [...expected, 'ada: still here']);
  if (screenshot) await ada.screenshot({ path: screenshot });
  const errors = await ada.evaluate(() => document.querySelectorAll('#log .error').length);
  if (errors) throw new Error(`ada's page shows ${errors} errors`);
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
