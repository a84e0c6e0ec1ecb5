//! The primitives of the Noise pattern for snow: ring's SHA-256 and AES-GCM (the crate's
//! hardware path already), curve25519-dalek's X25519 (ring cannot take a seeded private key),
//! and randomness drawn from the caller's seed.

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use ring::{aead, digest};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

use super::SEED_LEN;

/// The primitives of [`PATTERN`]: ring's SHA-256 and AES-GCM, curve25519-dalek's X25519, and
/// the randomness of the seed.
pub(super) struct Resolver {
    pub(super) seed: [u8; SEED_LEN],
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Seeded(ChaCha20Rng::from_seed(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| Box::new(X25519::default()) as _)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        matches!(choice, HashChoice::SHA256).then(|| Box::new(Sha256::default()) as Box<dyn Hash>)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        matches!(choice, CipherChoice::AESGCM).then(|| Box::new(AesGcm::default()) as _)
    }
}

struct Seeded(ChaCha20Rng);

impl Random for Seeded {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// X25519 (RFC 7748) on curve25519-dalek's Montgomery ladder.
#[derive(Default)]
struct X25519 {
    private: [u8; 32],
    public: [u8; 32],
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, private: &[u8]) {
        self.private.copy_from_slice(&private[..32]);
        self.public = MontgomeryPoint::mul_base_clamped(self.private).to_bytes();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0; 32];
        rng.try_fill_bytes(&mut private)?;
        self.set(&private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, public: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; 32] = public.get(..32).ok_or(snow::Error::Dh)?.try_into().expect("32");
        let shared = MontgomeryPoint(public).mul_clamped(self.private).to_bytes();
        // All zeros: a point of small order, which would make the key independent of ours.
        if shared == [0; 32] {
            return Err(snow::Error::Dh);
        }
        out[..32].copy_from_slice(&shared);
        Ok(())
    }
}

struct Sha256(digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }
}

impl Hash for Sha256 {
    fn name(&self) -> &'static str {
        "SHA256"
    }

    fn block_len(&self) -> usize {
        64
    }

    fn hash_len(&self) -> usize {
        32
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let digest = std::mem::take(self).0.finish();
        out[..32].copy_from_slice(digest.as_ref());
    }
}

/// Noise's AESGCM: AES-256-GCM with the nonce four zero bytes then the 64-bit big-endian
/// counter — the rule of [`seal`](super::seal) too.
pub(super) struct AesGcm(aead::LessSafeKey);

impl Default for AesGcm {
    fn default() -> Self {
        Self::with_key(&[0; 32])
    }
}

impl AesGcm {
    fn with_key(key: &[u8; 32]) -> Self {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, key).expect("a 32-byte key");
        Self(aead::LessSafeKey::new(key))
    }

    pub(super) fn nonce(counter: u64) -> aead::Nonce {
        let mut nonce = [0; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        aead::Nonce::assume_unique_for_key(nonce)
    }
}

impl Cipher for AesGcm {
    fn name(&self) -> &'static str {
        "AESGCM"
    }

    fn set(&mut self, key: &[u8; 32]) {
        *self = Self::with_key(key);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let (body, rest) = out.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(nonce), aead::Aad::from(authtext), body)
            .expect("a handshake message is far below GCM's length limit");
        rest[..tag.as_ref().len()].copy_from_slice(tag.as_ref());
        plaintext.len() + tag.as_ref().len()
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        // snow sizes `out` for the plaintext only; open a copy where the tag fits.
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(Self::nonce(nonce), aead::Aad::from(authtext), &mut in_out)
            .map_err(|_| snow::Error::Decrypt)?;
        out.get_mut(..plain.len()).ok_or(snow::Error::Decrypt)?.copy_from_slice(plain);
        Ok(plain.len())
    }
}
