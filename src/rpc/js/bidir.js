// bidir.js — the browser client of bidir's application protocol, `bidir.json.v1` (docs/rpc.md).
// A dependency-free ES module with no build step; the server serves it itself
// (`bidir::rpc::serve_module`, usually at /bidir.js):
//
//   import { connect } from '/bidir.js';
//   const rpc = await connect('/rpc');                 // ws(s)://this host/rpc
//   const chat = await rpc.service('Chat');            // methods from the server's description
//   await chat.join('ada', { blabla(pseudo, msg) { console.log(pseudo, msg); } });
//   await chat.blabla('ada', 'hello');                 // = rpc.call('Chat.blabla', 'ada', 'hello')
//
// Calls return promises; a failure rejects with an RpcError {code, message, data}, its code one
// of docs/rpc.md's error codes. A plain object whose own properties are all functions, passed
// anywhere in a call's arguments, is a callback: the server may invoke its methods until it is
// released. When the connection drops, requests in flight fail with `disconnected`; the module
// reconnects with backoff, subscribes its topics again and replays, in their order, the calls
// the server accepted that passed callbacks still live, so the server gets them back
// (docs/rpc.md, "The browser module").

/** The subprotocol this module speaks. */
export const PROTOCOL = 'bidir.json.v1';

/** How long a request waits for its answer by default, in milliseconds. */
export const DEFAULT_TIMEOUT = 30000;

/** Reconnection delays by default, in milliseconds: doubled after each failed try, up to max. */
export const DEFAULT_RECONNECT = Object.freeze({ min: 250, max: 10000 });

/** The most messages one batch carries (docs/rpc.md); more go out in several. */
const MAX_BATCH = 1024;

/** A batch is cut before it passes this many characters (at most three times as many bytes of
 *  UTF-8), as the server's own batches are: gathering never makes a message over the server's
 *  limit (1 MiB by default). A single longer message goes alone. */
const BATCH_CHARS = 64 << 10;

/** The largest request or callback id, 2^53 − 1: the integers a JavaScript number holds
 *  exactly (docs/rpc.md, "Ids"). The next one is 0 again. */
const MAX_ID = Number.MAX_SAFE_INTEGER;

/** Why a request failed: `code` is an error code of docs/rpc.md (`service`, `timeout`,
 *  `disconnected`, …), `data` the service's error value when it sent one. Throw one from a
 *  callback's method to answer the server with that code and data. */
export class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.name = 'RpcError';
    this.code = code;
    this.data = data;
  }
}

/**
 * Opens a connection to `url` (ws:, wss:, or a path on this page's host) and resolves with its
 * Rpc once it is open; rejects with an RpcError `disconnected` if the first try fails.
 * Options:
 * - `timeout`: how long a request waits for its answer, in ms (default DEFAULT_TIMEOUT;
 *   Infinity: for ever); then it fails with `timeout`, the server gets a `cancel`, and a late
 *   answer is dropped (counted in `lateAnswers`);
 * - `reconnect`: `{min, max}` delays in ms (default DEFAULT_RECONNECT), or false: no reconnection;
 * - `onstate(state, detail)`: told 'open', 'reconnecting' (detail: {code, reason, delay} — the
 *   close code and reason, the ms until the next try) and 'closed';
 * - `onerror(error, about)`: told the failures no promise carries: a topic refused when
 *   subscribed again after a reconnection (about: {topic}; the topic is forgotten), a replayed
 *   call that failed (about: {method}). By default they are logged;
 * - `ongap(topic)`: told when events of a topic with a history (docs/rpc.md, "History and
 *   recovery") were missed and not recovered — subscribed again after a reconnection from the
 *   last event received, the server could not send all that followed, or its history started
 *   again — so that the page can reload what it shows. Counted in `gaps`. By default logged.
 *   A topic with a history recovers by itself otherwise: its events missed while
 *   reconnecting arrive, in order, before the subscription's answer;
 * - `firstId`: the first request id (default 0; tests use it to see ids wrap at 2^53 − 1).
 */
export function connect(url, options = {}) {
  return Rpc.connect(url, options);
}

/** One connection's client, made by `connect`. */
class Rpc {
  #url;
  #timeout;
  #reconnect;
  #onstate;
  #onerror;
  #ongap;
  #ws = null;
  #state = 'connecting';
  #opened = false;            // whether a connection was ever open (then drops reconnect)
  #openedAt = null;           // when the open connection opened (performance.now())
  #tries = 0;                 // failed tries in a row (a short connection is one), for the backoff
  #retry = null;              // the reconnection timer
  #nextId;                    // our request ids
  #requests = new Map();      // request id → { resolve, reject, timer, replay }
  #nextCallback = 0;          // our callback ids
  #callbacks = new Map();     // callback id → object
  #callbackIds = new Map();   // object → callback id
  #made = 0;                  // calls and notes that passed callbacks, numbered in order
  #replays = [];              // those to replay, in order: { tag, method, args, callbacks, seq }
  #topics = new Map();        // topic → subscription()
  #queue = [];                // messages (JSON text) to send on this turn
  #description = null;        // promise of rpc.describe's answer, per connection

  /** Answers that came for no request in flight — after their timeout — and were dropped. */
  lateAnswers = 0;
  /** Topics whose missed events were not recovered (each told to `ongap`). */
  gaps = 0;
  /** Events dropped because they had come already (recovered, and delivered live too). */
  duplicates = 0;

  static connect(url, options) {
    const rpc = new Rpc(url, options);
    return new Promise((resolve, reject) => rpc.#open(() => resolve(rpc), reject));
  }

  constructor(url, options) {
    this.#url = resolveUrl(url);
    this.#timeout = options.timeout ?? DEFAULT_TIMEOUT;
    const reconnect = options.reconnect;
    this.#reconnect = reconnect === false ? null : { ...DEFAULT_RECONNECT, ...reconnect };
    this.#onstate = options.onstate ?? (() => {});
    this.#onerror = options.onerror ?? ((e, about) => console.warn('bidir:', about, e));
    this.#ongap = options.ongap ?? ((topic) => console.warn('bidir: events missed on', topic));
    this.#nextId = options.firstId ?? 0;
    if (!Number.isSafeInteger(this.#nextId) || this.#nextId < 0) {
      throw new RangeError(`firstId ${options.firstId}: not an integer from 0 to 2^53 - 1`);
    }
  }

  /** 'connecting', 'open', 'reconnecting' or 'closed'. */
  get state() {
    return this.#state;
  }

  /** Calls `method` ('Service.method') with `args`; resolves with its value. A call that
   *  passed callbacks is replayed on reconnections once the server answered it `ok`. */
  call(method, ...args) {
    return this.#request(`call ${method}`, () => {
      const { text, callbacks } = this.#encode(args);
      const replay = callbacks.length ? this.#replay('call', method, text, callbacks) : null;
      return { message: (id) => `["call",${id},${JSON.stringify(method)},${text}]`, replay };
    });
  }

  /** Calls `method` without wanting an answer. Throws RpcError `disconnected` while not open.
   *  A note that passed callbacks is replayed on reconnections. */
  notify(method, ...args) {
    this.#mustBeOpen(`note ${method}`);
    const { text, callbacks } = this.#encode(args);
    if (callbacks.length) this.#keep(this.#replay('note', method, text, callbacks));
    this.#send(`["note",${JSON.stringify(method)},${text}]`);
  }

  /** Releases callback object `obj`: the server is told, and will not invoke it again.
   *  Returns whether it was a live callback. */
  release(obj) {
    const id = this.#callbackIds.get(obj);
    if (id === undefined) return false;
    this.#forget(id);
    this.#send(`["release",${id}]`);
    return true;
  }

  /** Whether `obj` was passed as a callback and is not released (by either side). */
  isLive(obj) {
    return this.#callbackIds.has(obj);
  }

  /** Calls `fn(data, topic)` for every event of `topic`. Resolves once the server answered
   *  `ok` to the subscription. Made while disconnected, or cut by a drop, it is made on the
   *  next connection, and resolves then. A refusal (or a timeout) rejects and forgets the
   *  topic's listeners; `close()` and `unsubscribe` before the answer reject too. */
  async subscribe(topic, fn) {
    if (this.#state === 'closed') throw new RpcError('disconnected', `closed: sub ${topic}`);
    let entry = this.#topics.get(topic);
    if (!entry) {
      entry = subscription();
      this.#topics.set(topic, entry);
      if (this.#state === 'open') this.#subscribe(topic, entry);
    }
    entry.listeners.add(fn);
    return entry.ready;
  }

  /** Stops calling `fn` (every listener if omitted) for `topic`; the last one gone, the
   *  server is told. Resolves with whether the topic was subscribed. */
  async unsubscribe(topic, fn) {
    const entry = this.#topics.get(topic);
    if (!entry) return false;
    if (fn !== undefined) {
      entry.listeners.delete(fn);
      if (entry.listeners.size) return true;
    }
    this.#topics.delete(topic);
    entry.settle(new RpcError('cancelled', `unsubscribed from ${topic} before the answer`));
    if (this.#state !== 'open') return true;
    return this.#request(`unsub ${topic}`, () => ({
      message: (id) => `["unsub",${id},${JSON.stringify(topic)}]`,
    }));
  }

  /** Publishes `data` to `topic` where the server allows clients to (else it is dropped).
   *  Throws RpcError `disconnected` while not open. */
  publish(topic, data) {
    this.#mustBeOpen(`pub ${topic}`);
    this.#send(JSON.stringify(['pub', topic, data]));
  }

  /** The server's description of its services (the reserved call `rpc.describe`), or null
   *  when the server gives none. Asked once per connection. */
  describe() {
    this.#description ??= this.call('rpc.describe').catch((e) => {
      if (e.code === 'unknown_service' || e.code === 'unknown_method') return null;
      this.#description = null;
      throw e;
    });
    return this.#description;
  }

  /** A proxy of service `name`: `proxy.m(...args)` is `call('name.m', ...args)`. Built from
   *  the description — with only the described methods; rejects `unknown_service` for a
   *  service it does not list — or, when the server gives none, any name is a method. A method
   *  named `then` is reachable only through `call` (the proxy must not look like a promise). */
  async service(name) {
    const description = await this.describe();
    if (!description) return untypedProxy(this, name);
    const service = description.services?.find((s) => s.name === name);
    if (!service) throw new RpcError('unknown_service', `no service ${name}`);
    const proxy = {};
    for (const { name: method } of service.methods ?? []) {
      if (method !== 'then') proxy[method] = (...args) => this.call(`${name}.${method}`, ...args);
    }
    return Object.freeze(proxy);
  }

  /** Closes the connection for good (1000): requests in flight fail with `disconnected`,
   *  every callback is released (the server released them with the connection). */
  close() {
    if (this.#state === 'closed') return;
    this.#reconnect = null;
    clearTimeout(this.#retry);
    const ws = this.#ws;
    this.#ws = null; // its close event is not ours to handle any more
    ws?.close(1000);
    this.#dropped({ code: 1000, reason: 'closed by the page' });
  }

  // --- the connection

  #open(resolve = () => {}, reject = () => {}) {
    const ws = new WebSocket(this.#url, PROTOCOL);
    this.#ws = ws;
    ws.onopen = () => {
      // A server that did not pick bidir.json.v1 does not speak it.
      if (ws.protocol !== PROTOCOL) return ws.close(1000);
      this.#connected();
      resolve();
    };
    ws.onmessage = (e) => this.#receive(e.data);
    ws.onclose = (e) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      reject(new RpcError('disconnected', `cannot connect to ${this.#url}`, { code: e.code }));
      this.#dropped(e);
    };
  }

  /** The connection opened: subscribe again, replay the calls that passed live callbacks. */
  #connected() {
    this.#opened = true;
    this.#openedAt = performance.now();
    this.#description = null;
    this.#setState('open');
    for (const [topic, entry] of this.#topics) this.#subscribe(topic, entry);
    const released = new Set();
    for (const replay of this.#replays) {
      for (const id of replay.callbacks) if (!this.#callbacks.has(id)) released.add(id);
      if (replay.tag === 'note') {
        this.#send(`["note",${JSON.stringify(replay.method)},${replay.args}]`);
        continue;
      }
      this.#request(`call ${replay.method} (replayed)`, () => ({
        message: (id) => `["call",${id},${JSON.stringify(replay.method)},${replay.args}]`,
        replay,
      })).catch((e) => {
        // Dropped again: replayed on the next connection.
        if (e.code !== 'disconnected') this.#report(e, { method: replay.method });
      });
    }
    // A replayed call may name a callback released since: the server forgets it at once.
    for (const id of released) this.#send(`["release",${id}]`);
  }

  /** The connection ended (or failed to open): fail what waits, then reconnect or stop. */
  #dropped(e) {
    this.#queue = [];
    const error = new RpcError('disconnected', 'the connection ended before the answer', {
      code: e.code,
      reason: e.reason,
    });
    for (const request of this.#requests.values()) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this.#requests.clear();
    if (!this.#opened || !this.#reconnect) return this.#closed(error);
    const { min, max } = this.#reconnect;
    // A connection the server ends soon after it opened (refused, overloaded) is a failed try:
    // such a server is not retried at the shortest delay for ever.
    if (this.#openedAt !== null && performance.now() - this.#openedAt >= max) this.#tries = 0;
    this.#openedAt = null;
    const delay = Math.min(max, min * 2 ** this.#tries++);
    // Jitter: the clients of a restarted server do not all come back at the same instant.
    const jittered = Math.round(delay * (0.5 + Math.random() / 2));
    this.#setState('reconnecting', { code: e.code, reason: e.reason, delay: jittered });
    this.#retry = setTimeout(() => this.#open(), jittered);
  }

  /** Closed for good: the callbacks are gone (the server released them with the connection),
   *  nothing is replayed, and subscriptions still waiting for an answer fail with `error`. */
  #closed(error) {
    this.#callbacks.clear();
    this.#callbackIds.clear();
    this.#replays = [];
    for (const entry of this.#topics.values()) entry.settle(error);
    this.#topics.clear();
    this.#setState('closed');
  }

  #setState(state, detail) {
    this.#state = state;
    tell('onstate', this.#onstate, state, detail);
  }

  /** A failure no promise carries, told to `onerror`. */
  #report(error, about) {
    tell('onerror', this.#onerror, error, about);
  }

  #mustBeOpen(what) {
    if (this.#state !== 'open') throw new RpcError('disconnected', `not connected: ${what}`);
  }

  // --- sending

  /** Sends a request and resolves with its answer. `make()` runs only when the connection is
   *  open; it returns `message(id)`, the request's text, and the replay it belongs to, if any. */
  #request(what, make) {
    return new Promise((resolve, reject) => {
      this.#mustBeOpen(what);
      const { message, replay } = make();
      const id = this.#nextId;
      this.#nextId = following(id);
      const expire = () => {
        this.#requests.delete(id);
        this.#send(`["cancel",${id}]`); // the server may stop the work
        reject(new RpcError('timeout', `no answer to ${what} in ${this.#timeout} ms`));
      };
      // Past what setTimeout holds (about 24.8 days; Infinity): no timeout.
      const timer = this.#timeout < 2 ** 31 ? setTimeout(expire, this.#timeout) : null;
      this.#requests.set(id, { resolve, reject, timer, replay });
      this.#send(message(id));
    });
  }

  /** Sends `topic`'s `sub`. Its answer settles `entry`'s promise; a refusal forgets the topic
   *  (told to onerror when the promise was settled already, by an earlier connection's `ok`);
   *  after a drop, the next connection sends it again. */
  #subscribe(topic, entry) {
    // From the last event received, for a topic with a history.
    const since = entry.position;
    const from = since ? `,${since.offset},${JSON.stringify(since.epoch)}` : '';
    this.#request(`sub ${topic}`, () => ({
      message: (id) => `["sub",${id},${JSON.stringify(topic)}${from}]`,
    })).then(
      (answer) => {
        // `null`, or the history's position: the events it recovered came before it.
        if (answer && typeof answer === 'object' && typeof answer.epoch === 'string') {
          const at = entry.position;
          if (at && at.epoch === answer.epoch) at.offset = Math.max(at.offset, answer.offset);
          else entry.position = { offset: answer.offset, epoch: answer.epoch };
          if (since && !answer.recovered) this.#gap(topic);
        }
        entry.settle();
      },
      (e) => {
        if (e.code === 'disconnected') return;
        if (this.#topics.get(topic) === entry) this.#topics.delete(topic);
        if (!entry.settle(e)) this.#report(e, { topic });
      },
    );
  }

  /** Queues `text`; everything queued in one turn goes out together, as a batch. */
  #send(text) {
    if (this.#state !== 'open') return;
    this.#queue.push(text);
    if (this.#queue.length === 1) queueMicrotask(() => this.#flush());
  }

  #flush() {
    const queue = this.#queue;
    this.#queue = [];
    for (const part of batches(queue)) {
      if (!this.#ws) return;
      this.#ws.send(part.length === 1 ? part[0] : `[${part.join(',')}]`);
    }
  }

  /** `args` as JSON, each callback object in it registered and written `{"$cb": id}`. */
  #encode(args) {
    const callbacks = [];
    const text = JSON.stringify(args, (_key, value) => {
      if (!isCallbackObject(value)) return value;
      let id = this.#callbackIds.get(value);
      if (id === undefined) {
        id = this.#nextCallback;
        this.#nextCallback = following(id);
        this.#callbacks.set(id, value);
        this.#callbackIds.set(value, id);
      }
      callbacks.push(id);
      return { $cb: id };
    });
    return { text, callbacks };
  }

  /** A call or note that passed `callbacks`, to replay on reconnections once kept. */
  #replay(tag, method, args, callbacks) {
    return { tag, method, args, callbacks, seq: this.#made++ };
  }

  /** Keeps `replay` for the next connections, in the order the calls were made, unless it is
   *  kept already or none of its callbacks is live any more. */
  #keep(replay) {
    if (this.#replays.includes(replay)) return;
    if (!replay.callbacks.some((id) => this.#callbacks.has(id))) return;
    const at = this.#replays.findIndex((r) => r.seq > replay.seq);
    this.#replays.splice(at < 0 ? this.#replays.length : at, 0, replay);
  }

  /** Forgets callback `id`, and the replays left with no live callback. */
  #forget(id) {
    const obj = this.#callbacks.get(id);
    if (obj === undefined) return;
    this.#callbacks.delete(id);
    this.#callbackIds.delete(obj);
    this.#replays = this.#replays.filter((r) => r.callbacks.some((c) => this.#callbacks.has(c)));
  }

  // --- receiving

  /** One WebSocket message: one protocol message, or a batch of them. Input this module cannot
   *  read is logged and ignored: a browser may not close with 1003/1007/1008. */
  #receive(text) {
    let data;
    try {
      data = typeof text === 'string' ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (!Array.isArray(data)) return console.warn('bidir: ignored a message:', text);
    if (Array.isArray(data[0])) for (const msg of data) this.#handle(msg);
    else this.#handle(data);
  }

  #handle(msg) {
    const [tag, a, b, c, d] = Array.isArray(msg) ? msg : [];
    switch (tag) {
      case 'ok':
        return this.#settle(a, null, b);
      case 'err':
        return this.#settle(a, new RpcError(b, c, d));
      case 'cb':
        return this.#invoke(a, b, c, d);
      case 'release':
        return this.#forget(a);
      case 'event':
        return this.#event(a, b, c, d);
      case 'call':
      case 'sub':
      case 'unsub': // the page serves no methods and no topics
        return this.#send(JSON.stringify(['err', a, 'unknown_service', `no ${tag} served here`]));
      case 'note':
      case 'pub':
      case 'cancel': // nothing to stop: a callback's answer may cross it
        return;
      default:
        console.warn('bidir: ignored a message:', msg);
    }
  }

  /** The answer to our request `id`. An answer to nothing in flight came too late: dropped. */
  #settle(id, error, value) {
    const request = this.#requests.get(id);
    if (!request) {
      this.lateAnswers++;
      return;
    }
    this.#requests.delete(id);
    clearTimeout(request.timer);
    // Accepted: the server keeps the callbacks, and gets them back after a reconnection.
    // Refused: it did not keep them, so the call is not replayed (any more).
    if (request.replay && error) this.#replays = this.#replays.filter((r) => r !== request.replay);
    else if (request.replay) this.#keep(request.replay);
    if (error) request.reject(error);
    else request.resolve(value);
  }

  /** The server invokes `method` of callback `cb`, answering request `id` if there is one. */
  async #invoke(cb, method, args, id) {
    const ws = this.#ws;
    const obj = this.#callbacks.get(cb);
    // Nobody to run it: an invocation sent before the server saw our release, or the server
    // holds a proxy we forgot (its release crossed a new use of the callback). Our release
    // makes it drop that proxy, and run its release hook; a second one is ignored.
    if (!obj) this.#send(`["release",${cb}]`);
    if (!obj && id === undefined) return;
    let answer;
    try {
      if (!obj) throw new RpcError('released', `no callback ${cb}`);
      if (!Object.hasOwn(obj, method) || typeof obj[method] !== 'function') {
        throw new RpcError('unknown_method', `callback ${cb} has no method ${method}`);
      }
      const value = await obj[method](...(Array.isArray(args) ? args : []));
      answer = ['ok', id, value === undefined ? null : value];
    } catch (e) {
      if (id === undefined) return console.error(`bidir: callback ${cb}.${method} failed:`, e);
      answer = e instanceof RpcError
        ? ['err', id, e.code, e.message, ...(e.data === undefined ? [] : [e.data])]
        : ['err', id, 'internal', String(e?.message ?? e)];
    }
    // An answer belongs to the connection that asked.
    if (id !== undefined && ws === this.#ws) this.#send(JSON.stringify(answer));
  }

  /** An event, at `offset` in `epoch` for a topic with a history: dropped if it came
   *  already; the first of a new epoch is a gap (the history was lost meanwhile). */
  #event(topic, data, offset, epoch) {
    const entry = this.#topics.get(topic);
    if (!entry) return;
    if (typeof offset === 'number' && typeof epoch === 'string') {
      const at = entry.position;
      if (at && at.epoch === epoch && offset <= at.offset) {
        this.duplicates++;
        return;
      }
      if (at && at.epoch !== epoch) this.#gap(topic);
      entry.position = { offset, epoch };
    }
    for (const fn of entry.listeners) tell(`a listener of ${topic}`, fn, data, topic);
  }

  /** Events of `topic` were missed and not recovered: counted and told. */
  #gap(topic) {
    this.gaps++;
    tell('ongap', this.#ongap, topic);
  }
}

/** A topic's listeners and the promise `subscribe` returns: `settle(error)` settles it, once,
 *  and returns whether it did (an error rejects it, none resolves it). */
function subscription() {
  const entry = { listeners: new Set(), position: null }; // position: { offset, epoch }
  entry.ready = new Promise((resolve, reject) => {
    let settled = false;
    entry.settle = (error) => {
      if (settled) return false;
      settled = true;
      if (error) reject(error);
      else resolve();
      return true;
    };
  });
  return entry;
}

/** The id after `id`: 0 after MAX_ID. */
function following(id) {
  return id >= MAX_ID ? 0 : id + 1;
}

/** `messages` (JSON texts) cut into batches of at most MAX_BATCH messages and, unless one
 *  message is longer on its own, BATCH_CHARS characters. */
function* batches(messages) {
  let batch = [];
  let chars = 0;
  for (const text of messages) {
    if (batch.length === MAX_BATCH || (batch.length && chars + text.length > BATCH_CHARS)) {
      yield batch;
      batch = [];
      chars = 0;
    }
    batch.push(text);
    chars += text.length + 1; // and its comma
  }
  if (batch.length) yield batch;
}

/** Runs the application's `fn`; what it throws is logged (it is not the module's to handle). */
function tell(what, fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    console.error(`bidir: ${what} failed:`, e);
  }
}

/** A callback object: a plain object (not an array) whose own properties are all functions. */
function isCallbackObject(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const values = Object.values(value);
  return values.length > 0 && values.every((v) => typeof v === 'function');
}

/** A proxy for a service the server does not describe: any name is a method. */
function untypedProxy(rpc, service) {
  return new Proxy({}, {
    get(_target, key) {
      // `await` asks for `then`, the runtime for symbols: not methods.
      if (typeof key !== 'string' || key === 'then') return undefined;
      return (...args) => rpc.call(`${service}.${key}`, ...args);
    },
  });
}

/** `url` as a WebSocket URL: a path or http(s) URL is taken relative to this page. */
function resolveUrl(url) {
  if (typeof location === 'undefined') return String(url);
  const u = new URL(url, location.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.href;
}
