//! The cost of agreeing a connection's keys in each `Bidir-Key` mode: a whole exchange, the
//! client's start and offer, the server's accept, the client's finish, through the header text
//! and with seeds from the operating system as the engine runs it. `psk` is HMAC and HKDF;
//! `ecdhe` adds two X25519 key generations and one X25519 per side (Noise NNpsk0).
//!
//! `cargo bench -p bidir-protocol --bench keys`. Results: docs/rpc.md ("Keys") and the notes.

use std::hint::black_box;

use bidir_protocol::rpc::key::{KeyExchange, KeyMode, Psk, accept};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_exchange");
    let psk = Psk::new(&[0x42; 32]).expect("32 bytes");
    for mode in [KeyMode::Psk, KeyMode::Ecdhe] {
        g.bench_with_input(BenchmarkId::new("client+server", mode), &mode, |b, &mode| {
            b.iter(|| {
                let exchange = KeyExchange::start(mode, &psk).expect("system randomness");
                let offer = exchange.offer();
                let (answer, server) =
                    accept(&psk, Some(black_box(offer.as_bytes()))).expect("the same key");
                let client = exchange.finish(black_box(answer.as_bytes())).expect("the same key");
                black_box((client, server))
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(2))
        .warm_up_time(std::time::Duration::from_millis(500))
}

criterion_group! { name = benches; config = config(); targets = handshake }
criterion_main!(benches);
