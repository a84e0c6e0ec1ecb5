// Drives the browser module (/bidir.js) in headless Chromium against the test services of
// tests/browser.rs, which starts the server and runs this script: call results, error codes,
// service proxies, batches both ways, callbacks with and without answers, releases both ways,
// a timeout (and its cancel), events, and reconnection after the server closes the connection
// (in-flight calls fail with `disconnected`; the topic is subscribed again and the call that
// passed a live callback replayed). Usage: node rpc-check.js URL
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');
const [url] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`[page] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[page] error: ${e}`));
  // Every WebSocket frame, both ways, to see batches on the wire.
  const sent = [];
  const received = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => sent.push(String(f.payload)));
    ws.on('framereceived', (f) => received.push(String(f.payload)));
  });
  await page.goto(url);
  await page.evaluate(async () => {
    window.bidir = await import('/bidir.js');
    // A settled promise as a plain value: {ok} or the error's fields.
    window.settle = (p) => p.then(
      (ok) => ({ ok }),
      (e) => ({ name: e.name, code: e.code, message: e.message, data: e.data }),
    );
    window.waitFor = async (what, f, ms = 5000) => {
      for (const end = performance.now() + ms; !f(); await new Promise((r) => setTimeout(r, 10))) {
        if (performance.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
      }
    };
  });
  const check = async (name, fn, verify) => {
    verify(await page.evaluate(fn));
    console.log(`ok - ${name}`);
  };

  await check('connect and call', async () => {
    window.states = [];
    window.rpc = await bidir.connect('/rpc', { onstate: (s) => states.push(s) });
    return { sum: await rpc.call('Test.add', 2, 3), state: rpc.state,
             refused: await settle(bidir.connect('/nowhere', { reconnect: false })) };
  }, (got) => {
    assert.equal(got.sum, 5);
    assert.equal(got.state, 'open');
    assert.equal(got.refused.code, 'disconnected');
  });

  await check('error codes', async () => Promise.all([
    settle(rpc.call('Test.full')), settle(rpc.call('Test.nope')), settle(rpc.call('Nope.x')),
    settle(rpc.call('Test.add', 'two', 3)), settle(rpc.call('Test.boom')),
  ]), ([full, method, service, args, boom]) => {
    assert.deepEqual(full, { name: 'RpcError', code: 'service', message: 'room is full (8 members)',
                             data: { max: 8 } });
    assert.equal(method.code, 'unknown_method');
    assert.equal(service.code, 'unknown_service');
    assert.equal(args.code, 'bad_args');
    assert.equal(boom.code, 'internal');
  });

  await check('service proxies: described, undescribed, by the server', async () => {
    const server = await (await rpc.service('Test')).add(20, 22);
    const other = await bidir.connect('/rpc');
    other.describe = async () => ({
      services: [{ name: 'Test', methods: [{ name: 'add', params: ['a', 'b'] },
                                            { name: 'then', params: [] }] }],
      callbacks: [],
    });
    const described = await other.service('Test');
    const got = { server, keys: Object.keys(described), sum: await described.add(1, 2),
                  missing: await settle(other.service('Nope')) };
    other.describe = async () => null;
    const untyped = await other.service('Test');
    Object.assign(got, { then: typeof untyped.then, untyped: await untyped.add(2, 2) });
    other.close();
    return got;
  }, (got) => {
    assert.equal(got.server, 42);
    assert.deepEqual(got.keys, ['add']);
    assert.equal(got.sum, 3);
    assert.equal(got.missing.code, 'unknown_service');
    assert.equal(got.then, 'undefined');
    assert.equal(got.untyped, 4);
  });

  await check('batches both ways', async () => {
    const sums = await Promise.all([1, 2, 3].map((n) => rpc.call('Test.add', n, n)));
    const ticks = [];
    const counter = { tick(n) { ticks.push(n); } };
    const n = await rpc.call('Test.burst', counter, 3);
    // Invocations go out on the worker's next turn: after the answer.
    await waitFor('the ticks', () => ticks.length === 3);
    return { sums, n, ticks };
  }, (got) => {
    assert.deepEqual(got.sums, [2, 4, 6]);
    assert.equal(got.n, 3);
    assert.deepEqual(got.ticks, [0, 1, 2]);
    assert.ok(sent.some((f) => f.startsWith('[["call",') && f.split('"Test.add"').length === 4),
      `no batch of three calls sent: ${sent}`);
    assert.ok(received.some((f) => f.startsWith('[["cb",') && f.split('"tick"').length === 4),
      `no batch of three invocations received: ${received}`);
  });

  await check('released by the server when it lets go, by the page with release', async () => {
    const kept = { tick() {} };
    const dropped = { tick() {} };
    await rpc.call('Test.drop', dropped);
    await waitFor('the release', () => !rpc.isLive(dropped));
    const [before] = await rpc.call('Test.registrations');
    await rpc.call('Test.register', kept);
    const live = rpc.isLive(kept);
    const released = rpc.release(kept);
    const again = rpc.release(kept);
    return { before, live, released, again, after: await rpc.call('Test.registrations') };
  }, (got) => {
    assert.equal(got.before, 0);
    assert.equal(got.live, true);
    assert.equal(got.released, true);
    assert.equal(got.again, false);
    assert.deepEqual(got.after, [1, 0]); // one registration, released: the hook ran
  });

  await check('callbacks that answer', async () => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const ask = (callback) => settle(rpc.call('Test.ask', callback, 'four'));
    return Promise.all([
      ask({ confirm(q) { return `${q}?`; } }),
      ask({ async confirm(q) { await sleep(20); return { len: q.length }; } }),
      ask({ confirm() { throw new bidir.RpcError('unauthorized', 'no', { why: 'test' }); } }),
      ask({ confirm() { throw new TypeError('oops'); } }),
      ask({ other() {} }),
      ask({ confirm() {} }),
    ]);
  }, ([sync, later, refused, crashed, missing, nothing]) => {
    assert.deepEqual(sync, { ok: 'four?' });
    assert.deepEqual(later, { ok: { len: 4 } });
    assert.equal(refused.message, 'unauthorized: no: {"why":"test"}');
    assert.equal(crashed.message, 'internal: oops: ');
    assert.match(missing.message, /^unknown_method: callback \d+ has no method confirm: $/);
    assert.deepEqual(nothing, { ok: null });
  });

  await check('a timeout rejects and cancels', async () => {
    const quick = await bidir.connect('/rpc', { timeout: 300 });
    const start = performance.now();
    const never = await settle(quick.call('Test.never', 'quick'));
    const elapsed = performance.now() - start;
    const cancelled = await quick.call('Test.cancelled', 'quick');
    quick.close();
    return { never, elapsed, cancelled, state: quick.state,
             after: await settle(quick.call('Test.add', 1, 1)) };
  }, (got) => {
    assert.equal(got.never.code, 'timeout');
    assert.ok(got.elapsed >= 290 && got.elapsed < 5000, `timed out after ${got.elapsed} ms`);
    assert.equal(got.cancelled, true);
    assert.equal(got.state, 'closed');
    assert.equal(got.after.code, 'disconnected');
  });

  await check('subscribe (and a refusal), events, publish, unsubscribe', async () => {
    window.events = [];
    window.others = [];
    await rpc.subscribe('news', (data, topic) => events.push([topic, data]));
    const subscribers = await rpc.call('Test.publish', 'news', { n: 1 });
    await waitFor('the news', () => events.length === 1);
    rpc.publish('news', { from: 'page' }); // not allowed by these services: dropped
    const staff = await settle(rpc.subscribe('staff', () => {}));
    const staffAfter = await rpc.unsubscribe('staff'); // the refused listener was forgotten
    const mine = [];
    await rpc.subscribe('open', (data) => mine.push(data));
    rpc.publish('open', { from: 'page' }); // allowed: the page sees its own event
    await waitFor('its own event', () => mine.length === 1);
    const was = await rpc.unsubscribe('news');
    const again = await rpc.unsubscribe('news');
    await rpc.subscribe('other', (data) => others.push(data));
    const after = await rpc.call('Test.publish', 'news', { n: 2 });
    await rpc.call('Test.publish', 'other', { n: 3 });
    // Published after the news on the same worker: the news would have come first.
    await waitFor('the other event', () => others.length === 1);
    return { subscribers, events, staff, staffAfter, mine, was, again, after, others };
  }, (got) => {
    assert.equal(got.subscribers, 1);
    assert.deepEqual(got.events, [['news', { n: 1 }]]);
    assert.equal(got.staff.code, 'unauthorized');
    assert.equal(got.staff.message, 'not a member of staff');
    assert.equal(got.staffAfter, false);
    assert.deepEqual(got.mine, [{ from: 'page' }]);
    assert.equal(got.was, true);
    assert.equal(got.again, false);
    assert.equal(got.after, 0);
    assert.deepEqual(got.others, [{ n: 3 }]);
  });

  await check('reconnection: in-flight calls fail, topics and callbacks come back', async () => {
    const ticks = [];
    window.member = { tick(n) { ticks.push(n); } };
    const registered = await rpc.call('Test.register', member);
    const held = settle(rpc.call('Test.never', 'held'));
    const closed = await settle(rpc.call('Test.close'));
    const inFlight = await held;
    await waitFor('the reconnection', () => rpc.state === 'open');
    // The replayed registration was sent before this call, on the new connection.
    const registrations = await rpc.call('Test.registrations');
    const ticked = await rpc.call('Test.tick', 7);
    await waitFor('the tick', () => ticks.length === 1);
    const subscribers = await rpc.call('Test.publish', 'other', { n: 4 });
    await waitFor('the event', () => others.length === 2);
    return { registered, closed, inFlight, states, registrations, ticked, ticks, subscribers,
             others, live: rpc.isLive(member) };
  }, (got) => {
    assert.equal(got.registered, 2);
    assert.equal(got.closed.code, 'disconnected');
    assert.equal(got.closed.data.code, 1012);
    assert.equal(got.inFlight.code, 'disconnected');
    assert.deepEqual(got.states, ['open', 'reconnecting', 'open']);
    assert.deepEqual(got.registrations, [3, 1]); // the old one released with its connection
    assert.equal(got.ticked, 1);
    assert.deepEqual(got.ticks, [7]);
    assert.equal(got.subscribers, 1);
    assert.deepEqual(got.others, [{ n: 3 }, { n: 4 }]);
    assert.equal(got.live, true);
    // Subscribed again and replayed in one batch, the subscription first.
    const again = /^\[\["sub",\d+,"open"\],\["sub",\d+,"other"\],\["call",\d+,"Test.register",/;
    assert.ok(sent.some((f) => again.test(f)),
      `no batch of the re-subscription and the replay: ${sent}`);
  });

  await check('close', async () => {
    rpc.close();
    return { state: rpc.state, after: await settle(rpc.call('Test.add', 1, 1)), states };
  }, (got) => {
    assert.equal(got.state, 'closed');
    assert.equal(got.after.code, 'disconnected');
    assert.deepEqual(got.states, ['open', 'reconnecting', 'open', 'closed']);
  });
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
