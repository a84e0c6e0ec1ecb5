// Drives the chat example's page in headless Chromium: two pages and a Rust client (the
// example's `chat client`, on its stdin and stdout) join the room with their pseudos (each
// passing a callback object), each says something, and each must see every message in its
// log, in the order they were said. The pages' WebSockets are wss:// when the page is
// https://; the Rust client then connects to wss:// too, trusting CERT.pem. With SECOND_URL,
// bob's page and the Rust client join the room there (another node of the same room, over
// Redis) while ada stays at URL. Usage:
// [CHROMIUM_ARGS=...] [SECOND_URL=...] node chat-check.js URL SCREENSHOT CHAT_BINARY [CERT.pem]
const { spawn } = require('child_process');
const { launch, sockets } = require('./chromium');
const [url, screenshot, chatBinary, cert] = process.argv.slice(2);
const secondUrl = process.env.SECOND_URL || url;

const timeout = 10000;

async function join(browser, pseudo, at) {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`[${pseudo}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[${pseudo}] page error: ${e}`));
  const opened = sockets(page);
  await page.goto(at);
  await page.waitForSelector('#pseudo', { state: 'visible', timeout });
  console.log(`[${pseudo}] websocket: ${opened.check(at).join(' ')}`);
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

/** The Rust client as a member: `say(line)`, `sees(lines)` on what it printed. */
function rustMember(pseudo) {
  const rpcUrl = secondUrl.replace(/^http/, 'ws').replace(/\/$/, '') + '/rpc';
  const trust = cert ? ['--trust', cert] : [];
  const child = spawn(chatBinary, ['client', '--url', rpcUrl, '--pseudo', pseudo, ...trust],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  // It says on stderr when it has joined.
  const joined = new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (d) => { err += d; if (err.includes('joined')) resolve(); });
    child.on('exit', (code) => reject(new Error(`chat client exited ${code}: ${err}`)));
    // Unreferenced: a pending timer would keep node running for its whole length at the end.
    setTimeout(() => reject(new Error(`chat client did not join: ${err}`)), timeout).unref();
  });
  const lines = () => out.split('\n').filter((l) => l);
  return {
    child,
    joined,
    say: (text) => child.stdin.write(text + '\n'),
    sees: async (expected) => {
      const deadline = Date.now() + timeout;
      for (;;) {
        let at = 0;
        for (const line of lines()) if (line === expected[at]) at++;
        if (at === expected.length) return lines();
        if (Date.now() > deadline) throw new Error(`${pseudo} saw ${JSON.stringify(lines())}, not ${JSON.stringify(expected)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

(async () => {
  const browser = await launch();
  const ada = await join(browser, 'ada', url);
  const bob = await join(browser, 'bob', secondUrl);
  const rust = rustMember('rusty');
  await rust.joined;
  await say(ada, 'hello bob — κόσμε');
  await sees(bob, ['ada: hello bob — κόσμε']);
  await rust.sees(['ada: hello bob — κόσμε']);
  await say(bob, 'hi ada');
  rust.say('hi pages, from a terminal');
  // Bob's and the terminal's messages race: each member sees each in order with ada's.
  const expected = ['ada: hello bob — κόσμε', 'bob: hi ada'];
  const fromRust = ['ada: hello bob — κόσμε', 'rusty: hi pages, from a terminal'];
  for (const page of [ada, bob]) await sees(page, fromRust);
  await rust.sees(fromRust);
  const adaLog = await sees(ada, expected);
  const bobLog = await sees(bob, expected);
  const rustLog = await rust.sees(expected);
  console.log('ada sees:', adaLog);
  console.log('bob sees:', bobLog);
  console.log('rusty sees:', rustLog);
  rust.child.stdin.end();
  await new Promise((resolve, reject) => {
    rust.child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`chat client exited ${code}`))));
  });
  // bob leaves (its callback is released with its connection); ada goes on talking alone.
  await bob.close();
  await say(ada, 'still here');
  await sees(ada, [...expected, 'ada: still here']);
  if (screenshot) await ada.screenshot({ path: screenshot });
  const errors = await ada.evaluate(() => document.querySelectorAll('#log .error').length);
  if (errors) throw new Error(`ada's page shows ${errors} errors`);
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
