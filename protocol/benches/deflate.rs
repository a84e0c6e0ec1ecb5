//! permessage-deflate without context (issue 15): a whole message compressed and decompressed
//! on its own, as a server with a shared codec does per message — the zlib-rs stream reset
//! per message (`Codec::compress` / `Codec::decompress` with `reset`) against the one-call
//! path (`Codec::compress_message`: our encoder; `Codec::decompress_message`: libdeflate), at
//! 1 KiB and 16 KiB of JSON-like text (the records `bidir-load` sends) and of chat-like lines.
//!
//! Before the criterion groups, a table: each payload's compressed size per path and the
//! median time of short timed loops.
//!
//! `cargo bench -p bidir-protocol --bench deflate`. Results: docs/benchmarks.md, "compressed
//! path". For instruction counts, stable on a busy machine: with `DEFLATE_CALLS=N` and
//! `DEFLATE_PAYLOAD=I` (0–3, the table's rows) the binary only runs each operation N times on
//! that payload, for `valgrind --tool=callgrind` to count per function (`stream_compress`,
//! `whole_compress`, `stream_decompress`, `whole_decompress`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bidir_protocol::deflate::Codec;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `bidir-load`'s text payload: 16 digits, then JSON records.
fn json_like(len: usize) -> Vec<u8> {
    let mut text = "0".repeat(16);
    while text.len() < len {
        text.push_str(r#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true},"#);
    }
    text.truncate(len);
    text.into_bytes()
}

/// Lines of chat with varied names, words and numbers: less repetitive than [`json_like`].
fn chat_like(len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "hello", "build", "green", "again", "tests", "broke", "who", "the", "is", "on", "main",
        "fixed",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::new();
    while text.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let words: Vec<&str> = (0..4).map(|i| WORDS[(x >> (i * 8)) as usize % 12]).collect();
        text.push_str(&format!(
            r#"{{"user":"u{}","at":{},"text":"{}"}}"#,
            x % 1000,
            x >> 40,
            words.join(" ")
        ));
    }
    text.truncate(len);
    text.into_bytes()
}

fn payloads() -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for (name, make) in [("json", json_like as fn(usize) -> Vec<u8>), ("chat", chat_like)] {
        for size in [1 << 10, 16 << 10] {
            all.push((format!("{name} {} KiB", size >> 10), make(size)));
        }
    }
    all
}

#[inline(never)]
fn stream_compress(codec: &mut Codec, msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    codec.compress(15, msg, true, true, out);
}

#[inline(never)]
fn whole_compress(codec: &mut Codec, msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    codec.compress_message(15, msg, out);
}

#[inline(never)]
fn stream_decompress(codec: &mut Codec, wire: &[u8], out: &mut Vec<u8>) {
    out.clear();
    codec.decompress(wire, 1 << 24, true, out).expect("valid");
}

#[inline(never)]
fn whole_decompress(codec: &mut Codec, wire: &[u8], out: &mut Vec<u8>) {
    out.clear();
    codec.decompress_message(wire, 1 << 24, out).expect("valid");
}

/// Median nanoseconds per call of `f` over a few short timed loops.
fn time(mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(20) {
            f();
            n += 1;
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn table() {
    println!(
        "payload | stream bytes | whole bytes | compress ns: stream, whole | decompress ns: stream, whole"
    );
    for (name, msg) in payloads() {
        let mut codec = Codec::new(1, 8, 15);
        let (mut stream, mut whole, mut out) = (Vec::new(), Vec::new(), Vec::new());
        stream_compress(&mut codec, &msg, &mut stream);
        whole_compress(&mut codec, &msg, &mut whole);
        let cs = time(|| stream_compress(&mut codec, black_box(&msg), &mut out));
        let cw = time(|| whole_compress(&mut codec, black_box(&msg), &mut out));
        let ds = time(|| stream_decompress(&mut codec, black_box(&stream), &mut out));
        let dw = time(|| whole_decompress(&mut codec, black_box(&whole), &mut out));
        println!(
            "{name} | {} | {} | {cs:.0}, {cw:.0} ({:.2}x) | {ds:.0}, {dw:.0} ({:.2}x)",
            stream.len(),
            whole.len(),
            cw / cs,
            dw / ds
        );
    }
}

/// `DEFLATE_CALLS` times each operation on payload `DEFLATE_PAYLOAD`, for callgrind.
fn calls(n: usize, payload: usize) {
    let msg = &payloads()[payload].1;
    let mut codec = Codec::new(1, 8, 15);
    let (mut stream, mut whole, mut out) = (Vec::new(), Vec::new(), Vec::new());
    stream_compress(&mut codec, msg, &mut stream);
    whole_compress(&mut codec, msg, &mut whole);
    for _ in 0..n {
        stream_compress(&mut codec, black_box(msg), &mut out);
        whole_compress(&mut codec, black_box(msg), &mut out);
        stream_decompress(&mut codec, black_box(&stream), &mut out);
        whole_decompress(&mut codec, black_box(&whole), &mut out);
    }
}

fn bench(c: &mut Criterion) {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let (Some(n), Some(payload)) = (var("DEFLATE_CALLS"), var("DEFLATE_PAYLOAD")) {
        return calls(n, payload);
    }
    table();
    let mut group = c.benchmark_group("deflate_no_context");
    for (name, msg) in payloads() {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        let mut codec = Codec::new(1, 8, 15);
        let (mut stream, mut whole, mut out) = (Vec::new(), Vec::new(), Vec::new());
        stream_compress(&mut codec, &msg, &mut stream);
        whole_compress(&mut codec, &msg, &mut whole);
        group.bench_function(BenchmarkId::new("compress_stream", &name), |b| {
            b.iter(|| stream_compress(&mut codec, black_box(&msg), &mut out))
        });
        group.bench_function(BenchmarkId::new("compress_whole", &name), |b| {
            b.iter(|| whole_compress(&mut codec, black_box(&msg), &mut out))
        });
        group.bench_function(BenchmarkId::new("decompress_stream", &name), |b| {
            b.iter(|| stream_decompress(&mut codec, black_box(&stream), &mut out))
        });
        group.bench_function(BenchmarkId::new("decompress_whole", &name), |b| {
            b.iter(|| whole_decompress(&mut codec, black_box(&whole), &mut out))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
