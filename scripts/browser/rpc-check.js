// Drives the browser module (/bidir.js) in headless Chromium against the test services of
// tests/browser.rs, which starts the server and runs this script: call results, error codes,
// service proxies, batches both ways (cut under the server's message limit), callbacks with
// and without answers, releases both ways (also of a proxy the page forgot), a timeout (and its
// cancel), events, and reconnection after the server closes the connection (in-flight calls
// fail with `disconnected`; the topic is subscribed again and the accepted call that passed a
// live callback replayed, not a call that failed; subscriptions cut by the drop settle on the
// next connection, a refusal then goes to onerror), the backoff against a server that closes
// every connection at once, request ids wrapping at 2^53 - 1, a topic's history recovered
// after a reconnection, and close. Usage: node
// rpc-check.js URL
const assert = require('node:assert/strict');
const { launch } = require('./chromium');
const [url] = process.argv.slice(2);

(async () => {
  const browser = await launch();
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
    // Polls `f` (which may be async) until it is true.
    window.waitFor = async (what, f, ms = 5000) => {
      for (const end = performance.now() + ms; !(await f());
        await new Promise((r) => setTimeout(r, 10))) {
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

  await check('batches stay under the server\'s message limit', async () => {
    // 40 calls of 30 000 characters made in one turn: 1.2 MB, over the server's 1 MiB.
    const text = 'x'.repeat(30000);
    const calls = Array.from({ length: 40 }, () => settle(rpc.call('Test.length', text)));
    return { lengths: await Promise.all(calls), states };
  }, (got) => {
    assert.deepEqual(got.lengths, Array(40).fill({ ok: 30000 }));
    assert.deepEqual(got.states, ['open']); // not closed with 1009
    const frames = sent.filter((f) => f.includes('"Test.length"'));
    assert.equal(frames.length, 20, 'two calls a batch');
    assert.ok(frames.every((f) => f.length <= 64 << 10), 'no batch over 64 KiB');
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

  await check('a proxy the page forgot is released when the server invokes it', async () => {
    const ghost = { tick() {} };
    const live = async () => (await rpc.call('Test.registrations'))[1];
    const before = await live();
    // In one batch: the server drops its proxy (and tells the page), then takes the callback
    // again; the page forgets it on that release, and the server holds a proxy of nothing.
    await Promise.all([rpc.call('Test.drop', ghost), rpc.call('Test.register', ghost)]);
    await waitFor('the release', () => !rpc.isLive(ghost));
    const held = await live();
    const ticked = await rpc.call('Test.tick', 8); // the page answers the tick with a release
    await waitFor('the server\'s release hook', async () => await live() === before, 3000);
    return { before, held, ticked };
  }, (got) => {
    assert.equal(got.held, got.before + 1);
    assert.equal(got.ticked, got.before + 1);
  });

  await check('only calls the server accepted are replayed', async () => {
    const quick = await bidir.connect('/rpc', { timeout: 300, reconnect: { min: 50, max: 10000 } });
    const registrations = () => quick.call('Test.registrations');
    const [before, live] = await registrations();
    // Each registers its callback and never answers: one times out, one is cut by the close.
    const timedOut = await settle(quick.call('Test.stall', { tick() {} }));
    const cut = settle(quick.call('Test.stall', { tick() {} }));
    await settle(quick.call('Test.close'));
    await waitFor('the reconnection', () => quick.state === 'open');
    // Replays go first on a new connection: they would have been counted by now.
    const [after] = await registrations();
    // Both were released with the old connection, and not registered again.
    await waitFor('the releases', async () => (await registrations())[1] === live, 3000);
    quick.close();
    return { before, after, timedOut, cut: await cut };
  }, (got) => {
    assert.equal(got.timedOut.code, 'timeout');
    assert.equal(got.cut.code, 'disconnected');
    assert.equal(got.after, got.before + 2);
  });

  await check('subscriptions cut by a drop settle on the next connection', async () => {
    const errors = [];
    const subs = await bidir.connect('/rpc', {
      reconnect: { min: 50, max: 10000 },
      onerror: (e, about) => errors.push({ code: e.code, about }),
    });
    await subs.subscribe('once', () => {}); // accepted this time only
    const late = [];
    // In one batch after the close: the connection ends before their answers.
    const closed = settle(subs.call('Test.close'));
    const accepted = subs.subscribe('late', (data) => late.push(data)).then(() => subs.state);
    const refused = settle(subs.subscribe('staff', () => {}));
    await closed;
    const got = { accepted: await accepted, refused: await refused };
    await waitFor('the refusal of once', () => errors.length === 1);
    await subs.call('Test.publish', 'late', { n: 5 });
    await waitFor('the late event', () => late.length === 1);
    Object.assign(got, { errors, late, once: await subs.unsubscribe('once') });
    subs.close();
    return got;
  }, (got) => {
    assert.equal(got.accepted, 'open'); // resolved on the new connection's `ok`
    assert.equal(got.refused.code, 'unauthorized');
    assert.deepEqual(got.errors, [{ code: 'unauthorized', about: { topic: 'once' } }]);
    assert.deepEqual(got.late, [{ n: 5 }]);
    assert.equal(got.once, false); // forgotten
  });

  await check('a server that closes at once is retried ever later', async () => {
    const tries = [];
    const slam = await bidir.connect('/slam', {
      reconnect: { min: 40, max: 640 },
      onstate: (state, detail) => state === 'reconnecting' && tries.push(detail),
    });
    await waitFor('five tries', () => tries.length >= 5);
    slam.close();
    return tries.slice(0, 5);
  }, (tries) => {
    // Doubled from 40 ms on each (jitter: half to all of it), though each connection opened.
    tries.forEach(({ code, delay }, i) => {
      assert.equal(code, 1013);
      assert.ok(delay >= 20 * 2 ** i && delay <= 40 * 2 ** i, `try ${i}: ${delay} ms`);
    });
  });

  await check('request ids wrap at 2^53 - 1', async () => {
    const wrap = await bidir.connect('/rpc', { firstId: 2 ** 53 - 2 });
    const sums = await Promise.all([1, 2, 3].map((n) => wrap.call('Test.add', n, 0)));
    wrap.close();
    let bad;
    try {
      bidir.connect('/rpc', { firstId: 2 ** 53 });
    } catch (e) {
      bad = e.name;
    }
    return { sums, bad };
  }, (got) => {
    assert.deepEqual(got.sums, [1, 2, 3]);
    assert.equal(got.bad, 'RangeError');
    const ids = '[["call",9007199254740990,"Test.add",[1,0]],'
      + '["call",9007199254740991,"Test.add",[2,0]],["call",0,"Test.add",[3,0]]]';
    assert.ok(sent.includes(ids), 'no batch of ids 2^53 - 2, 2^53 - 1, 0');
  });

  await check('history: events missed while reconnecting come back, in order, once', async () => {
    const got = [];
    const gapped = [];
    const hist = await bidir.connect('/rpc', {
      reconnect: { min: 50, max: 100 },
      ongap: (topic) => gapped.push(topic),
    });
    await hist.subscribe('hist/1', (data) => got.push(data));
    await hist.call('Test.publish', 'hist/1', 0);
    await waitFor('the first event', () => got.length === 1);
    // The server closes, then publishes 1..5 while the page is away.
    const away = await settle(hist.call('Test.away', 'hist/1', 1, 6));
    await waitFor('the reconnection', () => hist.state === 'open');
    await hist.call('Test.publish', 'hist/1', 6);
    await waitFor('every event', () => got.length >= 7);
    const result = { away: away.code, got, gaps: hist.gaps, gapped, duplicates: hist.duplicates };
    hist.close();
    return result;
  }, (got) => {
    assert.equal(got.away, 'disconnected');
    assert.deepEqual(got.got, [0, 1, 2, 3, 4, 5, 6]);
    assert.equal(got.gaps, 0);
    assert.deepEqual(got.gapped, []);
    // The re-subscription named the last event received.
    assert.ok(sent.some((f) => /\["sub",\d+,"hist\/1",1,"[0-9a-f]{8}"\]/.test(f)),
      `no sub from offset 1: ${sent.filter((f) => f.includes('hist/1'))}`);
  });

  await check('close', async () => {
    rpc.close();
    return { state: rpc.state, after: await settle(rpc.call('Test.add', 1, 1)), states,
             live: rpc.isLive(member), sub: await settle(rpc.subscribe('news', () => {})) };
  }, (got) => {
    assert.equal(got.state, 'closed');
    assert.equal(got.after.code, 'disconnected');
    assert.deepEqual(got.states, ['open', 'reconnecting', 'open', 'closed']);
    assert.equal(got.live, false); // released with the connection
    assert.equal(got.sub.code, 'disconnected');
  });
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
