//! Fanout: one publisher and `--conns` subscribers, a chat message to everyone. Every event
//! carries its stamp (the time the publisher meant to send it); each subscriber times it
//! from that stamp to its receipt, so one event gives `--conns` latency samples. Closed loop
//! publishes the next event once the last has reached every subscriber; open loop publishes
//! `--rate` events per second whatever the server does.
//!
//! Two server dialects. `--rpc bidir` (`bidir.json.v1` at `--url`): subscribers send
//! `["sub",1,"bench"]` and wait for `["ok",1,null]`; the publisher calls
//! `["call",ID,"Bench.publish",[STAMP]]`; events arrive as `["event","bench",STAMP]`.
//! `--pubsub plain`: subscribers connect to `/sub`, where the server subscribes them on open;
//! the publisher connects to `/pub`, where each message it sends (the stamp in its first
//! bytes, as echo mode writes it) goes as-is to every subscriber.
//!
//! Deliveries are counted over the whole run: once the publisher stops, the main thread waits
//! for the events in flight, and what never came (events sent × subscribers less deliveries)
//! is reported as missed, failing the run. A closed loop whose event does not reach everyone
//! within [`stall_timeout`] moves on (counted, and missed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidir::client::ConnectError;
use bidir::{CloseInfo, ConnHandle, Context, Handler, Message, TimerId};

use crate::args::Options;
use crate::run::{self, Payload, Phases, RunResult, Tally, lock};

/// A subscriber's `sub` of the topic `bench`, and its answer.
const SUB: &str = r#"["sub",1,"bench"]"#;
const SUBSCRIBED: &str = r#"["ok",1,null]"#;
/// What a `bidir.json.v1` event of the topic starts with; the stamp follows.
const EVENT: &str = r#"["event","bench","#;
/// How long the main thread waits for the events in flight once publishing stops.
const SETTLE: Duration = Duration::from_secs(5);

/// How long a closed loop waits for an event to reach every subscriber before it publishes
/// the next: a second plus 100 µs per subscriber.
pub(crate) fn stall_timeout(subscribers: usize) -> Duration {
    Duration::from_secs(1) + Duration::from_micros(100 * subscribers as u64)
}

/// The closed loop's event in flight.
struct InFlight {
    stamp: u64,
    /// Subscribers it has yet to reach.
    remaining: u64,
}

/// State the subscribers, the publisher and the main thread share.
struct Shared {
    phases: Phases,
    /// `--pubsub plain`: stamps as echo mode writes them; otherwise `bidir.json.v1` events.
    plain: bool,
    binary: bool,
    subscribers: u64,
    /// Subscribers whose subscription is in place (plain: open).
    subscribed: AtomicU64,
    failed: AtomicU64,
    /// Connections that ended before the run stopped them.
    dropped: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// The publisher, once open: the closed loop's last subscriber to receive an event tells
    /// it to publish the next.
    publisher: Mutex<Option<ConnHandle>>,
    /// Closed loop: the event in flight.
    in_flight: Mutex<InFlight>,
    /// Open loop: nanoseconds between two events.
    interval: Option<u64>,
    /// Events sent over the whole run, and those of them stamped in the window.
    events: AtomicU64,
    events_in_window: AtomicU64,
    /// Closed loop: events given up on after `stall_timeout`.
    stalls: AtomicU64,
}

impl Shared {
    fn note_error(&self, e: String) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// The stamp an event carries, if it is one.
    fn stamp(&self, msg: &Message<'_>) -> Option<u64> {
        if self.plain {
            return Payload::stamp(msg, self.binary);
        }
        let Message::Text(text) = msg else { return None };
        let digits = text.strip_prefix(EVENT)?.strip_suffix(']')?;
        digits.parse().ok()
    }

    /// Closed loop: `stamp` reached one more subscriber; true if it was the last.
    fn reached(&self, stamp: u64) -> bool {
        let mut in_flight = lock(&self.in_flight);
        if in_flight.stamp != stamp || in_flight.remaining == 0 {
            return false;
        }
        in_flight.remaining -= 1;
        in_flight.remaining == 0
    }
}

/// One subscriber: counts and times what it receives, which must come in stamp order.
struct Subscriber {
    shared: Arc<Shared>,
    tally: Option<Arc<Mutex<Tally>>>,
    subscribed: bool,
    /// The last stamp received: each event comes once, in order.
    last: u64,
}

impl Handler for Subscriber {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.tally = Some(run::tally(&self.shared.phases.tallies));
        if self.shared.plain {
            self.subscribed = true;
            self.shared.subscribed.fetch_add(1, Ordering::Relaxed);
        } else if cx.send_text(SUB).is_err() {
            self.shared.note_error("could not send the subscription".into());
        }
    }

    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        let now = self.shared.phases.now();
        let Some(tally) = &self.tally else { return };
        if !self.subscribed {
            if matches!(msg, Message::Text(SUBSCRIBED)) {
                self.subscribed = true;
                self.shared.subscribed.fetch_add(1, Ordering::Relaxed);
            } else {
                lock(tally).bad += 1;
                self.shared.note_error(format!("subscription answered {msg:?}"));
            }
            return;
        }
        let stamp = self.shared.stamp(&msg);
        {
            let mut t = lock(tally);
            t.received += 1;
            match stamp {
                Some(stamp) if stamp <= now && stamp > self.last => {
                    self.last = stamp;
                    if self.shared.phases.window().contains(&now) {
                        t.received_in_window += 1;
                        t.latency.saturating_record((now - stamp).max(1));
                    }
                }
                _ => t.bad += 1,
            }
        }
        if let Some(stamp) = stamp
            && self.shared.interval.is_none()
            && self.shared.reached(stamp)
            && let Some(publisher) = &*lock(&self.shared.publisher)
        {
            let _ = publisher.post_to(|p: &mut Publisher, cx| p.next(cx));
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        closed_early(&self.shared, "subscriber", &close);
    }

    fn on_connect_failed(&mut self, error: ConnectError) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.shared.note_error(error.to_string());
    }
}

/// A connection that ended while the run went on.
fn closed_early(shared: &Shared, who: &str, close: &CloseInfo<'_>) {
    if !shared.phases.is_stopped() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        shared.note_error(format!("{who} closed early: {} {}", close.code, close.reason));
    }
}

/// The publisher: one event at a time (closed loop) or on a schedule (open loop).
struct Publisher {
    shared: Arc<Shared>,
    tally: Option<Arc<Mutex<Tally>>>,
    /// Plain: the message, its stamp rewritten each time.
    payload: Payload,
    /// `bidir.json.v1`: the call, and its method.
    call: String,
    method: String,
    /// Call ids: the events sent so far.
    sent: u64,
    opened: Arc<AtomicU64>,
    /// Open loop: the intended time of the next event.
    next: u64,
    /// The armed timer (the go, the pace, or the closed loop's stall timeout).
    timer: Option<TimerId>,
}

impl Publisher {
    /// Publishes the event stamped `stamp`; returns whether it went out.
    fn publish(&mut self, cx: &mut Context<'_>, stamp: u64) -> bool {
        if self.shared.interval.is_none() {
            *lock(&self.shared.in_flight) = InFlight { stamp, remaining: self.shared.subscribers };
        }
        let sent = if self.shared.plain {
            self.payload.send(cx, stamp)
        } else {
            use std::fmt::Write;
            self.call.clear();
            let _ = write!(self.call, r#"["call",{},"{}",[{stamp}]]"#, self.sent + 1, self.method);
            cx.send_text(&self.call)
        };
        if sent.is_err() {
            return false;
        }
        self.sent += 1;
        self.shared.events.fetch_add(1, Ordering::Relaxed);
        if self.shared.phases.window().contains(&stamp) {
            self.shared.events_in_window.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(tally) = &self.tally {
            lock(tally).sent += 1;
        }
        true
    }

    /// Closed loop: the next event, now, with its stall timeout armed.
    fn next(&mut self, cx: &mut Context<'_>) {
        if self.shared.phases.is_stopped() {
            return;
        }
        let now = self.shared.phases.now();
        if !self.publish(cx, now) {
            self.shared.note_error("the publisher could not send".into());
        }
        self.rearm(cx, stall_timeout(self.shared.subscribers as usize));
    }

    /// Open loop: publishes every event whose intended time has come, then sleeps until the
    /// next one. The lag behind the intended time is the generator's own error.
    fn pace(&mut self, cx: &mut Context<'_>, interval: u64) {
        let now = self.shared.phases.now();
        let window = self.shared.phases.window();
        while self.next <= now && !self.shared.phases.is_stopped() {
            if self.publish(cx, self.next)
                && window.contains(&self.next)
                && let Some(tally) = &self.tally
            {
                lock(tally).lag.saturating_record((now - self.next).max(1));
            }
            self.next += interval;
        }
        if !self.shared.phases.is_stopped() {
            self.rearm(cx, Duration::from_nanos(self.next.saturating_sub(now)));
        }
    }

    fn rearm(&mut self, cx: &mut Context<'_>, after: Duration) {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        self.timer = Some(cx.set_timer(after));
    }
}

impl Handler for Publisher {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.tally = Some(run::tally(&self.shared.phases.tallies));
        *lock(&self.shared.publisher) = Some(cx.handle());
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.rearm(cx, Duration::from_millis(1)); // waits for the go
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
        self.timer = None;
        if self.shared.phases.is_stopped() {
            return;
        }
        if !self.shared.phases.is_going() {
            self.rearm(cx, Duration::from_millis(1));
            return;
        }
        match self.shared.interval {
            Some(interval) => {
                if self.next == 0 {
                    self.next = self.shared.phases.now();
                }
                self.pace(cx, interval);
            }
            None => {
                // The first event, or the last one stalled.
                if self.sent > 0 {
                    self.shared.stalls.fetch_add(1, Ordering::Relaxed);
                }
                self.next(cx);
            }
        }
    }

    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        // `bidir.json.v1`: the answers to the calls, `["ok",ID,SUBSCRIBERS]`.
        let ok = matches!(msg, Message::Text(t) if t.starts_with(r#"["ok","#));
        if !ok {
            if let Some(tally) = &self.tally {
                lock(tally).bad += 1;
            }
            self.shared.note_error(format!("the publisher got {msg:?}"));
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        closed_early(&self.shared, "the publisher", &close);
    }

    fn on_connect_failed(&mut self, error: ConnectError) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.shared.note_error(format!("the publisher: {error}"));
    }
}

/// `--pubsub plain`: the URL of `path` on the server `url` names.
pub(crate) fn plain_url(url: &str, path: &str) -> String {
    let authority_at = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority_at..].find(['/', '?']).map_or(url.len(), |i| authority_at + i);
    format!("{}{path}", &url[..end])
}

pub(crate) fn run(o: &Options) -> Result<RunResult, String> {
    let (sub_url, pub_url) = if o.plain_pubsub {
        (plain_url(&o.url, "/sub"), plain_url(&o.url, "/pub"))
    } else {
        (o.url.clone(), o.url.clone())
    };
    let engine = run::engine(o, o.conns + 16)?;
    let shared = Arc::new(Shared {
        phases: Phases::new(),
        plain: o.plain_pubsub,
        binary: o.binary,
        subscribers: o.conns as u64,
        subscribed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        first_error: Mutex::new(None),
        publisher: Mutex::new(None),
        in_flight: Mutex::new(InFlight { stamp: 0, remaining: 0 }),
        interval: o.rate.map(|rate| (1e9 / rate).max(1.0) as u64),
        events: AtomicU64::new(0),
        events_in_window: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
    });
    let result = measure(o, &engine, &shared, &sub_url, &pub_url);
    shared.phases.stop.store(true, Ordering::Relaxed);
    engine.shutdown(Duration::from_secs(2));
    let (subscribed, started, measured) = result?;
    let (latency, lag, bad) = shared.phases.merged()?;
    let deliveries = shared.phases.tallied(|t| t.received);
    let expected = shared.events.load(Ordering::Relaxed) * o.conns as u64;
    let stalls = shared.stalls.load(Ordering::Relaxed);
    if stalls > 0 {
        shared.note_error(format!("{stalls} events did not reach every subscriber in time"));
    }
    Ok(RunResult {
        latency,
        lag,
        messages: shared.phases.tallied(|t| t.received_in_window),
        events: shared.events_in_window.load(Ordering::Relaxed),
        missed: expected.saturating_sub(deliveries),
        window: measured.window,
        opened: subscribed,
        failed: shared.failed.load(Ordering::Relaxed),
        errors: shared.dropped.load(Ordering::Relaxed) + bad,
        first_error: lock(&shared.first_error).clone(),
        connect_time: started,
        server_cpu_ns: measured.server_cpu_ns,
        server_kernel_share: measured.server_kernel_share,
        own_cpu_ns: measured.own_cpu_ns,
        server_rss_per_conn: None,
        own_rss_per_conn: None,
        cycles: 0,
        server_usage: None,
        handshake: None,
        wire_in_ratio: None,
    })
}

/// Subscribes `--conns` subscribers, opens the publisher, runs the warm-up and the window,
/// and waits for the events in flight. Returns the subscribers subscribed and how long that
/// took, and the window's measures.
fn measure(
    o: &Options,
    engine: &bidir::ServerHandle,
    shared: &Arc<Shared>,
    sub_url: &str,
    pub_url: &str,
) -> Result<(u64, Duration, run::Measured), String> {
    let subscribed = || shared.subscribed.load(Ordering::Relaxed);
    let failed = || shared.failed.load(Ordering::Relaxed);
    let connect = run::connect_to(o, sub_url)?;
    let started = run::connect_all(
        o,
        engine,
        &connect,
        || (subscribed(), failed()),
        |_| {
            let subscriber =
                Subscriber { shared: Arc::clone(shared), tally: None, subscribed: false, last: 0 };
            Ok((None, subscriber))
        },
    )?;
    if failed() > 0 || subscribed() < o.conns as u64 {
        let error = lock(&shared.first_error).clone().unwrap_or_default();
        return Err(format!("{} subscribers failed: {error}", o.conns as u64 - subscribed()));
    }
    let opened = Arc::new(AtomicU64::new(0));
    let publisher = Publisher {
        shared: Arc::clone(shared),
        tally: None,
        payload: Payload::new(o.size, o.binary, 0),
        call: String::new(),
        method: o.rpc.as_ref().map_or_else(String::new, |(_, method)| method.clone()),
        sent: 0,
        opened: Arc::clone(&opened),
        next: 0,
        timer: None,
    };
    engine.connect(&run::connect_to(o, pub_url)?, publisher).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) == 0 {
        if failed() > 0 || Instant::now() > deadline {
            let error = lock(&shared.first_error).clone().unwrap_or_default();
            return Err(format!("the publisher did not open: {error}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let measured = shared.phases.measure(o);
    // The publisher may be between its check of the stop and its count of the event it
    // sends: a closure posted to it runs after that, so once it has run, `events` is final.
    let (settled, publisher_done) = std::sync::mpsc::channel();
    if let Some(publisher) = &*lock(&shared.publisher) {
        let _ = publisher.post(move |_, _| {
            let _ = settled.send(());
        });
    }
    let _ = publisher_done.recv_timeout(SETTLE);
    // The events in flight: every subscriber gets each, or the wait ends.
    let deadline = Instant::now() + SETTLE;
    let expected = || shared.events.load(Ordering::Relaxed) * o.conns as u64;
    while shared.phases.tallied(|t| t.received) < expected() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((subscribed(), started, measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_replace_the_path() {
        assert_eq!(plain_url("ws://127.0.0.1:9/", "/sub"), "ws://127.0.0.1:9/sub");
        assert_eq!(plain_url("ws://h:9", "/pub"), "ws://h:9/pub");
        assert_eq!(plain_url("ws://h:9/rpc?x=1", "/sub"), "ws://h:9/sub");
        assert_eq!(plain_url("wss://h/a/b", "/pub"), "wss://h/pub");
    }

    #[test]
    fn stall_timeout_grows_with_the_subscribers() {
        assert_eq!(stall_timeout(0), Duration::from_secs(1));
        assert_eq!(stall_timeout(10_000), Duration::from_secs(2));
    }
}
