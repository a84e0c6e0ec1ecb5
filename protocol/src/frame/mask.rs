//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.
//!
//! This is the crate's one module allowed `unsafe`: it calls kernels compiled for wider vector
//! units (`#[target_feature]`) after checking at run time that the CPU has them. The kernels
//! themselves are safe Rust that the compiler vectorizes; [`Kernel::Scalar`] is the byte-by-byte
//! reference they are tested against, over every length 0..=256 at every alignment and key
//! phase, plus large random buffers. Building with `--cfg bidir_force_scalar` makes
//! [`apply_mask`] use the reference only (for Miri, or to rule the fast path out).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

/// A masking implementation. [`apply_mask`] picks the fastest available one; the others stay
/// callable for tests and benchmarks through [`apply_mask_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// One byte at a time: the reference.
    Scalar,
    /// Eight bytes at a time in a `u64`.
    Word,
    /// 64-byte blocks with the baseline vector unit (SSE2 on x86-64).
    Vector,
    /// 64-byte blocks compiled for AVX2 (x86-64 only).
    Avx2,
    /// 64-byte blocks compiled for AVX-512BW (x86-64 only).
    Avx512,
}

impl Kernel {
    /// Every kernel, reference first.
    pub const ALL: [Self; 5] = [Self::Scalar, Self::Word, Self::Vector, Self::Avx2, Self::Avx512];

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar | Self::Word | Self::Vector => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2 | Self::Avx512 => false,
        }
    }

    /// The kernel [`apply_mask`] uses on this CPU: chosen once, on first use.
    pub fn selected() -> Self {
        const UNSET: u8 = u8::MAX;
        static SELECTED: AtomicU8 = AtomicU8::new(UNSET);
        let cached = SELECTED.load(Ordering::Relaxed);
        if cached != UNSET {
            return Self::ALL[usize::from(cached)];
        }
        let kernel = Self::detect();
        let index = Self::ALL.iter().position(|&k| k == kernel).unwrap_or(0);
        SELECTED.store(index as u8, Ordering::Relaxed);
        kernel
    }

    fn detect() -> Self {
        if cfg!(bidir_force_scalar) || cfg!(miri) {
            return Self::Scalar;
        }
        // AVX2 first: measured on this project's reference machine (docs/benchmarks.md), AVX-512
        // brings nothing over it for masking, which is bound by loads and stores, and on some
        // parts it lowers the clock of the whole core.
        if Self::Avx2.is_available() { Self::Avx2 } else { Self::Vector }
    }
}

/// XORs `buf` with the masking `key`, in place.
///
/// `offset` is the position of `buf[0]` in the frame payload: byte `i` of `buf` is XORed with
/// `key[(offset + i) % 4]`. It lets a payload that arrives in pieces be unmasked piece by piece.
/// Applying the same mask twice restores the input.
#[inline(always)]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < SMALL {
        // Small payloads (most messages): a few words inline beat any dispatch.
        mask_words(buf, rotate(key, offset));
        return;
    }
    apply_mask_with(Kernel::selected(), buf, key, offset);
}

/// Below this length [`apply_mask`] masks inline, word by word.
const SMALL: usize = 64;

/// [`apply_mask`] with a chosen kernel.
///
/// # Panics
///
/// If the kernel is not [available](Kernel::is_available) on this CPU.
pub fn apply_mask_with(kernel: Kernel, buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    match kernel {
        Kernel::Scalar => mask_scalar(buf, key, 0),
        Kernel::Word => mask_words(buf, key),
        Kernel::Vector => mask_blocks(buf, key),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            assert!(kernel.is_available(), "AVX2 is not available on this CPU");
            // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
            // `#[target_feature(enable = "avx2")]` function; its body is safe code.
            unsafe { x86::mask_avx2(buf, key) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            assert!(kernel.is_available(), "AVX-512BW is not available on this CPU");
            // SAFETY: the CPU supports AVX-512F and AVX-512BW (checked just above), the only
            // requirement of the `#[target_feature]` function; its body is safe code.
            unsafe { x86::mask_avx512(buf, key) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2 | Kernel::Avx512 => panic!("{kernel:?} is not available on this CPU"),
    }
}

/// The key as seen from payload position `offset`.
#[inline(always)]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Byte i of the result is key[(offset + i) % 4]: a rotation of the word towards byte 0.
    let word = u32::from_ne_bytes(key);
    let shift = 8 * (offset as u32 & 3);
    let rotated = if cfg!(target_endian = "little") {
        word.rotate_right(shift)
    } else {
        word.rotate_left(shift)
    };
    rotated.to_ne_bytes()
}

/// The reference: one byte at a time.
#[inline]
fn mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

#[inline(always)]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes((&*c).try_into().expect("8-byte chunk"));
        c.copy_from_slice(&(w ^ k).to_ne_bytes());
    }
    let kb = k.to_ne_bytes();
    for (b, k) in chunks.into_remainder().iter_mut().zip(kb) {
        *b ^= k;
    }
}

/// 64-byte blocks as eight words, which the compiler turns into vector operations of the
/// width the calling kernel enables; the body the vector kernels share. Blocks start at
/// multiples of 4 so the key phase stays 0.
#[inline(always)]
fn mask_blocks(buf: &mut [u8], key: [u8; 4]) {
    const BLOCK: usize = 64;
    let k = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(BLOCK);
    for c in &mut chunks {
        let block: &mut [u8; BLOCK] = c.try_into().expect("64-byte chunk");
        for lane in block.chunks_exact_mut(8) {
            let w = u64::from_ne_bytes((&*lane).try_into().expect("8-byte lane"));
            lane.copy_from_slice(&(w ^ k).to_ne_bytes());
        }
    }
    mask_words(chunks.into_remainder(), key);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2")]
    pub(super) fn mask_avx2(buf: &mut [u8], key: [u8; 4]) {
        super::mask_blocks(buf, key);
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn mask_avx512(buf: &mut [u8], key: [u8; 4]) {
        super::mask_blocks(buf, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
    #[test]
    fn rfc_example() {
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    /// Every kernel against the reference, for every length 0..=256, every alignment of the
    /// buffer in memory (0..64) and every key phase (0..4).
    #[test]
    fn kernels_match_reference_on_every_length_and_alignment() {
        let key = [0x9d, 0x31, 0xc4, 0x7e];
        let base = pattern(256 + 64, 7);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            for len in 0..=256 {
                for align in 0..64 {
                    for phase in 0..4 {
                        let mut expected = base.clone();
                        mask_scalar(&mut expected[align..align + len], key, phase);
                        let mut got = base.clone();
                        apply_mask_with(kernel, &mut got[align..align + len], key, phase);
                        assert_eq!(
                            got, expected,
                            "{kernel:?} len {len} align {align} phase {phase}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_match_reference_on_large_random_buffers() {
        for (seed, len) in [(1u64, 4096usize), (2, 65_537), (3, 1 << 20), (4, 999_999)] {
            let data = pattern(len + 3, seed);
            let key = [seed as u8, 0x55, 0xaa, 0x0f];
            let mut expected = data.clone();
            mask_scalar(&mut expected[3..], key, 1);
            for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
                let mut got = data.clone();
                apply_mask_with(kernel, &mut got[3..], key, 1);
                assert!(got == expected, "{kernel:?} differs at len {len}");
            }
            let mut got = data.clone();
            apply_mask(&mut got[3..], key, 1);
            assert!(got == expected, "apply_mask differs at len {len}");
        }
    }

    #[test]
    fn pieces_unmask_like_the_whole() {
        let key = [1, 2, 3, 4];
        let data = pattern(1000, 9);
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let mut at = 0;
        for step in [1usize, 7, 3, 100, 33, 256, 600] {
            let end = (at + step).min(pieces.len());
            apply_mask(&mut pieces[at..end], key, at);
            at = end;
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn selected_kernel_is_available() {
        assert!(Kernel::selected().is_available());
        assert_eq!(Kernel::selected(), Kernel::selected());
        if cfg!(bidir_force_scalar) {
            assert_eq!(Kernel::selected(), Kernel::Scalar);
        }
    }
}
