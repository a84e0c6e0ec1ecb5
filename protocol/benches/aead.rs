//! AES-256-GCM candidates sealing in place (encrypt + tag, the send path), at the sizes of
//! docs/security.md: a small call, one MTU, a typical batch, a large message. The figure to beat
//! is mORMot's published 1.7 GB/s (AES-GCM-128, its own asm); the goal is 4 GB/s at 16 KiB.
//!
//! `cargo bench -p bidir-protocol --bench aead`; add `-- --measurement-time 2` on a busy
//! machine; `RUSTFLAGS='--cfg bidir_bench_aws_lc'` adds aws-lc-rs. RustCrypto's portable path is measured by building with
//! `RUSTFLAGS='--cfg aes_backend="soft" --cfg polyval_backend="soft"'`. Results: docs/security.md, "Encryption of `bidir.bin.v1`".

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use bidir_protocol::rpc::seal::{self, Backend, Sealer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};

const SIZES: [usize; 4] = [64, 1536, 16 << 10, 1 << 20];
const KEY: [u8; 32] = [0x42; 32];
const AAD: [u8; 1] = [0x02];

fn seal_in_place(c: &mut Criterion) {
    let mut g = c.benchmark_group("aes256gcm_seal");
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).expect("32-byte key"));
    let rust_crypto = Aes256Gcm::new(&KEY.into());
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| {
                let nonce = ring::aead::Nonce::assume_unique_for_key([0; 12]);
                let tag =
                    ring_key.seal_in_place_separate_tag(nonce, Aad::from(AAD), black_box(&mut buf));
                black_box(tag.expect("length below the GCM limit"))
            });
        });
        g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter(|| {
                let nonce = Nonce::from([0; 12]);
                let tag = rust_crypto.encrypt_inout_detached(
                    &nonce,
                    &AAD,
                    black_box(&mut buf[..]).into(),
                );
                black_box(tag.expect("length below the GCM limit"))
            });
        });
        #[cfg(bidir_bench_aws_lc)]
        {
            use aws_lc_rs::aead::{
                AES_256_GCM as AWS_AES_256_GCM, Aad as AwsAad, LessSafeKey as AwsKey,
                Nonce as AwsNonce, UnboundKey as AwsUnbound,
            };
            let aws_key =
                AwsKey::new(AwsUnbound::new(&AWS_AES_256_GCM, &KEY).expect("32-byte key"));
            g.bench_with_input(BenchmarkId::new("aws-lc-rs", size), &size, |b, _| {
                b.iter(|| {
                    let nonce = AwsNonce::assume_unique_for_key([0; 12]);
                    let tag = aws_key.seal_in_place_separate_tag(
                        nonce,
                        AwsAad::from(AAD),
                        black_box(&mut buf),
                    );
                    black_box(tag.expect("length below the GCM limit"))
                });
            });
        }
        // The module's own path (counter nonce, tag appended to a Vec with room for it).
        for backend in [Backend::Hardware, Backend::Software] {
            if !backend.is_available() {
                continue;
            }
            let mut sealer = Sealer::with_backend(&KEY, backend);
            let mut msg = Vec::with_capacity(size + seal::TAG_LEN);
            g.bench_with_input(
                BenchmarkId::new(format!("seal_{}", backend.name()), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        msg.clear();
                        msg.resize(size, 0x5a);
                        sealer
                            .seal_in_place(&AAD, black_box(&mut msg))
                            .expect("counter not exhausted");
                    });
                },
            );
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = seal_in_place }
criterion_main!(benches);
