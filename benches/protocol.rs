//! Micro benchmarks of the protocol core: unmasking (against memcpy of the same bytes, the
//! ceiling), header parsing, deframing many small frames, upgrade parsing, UTF-8 validation,
//! permessage-deflate (our zlib-rs codec against miniz_oxide).
//!
//! `cargo bench --bench protocol`; results and the method are in docs/benchmarks.md.

use std::hint::black_box;

use bidir::protocol::deflate::Codec;
use bidir::protocol::frame::mask::{self, Kernel};
use bidir::protocol::frame::{FrameHeader, FrameRepr, OpCode, Rsv};
use bidir::protocol::http::{self, Accept, Request, Status};
use bidir::protocol::message::Utf8Validator;
use bidir::protocol::{Config, Connection, Deframer, Event, Input, Instant};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, compress as miniz_compress, create_comp_flags_from_zip_params,
};
use miniz_oxide::inflate::stream::{InflateState, inflate as miniz_inflate};
use miniz_oxide::{DataFormat, MZFlush};

const SIZES: [usize; 6] = [16, 128, 256, 1024, 64 << 10, 1 << 20];

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            if kernel == Kernel::Scalar && size > 64 << 10 {
                continue;
            }
            g.bench_with_input(BenchmarkId::new(format!("{kernel:?}"), size), &size, |b, _| {
                b.iter(|| mask::apply_mask_with(kernel, black_box(&mut buf), key, 1));
            });
        }
        g.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), key, 1));
        });
        let src = vec![0xa5u8; size];
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&src)));
        });
    }
    g.finish();
}

fn header(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_parse");
    for (name, len) in [("len7", 16u64), ("len16", 1000), ("len64", 100_000)] {
        let repr = FrameRepr {
            fin: true,
            rsv: Rsv::NONE,
            opcode: OpCode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_len: len,
        };
        let (bytes, n) = repr.to_bytes();
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                let h = FrameHeader::new_checked(black_box(&bytes[..n])).unwrap();
                FrameRepr::parse(&h).unwrap()
            });
        });
    }
    g.finish();
}

/// `count` masked binary frames of `size` bytes, as a client sends them.
fn masked_frames(count: usize, size: usize) -> Vec<u8> {
    let mut wire = Vec::with_capacity(count * (size + 14));
    for i in 0..count {
        let repr = FrameRepr {
            fin: true,
            rsv: Rsv::NONE,
            opcode: OpCode::Binary,
            mask: Some([i as u8, 7, 0x33, 0xc0]),
            payload_len: size as u64,
        };
        let (h, n) = repr.to_bytes();
        wire.extend_from_slice(&h[..n]);
        wire.extend(std::iter::repeat_n(b'x', size));
    }
    wire
}

fn deframe(c: &mut Criterion) {
    let mut g = c.benchmark_group("deframe");
    const FRAMES: usize = 4096;
    for size in [16usize, 128] {
        let wire = masked_frames(FRAMES, size);
        g.throughput(Throughput::Elements(FRAMES as u64));
        let mut buf = wire.clone();
        g.bench_with_input(BenchmarkId::new("deframer", size), &size, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&wire);
                let mut d = Deframer::new(bidir::protocol::Role::Server, 1 << 20);
                let mut input = Input::new(&mut buf);
                let mut n = 0usize;
                while let Some(chunk) = d.next(&mut input) {
                    n += chunk.unwrap().payload.len();
                }
                black_box(n)
            });
        });
        let mut buf = wire.clone();
        let mut spill = vec![];
        g.bench_with_input(BenchmarkId::new("connection", size), &size, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&wire);
                let now = Instant::from_nanos(1);
                let mut conn = Connection::server(now, Config::default());
                let mut input = Input::new(&mut buf);
                let mut n = 0usize;
                while let Some(ev) = conn.handle_bytes(now, &mut input, &mut spill).unwrap() {
                    if let Event::Message(m) = ev {
                        n += m.len();
                    }
                }
                black_box(n)
            });
        });
        // The copy that refills the buffer is part of the two loops above; measured alone:
        g.bench_with_input(BenchmarkId::new("refill_only", size), &size, |b, _| {
            b.iter(|| buf.copy_from_slice(black_box(&wire)));
        });
    }
    g.finish();
}

const BROWSER_REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\n\
    Host: 127.0.0.1:9001\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: http://127.0.0.1:9001\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn upgrade(c: &mut Criterion) {
    let mut g = c.benchmark_group("upgrade");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let mut headers = [http::EMPTY_HEADER; 32];
            let Status::Complete((req, _)) =
                Request::parse(black_box(BROWSER_REQUEST), &mut headers, 8192).unwrap()
            else {
                unreachable!()
            };
            black_box(req.upgrade().unwrap().key.len())
        });
    });
    let mut out = Vec::with_capacity(512);
    g.bench_function("parse_validate_accept", |b| {
        b.iter(|| {
            let mut headers = [http::EMPTY_HEADER; 32];
            let Status::Complete((req, _)) =
                Request::parse(black_box(BROWSER_REQUEST), &mut headers, 8192).unwrap()
            else {
                unreachable!()
            };
            let up = req.upgrade().unwrap();
            out.clear();
            Accept { key: up.accept_key(), protocol: None, extensions: None, headers: &[] }
                .write(&mut out)
                .unwrap();
            black_box(out.len())
        });
    });
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii: String = "The quick brown fox jumps over the lazy dog. ".repeat(1 << 15);
    let mixed: String = "Größe κόσμε 漢字 😀 plain ascii words here ".repeat(1 << 15);
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        let bytes = &text.as_bytes()[..1 << 20];
        let bytes =
            &bytes[..bytes.len() - (0..4).find(|&i| text.is_char_boundary((1 << 20) - i)).unwrap()];
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("simdutf8", name), |b| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(bytes)).is_ok());
        });
        g.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok());
        });
        g.bench_function(BenchmarkId::new("incremental_4k", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(bytes).chunks(4096) {
                    v.feed(piece).unwrap();
                }
                v.finish().is_ok()
            });
        });
    }
    g.finish();
}

/// Quote-like JSON records with varying numbers: what a market-data or RPC service sends.
fn json_like(len: usize) -> Vec<u8> {
    json_like_variant(len, 0)
}

fn json_like_variant(len: usize, variant: u64) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ variant.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut out = Vec::with_capacity(len + 200);
    out.push(b'[');
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META"];
        let record = format!(
            "{{\"id\":{},\"symbol\":\"{}\",\"price\":{}.{:02},\"qty\":{},\"side\":\"{}\",\"ts\":{}}},",
            seed % 1_000_000,
            symbols[(seed >> 20) as usize % symbols.len()],
            seed % 900 + 100,
            (seed >> 8) % 100,
            (seed >> 16) % 5000,
            if seed & 1 == 0 { "buy" } else { "sell" },
            1_763_800_000_000 + (seed >> 30) % 1_000_000,
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(len);
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// One message compressed and decompressed without context takeover (the shared profile,
/// and the only mode miniz_oxide can match window for window), level 1, 15-bit window.
fn deflate(c: &mut Criterion) {
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    let inputs =
        [("json", json_like(1024)), ("json", json_like(16 << 10)), ("random", random(16 << 10))];
    let mut g = c.benchmark_group("deflate");
    for (kind, input) in &inputs {
        let id = |lib: &str| BenchmarkId::new(format!("{lib}/{kind}"), input.len());
        g.throughput(Throughput::Bytes(input.len() as u64));
        let mut codec = Codec::new(1, 8, 15);
        let mut wire = Vec::with_capacity(2 * input.len() + 64);
        g.bench_function(id("compress/zlib-rs"), |b| {
            b.iter(|| {
                wire.clear();
                codec.compress(15, black_box(input), true, true, &mut wire);
                wire.len()
            });
        });
        if *kind == "json" {
            // The ratio a higher level buys, and what it costs.
            let mut level6 = Codec::new(6, 8, 15);
            let mut out = Vec::with_capacity(2 * input.len() + 64);
            level6.compress(15, input, true, true, &mut out);
            eprintln!("deflate {kind} {} B: zlib-rs level 6 -> {} B", input.len(), out.len() + 4);
            g.bench_function(id("compress/zlib-rs-level-6"), |b| {
                b.iter(|| {
                    out.clear();
                    level6.compress(15, black_box(input), true, true, &mut out);
                    out.len()
                });
            });
        }
        let mut miniz = CompressorOxide::new(create_comp_flags_from_zip_params(1, -15, 0));
        let mut buf = vec![0u8; 2 * input.len() + 64];
        g.bench_function(id("compress/miniz_oxide"), |b| {
            b.iter(|| {
                miniz.reset();
                let (_, _, n) =
                    miniz_compress(&mut miniz, black_box(input), &mut buf, TDEFLFlush::Sync);
                n
            });
        });
        let miniz_len = {
            miniz.reset();
            miniz_compress(&mut miniz, input, &mut buf, TDEFLFlush::Sync).2
        };
        wire.clear();
        codec.compress(15, input, true, true, &mut wire);
        eprintln!(
            "deflate {kind} {} B: zlib-rs level 1 -> {} B, miniz_oxide level 1 -> {} B",
            input.len(),
            wire.len() + TAIL.len(),
            miniz_len
        );
        let mut out = Vec::with_capacity(input.len() + 64);
        g.bench_function(id("decompress/zlib-rs"), |b| {
            b.iter(|| {
                out.clear();
                codec.decompress(black_box(&wire), input.len(), true, &mut out).unwrap();
                out.len()
            });
        });
        let mut state = InflateState::new_boxed(DataFormat::Raw);
        let mut with_tail = wire.clone();
        with_tail.extend_from_slice(&TAIL);
        let mut plain = vec![0u8; input.len() + 64];
        g.bench_function(id("decompress/miniz_oxide"), |b| {
            b.iter(|| {
                state.reset(DataFormat::Raw);
                let r = miniz_inflate(&mut state, black_box(&with_tail), &mut plain, MZFlush::Sync);
                assert_eq!(r.bytes_written, input.len());
                r.bytes_written
            });
        });
    }
    g.finish();
}

/// Compressing 1 KiB JSON messages in turn (64 different ones) with context kept live, kept
/// compactly (the window as a preset dictionary each time) and not kept, per window size.
fn deflate_context(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = (0..64).map(|i| json_like_variant(1024, i)).collect();
    let mut g = c.benchmark_group("deflate_context");
    g.throughput(Throughput::Bytes(1024));
    for bits in [9u8, 12, 15] {
        for mode in ["live", "compact", "none"] {
            let mut codec = Codec::new(1, 8, 15);
            let mut history: Vec<u8> = Vec::new();
            let mut out = Vec::with_capacity(4096);
            let mut n = 0usize;
            let mut step = |codec: &mut Codec, history: &mut Vec<u8>, out: &mut Vec<u8>| {
                let msg = &messages[n % messages.len()];
                n += 1;
                out.clear();
                match mode {
                    "live" => codec.compress(bits, msg, true, false, out),
                    "compact" => {
                        codec.prime_compressor(bits, history);
                        codec.compress(bits, msg, true, false, out);
                        history.extend_from_slice(msg);
                        let excess = history.len().saturating_sub(1 << bits);
                        history.drain(..excess);
                    }
                    _ => codec.compress(bits, msg, true, true, out),
                }
                out.len()
            };
            let (mut total, rounds) = (0, 256);
            for _ in 0..rounds {
                total += step(&mut codec, &mut history, &mut out);
            }
            eprintln!(
                "deflate_context {bits} bits {mode}: {:.1} % of the input",
                100.0 * total as f64 / (rounds * 1024) as f64
            );
            g.bench_function(BenchmarkId::new(mode, bits), |b| {
                b.iter(|| step(&mut codec, &mut history, &mut out));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, unmask, header, deframe, upgrade, utf8, deflate, deflate_context);
criterion_main!(benches);
