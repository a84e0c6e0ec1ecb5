//! permessage-deflate (RFC 7692): negotiating the extension and compressing messages.
//!
//! - [`DeflateConfig`] says what an endpoint is willing to do; [`DeflateConfig::shared`] and
//!   [`DeflateConfig::dedicated`] are the two memory profiles.
//! - [`negotiate`] (server) picks the first acceptable offer from a client's
//!   `Sec-WebSocket-Extensions` and answers it; [`DeflateConfig::offer`] and [`accept_answer`]
//!   are the client's side. Both give [`DeflateParams`], the negotiated parameters.
//! - [`Codec`] holds the zlib state: one per connection when context is taken over between
//!   messages, or one per worker, lent to connections call by call, when neither side keeps
//!   context (see [`DeflateParams::is_stateless`]).
//!
//! The compressor is zlib-rs, chosen over miniz_oxide because it honours every window size a
//! peer may demand (9–15 bits) and a memory level, which the memory profiles need; see
//! docs/deflate.md for the measurements.

mod codec;
mod quick;

use core::fmt;

pub use codec::{Codec, DecompressError};

use crate::Role;
use crate::http::{ExtensionOffer, Extensions, InvalidExtension};

/// The extension's token.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What an endpoint is willing to negotiate, and how it compresses.
///
/// ```
/// use bidir_protocol::deflate::DeflateConfig;
/// let low_memory = DeflateConfig::shared();
/// let mut best_ratio = DeflateConfig::dedicated(15);
/// best_ratio.level = 6;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Largest LZ77 window this endpoint compresses with, as a base-2 logarithm, 9–15. A peer
    /// may ask for less; it gets what it asks for. Default 15 (32 KiB).
    pub window_bits: u8,
    /// Forget the compression context after every message ("no context takeover" on this
    /// side): less compression for repetitive traffic, but no window kept between messages.
    pub no_context_takeover: bool,
    /// Ask the peer to forget its context after every message, so that this side need not
    /// keep a decompression window between messages. A server may require it; a client can
    /// only ask.
    pub peer_no_context_takeover: bool,
    /// Largest window the peer may compress with, when the negotiation lets this side choose
    /// (a client that offers `client_max_window_bits`; any server). It bounds the
    /// decompression window this side keeps. 8–15. Default 15.
    pub peer_window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (best). Default 1, zlib-rs's fastest
    /// matcher: on small JSON messages it keeps about four fifths of level 6's savings for
    /// under a third of its time (docs/deflate.md).
    pub level: u8,
    /// zlib memory level, 1–9: it sizes a live compressor's symbol buffer,
    /// `7 << (mem_level + 6)` bytes (112 KiB at 8, 3.5 KiB at 3); smaller buffers end blocks
    /// sooner, which costs ratio at levels 2 and up. zlib-rs's hash table is 128 KiB whatever
    /// the level. Default 8.
    pub mem_level: u8,
    /// Messages shorter than this are sent uncompressed: compressing them costs more than it
    /// saves. Default 64 bytes.
    pub min_size: usize,
    /// Where context kept between messages lives. `false`: a live zlib state per connection,
    /// the fastest per message with large windows, but about 230 KiB per connection at 9 bits
    /// and 360 KiB at 15 (measured, default memory level; docs/deflate.md). `true`: only the
    /// last window of plaintext in each direction that keeps context (at most
    /// `1 << window_bits` bytes each), with the worker's codec primed from it for every
    /// message — output as small as with live context for a fraction of the memory, at the
    /// price of re-indexing the window per message (compressing 1 KiB of JSON takes about
    /// 15 µs with a 512-byte or 4 KiB window and 48 µs with 32 KiB, against 3–10 µs live).
    /// Irrelevant when neither side keeps context.
    pub compact_context: bool,
}

impl DeflateConfig {
    /// The low-memory profile: neither side keeps context between messages, so the zlib state
    /// is per worker, not per connection. The server requires it of clients; a client asks for
    /// it.
    pub fn shared() -> Self {
        Self {
            window_bits: 15,
            no_context_takeover: true,
            peer_no_context_takeover: true,
            peer_window_bits: 15,
            level: 1,
            mem_level: 8,
            min_size: 64,
            compact_context: true,
        }
    }

    /// The best-ratio profile: both sides keep context between messages, in windows of
    /// `window_bits` (9–15; clamped). Up to 12 bits the context is compact
    /// ([`DeflateConfig::compact_context`]): about twice the window per connection (1 KiB at
    /// 9 bits, 8 KiB at 12). From 13 bits each connection has live zlib state, about 360 KiB
    /// at 15 bits once it has sent and received a compressed message. Measured figures are in
    /// docs/deflate.md.
    pub fn dedicated(window_bits: u8) -> Self {
        let window_bits = window_bits.clamp(9, 15);
        Self {
            window_bits,
            no_context_takeover: false,
            peer_no_context_takeover: false,
            peer_window_bits: window_bits,
            level: 1,
            mem_level: 8,
            min_size: 64,
            compact_context: window_bits <= 12,
        }
    }

    /// The client's `Sec-WebSocket-Extensions` offer for this configuration.
    pub fn offer(&self) -> String {
        let mut offer = String::from(PERMESSAGE_DEFLATE);
        if self.window_bits < 15 {
            offer.push_str(&format!("; client_max_window_bits={}", self.window_bits.clamp(9, 15)));
        } else {
            offer.push_str("; client_max_window_bits");
        }
        if self.peer_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.peer_window_bits < 15 {
            offer.push_str(&format!(
                "; server_max_window_bits={}",
                self.peer_window_bits.clamp(8, 15)
            ));
        }
        if self.no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        offer
    }
}

impl Default for DeflateConfig {
    /// [`DeflateConfig::shared`].
    fn default() -> Self {
        Self::shared()
    }
}

/// The negotiated parameters (RFC 7692 §7.1), the same for both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's window limit, if the answer states one (8–15); otherwise 15.
    pub server_max_window_bits: Option<u8>,
    /// The client's window limit, if the answer states one (8–15); otherwise 15.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The server's answer, for its `Sec-WebSocket-Extensions` header.
    pub fn answer(&self) -> String {
        let mut answer = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            answer.push_str(&format!("; client_max_window_bits={bits}"));
        }
        answer
    }

    /// Whether `role` resets its compressor after every message.
    pub fn compress_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// Whether `role`'s peer resets its compressor after every message, so that `role` may
    /// reset its decompressor.
    pub fn decompress_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.client_no_context_takeover,
            Role::Client => self.server_no_context_takeover,
        }
    }

    /// The window `role` compresses with: its limit, or 15.
    pub fn compress_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.server_max_window_bits,
            Role::Client => self.client_max_window_bits,
        }
        .unwrap_or(15)
    }

    /// The window `role` must be able to decompress: its peer's limit, or 15.
    pub fn decompress_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.client_max_window_bits,
            Role::Client => self.server_max_window_bits,
        }
        .unwrap_or(15)
    }

    /// Whether neither side keeps context between messages: then no zlib state has to live
    /// between messages, and one [`Codec`] can serve many connections.
    pub fn is_stateless(&self) -> bool {
        self.server_no_context_takeover && self.client_no_context_takeover
    }
}

/// Why a permessage-deflate offer or answer is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The header does not follow the extension grammar.
    Malformed,
    /// A parameter RFC 7692 does not define.
    UnknownParameter,
    /// A parameter given twice (§7: "MUST NOT include multiple ... of the same name").
    DuplicateParameter,
    /// A missing, extra or out-of-range value (window bits are 8–15, without leading zeros).
    InvalidValue,
    /// The answer uses a parameter, or a value, that the offer did not allow (§7.1.2.2,
    /// §7.1.2.1).
    NotOffered,
    /// The answer left out something the offer required (`server_no_context_takeover` or a
    /// `server_max_window_bits` the client asked for).
    NotHonored,
    /// The answer names permessage-deflate more than once.
    Ambiguous,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed permessage-deflate parameters",
            Self::UnknownParameter => "unknown permessage-deflate parameter",
            Self::DuplicateParameter => "duplicate permessage-deflate parameter",
            Self::InvalidValue => "invalid permessage-deflate parameter value",
            Self::NotOffered => "permessage-deflate answer uses what was not offered",
            Self::NotHonored => "permessage-deflate answer ignores what the offer required",
            Self::Ambiguous => "permessage-deflate answered more than once",
        })
    }
}

impl std::error::Error for NegotiationError {}

/// The four parameters as given in one offer or answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: Option<&str>) -> Result<u8, NegotiationError> {
    let value = value.ok_or(NegotiationError::InvalidValue)?;
    if value.is_empty()
        || value.len() > 2
        || value.starts_with('0')
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(NegotiationError::InvalidValue);
    }
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) => Ok(bits),
        _ => Err(NegotiationError::InvalidValue),
    }
}

fn parse(offer: &ExtensionOffer<'_>) -> Result<Parsed, NegotiationError> {
    let mut parsed = Parsed::default();
    let mut seen = [false; 4];
    for param in offer.params() {
        let param = param.map_err(|_| NegotiationError::Malformed)?;
        let index = match param.name {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err(NegotiationError::UnknownParameter),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(NegotiationError::DuplicateParameter);
        }
        match index {
            0 | 1 if param.value.is_some() => return Err(NegotiationError::InvalidValue),
            0 => parsed.server_no_context_takeover = true,
            1 => parsed.client_no_context_takeover = true,
            2 => parsed.server_max_window_bits = Some(window_bits(param.value)?),
            _ => {
                parsed.client_max_window_bits =
                    Some(param.value.map(|v| window_bits(Some(v))).transpose()?);
            }
        }
    }
    Ok(parsed)
}

/// The server's side: answers the first acceptable permessage-deflate offer among `offers`
/// (in the client's order of preference), or `None` to decline them all. Offers that break
/// the grammar, repeat or misspell a parameter, or give a bad value are declined; the next one
/// is considered.
///
/// A client that demands `server_max_window_bits=8` is accepted, but this side then never
/// compresses what it sends (uncompressed messages are always allowed): zlib compresses with
/// 9 bits at least. Everything else the RFC lets a client ask is honoured.
pub fn negotiate<'b>(
    offers: impl IntoIterator<Item = Result<ExtensionOffer<'b>, InvalidExtension>>,
    config: &DeflateConfig,
) -> Option<DeflateParams> {
    offers
        .into_iter()
        .filter_map(Result::ok)
        .filter(|offer| offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|offer| parse(&offer).ok().map(|p| answer(&p, config)))
}

fn answer(offer: &Parsed, config: &DeflateConfig) -> DeflateParams {
    let ours = config.window_bits.clamp(9, 15);
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(asked) => Some(asked.min(ours)),
        None if ours < 15 => Some(ours),
        None => None,
    };
    let client_max_window_bits = match offer.client_max_window_bits {
        // The client lets us choose its window: bound our decompression window.
        Some(limit) => {
            let bits = limit.unwrap_or(15).min(config.peer_window_bits.clamp(8, 15));
            (bits < 15 || limit.is_some()).then_some(bits)
        }
        None => None,
    };
    DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover || config.no_context_takeover,
        // A server may require this even unasked (§7.1.1.2); a client's hint is taken up too.
        client_no_context_takeover: offer.client_no_context_takeover
            || config.peer_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    }
}

/// The client's side: validates the server's `Sec-WebSocket-Extensions` answer to
/// [`DeflateConfig::offer`]. `Ok(None)`: the server declined (no permessage-deflate in the
/// answer).
///
/// # Errors
///
/// The [`NegotiationError`] that makes the answer invalid; the client must fail the
/// connection (RFC 7692 §5).
pub fn accept_answer(
    answer: &str,
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, NegotiationError> {
    let mut found = None;
    for extension in Extensions::new(answer.as_bytes()) {
        let extension = extension.map_err(|_| NegotiationError::Malformed)?;
        if !extension.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
            continue;
        }
        if found.is_some() {
            return Err(NegotiationError::Ambiguous);
        }
        found = Some(parse(&extension)?);
    }
    let Some(got) = found else { return Ok(None) };
    let offered_client_bits =
        if config.window_bits < 15 { Some(config.window_bits.clamp(9, 15)) } else { None };
    let client_max_window_bits = match got.client_max_window_bits {
        None => offered_client_bits,
        // An answer must give a value, no larger than the one offered.
        Some(None) => return Err(NegotiationError::InvalidValue),
        Some(Some(bits)) if offered_client_bits.is_some_and(|o| bits > o) => {
            return Err(NegotiationError::NotOffered);
        }
        Some(Some(bits)) => Some(bits),
    };
    if config.peer_no_context_takeover && !got.server_no_context_takeover {
        return Err(NegotiationError::NotHonored);
    }
    if config.peer_window_bits < 15 {
        match got.server_max_window_bits {
            None => return Err(NegotiationError::NotHonored),
            Some(bits) if bits > config.peer_window_bits.clamp(8, 15) => {
                return Err(NegotiationError::NotOffered);
            }
            Some(_) => {}
        }
    }
    Ok(Some(DeflateParams {
        server_no_context_takeover: got.server_no_context_takeover,
        client_no_context_takeover: got.client_no_context_takeover || config.no_context_takeover,
        server_max_window_bits: got.server_max_window_bits,
        client_max_window_bits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate_str(offers: &str, config: &DeflateConfig) -> Option<String> {
        negotiate(Extensions::new(offers.as_bytes()), config).map(|p| p.answer())
    }

    #[test]
    fn plain_offer_and_the_two_profiles() {
        let dedicated = DeflateConfig::dedicated(15);
        assert_eq!(negotiate_str("permessage-deflate", &dedicated).unwrap(), "permessage-deflate");
        // The shared profile requires no context takeover of both sides.
        assert_eq!(
            negotiate_str("permessage-deflate", &DeflateConfig::shared()).unwrap(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        // A browser's offer: client_max_window_bits without a value.
        assert_eq!(
            negotiate_str(
                "permessage-deflate; client_max_window_bits",
                &DeflateConfig::dedicated(10)
            )
            .unwrap(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"
        );
        assert_eq!(
            negotiate_str("permessage-deflate; client_max_window_bits", &dedicated).unwrap(),
            "permessage-deflate"
        );
    }

    /// RFC 7692 §7.1.3's example offers.
    #[test]
    fn rfc_examples() {
        let config = DeflateConfig::dedicated(15);
        // Two offers; the server picks the first it accepts.
        let offers = "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits";
        assert_eq!(
            negotiate_str(offers, &config).unwrap(),
            "permessage-deflate; server_max_window_bits=10"
        );
        // An offer the server cannot parse is declined; the fallback is accepted.
        let offers = "permessage-deflate; server_max_window_bits=0x, permessage-deflate";
        assert_eq!(negotiate_str(offers, &config).unwrap(), "permessage-deflate");
        assert_eq!(
            negotiate_str("permessage-deflate; server_no_context_takeover", &config).unwrap(),
            "permessage-deflate; server_no_context_takeover"
        );
        assert_eq!(
            negotiate_str("permessage-deflate; client_max_window_bits=10", &config).unwrap(),
            "permessage-deflate; client_max_window_bits=10"
        );
    }

    #[test]
    fn invalid_offers_are_declined() {
        let config = DeflateConfig::dedicated(15);
        for offer in [
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=\"1\\0\"",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate_str(offer, &config), None, "{offer}");
        }
        // Quoted values are values.
        assert_eq!(
            negotiate_str("permessage-deflate; server_max_window_bits=\"12\"", &config).unwrap(),
            "permessage-deflate; server_max_window_bits=12"
        );
    }

    #[test]
    fn window_demands_are_honoured_down_to_8() {
        let config = DeflateConfig::dedicated(15);
        let p =
            negotiate(Extensions::new(b"permessage-deflate; server_max_window_bits=8"), &config)
                .unwrap();
        assert_eq!(p.server_max_window_bits, Some(8));
        assert_eq!(p.compress_window_bits(Role::Server), 8);
        assert_eq!(p.decompress_window_bits(Role::Server), 15);
        // A smaller own window is announced even unasked (§7.1.2.1).
        let p = negotiate(Extensions::new(b"permessage-deflate"), &DeflateConfig::dedicated(9))
            .unwrap();
        assert_eq!(p.server_max_window_bits, Some(9));
        // client_max_window_bits is never answered unless offered (§7.1.2.2).
        assert_eq!(p.client_max_window_bits, None);
    }

    #[test]
    fn roles_see_the_same_parameters_from_each_side() {
        let p = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: Some(10),
            client_max_window_bits: None,
        };
        assert!(p.compress_no_context_takeover(Role::Server));
        assert!(p.decompress_no_context_takeover(Role::Client));
        assert!(!p.decompress_no_context_takeover(Role::Server));
        assert_eq!(p.compress_window_bits(Role::Server), 10);
        assert_eq!(p.decompress_window_bits(Role::Client), 10);
        assert_eq!(p.compress_window_bits(Role::Client), 15);
        assert!(!p.is_stateless());
    }

    #[test]
    fn client_offers_and_answers() {
        let config = DeflateConfig::shared();
        assert_eq!(
            config.offer(),
            "permessage-deflate; client_max_window_bits; server_no_context_takeover; client_no_context_takeover"
        );
        let got = accept_answer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            &config,
        )
        .unwrap()
        .unwrap();
        assert!(got.is_stateless());
        // We asked for server_no_context_takeover; an answer without it does not honour it.
        assert_eq!(accept_answer("permessage-deflate", &config), Err(NegotiationError::NotHonored));
        assert_eq!(accept_answer("", &config), Ok(None));
        assert_eq!(accept_answer("x-other", &config), Ok(None));

        let config = DeflateConfig::dedicated(12);
        assert_eq!(
            config.offer(),
            "permessage-deflate; client_max_window_bits=12; server_max_window_bits=12"
        );
        let got = accept_answer(
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11",
            &config,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (got.compress_window_bits(Role::Client), got.decompress_window_bits(Role::Client)),
            (11, 10)
        );
        for (answer, err) in [
            ("permessage-deflate; server_max_window_bits=13", NegotiationError::NotOffered),
            ("permessage-deflate", NegotiationError::NotHonored),
            (
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=13",
                NegotiationError::NotOffered,
            ),
            (
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
                NegotiationError::InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=12; bogus",
                NegotiationError::UnknownParameter,
            ),
            (
                "permessage-deflate; server_max_window_bits=12, permessage-deflate",
                NegotiationError::Ambiguous,
            ),
        ] {
            assert_eq!(accept_answer(answer, &config), Err(err), "{answer}");
        }
        // The server may impose client_no_context_takeover and announce its own.
        let got = accept_answer(
            "permessage-deflate; server_max_window_bits=9; client_no_context_takeover",
            &config,
        )
        .unwrap()
        .unwrap();
        assert!(got.compress_no_context_takeover(Role::Client));
    }

    #[test]
    fn client_max_window_bits_needs_our_offer() {
        // Our offer always carries client_max_window_bits, so any value up to ours is fine...
        let config = DeflateConfig::dedicated(15);
        assert!(
            accept_answer("permessage-deflate; client_max_window_bits=9", &config)
                .unwrap()
                .is_some()
        );
        // ...and a server answering our shared offer with a window is honoured too.
        let shared = DeflateConfig::shared();
        let got = accept_answer(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
            &shared,
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.compress_window_bits(Role::Client), 10);
        assert!(got.client_no_context_takeover, "we said we would not take over context");
    }
}
