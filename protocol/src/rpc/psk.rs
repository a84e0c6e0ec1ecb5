//! The `psk` key schedule of `bidir.bin.v1`: both sides know a pre-shared key; each connection
//! derives its own two AES-256-GCM keys, one per direction, from it and from fresh nonces both
//! sides send in the upgrade's `Bidir-Key` headers. docs/rpc.md ("Keys") is the specification.
//!
//! ```text
//! auth    = HKDF-SHA256(salt = "bidir.bin.v1 auth", ikm = psk).expand("", 32)
//! client  → Bidir-Key: psk; n=<base64 nc>; m=<base64 HMAC-SHA256(auth, "client" ‖ nc)>
//! server  → Bidir-Key: psk; n=<base64 ns>; m=<base64 HMAC-SHA256(auth, "server" ‖ nc ‖ ns)>
//! prk     = HKDF-Extract(salt = nc ‖ ns, ikm = psk)
//! c2s     = HKDF-Expand(prk, "bidir.bin.v1 c2s", 32)
//! s2c     = HKDF-Expand(prk, "bidir.bin.v1 s2c", 32)
//! ```
//!
//! The functions are pure: the caller draws the 32-byte nonces from a secure source and
//! passes them in, and moves the header values in and out of its HTTP messages. The server
//! checks the offer with [`answer`] (a wrong key: 403 before the upgrade); the client checks
//! the answer with [`ClientHandshake::finish`] (a wrong key fails the connect). MACs are
//! compared in constant time. HKDF and HMAC come from ring, already the AEAD's hardware path.
//! [`key`] wraps this mode and `ecdhe` behind one entry point per side and holds
//! the header grammar.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{hkdf, hmac};

use super::key::{self, KeyMode};
use super::seal::{KEY_LEN, Opener, Sealer};

/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;
/// The shortest pre-shared key accepted: 256 bits of randomness.
pub const MIN_PSK_LEN: usize = 32;

const AUTH_SALT: &[u8] = b"bidir.bin.v1 auth";
const C2S_INFO: &[u8] = b"bidir.bin.v1 c2s";
const S2C_INFO: &[u8] = b"bidir.bin.v1 s2c";
const CLIENT_LABEL: &[u8] = b"client";
const SERVER_LABEL: &[u8] = b"server";

/// A pre-shared key, with the MAC key derived from it once. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct Psk {
    ikm: Box<[u8]>,
    auth: hmac::Key,
}

impl Psk {
    /// Takes a pre-shared key: random bytes, at least [`MIN_PSK_LEN`] of them (a password
    /// is not a key: derive one first).
    ///
    /// # Errors
    ///
    /// [`ShortPsk`] below [`MIN_PSK_LEN`] bytes.
    pub fn new(psk: &[u8]) -> Result<Self, ShortPsk> {
        if psk.len() < MIN_PSK_LEN {
            return Err(ShortPsk { len: psk.len() });
        }
        let ikm: Box<[u8]> = psk.into();
        let auth = derive(&ikm, AUTH_SALT);
        Ok(Self { ikm, auth: hmac::Key::new(hmac::HMAC_SHA256, &auth) })
    }

    /// A 32-byte key for one purpose: `HKDF-SHA256(salt, ikm = psk).expand("", 32)`, `salt`
    /// naming the purpose.
    pub(super) fn derive(&self, salt: &[u8]) -> [u8; 32] {
        derive(&self.ikm, salt)
    }

    fn mac(&self, label: &[u8], parts: &[&[u8; NONCE_LEN]]) -> [u8; MAC_LEN] {
        let mut cx = hmac::Context::with_key(&self.auth);
        cx.update(label);
        parts.iter().for_each(|part| cx.update(&part[..]));
        cx.sign().as_ref().try_into().expect("HMAC-SHA256 tags are 32 bytes")
    }

    /// Checks `mac` against the one of `label ‖ parts`, in constant time.
    fn verify(
        &self,
        label: &[u8],
        parts: &[&[u8; NONCE_LEN]],
        mac: &[u8; MAC_LEN],
    ) -> Result<(), KeyError> {
        let mut msg = [0; 6 + 2 * NONCE_LEN];
        msg[..label.len()].copy_from_slice(label);
        let mut len = label.len();
        for part in parts {
            msg[len..len + NONCE_LEN].copy_from_slice(&part[..]);
            len += NONCE_LEN;
        }
        hmac::verify(&self.auth, &msg[..len], mac).map_err(|_| KeyError::WrongKey)
    }

    /// The two keys of the connection whose nonces are `nc` and `ns`.
    fn session_keys(&self, nc: &[u8; NONCE_LEN], ns: &[u8; NONCE_LEN]) -> SessionKeys {
        let mut salt = [0; 2 * NONCE_LEN];
        salt[..NONCE_LEN].copy_from_slice(nc);
        salt[NONCE_LEN..].copy_from_slice(ns);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&self.ikm);
        let mut keys = SessionKeys { c2s: [0; KEY_LEN], s2c: [0; KEY_LEN] };
        hkdf_expand(&prk, C2S_INFO, &mut keys.c2s);
        hkdf_expand(&prk, S2C_INFO, &mut keys.s2c);
        keys
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psk").field("len", &self.ikm.len()).finish_non_exhaustive()
    }
}

fn derive(ikm: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    hkdf_expand(&hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm), b"", &mut out);
    out
}

fn hkdf_expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8; 32]) {
    // HKDF_SHA256 as the length: 32 bytes, far below HKDF's 255 × 32 limit, so never fails.
    let info = [info];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).expect("32 bytes is a valid HKDF length");
    okm.fill(out).expect("the buffer has the requested length");
}

/// The client's side: its nonce, the offer made from it, the check of the server's answer.
#[derive(Debug)]
pub struct ClientHandshake<'a> {
    psk: &'a Psk,
    nonce: [u8; NONCE_LEN],
}

impl<'a> ClientHandshake<'a> {
    /// Starts a handshake with `nonce`: 32 bytes from a secure random source, fresh for
    /// every connection.
    pub fn new(psk: &'a Psk, nonce: [u8; NONCE_LEN]) -> Self {
        Self { psk, nonce }
    }

    /// The request's `Bidir-Key` value: the client nonce and its MAC.
    pub fn offer(&self) -> KeyHeader {
        KeyHeader { nonce: self.nonce, mac: self.psk.mac(CLIENT_LABEL, &[&self.nonce]) }
    }

    /// Checks the response's `Bidir-Key` value and derives the connection's keys.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongKey`] when the server's MAC does not match: the server has another
    /// key, or the answer was altered or belongs to another offer. The connect fails.
    pub fn finish(&self, answer: &KeyHeader) -> Result<SessionKeys, KeyError> {
        self.psk.verify(SERVER_LABEL, &[&self.nonce, &answer.nonce], &answer.mac)?;
        Ok(self.psk.session_keys(&self.nonce, &answer.nonce))
    }
}

/// The server's side: checks the client's offer and answers it with `nonce` (32 bytes from a
/// secure random source, fresh for every connection) and its MAC; returns the answer's
/// `Bidir-Key` value and the connection's keys.
///
/// # Errors
///
/// [`KeyError::WrongKey`] when the offer's MAC does not match: refuse the upgrade with 403.
pub fn answer(
    psk: &Psk,
    offer: &KeyHeader,
    nonce: [u8; NONCE_LEN],
) -> Result<(KeyHeader, SessionKeys), KeyError> {
    psk.verify(CLIENT_LABEL, &[&offer.nonce], &offer.mac)?;
    let mac = psk.mac(SERVER_LABEL, &[&offer.nonce, &nonce]);
    Ok((KeyHeader { nonce, mac }, psk.session_keys(&offer.nonce, &nonce)))
}

/// The keys of one connection, one per direction. Its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    c2s: [u8; KEY_LEN],
    s2c: [u8; KEY_LEN],
}

impl SessionKeys {
    pub(super) fn new(c2s: [u8; KEY_LEN], s2c: [u8; KEY_LEN]) -> Self {
        Self { c2s, s2c }
    }

    /// The key of the messages the client sends.
    pub fn c2s(&self) -> &[u8; KEY_LEN] {
        &self.c2s
    }

    /// The key of the messages the server sends.
    pub fn s2c(&self) -> &[u8; KEY_LEN] {
        &self.s2c
    }

    /// The client's sealer (c2s) and opener (s2c), on the process's backend.
    pub fn client(&self) -> (Sealer, Opener) {
        (Sealer::new(&self.c2s), Opener::new(&self.s2c))
    }

    /// The server's sealer (s2c) and opener (c2s), on the process's backend.
    pub fn server(&self) -> (Sealer, Opener) {
        (Sealer::new(&self.s2c), Opener::new(&self.c2s))
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

/// The value of a `Bidir-Key` header in `psk` mode: `psk; n=<base64 nonce>; m=<base64 MAC>`,
/// base64 with padding (RFC 4648 §4). [`KeyHeader::parse`] reads it back from
/// [`Display`](fmt::Display)'s text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHeader {
    /// The sender's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The MAC that proves the sender knows the key.
    pub mac: [u8; MAC_LEN],
}

impl KeyHeader {
    /// Parses a header value by the grammar of [`key`]: the mode `psk` and the
    /// parameters `n` and `m` once each, 32 bytes of base64; other parameters are ignored.
    ///
    /// # Errors
    ///
    /// [`KeyError::Mode`] when the value names another mode; [`KeyError::Malformed`] for any
    /// other departure from the syntax (the server answers 400).
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        const NOT_32: &str = "a value that is not 32 bytes of base64";
        let [n, m] = key::params(
            value,
            KeyMode::Psk,
            [("n", "no `n` parameter"), ("m", "no `m` parameter")],
        )?;
        Ok(Self { nonce: key::decode(n, NOT_32)?, mac: key::decode(m, NOT_32)? })
    }
}

impl fmt::Display for KeyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; n={}; m={}",
            KeyMode::Psk,
            BASE64.encode(self.nonce),
            BASE64.encode(self.mac)
        )
    }
}

/// A `Bidir-Key` exchange failed; the upgrade does not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The MAC does not match: the peer has another key, or the value was altered or
    /// replayed against other nonces.
    WrongKey,
    /// The value names an unknown mode, or (in an answer) another mode than the offer's.
    Mode,
    /// The value breaks the header syntax, or is missing; the text names the rule.
    Malformed(&'static str),
    /// The operating system gave no randomness for the exchange's seed.
    Random,
}

impl KeyError {
    /// The HTTP status a server refuses the upgrade with: 403 for a wrong key, 500 when it
    /// had no randomness, 400 else.
    pub fn status(&self) -> u16 {
        match self {
            Self::WrongKey => 403,
            Self::Mode | Self::Malformed(_) => 400,
            Self::Random => 500,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongKey => f.write_str("wrong key"),
            Self::Mode => f.write_str("Bidir-Key: unsupported mode"),
            Self::Malformed(rule) => write!(f, "Bidir-Key: {rule}"),
            Self::Random => f.write_str("no randomness from the operating system"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A pre-shared key shorter than [`MIN_PSK_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortPsk {
    /// The length given.
    pub len: usize,
}

impl fmt::Display for ShortPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pre-shared key of {} bytes: at least {MIN_PSK_LEN} needed", self.len)
    }
}

impl std::error::Error for ShortPsk {}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: [u8; 32] = [0x11; 32];
    const NC: [u8; NONCE_LEN] = [0xc1; NONCE_LEN];
    const NS: [u8; NONCE_LEN] = [0x5e; NONCE_LEN];
    /// Base64 of 32 × 0xfb (both non-alphanumeric digits) and of 32 zero bytes.
    const N: &str = "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=";
    const M: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn psk(byte: u8) -> Psk {
        Psk::new(&[byte; 32]).unwrap()
    }

    /// Offer, answer and finish as the two sides do it, through the header text.
    fn exchange(
        client: &Psk,
        server: &Psk,
        nc: [u8; 32],
        ns: [u8; 32],
    ) -> Result<(SessionKeys, SessionKeys), KeyError> {
        let handshake = ClientHandshake::new(client, nc);
        let offer = KeyHeader::parse(handshake.offer().to_string().as_bytes())?;
        let (reply, server_keys) = answer(server, &offer, ns)?;
        let client_keys = handshake.finish(&KeyHeader::parse(reply.to_string().as_bytes())?)?;
        Ok((client_keys, server_keys))
    }

    #[test]
    fn both_sides_derive_the_same_two_keys() {
        let (client, server) = exchange(&psk(0x11), &psk(0x11), NC, NS).unwrap();
        assert_eq!(client, server);
        assert_ne!(client.c2s(), client.s2c(), "one key per direction");
        assert_ne!(client.c2s(), &PSK, "never the shared secret itself");

        let (mut client_seal, mut client_open) = client.client();
        let (mut server_seal, mut server_open) = server.server();
        let mut msg = b"call".to_vec();
        client_seal.seal_in_place(&[2], &mut msg).unwrap();
        assert_eq!(server_open.open_in_place(&[2], &mut msg), Ok(4));
        let mut msg = b"answer".to_vec();
        server_seal.seal_in_place(&[2], &mut msg).unwrap();
        assert_eq!(client_open.open_in_place(&[2], &mut msg), Ok(6));
    }

    /// The schedule of the module doc, computed step by step with ring's primitives, pins
    /// the labels, the order of the nonces and the MAC inputs.
    #[test]
    fn keys_and_macs_follow_the_documented_schedule() {
        let mut auth = [0; 32];
        hkdf_expand(
            &hkdf::Salt::new(hkdf::HKDF_SHA256, b"bidir.bin.v1 auth").extract(&PSK),
            b"",
            &mut auth,
        );
        let auth = hmac::Key::new(hmac::HMAC_SHA256, &auth);
        let offer = ClientHandshake::new(&psk(0x11), NC).offer();
        assert_eq!(offer.mac[..], *hmac::sign(&auth, &[&b"client"[..], &NC].concat()).as_ref());
        let (reply, keys) = answer(&psk(0x11), &offer, NS).unwrap();
        assert_eq!(reply.nonce, NS);
        assert_eq!(
            reply.mac[..],
            *hmac::sign(&auth, &[&b"server"[..], &NC, &NS].concat()).as_ref()
        );

        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[NC, NS].concat()).extract(&PSK);
        let (mut c2s, mut s2c) = ([0; 32], [0; 32]);
        hkdf_expand(&prk, b"bidir.bin.v1 c2s", &mut c2s);
        hkdf_expand(&prk, b"bidir.bin.v1 s2c", &mut s2c);
        assert_eq!((keys.c2s(), keys.s2c()), (&c2s, &s2c));
    }

    #[test]
    fn a_wrong_psk_fails_on_both_sides() {
        // The server refuses the client's offer: 403 before the upgrade.
        let err = exchange(&psk(1), &psk(2), NC, NS).unwrap_err();
        assert_eq!(
            (err, err.status(), err.to_string()),
            (KeyError::WrongKey, 403, "wrong key".into())
        );
        // A server that answers without knowing the key (it cannot make the MAC) fails the
        // client.
        let offer = ClientHandshake::new(&psk(1), NC).offer();
        let (forged, _) = answer(&psk(2), &ClientHandshake::new(&psk(2), NC).offer(), NS).unwrap();
        assert_eq!(offer.nonce, NC);
        assert_eq!(ClientHandshake::new(&psk(1), NC).finish(&forged), Err(KeyError::WrongKey));
    }

    #[test]
    fn a_tampered_nonce_or_mac_fails() {
        let p = psk(0x11);
        let handshake = ClientHandshake::new(&p, NC);
        let offer = handshake.offer();
        for tamper in [|h: &mut KeyHeader| h.nonce[0] ^= 1, |h: &mut KeyHeader| h.mac[31] ^= 0x80] {
            let mut bad = offer;
            tamper(&mut bad);
            assert_eq!(answer(&p, &bad, NS).unwrap_err(), KeyError::WrongKey);

            let (mut reply, _) = answer(&p, &offer, NS).unwrap();
            tamper(&mut reply);
            assert_eq!(handshake.finish(&reply), Err(KeyError::WrongKey));
        }
        // An answer made for another offer does not finish this one.
        let (other, _) = answer(&p, &ClientHandshake::new(&p, [9; 32]).offer(), NS).unwrap();
        assert_eq!(handshake.finish(&other), Err(KeyError::WrongKey));
    }

    #[test]
    fn distinct_connections_get_distinct_keys() {
        let p = psk(0x11);
        let (base, _) = exchange(&p, &p, NC, NS).unwrap();
        let (new_client_nonce, _) = exchange(&p, &p, [0xc2; 32], NS).unwrap();
        let (new_server_nonce, _) = exchange(&p, &p, NC, [0x5f; 32]).unwrap();
        let (swapped, _) = exchange(&p, &p, NS, NC).unwrap();
        let (other_psk, _) = exchange(&psk(0x12), &psk(0x12), NC, NS).unwrap();
        let all = [&base, &new_client_nonce, &new_server_nonce, &swapped, &other_psk];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.c2s(), b.c2s());
                assert_ne!(a.s2c(), b.s2c());
            }
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(Psk::new(&[0; 31]).unwrap_err(), ShortPsk { len: 31 });
        assert_eq!(
            Psk::new(&[]).unwrap_err().to_string(),
            "pre-shared key of 0 bytes: at least 32 needed"
        );
        assert!(Psk::new(&[0; 64]).is_ok());
        assert_eq!(format!("{:?}", psk(0x11)), "Psk { len: 32, .. }", "no secret in Debug");
        assert_eq!(
            format!("{:?}", exchange(&psk(1), &psk(1), NC, NS).unwrap().0),
            "SessionKeys { .. }"
        );
    }

    #[test]
    fn header_text_round_trips() {
        let header = KeyHeader { nonce: [0xfb; 32], mac: [0x00; 32] };
        let text = header.to_string();
        assert_eq!(text, format!("psk; n={N}; m={M}"));
        assert_eq!(KeyHeader::parse(text.as_bytes()), Ok(header));
        let (n, m) = (N, M);
        // Case, spacing, order and unknown parameters do not matter.
        for lenient in [
            format!("PSK;n={n};m={m}"),
            format!(" psk ;\tm = {m} ; n={n} "),
            format!("psk; v=2; n={n}; m={m}; x"),
        ] {
            let parsed = KeyHeader::parse(lenient.as_bytes());
            if lenient.ends_with("; x") {
                assert_eq!(
                    parsed,
                    Err(KeyError::Malformed("a parameter without `=`")),
                    "{lenient}"
                );
            } else {
                assert_eq!(parsed, Ok(header), "{lenient}");
            }
        }
    }

    #[test]
    fn malformed_headers_get_typed_errors() {
        let (n, m) = (N, M);
        let malformed = |rule| Err(KeyError::Malformed(rule));
        let not_32 = malformed("a value that is not 32 bytes of base64");
        let too_long = malformed("a value longer than 256 bytes");
        let cases: Vec<(Vec<u8>, Result<KeyHeader, KeyError>)> = vec![
            (b"".to_vec(), malformed("no mode")),
            (b" ; n=x".to_vec(), malformed("no mode")),
            (format!("ecdhe; h={m}").into_bytes(), Err(KeyError::Mode)),
            (b"psk".to_vec(), malformed("no `n` parameter")),
            (format!("psk; n={n}").into_bytes(), malformed("no `m` parameter")),
            (format!("psk; m={m}").into_bytes(), malformed("no `n` parameter")),
            (format!("psk; n={n}; n={n}; m={m}").into_bytes(), malformed("a repeated parameter")),
            (format!("psk; n={n}; m={m};").into_bytes(), malformed("a parameter without `=`")),
            (format!("psk; n; m={m}").into_bytes(), malformed("a parameter without `=`")),
            (format!("psk; n={}; m={m}", &n[..43]).into_bytes(), not_32),
            (format!("psk; n={}A; m={m}", &n[..43]).into_bytes(), not_32),
            (format!("psk; n={}=; m={m}", &n[..42]).into_bytes(), not_32),
            (format!("psk; n={}!; m={m}", &n[..43]).into_bytes(), not_32),
            (format!("psk; n={n}; m={m}{m}").into_bytes(), not_32),
            (format!("psk; n={}; m={m}", "A".repeat(100_000)).into_bytes(), too_long),
            (b"psk; n=\xff\xfe; m=x".to_vec(), malformed("not text")),
        ];
        for (value, expected) in cases {
            let parsed = KeyHeader::parse(&value);
            assert_eq!(
                parsed,
                expected,
                "{}",
                String::from_utf8_lossy(&value[..value.len().min(80)])
            );
            assert_eq!(parsed.unwrap_err().status(), 400);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_header_values_never_panic(value in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = KeyHeader::parse(&value);
            let mut text = b"psk; n=".to_vec();
            text.extend_from_slice(&value);
            let _ = KeyHeader::parse(&text);
        }
    }
}
