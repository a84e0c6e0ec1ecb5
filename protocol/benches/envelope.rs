//! The `bidir.bin.v1` envelope's compression (issue 14): the candidate codecs — lz4_flex (LZ4
//! block format, pure Rust) and zlib-rs (raw deflate at levels 1 and 6, the stream kept and
//! reset as a worker would keep it) — compressing and decompressing (a) a batch of 64 chat
//! events encoded with `rpc::bin`, (b) one call with a JSON-like argument of about 1 KiB,
//! (c) a batch of about 16 KiB of chat events; then the whole envelope (`pack`, `seal`,
//! `Inbound::open`) with the chosen codec, against sealing alone.
//!
//! Before the criterion groups, a table: for batches of 1 to 512 events and the call, the
//! plain size, each codec's compressed size and its compress and decompress time (median of
//! short timed loops) — where compression starts paying decides the threshold.
//!
//! `cargo bench -p bidir-protocol --bench envelope`. Results and the reasoning: docs/rpc.md,
//! "bidir.bin.v1 envelope".

use std::hint::black_box;
use std::time::{Duration, Instant};

use bidir_protocol::rpc::Msg;
use bidir_protocol::rpc::bin::{self, RawPack};
use bidir_protocol::rpc::envelope::{self, Inbound};
use bidir_protocol::rpc::seal::{Opener, Sealer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

const KEY: [u8; 32] = [0x42; 32];

const NAMES: [&str; 8] = ["ada", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
const WORDS: [&str; 24] = [
    "hello",
    "everyone",
    "the",
    "build",
    "is",
    "green",
    "again",
    "who",
    "broke",
    "tests",
    "on",
    "main",
    "lunch",
    "at",
    "noon",
    "review",
    "my",
    "branch",
    "please",
    "thanks",
    "merged",
    "now",
    "deploying",
    "today",
];

/// A small deterministic generator (xorshift), so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A chat line of 2 to 9 words.
fn line(rng: &mut Rng) -> String {
    let n = 2 + rng.below(8);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    words.join(" ")
}

/// `count` chat events as the engine gathers them: callback invocations `Said(who, text)` in
/// one `rpc::bin` batch (one message alone when `count` is 1), with varied speakers and lines.
fn events(count: usize) -> Vec<u8> {
    let (mut batch, mut blob, mut rng) = (bin::Batch::default(), Vec::new(), Rng(0x9e37_79b9));
    for i in 0..count {
        blob.clear();
        RawPack::encode(&(NAMES[rng.below(NAMES.len())], line(&mut rng)), &mut blob).unwrap();
        let args = RawPack::new(&blob).unwrap();
        let msg = Msg::Invoke { callback: 7, method: "Said".into(), args, id: None };
        bin::encode(&msg, batch.next_message());
        assert!(i < bidir_protocol::rpc::MAX_BATCH);
    }
    batch.bytes_out().unwrap().to_vec()
}

/// A record of the JSON-like argument: what a directory or settings call carries.
#[derive(Serialize)]
struct Member {
    id: u32,
    name: &'static str,
    email: String,
    role: &'static str,
    active: bool,
    score: f64,
    tags: Vec<&'static str>,
}

/// (b): one call whose argument is a list of records encoded as maps (keys repeated, as JSON
/// would have them), about 1 KiB in all.
fn call_1k() -> Vec<u8> {
    let mut rng = Rng(0x1234_5678);
    let members: Vec<Member> = (0..9)
        .map(|i| Member {
            id: 1000 + i,
            name: NAMES[i as usize % NAMES.len()],
            email: format!("{}@example.org", NAMES[i as usize % NAMES.len()]),
            role: ["admin", "member", "guest"][rng.below(3)],
            active: rng.below(2) == 0,
            score: rng.below(1000) as f64 / 10.0,
            tags: (0..rng.below(3)).map(|_| WORDS[rng.below(WORDS.len())]).collect(),
        })
        .collect();
    let mut blob = Vec::new();
    RawPack::encode(&(members,), &mut blob).unwrap();
    let args = RawPack::new(&blob).unwrap();
    assert!(args.decode::<serde::de::IgnoredAny>().is_ok());
    let mut out = Vec::new();
    bin::encode(&Msg::Call { id: 77, method: "Directory.update".into(), args }, &mut out);
    out
}

/// (c): a batch of chat events of about 16 KiB.
fn batch_16k() -> Vec<u8> {
    let mut count = 300;
    loop {
        let bytes = events(count);
        if bytes.len() >= 16 << 10 {
            return bytes;
        }
        count += 10;
    }
}

/// One candidate codec, with the state a worker would keep between messages.
trait Codec {
    fn name(&self) -> String;
    /// Compresses `plain` into `out` (cleared first).
    fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>);
    /// Decompresses `body` into `out`, which has exactly the plain length.
    fn decompress(&mut self, body: &[u8], out: &mut [u8]);
}

struct Lz4;

impl Codec for Lz4 {
    fn name(&self) -> String {
        "lz4_flex".to_owned()
    }

    fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.resize(lz4_flex::block::get_maximum_output_size(plain.len()), 0);
        let n = lz4_flex::block::compress_into(plain, out).unwrap();
        out.truncate(n);
    }

    fn decompress(&mut self, body: &[u8], out: &mut [u8]) {
        let n = lz4_flex::block::decompress_into(body, out).unwrap();
        assert_eq!(n, out.len());
    }
}

struct Zlib {
    level: i32,
    deflate: Deflate,
    inflate: Inflate,
}

impl Zlib {
    fn new(level: i32) -> Self {
        let config = DeflateConfig { level, window_bits: -15, mem_level: 8, ..Default::default() };
        Self { level, deflate: Deflate::new_with_config(config), inflate: Inflate::new(false, 15) }
    }
}

impl Codec for Zlib {
    fn name(&self) -> String {
        format!("zlib-rs-{}", self.level)
    }

    fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.resize(plain.len() + plain.len() / 8 + 64, 0);
        self.deflate.reset();
        let status = self.deflate.compress(plain, out, DeflateFlush::Finish).unwrap();
        assert_eq!(status, Status::StreamEnd);
        out.truncate(self.deflate.total_out() as usize);
    }

    fn decompress(&mut self, body: &[u8], out: &mut [u8]) {
        self.inflate.reset(false);
        let status = self.inflate.decompress(body, out, InflateFlush::Finish).unwrap();
        assert_eq!(status, Status::StreamEnd);
        assert_eq!(self.inflate.total_out() as usize, out.len());
    }
}

fn codecs() -> Vec<Box<dyn Codec>> {
    vec![Box::new(Lz4), Box::new(Zlib::new(1)), Box::new(Zlib::new(6))]
}

/// The median nanoseconds of one call of `f`, over 9 loops of `iters` calls.
fn median_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[4]
}

/// The table of sizes and times, printed before the criterion groups.
fn table() {
    let mut inputs: Vec<(String, Vec<u8>)> = [1, 2, 4, 8, 10, 12, 14, 16, 20, 24, 32, 64, 128, 512]
        .map(|n| (format!("{n} events"), events(n)))
        .into();
    inputs.push(("call ~1 KiB".to_owned(), call_1k()));
    println!("input | plain B | codec | compressed B | ratio | compress ns | decompress ns");
    for (label, plain) in &inputs {
        for mut codec in codecs() {
            let (mut body, mut back) = (Vec::new(), vec![0; plain.len()]);
            codec.compress(plain, &mut body);
            codec.decompress(&body, &mut back);
            assert_eq!(&back, plain);
            let iters = (200_000 / plain.len().max(64)) as u32 + 20;
            let c = median_ns(iters, || codec.compress(black_box(plain), &mut body));
            let d = median_ns(iters, || codec.decompress(black_box(&body), &mut back));
            let ratio = body.len() as f64 / plain.len() as f64;
            println!(
                "{label} | {} | {} | {} | {ratio:.2} | {c:.0} | {d:.0}",
                plain.len(),
                codec.name(),
                body.len()
            );
        }
    }
}

fn inputs() -> [(&'static str, Vec<u8>); 3] {
    [("events64", events(64)), ("call1k", call_1k()), ("batch16k", batch_16k())]
}

fn codec_groups(c: &mut Criterion) {
    table();
    for (input, plain) in inputs() {
        let mut g = c.benchmark_group(format!("compress_{input}"));
        g.throughput(Throughput::Bytes(plain.len() as u64));
        for mut codec in codecs() {
            let mut body = Vec::new();
            g.bench_function(BenchmarkId::new(codec.name(), plain.len()), |b| {
                b.iter(|| codec.compress(black_box(&plain), &mut body));
            });
        }
        g.finish();
        let mut g = c.benchmark_group(format!("decompress_{input}"));
        g.throughput(Throughput::Bytes(plain.len() as u64));
        for mut codec in codecs() {
            let (mut body, mut back) = (Vec::new(), vec![0; plain.len()]);
            codec.compress(&plain, &mut body);
            g.bench_function(BenchmarkId::new(codec.name(), plain.len()), |b| {
                b.iter(|| codec.decompress(black_box(&body), &mut back));
            });
        }
        g.finish();
    }
}

/// The envelope with the chosen codec and threshold: pack (compress, CRC), seal (strip the
/// CRC, encrypt), open (decrypt, decompress); and sealing the plain bytes alone.
fn envelope_groups(c: &mut Criterion) {
    for (input, plain) in inputs() {
        let mut g = c.benchmark_group(format!("envelope_{input}"));
        g.throughput(Throughput::Bytes(plain.len() as u64));
        let fresh = || {
            let mut msg = Vec::with_capacity(plain.len() + 64);
            msg.push(0);
            msg.extend_from_slice(&plain);
            msg
        };
        let (mut msg, mut scratch) = (fresh(), Vec::new());
        g.bench_function("pack", |b| {
            b.iter(|| {
                msg.truncate(1);
                msg.extend_from_slice(&plain);
                envelope::pack(&mut msg, Some(envelope::COMPRESS_ABOVE), &mut scratch);
                black_box(&msg);
            });
        });
        let mut sealer = Sealer::new(&KEY);
        g.bench_function("seal_plain", |b| {
            b.iter(|| {
                let mut msg = fresh();
                envelope::pack(&mut msg, None, &mut scratch);
                envelope::seal(&mut sealer, &mut msg).unwrap();
                black_box(msg);
            });
        });
        g.bench_function("pack_seal", |b| {
            b.iter(|| {
                let mut msg = fresh();
                envelope::pack(&mut msg, Some(envelope::COMPRESS_ABOVE), &mut scratch);
                envelope::seal(&mut sealer, &mut msg).unwrap();
                black_box(msg);
            });
        });
        // Opening needs the sender's counter in step: seal a fresh message per iteration
        // outside the timed part.
        let (mut sealer, mut inbound) =
            (Sealer::new(&KEY), Inbound::new(Some(Opener::new(&KEY)), 1 << 24));
        g.bench_function("open_sealed_compressed", |b| {
            b.iter_batched_ref(
                || {
                    let mut msg = fresh();
                    envelope::pack(&mut msg, Some(envelope::COMPRESS_ABOVE), &mut Vec::new());
                    envelope::seal(&mut sealer, &mut msg).unwrap();
                    msg
                },
                |wire| black_box(inbound.open(wire).unwrap().len()),
                criterion::BatchSize::SmallInput,
            );
        });
        let mut plain_inbound = Inbound::new(None, 1 << 24);
        let mut packed = fresh();
        envelope::pack(&mut packed, Some(envelope::COMPRESS_ABOVE), &mut scratch);
        g.bench_function("open_compressed", |b| {
            b.iter_batched_ref(
                || packed.clone(),
                |wire| black_box(plain_inbound.open(wire).unwrap().len()),
                criterion::BatchSize::SmallInput,
            );
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

criterion_group! { name = benches; config = config(); targets = codec_groups, envelope_groups }
criterion_main!(benches);
