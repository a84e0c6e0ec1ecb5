//! The `Bidir-Key` exchange of `bidir.bin.v1` in either mode, one entry point per side: the
//! client's [`KeyExchange`] (started before the upgrade request, finished with the response)
//! and the server's [`accept`]. Both return the connection's [`SessionKeys`].
//!
//! - `psk` ([`psk`]): nonces and MACs; the keys come from the pre-shared key and
//!   the two nonces.
//! - `ecdhe` ([`noise`]): Noise `NNpsk0` over X25519; the keys come from the
//!   ephemeral exchange, so a leaked pre-shared key does not decrypt recorded connections.
//!
//! # Header grammar
//!
//! ```text
//! value  = mode *( ";" param )              at most MAX_VALUE_LEN (256) bytes of UTF-8
//! mode   = "psk" / "ecdhe"                  case-insensitive
//! param  = name "=" base64                  name case-insensitive; spaces and tabs around
//!                                           the mode, names and values are ignored
//! psk    : n=<32 bytes> m=<32 bytes>        each exactly once
//! ecdhe  : h=<48 bytes>                     exactly once
//! ```
//!
//! Base64 is the standard alphabet with padding (RFC 4648 §4). Parameters of other names are
//! ignored, so later versions can add some; anything else is [`KeyError::Malformed`], an
//! unknown mode [`KeyError::Mode`]: the server answers 400.
//!
//! # Randomness
//!
//! [`KeyExchange::start`] and [`accept`] draw a 32-byte seed from the operating system (ring's
//! `SystemRandom`): the one place this crate asks for randomness instead of taking it in, so
//! that no caller can reuse a seed by mistake. [`KeyExchange::with_seed`] and
//! [`accept_with_seed`] take the seed in, for tests and fuzzing: `psk` mode uses it as the
//! side's nonce, `ecdhe` draws the side's ephemeral key from it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};

pub use super::psk::{KeyError, Psk, SessionKeys};
use super::{noise, psk};

/// Length of the seed each side draws per connection.
pub const SEED_LEN: usize = 32;

/// The header both sides' values travel in, in the upgrade request and its answer.
pub const HEADER: &str = "Bidir-Key";

/// The longest `Bidir-Key` value read (a `psk` value is about 100 bytes, `ecdhe` about 75);
/// longer ones are [`KeyError::Malformed`] before any parsing.
pub const MAX_VALUE_LEN: usize = 256;

/// How a connection's keys are agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// Fresh nonces from both sides, authenticated by the pre-shared key; the keys derive
    /// from the key and the nonces.
    Psk,
    /// An X25519 exchange authenticated by the pre-shared key (Noise `NNpsk0`): forward
    /// secrecy.
    Ecdhe,
}

impl KeyMode {
    /// The mode token that starts a `Bidir-Key` value: `psk` or `ecdhe`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Psk => "psk",
            Self::Ecdhe => "ecdhe",
        }
    }

    /// The mode a token names, case-insensitively; `None` for an unknown one.
    pub fn from_token(token: &str) -> Option<Self> {
        [Self::Psk, Self::Ecdhe].into_iter().find(|mode| token.eq_ignore_ascii_case(mode.token()))
    }

    /// The mode of a `Bidir-Key` value.
    ///
    /// # Errors
    ///
    /// [`KeyError::Mode`] for an unknown mode, [`KeyError::Malformed`] for a value that is too
    /// long, not text, or has no mode token.
    pub fn of(value: &[u8]) -> Result<Self, KeyError> {
        let (mode, _) = split(value)?;
        Self::from_token(mode).ok_or(KeyError::Mode)
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The client's side of the exchange: started before the upgrade request, whose
/// `Bidir-Key` header carries [`offer`](Self::offer); finished with the response's value.
/// It owns what it needs, so it can wait in a connection's state across loop turns.
pub struct KeyExchange {
    state: ClientState,
}

enum ClientState {
    Psk {
        psk: Box<Psk>,
        nonce: [u8; psk::NONCE_LEN],
    },
    /// Boxed, as the Psk: snow's handshake state is about 900 bytes, ring's HMAC key 200.
    Ecdhe(Box<noise::ClientHandshake>),
}

impl KeyExchange {
    /// Starts an exchange in `mode` with a seed from the operating system.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] when the operating system gives no randomness.
    pub fn start(mode: KeyMode, psk: &Psk) -> Result<Self, KeyError> {
        Ok(Self::with_seed(mode, psk, random_seed()?))
    }

    /// Starts an exchange in `mode` with `seed`: 32 bytes from a secure random source, fresh
    /// for every connection (a repeated seed repeats the client's side of the exchange).
    pub fn with_seed(mode: KeyMode, psk: &Psk, seed: [u8; SEED_LEN]) -> Self {
        let state = match mode {
            KeyMode::Psk => ClientState::Psk { psk: Box::new(psk.clone()), nonce: seed },
            KeyMode::Ecdhe => ClientState::Ecdhe(Box::new(noise::ClientHandshake::new(psk, seed))),
        };
        Self { state }
    }

    /// The mode this exchange offers.
    pub fn mode(&self) -> KeyMode {
        match self.state {
            ClientState::Psk { .. } => KeyMode::Psk,
            ClientState::Ecdhe(_) => KeyMode::Ecdhe,
        }
    }

    /// The upgrade request's `Bidir-Key` value; the same on every call.
    pub fn offer(&self) -> String {
        match &self.state {
            ClientState::Psk { psk, nonce } => {
                psk::ClientHandshake::new(psk, *nonce).offer().to_string()
            }
            ClientState::Ecdhe(handshake) => handshake.offer().to_string(),
        }
    }

    /// Checks the response's `Bidir-Key` value and returns the connection's keys.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongKey`] when the answer does not authenticate (the server has another
    /// key, or the answer was altered or made for another offer); [`KeyError::Mode`] when it
    /// names another mode than the offer's; [`KeyError::Malformed`] when it breaks the
    /// grammar. The connect fails in every case.
    pub fn finish(self, answer: &[u8]) -> Result<SessionKeys, KeyError> {
        match self.state {
            ClientState::Psk { psk, nonce } => {
                psk::ClientHandshake::new(&psk, nonce).finish(&psk::KeyHeader::parse(answer)?)
            }
            ClientState::Ecdhe(handshake) => handshake.finish(&noise::EcdheHeader::parse(answer)?),
        }
    }
}

impl fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyExchange").field("mode", &self.mode()).finish_non_exhaustive()
    }
}

/// The server's side: the request's `Bidir-Key` value (`None` when the header is absent), in
/// either mode, answered with a seed from the operating system. Returns the response's
/// `Bidir-Key` value and the connection's keys.
///
/// # Errors
///
/// Refuse the upgrade with [`KeyError::status`]: 400 for a missing or malformed value or an
/// unknown mode, 403 for [`KeyError::WrongKey`] (the client has another key), 500 for
/// [`KeyError::Random`].
pub fn accept(psk: &Psk, offer: Option<&[u8]>) -> Result<(String, SessionKeys), KeyError> {
    let offer = offer.ok_or(KeyError::Malformed("no Bidir-Key header"))?;
    // Checked before drawing randomness: a malformed request costs no system call.
    KeyMode::of(offer)?;
    accept_with_seed(psk, Some(offer), random_seed()?)
}

/// [`accept`] with `seed`: 32 bytes from a secure random source, fresh for every connection.
///
/// # Errors
///
/// As [`accept`], less [`KeyError::Random`].
pub fn accept_with_seed(
    psk: &Psk,
    offer: Option<&[u8]>,
    seed: [u8; SEED_LEN],
) -> Result<(String, SessionKeys), KeyError> {
    let offer = offer.ok_or(KeyError::Malformed("no Bidir-Key header"))?;
    Ok(match KeyMode::of(offer)? {
        KeyMode::Psk => {
            let (reply, keys) = psk::answer(psk, &psk::KeyHeader::parse(offer)?, seed)?;
            (reply.to_string(), keys)
        }
        KeyMode::Ecdhe => {
            let (reply, keys) = noise::answer(psk, &noise::EcdheHeader::parse(offer)?, seed)?;
            (reply.to_string(), keys)
        }
    })
}

fn random_seed() -> Result<[u8; SEED_LEN], KeyError> {
    let mut seed = [0; SEED_LEN];
    SystemRandom::new().fill(&mut seed).map_err(|_| KeyError::Random)?;
    Ok(seed)
}

const SPACE: [char; 2] = [' ', '\t'];

/// A value's mode token and the text after it, checked for length and UTF-8.
fn split(value: &[u8]) -> Result<(&str, Option<&str>), KeyError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(KeyError::Malformed("a value longer than 256 bytes"));
    }
    let value = std::str::from_utf8(value).map_err(|_| KeyError::Malformed("not text"))?;
    let (mode, params) = match value.split_once(';') {
        Some((mode, params)) => (mode, Some(params)),
        None => (value, None),
    };
    let mode = mode.trim_matches(SPACE);
    if mode.is_empty() {
        return Err(KeyError::Malformed("no mode"));
    }
    Ok((mode, params))
}

/// The values of the parameters `names` of a value in `mode`, each present exactly once, in
/// the order of `names`; each name comes with the rule its absence breaks.
pub(super) fn params<'a, const N: usize>(
    value: &'a [u8],
    mode: KeyMode,
    names: [(&str, &'static str); N],
) -> Result<[&'a str; N], KeyError> {
    let (token, params) = split(value)?;
    if !token.eq_ignore_ascii_case(mode.token()) {
        return Err(KeyError::Mode);
    }
    let mut found = [None; N];
    for part in params.into_iter().flat_map(|params| params.split(';')) {
        let (name, text) =
            part.split_once('=').ok_or(KeyError::Malformed("a parameter without `=`"))?;
        let name = name.trim_matches(SPACE);
        let Some(i) = names.iter().position(|(known, _)| name.eq_ignore_ascii_case(known)) else {
            continue;
        };
        if found[i].is_some() {
            return Err(KeyError::Malformed("a repeated parameter"));
        }
        found[i] = Some(text.trim_matches(SPACE));
    }
    let mut values = [""; N];
    for ((value, found), (_, missing)) in values.iter_mut().zip(found).zip(names) {
        *value = found.ok_or(KeyError::Malformed(missing))?;
    }
    Ok(values)
}

/// Decodes base64 that must hold exactly `N` bytes, looking at no more text than that takes;
/// `rule` names the failure.
pub(super) fn decode<const N: usize>(text: &str, rule: &'static str) -> Result<[u8; N], KeyError> {
    const { assert!(N <= 64, "room for 64 bytes") };
    if text.len() != N.div_ceil(3) * 4 {
        return Err(KeyError::Malformed(rule));
    }
    // Room for the most the text could decode to, so a wrong length is an error, not a panic.
    let mut out = [0; 66];
    match BASE64.decode_slice(text, &mut out[..N + 2]) {
        Ok(len) if len == N => Ok(out[..N].try_into().expect("N bytes")),
        _ => Err(KeyError::Malformed(rule)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [KeyMode; 2] = [KeyMode::Psk, KeyMode::Ecdhe];

    fn psk(byte: u8) -> Psk {
        Psk::new(&[byte; 32]).unwrap()
    }

    /// Both sides through their entry points, with randomness from the system.
    fn connect(mode: KeyMode, client: &Psk, server: &Psk) -> Result<[SessionKeys; 2], KeyError> {
        let exchange = KeyExchange::start(mode, client)?;
        let (answer, server_keys) = accept(server, Some(exchange.offer().as_bytes()))?;
        Ok([exchange.finish(answer.as_bytes())?, server_keys])
    }

    #[test]
    fn both_modes_agree_on_keys_that_seal_across_the_sides() {
        for mode in MODES {
            let exchange = KeyExchange::start(mode, &psk(7)).unwrap();
            assert_eq!(exchange.mode(), mode);
            let offer = exchange.offer();
            assert_eq!(offer, exchange.offer(), "the same offer on every call");
            assert_eq!(KeyMode::of(offer.as_bytes()), Ok(mode), "{offer}");
            let (answer, server) = accept(&psk(7), Some(offer.as_bytes())).unwrap();
            assert_eq!(KeyMode::of(answer.as_bytes()), Ok(mode), "{answer}");
            let client = exchange.finish(answer.as_bytes()).unwrap();
            assert_eq!((client.c2s(), client.s2c()), (server.c2s(), server.s2c()), "{mode}");

            let (mut seal, _) = client.client();
            let (_, mut open) = server.server();
            for i in 0..3u8 {
                let mut msg = vec![i; 100];
                seal.seal_in_place(&[2], &mut msg).unwrap();
                assert_eq!(open.open_in_place(&[2], &mut msg), Ok(100), "{mode} {i}");
            }
            let (mut seal, _) = server.server();
            let (_, mut open) = client.client();
            let mut msg = b"event".to_vec();
            seal.seal_in_place(&[0], &mut msg).unwrap();
            assert_eq!(open.open_in_place(&[0], &mut msg), Ok(5), "{mode}");
        }
    }

    /// The seeded entry points are the modules' pure functions.
    #[test]
    fn seeded_exchanges_are_the_pure_functions_of_each_mode() {
        let (c, s) = ([0xc1; 32], [0x5e; 32]);
        let p = psk(7);
        let exchange = KeyExchange::with_seed(KeyMode::Psk, &p, c);
        let direct = psk::ClientHandshake::new(&p, c);
        assert_eq!(exchange.offer(), direct.offer().to_string());
        let (answer, keys) = accept_with_seed(&p, Some(exchange.offer().as_bytes()), s).unwrap();
        let (reply, direct_keys) = psk::answer(&p, &direct.offer(), s).unwrap();
        assert_eq!((answer, &keys), (reply.to_string(), &direct_keys));

        let exchange = KeyExchange::with_seed(KeyMode::Ecdhe, &p, c);
        let direct = noise::ClientHandshake::new(&p, c);
        assert_eq!(exchange.offer(), direct.offer().to_string());
        let (answer, keys) = accept_with_seed(&p, Some(exchange.offer().as_bytes()), s).unwrap();
        let (reply, direct_keys) = noise::answer(&p, &direct.offer(), s).unwrap();
        assert_eq!((answer, &keys), (reply.to_string(), &direct_keys));
        assert_eq!(exchange.finish(reply.to_string().as_bytes()), Ok(direct_keys));
    }

    #[test]
    fn a_wrong_psk_fails_both_sides_with_their_status() {
        for mode in MODES {
            let err = connect(mode, &psk(1), &psk(2)).unwrap_err();
            assert_eq!(
                (err, err.status(), err.to_string()),
                (KeyError::WrongKey, 403, "wrong key".into())
            );
            // The answer of a server with another key (to an offer it can read) fails the
            // client.
            let seed = [3; 32];
            let ours = KeyExchange::with_seed(mode, &psk(1), seed);
            let theirs = KeyExchange::with_seed(mode, &psk(2), seed).offer();
            let (answer, _) = accept(&psk(2), Some(theirs.as_bytes())).unwrap();
            assert_eq!(ours.finish(answer.as_bytes()), Err(KeyError::WrongKey), "{mode}");
        }
    }

    #[test]
    fn a_replayed_offer_gets_new_keys_and_every_connection_its_own() {
        for mode in MODES {
            let p = psk(7);
            let offer = KeyExchange::start(mode, &p).unwrap().offer();
            let (first_answer, first) = accept(&p, Some(offer.as_bytes())).unwrap();
            let (second_answer, second) = accept(&p, Some(offer.as_bytes())).unwrap();
            assert_ne!(first_answer, second_answer, "{mode}");
            assert_ne!(first.c2s(), second.c2s(), "{mode}");
            assert_ne!(first.s2c(), second.s2c(), "{mode}");

            let [a, _] = connect(mode, &p, &p).unwrap();
            let [b, _] = connect(mode, &p, &p).unwrap();
            assert_ne!((a.c2s(), a.s2c()), (b.c2s(), b.s2c()), "{mode}");
        }
    }

    #[test]
    fn an_answer_in_another_mode_fails_the_client() {
        let p = psk(7);
        let psk_answer =
            accept(&p, Some(KeyExchange::start(KeyMode::Psk, &p).unwrap().offer().as_bytes()));
        let ecdhe = KeyExchange::start(KeyMode::Ecdhe, &p).unwrap();
        assert_eq!(ecdhe.finish(psk_answer.unwrap().0.as_bytes()), Err(KeyError::Mode));
        let ecdhe_answer =
            accept(&p, Some(KeyExchange::start(KeyMode::Ecdhe, &p).unwrap().offer().as_bytes()));
        let psk_exchange = KeyExchange::start(KeyMode::Psk, &p).unwrap();
        assert_eq!(psk_exchange.finish(ecdhe_answer.unwrap().0.as_bytes()), Err(KeyError::Mode));
    }

    #[test]
    fn malformed_or_missing_offers_are_refused_with_400() {
        let p = psk(7);
        let ecdhe = KeyExchange::start(KeyMode::Ecdhe, &p).unwrap().offer();
        let h = ecdhe.split_once("h=").unwrap().1.to_owned();
        let malformed = |rule| Err(KeyError::Malformed(rule));
        type Case = (Option<Vec<u8>>, Result<(), KeyError>);
        let cases: Vec<Case> = vec![
            (None, malformed("no Bidir-Key header")),
            (Some(b"".to_vec()), malformed("no mode")),
            (Some(b"\t; h=AAAA".to_vec()), malformed("no mode")),
            (Some(b"rsa; h=AAAA".to_vec()), Err(KeyError::Mode)),
            (Some(b"ecdhe2".to_vec()), Err(KeyError::Mode)),
            (Some(b"ecdhe".to_vec()), malformed("no `h` parameter")),
            (Some(b"ecdhe; n=AAAA".to_vec()), malformed("no `h` parameter")),
            (Some(b"ecdhe; h".to_vec()), malformed("a parameter without `=`")),
            (Some(b"psk; m=AAAA".to_vec()), malformed("no `n` parameter")),
            (
                Some(format!("ecdhe; h={}", &h[..63]).into_bytes()),
                malformed("a value that is not 48 bytes of base64"),
            ),
            (
                Some(format!("ecdhe; h={}*", &h[..63]).into_bytes()),
                malformed("a value that is not 48 bytes of base64"),
            ),
            (
                Some(format!("ecdhe; h={h}; x={}", "y".repeat(200)).into_bytes()),
                malformed("a value longer than 256 bytes"),
            ),
            (Some(vec![b'a'; 100_000]), malformed("a value longer than 256 bytes")),
            (Some(b"ecdhe; h=\xc3\x28".to_vec()), malformed("not text")),
        ];
        for (offer, expected) in cases {
            let outcome = accept(&p, offer.as_deref()).map(|_| ());
            let shown = offer
                .as_deref()
                .map(|o| String::from_utf8_lossy(&o[..o.len().min(60)]).into_owned());
            assert_eq!(outcome, expected, "{shown:?}");
            assert_eq!(outcome.unwrap_err().status(), 400, "{shown:?}");
        }
        // Exactly the limit is read, one byte more is not; the mode token in any case.
        let padded = format!("EcDhE; h={h}; x={}", "y".repeat(MAX_VALUE_LEN - 77));
        assert_eq!(padded.len(), MAX_VALUE_LEN);
        assert!(accept(&p, Some(padded.as_bytes())).is_ok());
        let over = format!("{padded}y");
        assert_eq!(
            accept(&p, Some(over.as_bytes())).unwrap_err(),
            KeyError::Malformed("a value longer than 256 bytes")
        );
    }

    #[test]
    fn modes_and_errors_display() {
        assert_eq!(KeyMode::from_token("PSK"), Some(KeyMode::Psk));
        assert_eq!(KeyMode::from_token("ecdh"), None);
        assert_eq!(KeyMode::Ecdhe.to_string(), "ecdhe");
        assert_eq!(
            (KeyError::Random.status(), KeyError::Random.to_string()),
            (500, "no randomness from the operating system".into())
        );
        let debug = format!("{:?}", KeyExchange::start(KeyMode::Psk, &psk(7)).unwrap());
        assert_eq!(debug, "KeyExchange { mode: Psk, .. }", "no secret in Debug");
    }
}
