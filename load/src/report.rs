//! Printing a run: a table on stderr, a one-line summary, optionally JSON on stdout, and the
//! `.hgrm` / SVG files.

use std::fmt::Write as _;
use std::fs;

use bidir::rpc::Wire;

use crate::args::{Dialect, Mode, Options};
use crate::churn::ServerUsage;
use crate::plot;
use crate::run::RunResult;

const QUANTILES: [(&str, f64); 5] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Messages per second in the window.
fn rate(r: &RunResult) -> f64 {
    r.messages as f64 / r.window.as_secs_f64().max(1e-9)
}

/// Churn: cycles per second over the run.
fn cycle_rate(r: &RunResult) -> f64 {
    r.cycles as f64 / r.window.as_secs_f64().max(1e-9)
}

/// Churn: the server's CPU nanoseconds per cycle completed.
fn per_cycle(r: &RunResult) -> Option<f64> {
    r.server_cpu_ns.filter(|_| r.cycles > 0).map(|ns| ns as f64 / r.cycles as f64)
}

/// Churn: a handshake-time quantile in microseconds, or JSON `null`.
fn handshake_us(r: &RunResult, q: f64) -> String {
    let h = r.handshake.as_ref().filter(|h| !h.is_empty());
    h.map_or("null".into(), |h| format!("{:.2}", us(h.value_at_quantile(q))))
}

fn per_message(ns: u64, r: &RunResult) -> Option<f64> {
    (r.messages > 0).then(|| ns as f64 / r.messages as f64)
}

/// Fanout: events published per second in the window.
fn event_rate(r: &RunResult) -> f64 {
    r.events as f64 / r.window.as_secs_f64().max(1e-9)
}

/// The server's CPU per message (fanout: per delivery), with its kernel share, and the
/// generator's: `; server CPU 812 ns/msg (61% kernel); generator CPU 950 ns/msg`.
fn cpu_line(r: &RunResult, unit: &str) -> String {
    let mut s = String::new();
    if let Some(ns) = r.server_cpu_ns.and_then(|ns| per_message(ns, r)) {
        let _ = write!(s, "; server CPU {ns:.0} ns/{unit}");
        if let Some(share) = r.server_kernel_share {
            let _ = write!(s, " ({:.0}% kernel)", share * 100.0);
        }
    }
    if let Some(ns) = per_message(r.own_cpu_ns, r) {
        let _ = write!(s, "; generator CPU {ns:.0} ns/{unit}");
    }
    s
}

/// The open loop's send lag line.
fn lag_line(r: &RunResult) -> String {
    format!(
        "  send lag (generator behind schedule, included above): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs\n",
        us(r.lag.value_at_quantile(0.5)),
        us(r.lag.value_at_quantile(0.99)),
        us(r.lag.max())
    )
}

pub(crate) fn print(o: &Options, r: &RunResult) {
    let mut s = String::new();
    let kind = match (o.raw, o.binary) {
        (true, _) => "raw TCP",
        (false, true) => "binary",
        (false, false) => "text",
    };
    let message = match (&o.rpc, o.mode) {
        (Some((_, method)), Mode::Fanout) => format!("events published by {method}"),
        (Some((_, method)), _) => format!("calls of {method}"),
        (None, Mode::Fanout) => format!("{} B {kind} events (plain pub/sub)", o.size),
        (None, _) => format!("{} B {kind}", o.size),
    };
    let what = match (o.mode, o.rate) {
        (Mode::Connect, _) => format!("connect {} conns", o.conns),
        (Mode::Churn, _) => {
            format!("churn {} conns, {} x {message} per cycle", o.conns, o.cycle_messages)
        }
        (Mode::Echo, Some(rate)) => {
            format!("open loop {rate:.0} msg/s, {} conns x {message}", o.conns)
        }
        (Mode::Echo, None) => {
            format!("closed loop {} conns x {} in flight x {message}", o.conns, o.inflight)
        }
        (Mode::Fanout, Some(rate)) => {
            format!("fanout open loop {rate:.0} events/s to {} subscribers, {message}", o.conns)
        }
        (Mode::Fanout, None) => {
            format!("fanout closed loop to {} subscribers, {message}", o.conns)
        }
    };
    let deflate = o.deflate.as_ref().map_or("", |_| ", deflate offered");
    let _ = writeln!(s, "{} — {what}{deflate}{}", o.label, wire_note(o));
    let h = &r.latency;
    let label = match o.mode {
        Mode::Echo => "latency",
        Mode::Connect => "handshake",
        Mode::Churn => "cycle",
        Mode::Fanout => "delivery",
    };
    let _ = write!(s, "  {label:<9}");
    for (name, q) in QUANTILES {
        let _ = write!(s, "  {name} {:.1} µs", us(h.value_at_quantile(q)));
    }
    let _ = writeln!(s, "  ({} samples)", h.len());
    match o.mode {
        Mode::Echo => {
            let window = r.window.as_secs_f64();
            let _ = writeln!(
                s,
                "  throughput {:.0} msg/s over {window:.1} s{}",
                rate(r),
                cpu_line(r, "msg")
            );
            if o.rate.is_some() {
                s.push_str(&lag_line(r));
            }
        }
        Mode::Fanout => {
            let _ = writeln!(
                s,
                "  {:.0} events/s, {:.0} deliveries/s over {:.1} s{}",
                event_rate(r),
                rate(r),
                r.window.as_secs_f64(),
                cpu_line(r, "delivery")
            );
            if o.rate.is_some() {
                s.push_str(&lag_line(r));
            }
            let _ = writeln!(s, "  {} subscribers, deliveries missed: {}", r.opened, r.missed);
        }
        Mode::Connect => {
            let _ = write!(
                s,
                "  {} open in {:.2} s ({:.0} handshakes/s)",
                r.opened,
                r.connect_time.as_secs_f64(),
                r.opened as f64 / r.connect_time.as_secs_f64().max(1e-9)
            );
            if let Some(b) = r.server_rss_per_conn {
                let _ = write!(s, "; server RSS {b:.0} B/conn");
            }
            if let Some(b) = r.own_rss_per_conn {
                let _ = write!(s, "; client RSS {b:.0} B/conn");
            }
            let _ = writeln!(s);
        }
        Mode::Churn => {
            let _ = write!(
                s,
                "  {} cycles in {:.1} s ({:.0} cycles/s), {} opened",
                r.cycles,
                r.window.as_secs_f64(),
                cycle_rate(r),
                r.opened
            );
            if let Some(ns) = per_cycle(r) {
                let _ = write!(s, "; server CPU {ns:.0} ns/cycle");
            }
            let _ = writeln!(s);
            if let Some(h) = r.handshake.as_ref().filter(|h| !h.is_empty()) {
                let _ = write!(s, "  handshake");
                for (name, q) in QUANTILES {
                    let _ = write!(s, "  {name} {:.1} µs", us(h.value_at_quantile(q)));
                }
                let _ = writeln!(s);
            }
            if let Some(u) = &r.server_usage {
                let mib = |b: u64| b as f64 / (1 << 20) as f64;
                let _ = writeln!(
                    s,
                    "  server RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; descriptors start {}, peak {}, end {}",
                    mib(u.start.rss_bytes),
                    mib(u.peak.rss_bytes),
                    mib(u.end.rss_bytes),
                    u.start.fds,
                    u.peak.fds,
                    u.end.fds
                );
            }
        }
    }
    if r.failed > 0 || r.errors > 0 || r.missed > 0 {
        let _ = writeln!(
            s,
            "  ERRORS: {} connects failed, {} errors, {} deliveries missed; first: {}",
            r.failed,
            r.errors,
            r.missed,
            r.first_error.as_deref().unwrap_or("-")
        );
    }
    eprint!("{s}");
    println!("{}", if o.json { json(o, r) } else { summary(o, r) });
}

/// `--wire bin`'s settings: `, bidir.bin.v1 compressed above 512 B, psk key`.
fn wire_note(o: &Options) -> String {
    if o.wire != Wire::Bin {
        return String::new();
    }
    let compress =
        o.compress_above.map_or("uncompressed".into(), |n| format!("compressed above {n} B"));
    let key = o.key.as_ref().map_or(String::new(), |(mode, _)| format!(", {mode} key"));
    format!(", {} {compress}{key}", Wire::Bin.protocol())
}

/// The rpc encoding, its threshold and key mode as JSON fields (`null` where they do not
/// apply).
fn wire_fields(o: &Options) -> String {
    let quoted = |s: &str| format!("\"{s}\"");
    let wire = match o.rpc {
        Some((Dialect::Bidir, _)) => quoted(if o.wire == Wire::Bin { "bin" } else { "json" }),
        _ => "null".into(),
    };
    let bin = o.wire == Wire::Bin;
    let compress = o.compress_above.filter(|_| bin).map_or("null".into(), |n| n.to_string());
    let key = o.key.as_ref().map_or("null".into(), |(mode, _)| quoted(mode.token()));
    format!(r#""wire":{wire},"compress_above":{compress},"key_mode":{key},"#)
}

/// The one-line summary.
fn summary(o: &Options, r: &RunResult) -> String {
    let h = &r.latency;
    let mut s = format!("bidir-load: {}", o.label);
    match o.mode {
        Mode::Echo => {
            let _ = write!(s, " msg/s={:.0}", rate(r));
        }
        Mode::Connect => {
            let _ = write!(
                s,
                " conns={} handshakes/s={:.0}",
                r.opened,
                r.opened as f64 / r.connect_time.as_secs_f64().max(1e-9)
            );
        }
        Mode::Churn => {
            let _ = write!(s, " cycles={} cycles/s={:.0}", r.cycles, cycle_rate(r));
        }
        Mode::Fanout => {
            let _ = write!(s, " events/s={:.0} deliveries/s={:.0}", event_rate(r), rate(r));
        }
    }
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let _ = write!(s, " {name}_us={:.1}", us(h.value_at_quantile(q)));
    }
    if let Some(ns) = r.server_cpu_ns.and_then(|ns| per_message(ns, r)) {
        let _ = write!(s, " server_ns_per_msg={ns:.0}");
    }
    if let Some(b) = r.server_rss_per_conn {
        let _ = write!(s, " server_bytes_per_conn={b:.0}");
    }
    if let Some(ratio) = r.wire_in_ratio.filter(|_| o.deflate.is_some()) {
        let _ = write!(s, " wire_in_ratio={ratio:.3}");
    }
    if o.mode == Mode::Fanout {
        let _ = write!(s, " missed={}", r.missed);
    }
    let _ = write!(s, " errors={}", r.failed + r.errors);
    s
}

fn json(o: &Options, r: &RunResult) -> String {
    fn opt(v: Option<f64>) -> String {
        v.map_or("null".into(), |v| format!("{v:.1}"))
    }
    let h = &r.latency;
    let mut s = String::from("{");
    let _ = write!(
        s,
        r#""label":"{}","mode":"{}","conns":{},"inflight":{},"rate":{},"size":{},"binary":{},"raw":{},"deflate":{},"#,
        o.label.replace('\\', "\\\\").replace('"', "\\\""),
        o.mode.name(),
        o.conns,
        o.inflight,
        opt(o.rate),
        o.size,
        o.binary,
        o.raw,
        o.deflate.is_some()
    );
    s.push_str(&wire_fields(o));
    let _ = write!(
        s,
        r#""msgs_per_sec":{:.1},"messages":{},"window_s":{:.3},"events":{},"events_per_sec":{:.1},"missed":{},"#,
        rate(r),
        r.messages,
        r.window.as_secs_f64(),
        r.events,
        event_rate(r),
        r.missed
    );
    for (name, q) in QUANTILES {
        let _ = write!(s, r#""{}_us":{:.2},"#, name.replace('.', "_"), us(h.value_at_quantile(q)));
    }
    let _ = write!(
        s,
        r#""server_ns_per_msg":{},"server_kernel_share":{},"client_ns_per_msg":{},"server_bytes_per_conn":{},"client_bytes_per_conn":{},"#,
        opt(r.server_cpu_ns.and_then(|ns| per_message(ns, r))),
        r.server_kernel_share.map_or("null".into(), |v| format!("{v:.3}")),
        opt(per_message(r.own_cpu_ns, r)),
        opt(r.server_rss_per_conn),
        opt(r.own_rss_per_conn)
    );
    let usage = |f: fn(&ServerUsage) -> u64| {
        r.server_usage.as_ref().map_or("null".into(), |u| f(u).to_string())
    };
    let _ = write!(
        s,
        r#""cycles":{},"cycles_per_sec":{:.1},"server_ns_per_cycle":{},"handshake_p50_us":{},"handshake_p99_us":{},"server_rss_start":{},"server_rss_peak":{},"server_rss_end":{},"server_fds_start":{},"server_fds_peak":{},"server_fds_end":{},"#,
        r.cycles,
        cycle_rate(r),
        opt(per_cycle(r)),
        handshake_us(r, 0.5),
        handshake_us(r, 0.99),
        usage(|u| u.start.rss_bytes),
        usage(|u| u.peak.rss_bytes),
        usage(|u| u.end.rss_bytes),
        usage(|u| u.start.fds),
        usage(|u| u.peak.fds),
        usage(|u| u.end.fds)
    );
    let _ = write!(
        s,
        r#""wire_in_ratio":{},"opened":{},"connect_s":{:.3},"failed":{},"errors":{}}}"#,
        r.wire_in_ratio.map_or("null".into(), |v| format!("{v:.4}")),
        r.opened,
        r.connect_time.as_secs_f64(),
        r.failed,
        r.errors
    );
    s
}

pub(crate) fn write_files(o: &Options, r: &RunResult) -> Result<(), String> {
    if let Some(path) = &o.hgrm {
        fs::write(path, plot::hgrm(&r.latency)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &o.svg {
        let title = format!("{} latency by percentile", o.label);
        let svg = plot::svg(&title, &[plot::series(&r.latency, &o.label)], false);
        fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
