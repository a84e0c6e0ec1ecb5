//! AES-256-GCM for `bidir.bin.v1`: one [`Sealer`] for the direction a side sends, one
//! [`Opener`] for the direction it receives, each with its own 32-byte key (from
//! [`psk`](super::psk)) and its own message counter.
//!
//! # Nonces
//!
//! A nonce is four zero bytes then the 64-bit big-endian counter: 0 for the first message a
//! side sends, one more for each message after it. The counter is never sent: the receiver
//! expects exactly its next one, so a replayed, reordered, dropped or altered message fails
//! authentication. A failed open leaves the counter where it was; the connection must then
//! close with 1008 ([`AuthError`] converts to that [`CloseCode`]), since every later message
//! would fail too. A key never seals two messages under one nonce: the counter stops one short
//! of wrapping ([`SealError::CounterExhausted`]).
//!
//! # Backends
//!
//! Two implementations give the same bytes (a test holds them to it): [`Backend::Hardware`],
//! ring's assembly (AES-NI or VAES with carry-less multiply, about 5 GB/s at 16 KiB on the
//! development machine), and [`Backend::Software`], RustCrypto's `aes-gcm`. The process picks
//! one at first use ([`backend`]): hardware when the CPU has AES and carry-less multiply
//! instructions, software otherwise or when the environment variable `BIDIR_AES` is `soft`.
//! RustCrypto still detects AES-NI and CLMUL by itself; building with
//! `RUSTFLAGS='--cfg aes_backend="soft" --cfg polyval_backend="soft"'` makes it run its
//! portable constant-time code, which is how CI tests the path a CPU without those
//! instructions takes. [`aead_backend`] names what runs, for `Stats` and the log.
//!
//! Reading `BIDIR_AES` and the CPU's features is the one piece of process state this sans-IO
//! crate consults; it happens once.

use std::fmt;
use std::sync::OnceLock;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, aes};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};

use crate::frame::CloseCode;

/// Length of a key: AES-256.
pub const KEY_LEN: usize = 32;
/// Length of the tag appended to each sealed message.
pub const TAG_LEN: usize = 16;
/// Length of a GCM nonce: four zero bytes and the counter.
const NONCE_LEN: usize = 12;

/// Which implementation of AES-256-GCM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// ring: AES-NI / VAES and carry-less multiply in assembly.
    Hardware,
    /// RustCrypto `aes-gcm`: portable code on CPUs without AES instructions, or when forced.
    Software,
}

impl Backend {
    /// Whether the CPU has the instructions the hardware path is for (AES and carry-less
    /// multiply). [`Sealer::with_backend`] works either way: ring falls back to its own
    /// portable code, so this only decides what [`backend`] picks.
    pub fn is_available(self) -> bool {
        match self {
            Self::Hardware => cpu_has_aes_clmul(),
            Self::Software => true,
        }
    }

    /// A short name for benchmarks and logs: `ring`, `rustcrypto-soft` (its portable code
    /// runs), `rustcrypto-ni` (RustCrypto found AES-NI itself: forced software without the
    /// soft build cfgs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hardware => "ring",
            Self::Software if aes::hardware_accelerated() => "rustcrypto-ni",
            Self::Software => "rustcrypto-soft",
        }
    }

    /// The backend for a value of `BIDIR_AES` and the CPU's features: `soft` forces the
    /// software path; anything else, or no value, picks hardware when the CPU has it.
    pub fn choose(bidir_aes: Option<&str>, hardware_available: bool) -> Self {
        match bidir_aes {
            Some("soft") => Self::Software,
            _ if hardware_available => Self::Hardware,
            _ => Self::Software,
        }
    }
}

/// The backend of this process, chosen at the first call from `BIDIR_AES` and the CPU
/// ([`Backend::choose`]) and the same for every later call, from any thread.
pub fn backend() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let forced = std::env::var("BIDIR_AES").ok();
        Backend::choose(forced.as_deref(), Backend::Hardware.is_available())
    })
}

/// The name of this process's backend ([`Backend::name`]): what `Stats` and the start-up log
/// line report.
pub fn aead_backend() -> &'static str {
    backend().name()
}

fn cpu_has_aes_clmul() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FEAT_AES includes PMULL, the carry-less multiply.
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// A message failed authentication: wrong key, replayed, reordered, dropped, truncated or
/// altered — the cases are indistinguishable by design. The connection closes with 1008.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthError;

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}

impl std::error::Error for AuthError {}

impl From<AuthError> for CloseCode {
    fn from(_: AuthError) -> Self {
        Self::POLICY_VIOLATION
    }
}

/// A message could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The direction sent 2^64 − 1 messages: its key must not seal another.
    CounterExhausted,
    /// Longer than GCM allows under one nonce (about 64 GiB): far above any message limit.
    TooLong,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CounterExhausted => "message counter exhausted",
            Self::TooLong => "message too long for AES-GCM",
        })
    }
}

impl std::error::Error for SealError {}

/// The keyed cipher of one direction, in either implementation.
enum Cipher {
    Ring(LessSafeKey),
    RustCrypto(Aes256Gcm),
}

impl Cipher {
    fn new(key: &[u8; KEY_LEN], backend: Backend) -> Self {
        match backend {
            Backend::Hardware => {
                let key = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes 32-byte keys");
                Self::Ring(LessSafeKey::new(key))
            }
            Backend::Software => Self::RustCrypto(Aes256Gcm::new(key.into())),
        }
    }

    fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        match self {
            Self::Ring(key) => {
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let tag = key.seal_in_place_separate_tag(nonce, Aad::from(aad), data);
                let tag = tag.map_err(|_| SealError::TooLong)?;
                Ok(tag.as_ref().try_into().expect("GCM tags are 16 bytes"))
            }
            Self::RustCrypto(key) => {
                let tag = key.encrypt_inout_detached(&nonce.into(), aad, data.into());
                Ok(tag.map_err(|_| SealError::TooLong)?.into())
            }
        }
    }

    fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: [u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        match self {
            Self::Ring(key) => {
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let tag = ring::aead::Tag::from(tag);
                key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, data, 0..)
                    .map(drop)
                    .map_err(|_| AuthError)
            }
            Self::RustCrypto(key) => key
                .decrypt_inout_detached(&nonce.into(), aad, data.into(), &tag.into())
                .map_err(|_| AuthError),
        }
    }
}

/// The counter of one direction: the next nonce, and the refusal to reuse one.
#[derive(Clone, Copy, Debug, Default)]
struct Counter(u64);

impl Counter {
    /// The nonce of the next message; `None` once the counter reached its last value, which
    /// is never used, so no nonce repeats.
    fn nonce(self) -> Option<[u8; NONCE_LEN]> {
        if self.0 == u64::MAX {
            return None;
        }
        let mut nonce = [0; NONCE_LEN];
        nonce[4..].copy_from_slice(&self.0.to_be_bytes());
        Some(nonce)
    }

    fn advance(&mut self) {
        self.0 += 1;
    }
}

/// Seals the messages of the direction this side sends: AES-256-GCM under the direction's
/// key, nonces from the counter (the module doc's rule), the tag appended.
pub struct Sealer {
    cipher: Cipher,
    counter: Counter,
}

impl Sealer {
    /// A sealer for `key`, on this process's [`backend`], its counter at 0.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self::with_backend(key, backend())
    }

    /// A sealer on a given backend: for tests and benchmarks that compare them.
    pub fn with_backend(key: &[u8; KEY_LEN], backend: Backend) -> Self {
        Self { cipher: Cipher::new(key, backend), counter: Counter::default() }
    }

    /// Encrypts `msg` where it lies and appends the 16-byte tag, authenticating `aad` (the
    /// envelope byte) with it, then advances the counter. Reserve [`TAG_LEN`] bytes of
    /// capacity to avoid a reallocation.
    ///
    /// # Errors
    ///
    /// [`SealError`], with `msg` and the counter unchanged.
    pub fn seal_in_place(&mut self, aad: &[u8], msg: &mut Vec<u8>) -> Result<(), SealError> {
        self.seal_in_place_from(aad, msg, 0)
    }

    /// As [`Sealer::seal_in_place`], for the bytes of `msg` from `start` on: `msg[..start]`
    /// (a header sent in the clear, such as the envelope byte) is left as it is and not
    /// authenticated unless it is also in `aad`. Encrypts where the bytes lie, without a copy.
    ///
    /// # Errors
    ///
    /// [`SealError`], with `msg` and the counter unchanged.
    ///
    /// # Panics
    ///
    /// When `start` is past the end of `msg`.
    pub fn seal_in_place_from(
        &mut self,
        aad: &[u8],
        msg: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), SealError> {
        let nonce = self.counter.nonce().ok_or(SealError::CounterExhausted)?;
        let tag = self.cipher.seal(nonce, aad, &mut msg[start..])?;
        msg.extend_from_slice(&tag);
        self.counter.advance();
        Ok(())
    }

    /// How many messages this sealer sealed.
    pub fn sealed(&self) -> u64 {
        self.counter.0
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("sealed", &self.counter.0).finish_non_exhaustive()
    }
}

/// Opens the messages of the direction this side receives: the [`Sealer`]'s counterpart,
/// expecting exactly the next counter.
pub struct Opener {
    cipher: Cipher,
    counter: Counter,
}

impl Opener {
    /// An opener for `key`, on this process's [`backend`], expecting counter 0.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self::with_backend(key, backend())
    }

    /// An opener on a given backend: for tests and benchmarks that compare them.
    pub fn with_backend(key: &[u8; KEY_LEN], backend: Backend) -> Self {
        Self { cipher: Cipher::new(key, backend), counter: Counter::default() }
    }

    /// Checks the tag at the end of `msg` against the expected counter and `aad`, decrypts
    /// the rest where it lies, advances the counter and returns the plaintext's length: the
    /// plaintext is `msg[..len]`.
    ///
    /// # Errors
    ///
    /// [`AuthError`] when `msg` is shorter than a tag or does not authenticate (close with
    /// 1008). The counter does not advance; `msg`'s contents are then unspecified and must
    /// not be delivered.
    pub fn open_in_place(&mut self, aad: &[u8], msg: &mut [u8]) -> Result<usize, AuthError> {
        let nonce = self.counter.nonce().ok_or(AuthError)?;
        let len = msg.len().checked_sub(TAG_LEN).ok_or(AuthError)?;
        let (data, tag) = msg.split_at_mut(len);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().expect("split at the tag");
        self.cipher.open(nonce, aad, data, tag)?;
        self.counter.advance();
        Ok(len)
    }

    /// How many messages this opener authenticated.
    pub fn opened(&self) -> u64 {
        self.counter.0
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener").field("opened", &self.counter.0).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKENDS: [Backend; 2] = [Backend::Hardware, Backend::Software];

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(text: &str) -> [u8; KEY_LEN] {
        hex(text).try_into().unwrap()
    }

    /// A deterministic byte pattern: key `seed`, message `seed`, without a random source.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3)).collect()
    }

    /// NIST CAVS `gcmEncryptExtIV256.rsp` (as in RustCrypto's aes-gcm tests):
    /// key, nonce, plaintext, aad, ciphertext, tag.
    const NIST: [[&str; 6]; 3] = [
        [
            "b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4",
            "516c33929df5a3284ff463d7",
            "",
            "",
            "",
            "bdc1ac884d332457a1d2664f168c76f0",
        ],
        [
            "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
            "ac93a1a6145299bde902f21a",
            "2d71bcfa914e4ac045b2aa60955fad24",
            "1e0889016f67601c8ebea4943bc23ad6",
            "8995ae2e6df3dbf96fac7b7137bae67f",
            "eca5aa77d51d4a0a14d9c51e1da474ab",
        ],
        [
            "268ed1b5d7c9c7304f9cae5fc437b4cd3aebe2ec65f0d85c3918d3d3b5bba89b",
            "9ed9d8180564e0e945f5e5d4",
            "fe29a40d8ebf57262bdb87191d01843f4ca4b2de97d88273154a0b7d9e2fdb80",
            "",
            "791a4a026f16f3a5ea06274bf02baab469860abde5e645f3dd473a5acddeecfc",
            "05b2b74db0662550435ef1900e136b15",
        ],
    ];

    #[test]
    fn nist_vectors_on_both_backends() {
        for backend in BACKENDS {
            for [k, n, p, a, c, t] in NIST {
                let cipher = Cipher::new(&key(k), backend);
                let nonce = hex(n).try_into().unwrap();
                let mut data = hex(p);
                let tag = cipher.seal(nonce, &hex(a), &mut data).unwrap();
                assert_eq!((data.clone(), tag.to_vec()), (hex(c), hex(t)), "{backend:?} {k}");
                cipher.open(nonce, &hex(a), &mut data, tag).unwrap();
                assert_eq!(data, hex(p), "{backend:?} {k}");
            }
        }
    }

    /// McGrew and Viega's GCM test cases 13 and 14: zero key, zero nonce — counter 0 of the
    /// nonce rule — through the public API.
    #[test]
    fn first_message_uses_the_zero_nonce() {
        for backend in BACKENDS {
            let mut sealer = Sealer::with_backend(&[0; KEY_LEN], backend);
            let mut empty = Vec::new();
            sealer.seal_in_place(b"", &mut empty).unwrap();
            assert_eq!(empty, hex("530f8afbc74536b9a963b4f1c4cb738b"), "{backend:?}");

            let mut sealer = Sealer::with_backend(&[0; KEY_LEN], backend);
            let mut block = vec![0; 16];
            sealer.seal_in_place(b"", &mut block).unwrap();
            let expected = "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919";
            assert_eq!(block, hex(expected), "{backend:?}");
        }
    }

    /// Sealing from an offset leaves the header in the clear and gives the bytes sealing the
    /// rest alone gives, so the receiver opens `msg[start..]` where it lies.
    #[test]
    fn sealing_from_an_offset_keeps_the_header_and_seals_the_rest() {
        for backend in BACKENDS {
            let key = [7; KEY_LEN];
            let (mut whole, mut alone) =
                (Sealer::with_backend(&key, backend), Sealer::with_backend(&key, backend));
            let mut msg = pattern(3, 40);
            let mut rest = msg[5..].to_vec();
            whole.seal_in_place_from(b"h", &mut msg, 5).unwrap();
            alone.seal_in_place(b"h", &mut rest).unwrap();
            assert_eq!(msg[..5], pattern(3, 5)[..], "{backend:?}");
            assert_eq!(msg[5..], rest[..], "{backend:?}");
            let mut opener = Opener::with_backend(&key, backend);
            assert_eq!(opener.open_in_place(b"h", &mut msg[5..]), Ok(35));
            assert_eq!(msg[5..40], pattern(3, 40)[5..], "{backend:?}");
        }
    }

    #[test]
    fn counter_nonces_are_big_endian_after_four_zero_bytes() {
        assert_eq!(Counter(0).nonce(), Some([0; NONCE_LEN]));
        let nonce = Counter(0x0102_0304_0506_0708).nonce().unwrap();
        assert_eq!(nonce, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Counter(u64::MAX - 1).nonce().map(|n| n[11]), Some(0xfe));
        assert_eq!(Counter(u64::MAX).nonce(), None);
    }

    /// The two backends are independent implementations: the same key, counter and data give
    /// the same bytes, and each opens what the other sealed. Lengths cover every tail of the
    /// 16-byte block and of the wide (8 × 16) loops, keys and counters vary.
    #[test]
    fn hardware_and_software_give_the_same_bytes() {
        let lengths = (0..=300).chain([1023, 1500, 1536, 4096 + 7, 16 << 10, (64 << 10) + 3]);
        for (i, len) in lengths.enumerate() {
            let key: [u8; KEY_LEN] = pattern(i as u8, KEY_LEN).try_into().unwrap();
            let aad = pattern(!(i as u8), i % 3);
            let plain = pattern(i as u8 ^ 0x5a, len);
            let mut hard = Sealer::with_backend(&key, Backend::Hardware);
            let mut soft = Sealer::with_backend(&key, Backend::Software);
            let mut to_soft = Opener::with_backend(&key, Backend::Software);
            let mut to_hard = Opener::with_backend(&key, Backend::Hardware);
            for _ in 0..=(i % 3) {
                let (mut a, mut b) = (plain.clone(), plain.clone());
                hard.seal_in_place(&aad, &mut a).unwrap();
                soft.seal_in_place(&aad, &mut b).unwrap();
                assert_eq!(a, b, "length {len}, message {}", hard.sealed());
                assert_eq!(a.len(), len + TAG_LEN);
                assert_eq!(to_soft.open_in_place(&aad, &mut a), Ok(len));
                assert_eq!(to_hard.open_in_place(&aad, &mut b), Ok(len));
                assert_eq!((&a[..len], &b[..len]), (&plain[..], &plain[..]));
            }
        }
    }

    fn pair(backend: Backend) -> (Sealer, Opener) {
        let key = [7; KEY_LEN];
        (Sealer::with_backend(&key, backend), Opener::with_backend(&key, backend))
    }

    fn sealed(sealer: &mut Sealer, text: &[u8]) -> Vec<u8> {
        let mut msg = text.to_vec();
        sealer.seal_in_place(&[0x02], &mut msg).unwrap();
        msg
    }

    #[test]
    fn messages_open_in_order_and_counters_advance() {
        for backend in BACKENDS {
            let (mut sealer, mut opener) = pair(backend);
            for text in [&b"one"[..], b"", b"three"] {
                let mut msg = sealed(&mut sealer, text);
                assert_eq!(msg.len(), text.len() + TAG_LEN);
                if !text.is_empty() {
                    assert_ne!(&msg[..text.len()], text, "encrypted where it lies");
                }
                let len = opener.open_in_place(&[0x02], &mut msg).unwrap();
                assert_eq!(&msg[..len], text);
            }
            assert_eq!((sealer.sealed(), opener.opened()), (3, 3));
        }
    }

    #[test]
    fn replay_reorder_drop_tamper_and_truncation_fail_without_advancing() {
        for backend in BACKENDS {
            let (mut sealer, mut opener) = pair(backend);
            let first = sealed(&mut sealer, b"first");
            let second = sealed(&mut sealer, b"second");
            let third = sealed(&mut sealer, b"third");

            // Reordered (or the first dropped): the opener expects counter 0.
            assert_eq!(opener.open_in_place(&[0x02], &mut second.clone()), Err(AuthError));
            // Altered ciphertext, tag, additional data; truncated; shorter than a tag.
            for at in [0, first.len() - 1] {
                let mut bad = first.clone();
                bad[at] ^= 1;
                assert_eq!(opener.open_in_place(&[0x02], &mut bad), Err(AuthError), "bit at {at}");
            }
            assert_eq!(opener.open_in_place(&[0x03], &mut first.clone()), Err(AuthError));
            assert_eq!(
                opener.open_in_place(&[0x02], &mut first[..first.len() - 1].to_vec()),
                Err(AuthError)
            );
            assert_eq!(opener.open_in_place(&[0x02], &mut [0; TAG_LEN - 1]), Err(AuthError));
            assert_eq!(opener.opened(), 0, "failures leave the counter");

            assert_eq!(opener.open_in_place(&[0x02], &mut first.clone()), Ok(5));
            // Replayed: counter 1 is expected now.
            assert_eq!(opener.open_in_place(&[0x02], &mut first.clone()), Err(AuthError));
            assert_eq!(opener.open_in_place(&[0x02], &mut third.clone()), Err(AuthError));
            assert_eq!(opener.open_in_place(&[0x02], &mut second.clone()), Ok(6));
            assert_eq!(opener.opened(), 2);
        }
    }

    #[test]
    fn a_wrong_key_fails() {
        for backend in BACKENDS {
            let mut msg = sealed(&mut Sealer::with_backend(&[1; KEY_LEN], backend), b"secret");
            let mut opener = Opener::with_backend(&[2; KEY_LEN], backend);
            assert_eq!(opener.open_in_place(&[0x02], &mut msg), Err(AuthError));
        }
    }

    #[test]
    fn an_exhausted_counter_refuses_to_seal() {
        for backend in BACKENDS {
            let (mut sealer, mut opener) = pair(backend);
            sealer.counter = Counter(u64::MAX);
            let mut msg = b"late".to_vec();
            assert_eq!(sealer.seal_in_place(&[], &mut msg), Err(SealError::CounterExhausted));
            assert_eq!(msg, b"late", "left as it was");
            opener.counter = Counter(u64::MAX);
            assert_eq!(opener.open_in_place(&[], &mut [0; 32]), Err(AuthError));
        }
    }

    #[test]
    fn auth_failures_close_with_1008() {
        assert_eq!(CloseCode::from(AuthError), CloseCode::POLICY_VIOLATION);
        assert_eq!(CloseCode::from(AuthError).0, 1008);
        assert_eq!(AuthError.to_string(), "authentication failed");
    }

    #[test]
    fn the_environment_forces_software_else_the_cpu_decides() {
        assert_eq!(Backend::choose(Some("soft"), true), Backend::Software);
        assert_eq!(Backend::choose(None, true), Backend::Hardware);
        assert_eq!(Backend::choose(Some("auto"), true), Backend::Hardware);
        assert_eq!(Backend::choose(None, false), Backend::Software);
        assert_eq!(Backend::choose(Some("hard"), false), Backend::Software);
        assert!(Backend::Software.is_available());
    }

    #[test]
    fn the_process_backend_is_chosen_once_and_named() {
        let chosen = backend();
        assert_eq!(backend(), chosen);
        let forced = std::env::var("BIDIR_AES").ok();
        assert_eq!(chosen, Backend::choose(forced.as_deref(), Backend::Hardware.is_available()));
        assert_eq!(aead_backend(), chosen.name());
        assert!(["ring", "rustcrypto-ni", "rustcrypto-soft"].contains(&aead_backend()));
        if cfg!(all(aes_backend = "soft", polyval_backend = "soft")) {
            assert_eq!(Backend::Software.name(), "rustcrypto-soft");
        }
    }
}
