//! The TLS 1.3 record layer after rustls's handshake: what kernel TLS would do, in user space.
//!
//! Once a TLS 1.3 handshake is over, rustls hands over the traffic secrets and a
//! [`KernelConnection`] that answers key updates and keeps session tickets; records are then
//! sealed and opened here with ring's AEAD — opened in place in the backend's buffer (the
//! plaintext goes to the dispatch where it lies, mutable, with no copy), sealed with one copy
//! from the send queue into the record buffer. rustls's own connection state is dropped, so an
//! idle connection keeps two keys and the kernel connection.
//!
//! RFC 8446 §5: records carry `application_data` (23) on the outside and the real type as the
//! last non-zero byte inside; the nonce is the IV XOR the record's sequence number; the header
//! is the additional data. After the handshake a record may hold application data, an alert
//! (`close_notify`, or a fatal one), or handshake messages: `NewSessionTicket` (a client keeps
//! it, through rustls) and `KeyUpdate` (both sides). A handshake message must fit in its
//! record here (peers send these in one); a fragmented one fails the connection.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};

use super::session::TlsError;

/// A record's header: type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD tag of every TLS 1.3 suite.
const TAG: usize = 16;
/// The most plaintext a record carries (RFC 8446 §5.1).
pub(super) const MAX_PLAIN: usize = 16 << 10;
/// The most a record's encrypted part may be (§5.2).
const MAX_SEALED: usize = MAX_PLAIN + 256;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// Alert descriptions with a meaning here: the end of the peer's stream, and one it may send
/// before it (§6.1).
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// One direction's key.
struct Key {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Key {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Self, TlsError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(TlsError::Encrypt),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| TlsError::Encrypt)?;
        let iv = iv.as_ref().try_into().map_err(|_| TlsError::Encrypt)?;
        Ok(Self { key: LessSafeKey::new(key), iv, seq })
    }

    /// The next record's nonce (§5.3); the sequence number moves on.
    fn next_nonce(&mut self) -> Result<Nonce, TlsError> {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq = self.seq.checked_add(1).ok_or(TlsError::Encrypt)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// How many more bytes `partial`, the start of a record, needs: to finish its header, then the
/// rest of the record; 0 when it is whole.
///
/// # Errors
///
/// A header no record after the handshake has (checked as soon as it is whole).
pub(super) fn missing(partial: &[u8]) -> Result<usize, TlsError> {
    let Some(header) = partial.get(..HEADER) else { return Ok(HEADER - partial.len()) };
    let len = record_len(header)?;
    Ok((HEADER + len).saturating_sub(partial.len()))
}

/// The length a record header announces, checked (§5.2).
fn record_len(header: &[u8]) -> Result<usize, TlsError> {
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[0] != APPLICATION_DATA || !(TAG + 1..=MAX_SEALED).contains(&len) {
        return Err(protocol("a malformed record after the handshake"));
    }
    Ok(len)
}

/// rustls's part after the handshake: key updates, and a client's session tickets.
enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

/// What [`Records::open`] saw.
pub(super) struct Opened {
    /// Bytes of whole records consumed from the front of the buffer.
    pub(super) used: usize,
    /// The peer's `close_notify` came: nothing after it is read.
    pub(super) peer_closed: bool,
    /// `deliver` said stop: the connection is gone.
    pub(super) stopped: bool,
}

/// A connection's TLS 1.3 record layer after the handshake.
pub(super) struct Records {
    tx: Key,
    rx: Key,
    kernel: Kernel,
    /// Records one key may seal before it is replaced (the suite's confidentiality limit).
    limit: u64,
}

impl Records {
    pub(super) fn server(
        (secrets, kernel): (ExtractedSecrets, KernelConnection<ServerConnectionData>),
    ) -> Result<Self, TlsError> {
        let limit = confidentiality_limit(kernel.negotiated_cipher_suite());
        Self::new(secrets, Kernel::Server(kernel), limit)
    }

    pub(super) fn client(
        (secrets, kernel): (ExtractedSecrets, KernelConnection<ClientConnectionData>),
    ) -> Result<Self, TlsError> {
        let limit = confidentiality_limit(kernel.negotiated_cipher_suite());
        Self::new(secrets, Kernel::Client(kernel), limit)
    }

    fn new(secrets: ExtractedSecrets, kernel: Kernel, limit: u64) -> Result<Self, TlsError> {
        Ok(Self { tx: Key::new(secrets.tx)?, rx: Key::new(secrets.rx)?, kernel, limit })
    }

    /// Lowers the records a key may seal, to see key updates in a test.
    #[cfg(test)]
    pub(super) fn limit_keys_to(&mut self, records: u64) {
        self.limit = self.tx.seq + records;
    }

    /// Seals `plain` as application data records appended to `out`, replacing the key first
    /// when it has sealed as many records as it may.
    pub(super) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        out.reserve(plain.len() + plain.len().div_ceil(MAX_PLAIN) * (HEADER + 1 + TAG));
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.tx.seq >= self.limit {
                self.update_tx(out)?;
            }
            self.seal_record(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Appends `close_notify` to `out`.
    pub(super) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.seal_record(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// One record of `kind` holding `plain` (at most [`MAX_PLAIN`] bytes), appended to `out`.
    fn seal_record(&mut self, kind: u8, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        let at = out.len();
        let [len_hi, len_lo] = ((plain.len() + 1 + TAG) as u16).to_be_bytes();
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3, len_hi, len_lo]);
        out.extend_from_slice(plain);
        out.push(kind);
        let nonce = self.tx.next_nonce()?;
        let (header, body) = out[at..].split_at_mut(HEADER);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), body)
            .map_err(|_| TlsError::Encrypt)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Sends `KeyUpdate` under the old key, then switches to the next one (§4.6.3).
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        let next = match &mut self.kernel {
            Kernel::Server(k) => k.update_tx_secret(),
            Kernel::Client(k) => k.update_tx_secret(),
        };
        self.tx = Key::new(next.map_err(TlsError::Protocol)?)?;
        Ok(())
    }

    /// Opens the whole records at the front of `buf` in place, handing each application
    /// data record's plaintext to `deliver` (which returns `false` to stop: the connection is
    /// gone); records this makes (a key update's answer) are appended to `out`. What is left
    /// after [`Opened::used`] is the start of a record.
    pub(super) fn open(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<u8>,
        mut deliver: impl FnMut(&mut [u8]) -> bool,
    ) -> Result<Opened, TlsError> {
        let mut used = 0;
        while let Some(header) = buf.get(used..used + HEADER) {
            let len = record_len(header)?;
            let Some(record) = buf.get_mut(used..used + HEADER + len) else { break };
            used += HEADER + len;
            let (header, body) = record.split_at_mut(HEADER);
            let nonce = self.rx.next_nonce()?;
            let inner = self
                .rx
                .key
                .open_in_place(nonce, Aad::from(&*header), body)
                .map_err(|_| TlsError::Protocol(rustls::Error::DecryptError))?;
            // The real type is the last byte that is not padding.
            let end = inner.iter().rposition(|&b| b != 0).ok_or_else(|| protocol("no type"))?;
            let kind = inner[end];
            let content = &mut inner[..end];
            match kind {
                APPLICATION_DATA => {
                    if !deliver(content) {
                        return Ok(Opened { used, peer_closed: false, stopped: true });
                    }
                }
                ALERT => match content {
                    [_, CLOSE_NOTIFY] => {
                        return Ok(Opened { used, peer_closed: true, stopped: false });
                    }
                    [_, USER_CANCELED] => {}
                    _ => return Err(protocol("the peer sent a fatal alert")),
                },
                HANDSHAKE => self.handshake(content, out)?,
                _ => return Err(protocol("an unexpected record type after the handshake")),
            }
        }
        Ok(Opened { used, peer_closed: false, stopped: false })
    }

    /// Handshake messages after the handshake: session tickets and key updates.
    fn handshake(&mut self, mut messages: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        while let [kind, a, b, c, rest @ ..] = messages {
            let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            let Some(body) = rest.get(..len) else {
                return Err(protocol("a handshake message split across records"));
            };
            match (*kind, &mut self.kernel) {
                (NEW_SESSION_TICKET, Kernel::Client(k)) => {
                    k.handle_new_session_ticket(body).map_err(TlsError::Protocol)?;
                }
                (KEY_UPDATE, kernel) => {
                    let next = match kernel {
                        Kernel::Server(k) => k.update_rx_secret(),
                        Kernel::Client(k) => k.update_rx_secret(),
                    };
                    self.rx = Key::new(next.map_err(TlsError::Protocol)?)?;
                    match body {
                        [0] => {}
                        [1] => self.update_tx(out)?,
                        _ => return Err(protocol("a malformed key update")),
                    }
                }
                _ => return Err(protocol("an unexpected handshake message after the handshake")),
            }
            messages = &rest[len..];
        }
        if messages.is_empty() { Ok(()) } else { Err(protocol("a truncated handshake message")) }
    }
}

/// Records one key may seal: the suite's confidentiality limit (2^24 for AES-GCM), less one so
/// the key update itself fits.
fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit.saturating_sub(1),
        #[allow(unreachable_patterns)] // TLS 1.2 sessions never get here
        _ => 0,
    }
}

fn protocol(what: &'static str) -> TlsError {
    TlsError::Protocol(rustls::Error::General(what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Key, Key) {
        let secrets = || {
            let key = rustls::crypto::cipher::AeadKey::from([7u8; 32]);
            let iv = rustls::crypto::cipher::Iv::new([9u8; 12]);
            (5, ConnectionTrafficSecrets::Aes256Gcm { key, iv })
        };
        (Key::new(secrets()).unwrap(), Key::new(secrets()).unwrap())
    }

    /// Most of an idle TLS 1.3 connection's memory beyond a plain one's (docs/tls.md):
    /// the two keys (ring's AES key schedule and GHASH table each) and rustls's kernel
    /// connection, boxed behind the session.
    #[test]
    fn the_record_layer_stays_small() {
        assert!(size_of::<Key>() <= 576, "a key grew to {}", size_of::<Key>());
        assert!(size_of::<Records>() <= 1728, "records grew to {}", size_of::<Records>());
    }

    #[test]
    fn nonces_follow_the_sequence_number() {
        let (mut key, _) = pair();
        let first = key.next_nonce().unwrap();
        assert_eq!(key.seq, 6);
        let mut expected = [9u8; 12];
        expected[11] ^= 5;
        assert_eq!(first.as_ref(), &expected);
        key.seq = u64::MAX;
        assert!(key.next_nonce().is_err(), "a sequence number never wraps");
    }
}
