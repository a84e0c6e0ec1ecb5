//! One connection's TLS: a rustls unbuffered connection driven by the worker, between the
//! backend's bytes and the protocol core.
//!
//! - **Receive** ([`Session::receive`]): records are deciphered from the bytes the backend lent
//!   (its read buffer or provided buffer); a record cut by the end of a read waits in
//!   `pending`, which is empty (no allocation) whenever records end with the read, so an idle
//!   connection holds no receive buffer. Each record's plaintext goes through the worker's
//!   scratch buffer to the same dispatch as a plain connection's bytes.
//! - **Send** ([`Session::seal`]): the plaintext queued this turn (the coalesced frames) is
//!   encrypted once per flush, in as few records as its segments allow, into one buffer that
//!   takes the plaintext's place in the queue ([`OutQueue::seal`]); handshake records, alerts
//!   and `close_notify` join the queue's sealed front in the order rustls produced them.

use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use super::ServerTls;
use crate::outq::{OutQueue, Pool};

/// The first byte of every TLS record a client opens with (a handshake record).
const HANDSHAKE_RECORD: u8 = 0x16;
/// A fatal alert record's parts (RFC 8446 §6): its content type, level and the descriptions
/// sent when rustls has none of its own.
const ALERT_RECORD: u8 = 0x15;
const FATAL: u8 = 2;
const HANDSHAKE_FAILURE: u8 = 40;
const DECODE_ERROR: u8 = 50;
/// The most plaintext a record carries.
const MAX_RECORD: usize = 16 << 10;
/// Records `EncodeTlsData` may hand out in a row before the session is called broken (a
/// handshake flight is a handful; an alert after an error one).
const MAX_ENCODES: usize = 64;

/// One connection's TLS state.
pub(crate) struct Session {
    conn: Conn,
    /// Received bytes that do not end a record yet (empty, no capacity, while idle).
    pending: Vec<u8>,
    /// Records rustls produced (handshake, alerts) not yet moved into the send queue.
    records: Vec<u8>,
    /// Whether the handshake is over (application data may flow both ways).
    established: bool,
    /// Whether `close_notify` is queued.
    closing: bool,
    /// Whether any byte arrived yet: plain HTTP on a TLS port shows in the first one.
    started: bool,
    /// The session broke: the alert, if any, is all it still sends.
    failed: bool,
}

enum Conn {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// What [`Session::receive`] saw besides the plaintext it delivered.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The handshake finished during this call.
    pub(crate) established: bool,
    /// The peer sent `close_notify`: no more data comes from it.
    pub(crate) peer_closed: bool,
}

/// Why a session cannot go on.
#[derive(Debug)]
pub(crate) enum TlsError {
    /// The first bytes on a TLS listener are not a TLS handshake (plain HTTP, most likely).
    NotTls,
    /// The peer broke the protocol, or the handshake failed (certificate, versions, ALPN):
    /// an alert, if rustls made one, is queued.
    Protocol(rustls::Error),
    /// The session could not encrypt (its keys are exhausted).
    Encrypt,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotTls => f.write_str("plain bytes sent to a TLS port"),
            Self::Protocol(e) => write!(f, "TLS: {e}"),
            Self::Encrypt => f.write_str("TLS: cannot encrypt"),
        }
    }
}

impl Session {
    /// A server session for an accepted connection.
    pub(crate) fn server(tls: &ServerTls) -> Result<Self, rustls::Error> {
        Ok(Self::new(Conn::Server(UnbufferedServerConnection::new(Arc::clone(&tls.config))?)))
    }

    /// A client session to `name` (checked against the server's certificate).
    pub(crate) fn client(
        config: &Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self::new(Conn::Client(UnbufferedClientConnection::new(Arc::clone(config), name)?)))
    }

    fn new(conn: Conn) -> Self {
        Self {
            conn,
            pending: Vec::new(),
            records: Vec::new(),
            established: false,
            closing: false,
            started: false,
            failed: false,
        }
    }

    /// Deciphers `data` (received bytes, lent; deciphered in place) and hands each record's
    /// plaintext to `deliver`, in order, through `scratch`; stops early when `deliver` returns
    /// `false` (the connection is gone). Records rustls makes meanwhile wait for
    /// [`Session::queue_records`]. A client calls this with no data once connected, to start
    /// its handshake.
    ///
    /// # Errors
    ///
    /// [`TlsError`]: the session is unusable; an alert may wait for
    /// [`Session::queue_records`].
    pub(crate) fn receive(
        &mut self,
        data: &mut [u8],
        scratch: &mut Vec<u8>,
        mut deliver: impl FnMut(&mut [u8]) -> bool,
    ) -> Result<Received, TlsError> {
        if !self.started && !data.is_empty() {
            self.started = true;
            if matches!(self.conn, Conn::Server(_)) && data[0] != HANDSHAKE_RECORD {
                return Err(TlsError::NotTls);
            }
        }
        // Bytes left from the last read come first: the new ones join them.
        let mut joined = std::mem::take(&mut self.pending);
        let from_pending = !joined.is_empty();
        if from_pending {
            joined.extend_from_slice(data);
        }
        let buf: &mut [u8] = if from_pending { &mut joined } else { data };
        let mut received = Received::default();
        let mut start = 0;
        let mut encodes = 0;
        let outcome = loop {
            let (discard, step) = match self.step(&mut buf[start..], scratch) {
                Ok(step) => step,
                Err(e) => break Err(e),
            };
            start += discard;
            match step {
                Step::Encoded => {
                    encodes += 1;
                    if encodes > MAX_ENCODES {
                        break Err(TlsError::Encrypt);
                    }
                }
                Step::Record => {
                    if !deliver(scratch) {
                        break Ok(());
                    }
                }
                Step::PeerClosed => received.peer_closed = true,
                Step::Blocked => break Ok(()),
                Step::Traffic => {
                    if !self.established {
                        self.established = true;
                        received.established = true;
                    }
                    break Ok(());
                }
            }
        };
        if let Err(e) = outcome {
            // rustls may hold an alert for the peer.
            self.failed = true;
            for _ in 0..MAX_ENCODES {
                match self.step(&mut buf[start..], scratch) {
                    Ok((discard, Step::Encoded)) => start += discard,
                    _ => break,
                }
            }
            if self.records.is_empty() && !self.established {
                // rustls made none (a message it could not frame): a plaintext one, as the
                // handshake still allows.
                let description = match e {
                    TlsError::Protocol(rustls::Error::InvalidMessage(_)) => DECODE_ERROR,
                    _ => HANDSHAKE_FAILURE,
                };
                self.records.extend_from_slice(&[ALERT_RECORD, 3, 3, 0, 2, FATAL, description]);
            }
            return Err(e);
        }
        // A record cut by the end of the read waits for the rest; nothing is kept otherwise.
        let rest = buf.len() - start;
        if rest > 0 {
            if from_pending {
                joined.drain(..start);
                self.pending = joined;
            } else {
                self.pending = buf[start..].to_vec();
            }
        }
        Ok(received)
    }

    /// One call into rustls over `input`, the received bytes not discarded yet (rustls may
    /// have read into them: they must come back, at the front, until it discards them).
    fn step(&mut self, input: &mut [u8], scratch: &mut Vec<u8>) -> Result<(usize, Step), TlsError> {
        match &mut self.conn {
            Conn::Server(c) => step(c.process_tls_records(input), &mut self.records, scratch),
            Conn::Client(c) => step(c.process_tls_records(input), &mut self.records, scratch),
        }
    }

    /// Moves the records rustls made (handshake, alerts) to the sealed front of `out`; `true`
    /// if there were any (the connection has something to write).
    pub(crate) fn queue_records(&mut self, out: &mut OutQueue, pool: &mut Pool) -> bool {
        if self.records.is_empty() {
            return false;
        }
        out.push_sealed(pool, &self.records);
        self.records = Vec::new();
        true
    }

    /// Encrypts the plaintext queued in `out` (nothing before the handshake is over or after
    /// the session broke), then,
    /// with `close`, queues `close_notify` once after it: the connection is ending cleanly.
    ///
    /// # Errors
    ///
    /// [`TlsError::Encrypt`]: the keys are exhausted or rustls refused.
    pub(crate) fn seal(
        &mut self,
        out: &mut OutQueue,
        pool: &mut Pool,
        close: bool,
    ) -> Result<(), TlsError> {
        let close = close && !self.closing;
        if !self.established || self.failed || (out.plain_len() == 0 && !close) {
            return Ok(());
        }
        for _ in 0..MAX_ENCODES {
            let Self { conn, records, pending, .. } = self;
            let (discard, done) = match conn {
                Conn::Server(c) => {
                    seal_with(c.process_tls_records(pending), records, out, pool, close)
                }
                Conn::Client(c) => {
                    seal_with(c.process_tls_records(pending), records, out, pool, close)
                }
            }?;
            pending.drain(..discard);
            if done {
                self.closing |= close;
                return Ok(());
            }
        }
        Err(TlsError::Encrypt)
    }
}

/// One state of a session, with what the worker needs of it.
enum Step {
    /// A record was encoded into [`Session::records`], or the records are out.
    Encoded,
    /// An application data record's plaintext is in the scratch buffer.
    Record,
    /// The peer's `close_notify`.
    PeerClosed,
    /// More bytes are needed to go on.
    Blocked,
    /// Nothing more to read; application data may be written.
    Traffic,
}

/// Reduces rustls's state to a [`Step`], encoding handshake records into `records` and a
/// record's plaintext into `scratch`; returns how many bytes to discard with it.
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    records: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(usize, Step), TlsError> {
    let UnbufferedStatus { discard, state } = status;
    let step = match state.map_err(TlsError::Protocol)? {
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_into(records, 4096, |buf| encode.encode(buf).map_err(encode_error))?;
            Step::Encoded
        }
        ConnectionState::TransmitTlsData(transmit) => {
            // Sent with the connection's next flush, before anything encrypted after them.
            transmit.done();
            Step::Encoded
        }
        ConnectionState::ReadTraffic(mut read) => match read.next_record() {
            Some(Ok(record)) => {
                scratch.clear();
                scratch.extend_from_slice(record.payload);
                Step::Record
            }
            Some(Err(e)) => return Err(TlsError::Protocol(e)),
            None => Step::Blocked,
        },
        ConnectionState::PeerClosed => Step::PeerClosed,
        ConnectionState::Closed | ConnectionState::BlockedHandshake => Step::Blocked,
        ConnectionState::WriteTraffic(_) => Step::Traffic,
        // Early data is never enabled; later states are not known to this version.
        _ => return Err(TlsError::Protocol(rustls::Error::General("unexpected TLS state".into()))),
    };
    Ok((discard, step))
}

/// In the `WriteTraffic` state, encrypts `out`'s plaintext (and `close_notify` with `close`),
/// records rustls had waiting first: `true`. In a state with records to make first (a key
/// update), makes them: `false`, to be called again.
fn seal_with<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    records: &mut Vec<u8>,
    out: &mut OutQueue,
    pool: &mut Pool,
    close: bool,
) -> Result<(usize, bool), TlsError> {
    let UnbufferedStatus { discard, state } = status;
    let done = match state.map_err(TlsError::Protocol)? {
        ConnectionState::WriteTraffic(mut write) => {
            if !records.is_empty() {
                out.push_sealed(pool, records);
                records.clear();
            }
            out.seal(|plain, sealed| {
                let estimate = sealed_size(plain.len());
                encode_into(sealed, estimate, |buf| {
                    write.encrypt(plain, buf).map_err(encrypt_error)
                })
            })?;
            if close {
                let mut notify = Vec::new();
                let estimate = sealed_size(2);
                encode_into(&mut notify, estimate, |buf| {
                    write.queue_close_notify(buf).map_err(encrypt_error)
                })?;
                out.push_sealed(pool, &notify);
            }
            true
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_into(records, 4096, |buf| encode.encode(buf).map_err(encode_error))?;
            false
        }
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            false
        }
        // Received records not read yet: the connection is ending; nothing is sealed.
        _ => true,
    };
    Ok((discard, done))
}

/// Appends what `encode` writes to `buf`, which is grown by `estimate` first and, if rustls
/// asks for more, by what it asks for.
fn encode_into(
    buf: &mut Vec<u8>,
    estimate: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), TlsError> {
    let at = buf.len();
    let mut room = estimate;
    for _ in 0..2 {
        buf.resize(at + room, 0);
        match encode(&mut buf[at..]) {
            Ok(written) => {
                buf.truncate(at + written);
                return Ok(());
            }
            Err(Some(required)) => room = required,
            Err(None) => break,
        }
    }
    buf.truncate(at);
    Err(TlsError::Encrypt)
}

/// The room `plain` takes encrypted: a record header, nonce, content type and tag per record
/// of at most 16 KiB (TLS 1.2 with AES-GCM takes the most, 29 bytes).
fn sealed_size(plain: usize) -> usize {
    plain + (plain / MAX_RECORD + 1) * 32
}

fn encode_error(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

fn encrypt_error(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}
