//! The `ecdhe` key exchange of `bidir.bin.v1`: an X25519 exchange authenticated by the
//! pre-shared key, as the Noise handshake `Noise_NNpsk0_25519_AESGCM_SHA256` (the `snow` crate),
//! so that a leaked key does not decrypt recorded connections (forward secrecy).
//!
//! ```text
//! noise psk = HKDF-SHA256(salt = "bidir.bin.v1 noise psk", ikm = psk).expand("", 32)
//! prologue  = "bidir.bin.v1"
//! client  → Bidir-Key: ecdhe; h=<base64 of Noise message 1: e, then the tag of an empty payload>
//! server  → Bidir-Key: ecdhe; h=<base64 of Noise message 2: e, ee, then the tag of an empty payload>
//! c2s, s2c = the two keys of Noise's Split(), in that order
//! ```
//!
//! Each message is 48 bytes: a 32-byte ephemeral public key and the 16-byte AES-GCM tag of an
//! empty payload, which proves the sender knows the psk (psk0 mixes it in before the first
//! message). The server cannot authenticate message 1 under another key (a wrong key: 403);
//! the client cannot authenticate message 2 (a wrong key fails the connect). The two split keys
//! go to [`seal`](super::seal) with its counter nonces, not to Noise's transport mode, so both
//! modes seal the same way.
//!
//! The functions are pure: each side passes a 32-byte seed from a secure random source, fresh
//! for every connection, from which its ephemeral key is drawn (ChaCha20). SHA-256 and the
//! handshake's AES-GCM come from ring, X25519 from curve25519-dalek (as in snow's own
//! resolver, which would bring its own SHA-256 and AES-GCM crates). An X25519 result of all
//! zeros — the peer sent a point of small order — fails the handshake.
//! [`key`] wraps both modes behind one entry point per side.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use snow::{Builder, HandshakeState};

use self::resolver::Resolver;
use super::key::{self, KeyMode, SEED_LEN};
use super::psk::{KeyError, Psk, SessionKeys};

mod resolver;

/// The Noise protocol name: the handshake pattern and its three primitives.
pub const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// The Noise prologue both sides hash first: a handshake made for another protocol or
/// version of this one does not complete.
pub const PROLOGUE: &[u8] = b"bidir.bin.v1";
/// Length of each handshake message: the ephemeral public key and the empty payload's tag.
pub const MESSAGE_LEN: usize = 32 + 16;
/// The HKDF salt that derives the Noise psk from the pre-shared key.
pub(super) const PSK_SALT: &[u8] = b"bidir.bin.v1 noise psk";

/// The client's side: its handshake state after writing message 1.
pub struct ClientHandshake {
    state: HandshakeState,
    offer: EcdheHeader,
}

impl ClientHandshake {
    /// Starts a handshake whose ephemeral key is drawn from `seed`: 32 bytes from a secure
    /// random source, fresh for every connection (a repeated seed repeats the keys).
    pub fn new(psk: &Psk, seed: [u8; SEED_LEN]) -> Self {
        let mut state = handshake(psk, seed, Role::Initiator);
        let mut message = [0; MESSAGE_LEN];
        let len = state.write_message(&[], &mut message).expect("message 1 fits 48 bytes");
        debug_assert_eq!(len, MESSAGE_LEN);
        Self { state, offer: EcdheHeader { message } }
    }

    /// The request's `Bidir-Key` value: Noise message 1.
    pub fn offer(&self) -> EcdheHeader {
        self.offer
    }

    /// Reads the response's `Bidir-Key` value, Noise message 2, and splits the keys.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongKey`] when message 2 does not authenticate: the server has another
    /// key, or the answer was altered or belongs to another offer; [`KeyError::Malformed`]
    /// when its public key has small order. The connect fails.
    pub fn finish(mut self, answer: &EcdheHeader) -> Result<SessionKeys, KeyError> {
        let mut payload = [0; MESSAGE_LEN];
        self.state.read_message(&answer.message, &mut payload).map_err(refusal)?;
        Ok(split(&mut self.state))
    }
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake").field("offer", &self.offer).finish_non_exhaustive()
    }
}

/// The server's side: reads the client's Noise message 1 and answers with message 2, its
/// ephemeral key drawn from `seed` (32 bytes from a secure random source, fresh for every
/// connection); returns the answer's `Bidir-Key` value and the connection's keys.
///
/// # Errors
///
/// [`KeyError::WrongKey`] when message 1 does not authenticate under this key: refuse the
/// upgrade with 403. [`KeyError::Malformed`] (400) when its public key has small order: only
/// a client that knows the key can send one, and it would get keys an eavesdropper with the
/// key could compute.
pub fn answer(
    psk: &Psk,
    offer: &EcdheHeader,
    seed: [u8; SEED_LEN],
) -> Result<(EcdheHeader, SessionKeys), KeyError> {
    let mut state = handshake(psk, seed, Role::Responder);
    let mut payload = [0; MESSAGE_LEN];
    state.read_message(&offer.message, &mut payload).map_err(refusal)?;
    let mut message = [0; MESSAGE_LEN];
    // `ee`, the first X25519 with the client's key, fails on a key of small order.
    let len = state.write_message(&[], &mut message).map_err(refusal)?;
    debug_assert_eq!(len, MESSAGE_LEN);
    Ok((EcdheHeader { message }, split(&mut state)))
}

enum Role {
    Initiator,
    Responder,
}

/// A handshake state for either role, keyed by `psk` and drawing its ephemeral from `seed`.
fn handshake(psk: &Psk, seed: [u8; SEED_LEN], role: Role) -> HandshakeState {
    let params = PATTERN.parse().expect("the pattern name is valid");
    let noise_psk = psk.derive(PSK_SALT);
    let builder = Builder::with_resolver(params, Box::new(Resolver { seed }))
        .prologue(PROLOGUE)
        .and_then(|builder| builder.psk(0, &noise_psk))
        .expect("one prologue and one psk at location 0");
    match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .expect("the resolver has every primitive of the pattern")
}

/// Why a handshake message is refused: a small-order public key (the X25519 result of
/// [`X25519::dh`] is all zeros), else a failed authentication — snow reports nothing else for
/// a well-sized message.
fn refusal(error: snow::Error) -> KeyError {
    match error {
        snow::Error::Dh => KeyError::Malformed("a public key of small order"),
        _ => KeyError::WrongKey,
    }
}

/// Noise's Split(): the first key for the initiator's messages, the second for the
/// responder's, the same on both sides.
fn split(state: &mut HandshakeState) -> SessionKeys {
    let (c2s, s2c) = state.dangerously_get_raw_split();
    SessionKeys::new(c2s, s2c)
}

/// The value of a `Bidir-Key` header in `ecdhe` mode: `ecdhe; h=<base64 message>`, base64
/// with padding (RFC 4648 §4; 48 bytes need none). [`EcdheHeader::parse`] reads it back from
/// [`Display`](fmt::Display)'s text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcdheHeader {
    /// The Noise handshake message.
    pub message: [u8; MESSAGE_LEN],
}

impl EcdheHeader {
    /// Parses a header value by the grammar of [`key`]: the mode `ecdhe` and the
    /// parameter `h` once, 48 bytes of base64; other parameters are ignored.
    ///
    /// # Errors
    ///
    /// [`KeyError::Mode`] when the value names another mode; [`KeyError::Malformed`] for any
    /// other departure from the syntax (the server answers 400).
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        let [h] = key::params(value, KeyMode::Ecdhe, [("h", "no `h` parameter")])?;
        Ok(Self { message: key::decode(h, "a value that is not 48 bytes of base64")? })
    }
}

impl fmt::Display for EcdheHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; h={}", KeyMode::Ecdhe, BASE64.encode(self.message))
    }
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};
    use ring::{aead, digest, hkdf, hmac};

    use super::*;

    const SEED_C: [u8; SEED_LEN] = [0xc1; SEED_LEN];
    const SEED_S: [u8; SEED_LEN] = [0x5e; SEED_LEN];

    /// Longer than the 32-byte Noise psk: the derivation takes any length.
    fn psk(byte: u8) -> Psk {
        Psk::new(&[byte; 40]).unwrap()
    }

    /// Offer, answer and finish as the two sides do it, through the header text.
    fn exchange(
        client: &Psk,
        server: &Psk,
        seed_c: [u8; 32],
        seed_s: [u8; 32],
    ) -> Result<(SessionKeys, SessionKeys), KeyError> {
        let handshake = ClientHandshake::new(client, seed_c);
        let offer = EcdheHeader::parse(handshake.offer().to_string().as_bytes())?;
        let (reply, server_keys) = answer(server, &offer, seed_s)?;
        let client_keys = handshake.finish(&EcdheHeader::parse(reply.to_string().as_bytes())?)?;
        Ok((client_keys, server_keys))
    }

    /// The Noise specification's symmetric state (§5.2) for SHA-256 and AES-GCM, written from
    /// the specification with ring's HMAC and AES-GCM: what a third party implements.
    struct Reference {
        ck: [u8; 32],
        h: [u8; 32],
        k: [u8; 32],
    }

    impl Reference {
        fn new(psk: &[u8]) -> Self {
            // The protocol name is exactly 32 bytes: h is the name itself.
            let name: [u8; 32] = PATTERN.as_bytes().try_into().unwrap();
            let mut state = Self { ck: name, h: name, k: [0; 32] };
            state.mix_hash(b"bidir.bin.v1");
            let mut noise_psk = [0; 32];
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"bidir.bin.v1 noise psk")
                .extract(psk)
                .expand(&[b""], hkdf::HKDF_SHA256)
                .unwrap()
                .fill(&mut noise_psk)
                .unwrap();
            // psk0: MixKeyAndHash(psk) before the first message.
            let [ck, temp_h, temp_k] = hkdf3(&state.ck, &noise_psk);
            (state.ck, state.k) = (ck, temp_k);
            state.mix_hash(&temp_h);
            state
        }

        fn mix_hash(&mut self, data: &[u8]) {
            self.h = digest::digest(&digest::SHA256, &[&self.h[..], data].concat())
                .as_ref()
                .try_into()
                .unwrap();
        }

        /// MixKey; the nonce restarts at 0, and each key seals one empty payload.
        fn mix_key(&mut self, ikm: &[u8]) {
            let [ck, k, _] = hkdf3(&self.ck, ikm);
            (self.ck, self.k) = (ck, k);
        }

        /// The `e` token of a psk pattern: MixHash and MixKey of the public key.
        fn e(&mut self, public: &[u8; 32]) {
            self.mix_hash(public);
            self.mix_key(public);
        }

        /// EncryptAndHash of the empty payload: its tag, under the nonce 0 and h as data.
        fn tag(&mut self) -> [u8; 16] {
            let key =
                aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &self.k).unwrap());
            let tag = key
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key([0; 12]),
                    aead::Aad::from(self.h),
                    &mut [],
                )
                .unwrap();
            let tag: [u8; 16] = tag.as_ref().try_into().unwrap();
            self.mix_hash(&tag);
            tag
        }

        fn split(&self) -> ([u8; 32], [u8; 32]) {
            let [c2s, s2c, _] = hkdf3(&self.ck, b"");
            (c2s, s2c)
        }
    }

    /// Noise's HKDF (§4.3) with three outputs.
    fn hkdf3(ck: &[u8; 32], ikm: &[u8]) -> [[u8; 32]; 3] {
        let mac = |key: &[u8], data: &[u8]| -> [u8; 32] {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            hmac::sign(&key, data).as_ref().try_into().unwrap()
        };
        let temp = mac(ck, ikm);
        let one = mac(&temp, &[1]);
        let two = mac(&temp, &[&one[..], &[2]].concat());
        let three = mac(&temp, &[&two[..], &[3]].concat());
        [one, two, three]
    }

    /// The ephemeral private key a seed gives: ChaCha20's first 32 bytes.
    fn ephemeral(seed: [u8; 32]) -> [u8; 32] {
        let mut private = [0; 32];
        ChaCha20Rng::from_seed(seed).fill_bytes(&mut private);
        private
    }

    fn message(public: [u8; 32], tag: [u8; 16]) -> EcdheHeader {
        let mut message = [0; MESSAGE_LEN];
        message[..32].copy_from_slice(&public);
        message[32..].copy_from_slice(&tag);
        EcdheHeader { message }
    }

    #[test]
    fn both_sides_split_the_same_two_keys_and_seal_with_them() {
        let (client, server) = exchange(&psk(0x11), &psk(0x11), SEED_C, SEED_S).unwrap();
        assert_eq!(client, server);
        assert_ne!(client.c2s(), client.s2c(), "one key per direction");

        let (mut client_seal, mut client_open) = client.client();
        let (mut server_seal, mut server_open) = server.server();
        let mut msg = b"call".to_vec();
        client_seal.seal_in_place(&[2], &mut msg).unwrap();
        assert_eq!(server_open.open_in_place(&[2], &mut msg), Ok(4));
        let mut msg = b"answer".to_vec();
        server_seal.seal_in_place(&[2], &mut msg).unwrap();
        assert_eq!(client_open.open_in_place(&[2], &mut msg), Ok(6));
    }

    /// The specification's Noise steps, computed independently, give the same messages and
    /// keys: pins the pattern, the prologue, the psk's derivation and the order of Split().
    #[test]
    fn messages_and_keys_follow_the_noise_specification() {
        let p = psk(0x11);
        let client_e = ephemeral(SEED_C);
        let client_pub = MontgomeryPoint::mul_base_clamped(client_e).to_bytes();
        let mut reference = Reference::new(&[0x11; 40]);
        reference.e(&client_pub);
        let offer = message(client_pub, reference.tag());
        assert_eq!(ClientHandshake::new(&p, SEED_C).offer(), offer);

        let (reply, keys) = answer(&p, &offer, SEED_S).unwrap();
        let server_pub = MontgomeryPoint::mul_base_clamped(ephemeral(SEED_S)).to_bytes();
        reference.e(&server_pub);
        reference.mix_key(&MontgomeryPoint(server_pub).mul_clamped(client_e).to_bytes());
        assert_eq!(reply, message(server_pub, reference.tag()));
        assert_eq!((keys.c2s(), keys.s2c()), (&reference.split().0, &reference.split().1));
    }

    #[test]
    fn a_wrong_psk_fails_on_both_sides() {
        let err = exchange(&psk(1), &psk(2), SEED_C, SEED_S).unwrap_err();
        assert_eq!((err, err.status()), (KeyError::WrongKey, 403));
        // A server with another key answers an offer made under its key by a client with the
        // same seed; the client with the first key cannot read that answer.
        let forged_for = ClientHandshake::new(&psk(2), SEED_C).offer();
        let (forged, _) = answer(&psk(2), &forged_for, SEED_S).unwrap();
        let ours = ClientHandshake::new(&psk(1), SEED_C);
        assert_eq!(ours.offer().message[..32], forged_for.message[..32], "same ephemeral");
        assert_eq!(ours.finish(&forged).unwrap_err(), KeyError::WrongKey);
    }

    #[test]
    fn a_tampered_message_or_an_answer_to_another_offer_fails() {
        let p = psk(0x11);
        let offer = ClientHandshake::new(&p, SEED_C).offer();
        let (reply, _) = answer(&p, &offer, SEED_S).unwrap();
        for bit in [0, 8 * 31 + 7, 8 * 32, 8 * 47 + 7] {
            let mut bad = offer;
            bad.message[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(answer(&p, &bad, SEED_S).unwrap_err(), KeyError::WrongKey, "{bit}");
            let mut bad = reply;
            bad.message[bit / 8] ^= 1 << (bit % 8);
            let client = ClientHandshake::new(&p, SEED_C);
            assert_eq!(client.finish(&bad).unwrap_err(), KeyError::WrongKey, "{bit}");
        }
        let other = ClientHandshake::new(&p, [9; 32]);
        assert_eq!(other.finish(&reply).unwrap_err(), KeyError::WrongKey);
    }

    /// Whoever learns the psk later, and recorded both headers, cannot finish the recorded
    /// handshake: the answer is bound to the client's ephemeral key, never sent. A replayed
    /// offer gets another server ephemeral, so other keys.
    #[test]
    fn keys_need_the_ephemeral_keys_not_only_the_psk() {
        let p = psk(0x11);
        let offer = ClientHandshake::new(&p, SEED_C).offer();
        let (recorded, keys) = answer(&p, &offer, SEED_S).unwrap();
        for seed in [[0; 32], [0xc2; 32], SEED_S] {
            let attacker = ClientHandshake::new(&p, seed);
            assert_eq!(attacker.finish(&recorded).unwrap_err(), KeyError::WrongKey);
        }
        let (_, replayed) = answer(&p, &offer, [0x5f; 32]).unwrap();
        assert_ne!(replayed.c2s(), keys.c2s());
        assert_ne!(replayed.s2c(), keys.s2c());
        // The same seeds make the same keys: the functions are pure.
        assert_eq!(answer(&p, &offer, SEED_S).unwrap().1, keys);

        let mut all = vec![keys];
        for (c, s) in [([1; 32], SEED_S), (SEED_C, [2; 32]), (SEED_S, SEED_C)] {
            all.push(exchange(&p, &p, c, s).unwrap().0);
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!((a.c2s(), a.s2c()), (b.c2s(), b.s2c()));
            }
        }
    }

    /// A client that knows the key but sends a public key of small order (here the point 0)
    /// would make `ee` all zeros: the server refuses it with 400, and a client refuses such
    /// an answer.
    #[test]
    fn public_keys_of_small_order_are_refused() {
        let p = psk(0x11);
        let mut reference = Reference::new(&[0x11; 40]);
        reference.e(&[0; 32]);
        let offer = message([0; 32], reference.tag());
        let err = answer(&p, &offer, SEED_S).unwrap_err();
        assert_eq!((err, err.status()), (KeyError::Malformed("a public key of small order"), 400));

        let client = ClientHandshake::new(&p, SEED_C);
        let mut reference = Reference::new(&[0x11; 40]);
        reference.e(&client.offer().message[..32].try_into().unwrap());
        reference.tag();
        reference.e(&[0; 32]);
        let reply = message([0; 32], reference.tag());
        assert_eq!(
            client.finish(&reply).unwrap_err(),
            KeyError::Malformed("a public key of small order")
        );
    }

    #[test]
    fn header_text_round_trips_and_malformed_values_are_refused() {
        let header = EcdheHeader { message: [0xfb; MESSAGE_LEN] };
        let h = "+/v7".repeat(16);
        assert_eq!(header.to_string(), format!("ecdhe; h={h}"));
        for text in [format!("ecdhe; h={h}"), format!(" ECDHE ;H = {h} ; v=2")] {
            assert_eq!(EcdheHeader::parse(text.as_bytes()), Ok(header), "{text}");
        }
        let not_48 = Err(KeyError::Malformed("a value that is not 48 bytes of base64"));
        for (text, expected) in [
            ("ecdhe".into(), Err(KeyError::Malformed("no `h` parameter"))),
            (format!("psk; h={h}"), Err(KeyError::Mode)),
            (format!("ecdhe; h={}", &h[..60]), not_48),
            (format!("ecdhe; h={}AAAA", &h), not_48),
            (format!("ecdhe; h={}=", &h[..63]), not_48),
            (format!("ecdhe; h={}!", &h[..63]), not_48),
            (format!("ecdhe; h={h}; h={h}"), Err(KeyError::Malformed("a repeated parameter"))),
        ] {
            assert_eq!(EcdheHeader::parse(text.as_bytes()), expected, "{text}");
        }
        let debug = format!("{:?}", ClientHandshake::new(&psk(1), SEED_C));
        assert!(debug.starts_with("ClientHandshake { offer: EcdheHeader {"), "{debug}");
    }
}
