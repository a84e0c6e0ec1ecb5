//! Encode and decode cost, and size, of the message encodings (issue 14): the benchmark's call
//! and its answer, and a batch of 64 chat events, in `bidir.json.v1` (the `json` codec),
//! `bidir.bin.v1` (the `bin` codec: MessagePack with raw argument blobs), and, for reference,
//! whole messages through serde in MessagePack (rmp-serde) and CBOR (ciborium), which decode
//! the arguments with the rest. Every encode starts from typed arguments and every decode ends
//! with them, as the engine's path does. Short runs: medians are what matter.
//!
//! `cargo bench -p bidir-protocol --bench rpc_codec`; sizes are printed first.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use bidir_protocol::rpc::bin::{self, BinMsg, RawPack};
use bidir_protocol::rpc::{Blob, Msg, Raw, json};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
struct Reading<'a> {
    id: u32,
    /// Borrowed where the format can (not ciborium's reader).
    #[serde(borrow)]
    name: Cow<'a, str>,
    values: Vec<f64>,
    ok: bool,
}

/// [`Reading`] owned, for ciborium's reader (it cannot lend strings).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct OwnedReading {
    id: u32,
    name: String,
    values: Vec<f64>,
    ok: bool,
}

/// A whole owned message for the serde formats: tag, id or callback, method, arguments.
type Whole<A> = (u8, u64, String, A);

const EVENTS: usize = 64;

fn reading() -> Reading<'static> {
    Reading { id: 42, name: Cow::Borrowed("sensor"), values: vec![1.5, 2.25, 3.0], ok: true }
}

fn json_call(out: &mut Vec<u8>) {
    let args = Raw::encode(&(reading(),)).unwrap();
    json::encode(&Msg::Call { id: 1234, method: "Bench.echo".into(), args: Raw::new(&args) }, out);
}

fn json_answer(out: &mut Vec<u8>) {
    let value = Raw::encode(&reading()).unwrap();
    json::encode(&Msg::Result { id: 1234, value: Raw::new(&value) }, out);
}

fn json_events(out: &mut Vec<u8>) {
    let mut batch = json::Batch::default();
    for _ in 0..EVENTS {
        let args = Raw::encode(&("ada", "hello everyone")).unwrap();
        let msg =
            Msg::Invoke { callback: 7, method: "blabla".into(), args: Raw::new(&args), id: None };
        json::encode(&msg, batch.next_message());
    }
    out.extend_from_slice(batch.text().unwrap().as_bytes());
}

/// Encodes `args` as a blob into `scratch` and the message made of it into `out`.
fn bin_one<T: Serialize>(
    args: &T,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    msg: impl FnOnce(RawPack<'_>) -> BinMsg<'_>,
) {
    scratch.clear();
    RawPack::encode(args, scratch).unwrap();
    bin::encode(&msg(RawPack::new(scratch).unwrap()), out);
}

fn bin_call(out: &mut Vec<u8>) {
    bin_one(&(reading(),), &mut Vec::new(), out, |args| Msg::Call {
        id: 1234,
        method: "Bench.echo".into(),
        args,
    });
}

fn bin_answer(out: &mut Vec<u8>) {
    bin_one(&reading(), &mut Vec::new(), out, |value| Msg::Result { id: 1234, value });
}

fn bin_events(out: &mut Vec<u8>) {
    let (mut batch, mut scratch) = (bin::Batch::default(), Vec::new());
    for _ in 0..EVENTS {
        bin_one(&("ada", "hello everyone"), &mut scratch, batch.next_message(), |args| {
            Msg::Invoke { callback: 7, method: "blabla".into(), args, id: None }
        });
    }
    out.extend_from_slice(batch.bytes_out().unwrap());
}

fn whole_call() -> Whole<(Reading<'static>,)> {
    (0, 1234, "Bench.echo".to_owned(), (reading(),))
}

fn whole_answer() -> (u8, u64, Reading<'static>) {
    (2, 1234, reading())
}

fn whole_events() -> Vec<Whole<(&'static str, &'static str)>> {
    (0..EVENTS).map(|_| (4, 7, "blabla".to_owned(), ("ada", "hello everyone"))).collect()
}

fn rmp<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    RawPack::encode(value, out).unwrap();
}

fn cbor<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    ciborium::into_writer(value, out).unwrap();
}

/// Decodes one `json` or `bin` WebSocket message and its arguments, `typed` per message.
fn json_decode<'a, A: Deserialize<'a>>(text: &'a [u8]) -> usize {
    let mut n = 0;
    json::decode(std::str::from_utf8(text).unwrap(), |m| n += typed::<A, _>(m.unwrap())).unwrap();
    n
}

fn bin_decode<'a, A: Deserialize<'a>>(bytes: &'a [u8]) -> usize {
    let mut n = 0;
    bin::decode(bytes, |m| n += typed::<A, _>(m.unwrap())).unwrap();
    n
}

fn typed<'a, A: Deserialize<'a>, R: Blob<'a>>(msg: Msg<'a, R>) -> usize {
    let blob = match msg {
        Msg::Call { args, .. } | Msg::Invoke { args, .. } => args,
        Msg::Result { value, .. } => value,
        _ => unreachable!(),
    };
    black_box(blob.decode::<A>().unwrap());
    1
}

type CallArgs<'a> = (Reading<'a>,);
type EventArgs<'a> = (&'a str, &'a str);

fn cases(c: &mut Criterion) {
    let mut sizes = Vec::new();
    let mut group = c.benchmark_group("rpc_codec");
    macro_rules! case {
        ($name:literal, $encode:expr, $decode:expr) => {{
            let mut out = Vec::new();
            $encode(&mut out);
            sizes.push(($name, out.len()));
            group.bench_function(concat!($name, "/encode"), |b| {
                b.iter(|| {
                    let mut buf = Vec::with_capacity(out.len());
                    $encode(&mut buf);
                    black_box(buf)
                })
            });
            group
                .bench_function(concat!($name, "/decode"), |b| b.iter(|| $decode(black_box(&out))));
        }};
    }
    case!("call/json", json_call, json_decode::<CallArgs<'_>>);
    case!("call/bin", bin_call, bin_decode::<CallArgs<'_>>);
    case!("call/rmp-serde", |o| rmp(&whole_call(), o), |b: &[u8]| {
        black_box(rmp_serde::from_slice::<(u8, u64, &str, CallArgs<'_>)>(b).unwrap());
    });
    case!("call/cbor", |o| cbor(&whole_call(), o), |b: &[u8]| {
        black_box(ciborium::from_reader::<Whole<(OwnedReading,)>, _>(b).unwrap());
    });
    case!("answer/json", json_answer, json_decode::<Reading<'_>>);
    case!("answer/bin", bin_answer, bin_decode::<Reading<'_>>);
    case!("answer/rmp-serde", |o| rmp(&whole_answer(), o), |b: &[u8]| {
        black_box(rmp_serde::from_slice::<(u8, u64, Reading<'_>)>(b).unwrap());
    });
    case!("answer/cbor", |o| cbor(&whole_answer(), o), |b: &[u8]| {
        black_box(ciborium::from_reader::<(u8, u64, OwnedReading), _>(b).unwrap());
    });
    case!("events64/json", json_events, json_decode::<EventArgs<'_>>);
    case!("events64/bin", bin_events, bin_decode::<EventArgs<'_>>);
    case!("events64/rmp-serde", |o| rmp(&whole_events(), o), |b: &[u8]| {
        black_box(rmp_serde::from_slice::<Vec<(u8, u64, &str, EventArgs<'_>)>>(b).unwrap());
    });
    case!("events64/cbor", |o| cbor(&whole_events(), o), |b: &[u8]| {
        black_box(ciborium::from_reader::<Vec<Whole<(String, String)>>, _>(b).unwrap());
    });
    group.finish();
    for (name, size) in sizes {
        println!("size {name}: {size} bytes");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = cases
}
criterion_main!(benches);
