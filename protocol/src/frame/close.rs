//! Close frames: status codes and the close payload (RFC 6455 §5.5.1, §7.4).

use core::fmt;

use super::header::MAX_CONTROL_PAYLOAD;
use crate::error::{Error, PeerMisbehaved};

/// The longest close reason: a control payload is at most 125 bytes, two of which are the code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// A close status code (RFC 6455 §7.4).
///
/// Any `u16` can be held; [`CloseCode::is_sendable`] says which may appear in a close frame.
/// `1005`, `1006` and `1015` are reported locally only ("no status", "abnormal closure",
/// "TLS failure") and never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: the close frame carried no status code. Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection ended without a close frame. Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data inconsistent with its type, e.g. invalid UTF-8 in a text message.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later, e.g. the server is overloaded (IANA registry).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway or proxy got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure. Never sent.
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether the code may appear in a close frame: 1000–1003, 1007–1014 (defined or
    /// registered with IANA), and 3000–4999 (libraries, frameworks and applications). Every
    /// other value is reserved or local-only (RFC 6455 §7.4.1, §7.4.2).
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

/// A parsed close payload, borrowed from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosePayload<'a> {
    /// The status code, or `None` when the payload is empty (report it as
    /// [`CloseCode::NO_STATUS`]).
    pub code: Option<CloseCode>,
    /// The reason, UTF-8, at most [`MAX_CLOSE_REASON`] bytes; empty when absent.
    pub reason: &'a str,
}

impl<'a> ClosePayload<'a> {
    /// Parses a received close payload.
    ///
    /// # Errors
    ///
    /// - [`PeerMisbehaved::ClosePayloadTooShort`] for a one-byte payload;
    /// - [`PeerMisbehaved::InvalidCloseCode`] for a code that may not be sent;
    /// - [`Error::InvalidUtf8`] for a reason that is not UTF-8 (RFC 6455 §5.5.1, 1007).
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        match payload {
            [] => Ok(Self { code: None, reason: "" }),
            [_] => Err(PeerMisbehaved::ClosePayloadTooShort.into()),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(PeerMisbehaved::InvalidCloseCode(code.0).into());
                }
                let reason = simdutf8::basic::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
                Ok(Self { code: Some(code), reason })
            }
        }
    }

    /// The code to report: the received one, or [`CloseCode::NO_STATUS`].
    pub fn code_or_no_status(&self) -> CloseCode {
        self.code.unwrap_or(CloseCode::NO_STATUS)
    }

    /// Length of the payload [`ClosePayload::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self.code {
            Some(_) => 2 + self.reason.len(),
            None => 0,
        }
    }

    /// Appends the payload to `out`: code then reason, or nothing when `code` is `None` (the
    /// reason is dropped then: the RFC allows a reason only after a code).
    pub fn emit(&self, out: &mut Vec<u8>) {
        if let Some(code) = self.code {
            out.extend_from_slice(&code.0.to_be_bytes());
            out.extend_from_slice(self.reason.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes() {
        for code in 0u16..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_sendable(), expected, "{code}");
        }
        for local in [CloseCode::NO_STATUS, CloseCode::ABNORMAL, CloseCode::TLS_HANDSHAKE] {
            assert!(!local.is_sendable());
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(ClosePayload::parse(&[]).unwrap(), ClosePayload { code: None, reason: "" });
        assert_eq!(ClosePayload::parse(&[]).unwrap().code_or_no_status(), CloseCode::NO_STATUS);
        assert_eq!(
            ClosePayload::parse(&[0x03, 0xe8, b'b', b'y', b'e']).unwrap(),
            ClosePayload { code: Some(CloseCode::NORMAL), reason: "bye" }
        );
        assert_eq!(
            ClosePayload::parse(&[0x03]),
            Err(Error::PeerMisbehaved(PeerMisbehaved::ClosePayloadTooShort))
        );
        assert_eq!(
            ClosePayload::parse(&[0x03, 0xed]),
            Err(Error::PeerMisbehaved(PeerMisbehaved::InvalidCloseCode(1005)))
        );
        assert_eq!(ClosePayload::parse(&[0x03, 0xe8, 0xff]), Err(Error::InvalidUtf8));
        // A reason split in the middle of a code point is invalid too.
        assert_eq!(ClosePayload::parse(&[0x03, 0xe8, 0xce]), Err(Error::InvalidUtf8));
    }

    #[test]
    fn emit_round_trips() {
        let p = ClosePayload { code: Some(CloseCode(4000)), reason: "κόσμε" };
        let mut out = vec![];
        p.emit(&mut out);
        assert_eq!(out.len(), p.buffer_len());
        assert_eq!(ClosePayload::parse(&out).unwrap(), p);
        let mut out = vec![];
        ClosePayload { code: None, reason: "ignored" }.emit(&mut out);
        assert!(out.is_empty());
    }
}
