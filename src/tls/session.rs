//! One connection's TLS: a rustls unbuffered connection driven by the worker, between the
//! backend's bytes and the protocol core.
//!
//! rustls runs the handshake; on TLS 1.3 our record layer ([`Records`]) then takes over, as
//! kernel TLS would, and rustls's connection state is dropped. TLS 1.2 stays with rustls.
//!
//! - **Receive** ([`Session::receive`]): records are deciphered in the bytes the backend lent
//!   (its read buffer or provided buffer); a record cut by the end of a read waits in
//!   `pending`, which is empty (no allocation) whenever records end with the read, so an idle
//!   connection holds no receive buffer. Each record's plaintext goes to the same dispatch as
//!   a plain connection's bytes: where it lies with our record layer, through the worker's
//!   scratch buffer with rustls's.
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
use super::record::{self, Records};
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
    state: State,
    /// Received bytes that do not end a record yet (empty, no capacity, while idle).
    pending: Vec<u8>,
    /// Records made while receiving (handshake, alerts, a key update's answer) not yet moved
    /// into the send queue.
    records: Vec<u8>,
    /// Whether the handshake is over (application data may flow both ways).
    established: bool,
    /// Whether `close_notify` is queued.
    closing: bool,
    /// Whether any byte arrived yet: plain HTTP on a TLS port shows in the first one.
    started: bool,
    /// The session broke: the alert, if any, is all it still sends.
    failed: bool,
    /// The configuration lets the traffic secrets out: our record layer may take over.
    extractable: bool,
}

/// Who seals and opens records.
enum State {
    /// rustls: the handshake, then everything on a TLS 1.2 connection or one whose
    /// configuration does not let the secrets out.
    Rustls(Box<Conn>),
    /// Our TLS 1.3 record layer after the handshake ([`Records`]).
    Records(Box<Records>),
    /// The secrets failed to move: the session is broken.
    Gone,
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
        let conn = UnbufferedServerConnection::new(Arc::clone(&tls.config))?;
        Ok(Self::new(Conn::Server(conn), tls.config.enable_secret_extraction))
    }

    /// A client session to `name` (checked against the server's certificate).
    pub(crate) fn client(
        config: &Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let conn = UnbufferedClientConnection::new(Arc::clone(config), name)?;
        Ok(Self::new(Conn::Client(conn), config.enable_secret_extraction))
    }

    fn new(conn: Conn, extractable: bool) -> Self {
        Self {
            state: State::Rustls(Box::new(conn)),
            pending: Vec::new(),
            records: Vec::new(),
            established: false,
            closing: false,
            started: false,
            failed: false,
            extractable,
        }
    }

    /// Deciphers `data` (received bytes, lent; deciphered in place) and hands each record's
    /// plaintext to `deliver`, in order — in place once our record layer runs, through
    /// `scratch` while rustls does; stops early when `deliver` returns `false` (the
    /// connection is gone). Records made meanwhile wait for [`Session::queue_records`]. A
    /// client calls this with no data once connected, to start its handshake.
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
        if self.failed {
            return Ok(Received::default()); // a broken session reads nothing more
        }
        if !self.started && !data.is_empty() {
            self.started = true;
            let server = matches!(&self.state, State::Rustls(c) if matches!(**c, Conn::Server(_)));
            if server && data[0] != HANDSHAKE_RECORD {
                return Err(TlsError::NotTls);
            }
        }
        if let State::Records(records) = &mut self.state {
            let opened = open_records(records, &mut self.pending, data, &mut self.records, deliver);
            self.failed |= opened.is_err();
            return opened;
        }
        // Bytes left from the last read come first: the new ones join them.
        let mut joined = std::mem::take(&mut self.pending);
        let from_pending = !joined.is_empty();
        if from_pending {
            joined.extend_from_slice(data);
        }
        let buf: &mut [u8] = if from_pending { &mut joined } else { data };
        let mut received = Received::default();
        let outcome = match &mut self.state {
            State::Rustls(_) => self.drive(buf, scratch, &mut received, &mut deliver),
            State::Records(_) | State::Gone => Err(TlsError::Encrypt),
        };
        let start = match outcome {
            Ok(start) => start,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        if received.established {
            self.take_over();
        }
        // A record cut by the end of the read waits for the rest; nothing is kept otherwise.
        if start < buf.len() {
            if from_pending {
                joined.drain(..start);
                self.pending = joined;
            } else {
                self.pending = buf[start..].to_vec();
            }
        }
        Ok(received)
    }

    /// rustls's turn over `buf`: until it needs more bytes or the handshake is over; returns
    /// how many bytes it is done with.
    fn drive(
        &mut self,
        buf: &mut [u8],
        scratch: &mut Vec<u8>,
        received: &mut Received,
        deliver: &mut impl FnMut(&mut [u8]) -> bool,
    ) -> Result<usize, TlsError> {
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
                        break Ok(start);
                    }
                }
                Step::PeerClosed => received.peer_closed = true,
                Step::Blocked => break Ok(start),
                Step::Traffic => {
                    if !self.established {
                        self.established = true;
                        received.established = true;
                    }
                    break Ok(start);
                }
            }
        };
        let Err(e) = outcome else { return outcome };
        // rustls may hold an alert for the peer: one, handed out before it reads any further
        // (a second call would read the bad bytes again and make a second alert).
        let _ = self.step(&mut buf[start..], scratch);
        if self.records.is_empty() && !self.established {
            // rustls made none (a message it could not frame): a plaintext one, as the
            // handshake still allows.
            let description = match e {
                TlsError::Protocol(rustls::Error::InvalidMessage(_)) => DECODE_ERROR,
                _ => HANDSHAKE_FAILURE,
            };
            self.records.extend_from_slice(&[ALERT_RECORD, 3, 3, 0, 2, FATAL, description]);
        }
        Err(e)
    }

    /// One call into rustls over `input`, the received bytes not discarded yet (rustls may
    /// have read into them: they must come back, at the front, until it discards them).
    fn step(&mut self, input: &mut [u8], scratch: &mut Vec<u8>) -> Result<(usize, Step), TlsError> {
        let State::Rustls(conn) = &mut self.state else { return Err(TlsError::Encrypt) };
        match &mut **conn {
            Conn::Server(c) => step(c.process_tls_records(input), &mut self.records, scratch),
            Conn::Client(c) => step(c.process_tls_records(input), &mut self.records, scratch),
        }
    }

    /// The handshake is over: on TLS 1.3, with a configuration that lets the secrets out (ours
    /// do), our record layer takes over from rustls.
    fn take_over(&mut self) {
        let State::Rustls(conn) = &self.state else { return };
        let version = match &**conn {
            Conn::Server(c) => c.protocol_version(),
            Conn::Client(c) => c.protocol_version(),
        };
        if version != Some(rustls::ProtocolVersion::TLSv1_3) || !self.extractable {
            return;
        }
        let State::Rustls(conn) = std::mem::replace(&mut self.state, State::Gone) else {
            return;
        };
        let records = match *conn {
            Conn::Server(c) => c
                .dangerous_into_kernel_connection()
                .map_err(TlsError::Protocol)
                .and_then(Records::server),
            Conn::Client(c) => c
                .dangerous_into_kernel_connection()
                .map_err(TlsError::Protocol)
                .and_then(Records::client),
        };
        match records {
            Ok(records) => self.state = State::Records(Box::new(records)),
            Err(_) => self.failed = true,
        }
    }

    /// Moves the records made while receiving (handshake, alerts) to the sealed front of
    /// `out`; `true` if there were any (the connection has something to write).
    pub(crate) fn queue_records(&mut self, out: &mut OutQueue, pool: &mut Pool) -> bool {
        if self.records.is_empty() {
            return false;
        }
        out.push_sealed(pool, &self.records);
        self.records = Vec::new();
        true
    }

    /// Encrypts the plaintext queued in `out` (nothing before the handshake is over or after
    /// the session broke), then, with `close`, queues `close_notify` once after it: the
    /// connection is ending cleanly.
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
        match &mut self.state {
            State::Records(records) => {
                out.seal(|plain, sealed| records.seal(plain, sealed))?;
                if close {
                    let mut notify = Vec::new();
                    records.close_notify(&mut notify)?;
                    out.push_sealed(pool, &notify);
                }
                self.closing |= close;
                return Ok(());
            }
            State::Gone => return Err(TlsError::Encrypt),
            State::Rustls(_) => {}
        }
        for _ in 0..MAX_ENCODES {
            let Self { state: State::Rustls(conn), records, pending, .. } = self else {
                return Err(TlsError::Encrypt);
            };
            let (discard, done) = match &mut **conn {
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

/// Our record layer's receive: a record the last read cut is finished first, with only its
/// missing bytes copied into `pending`; the rest of `data` is opened where it lies, and a record
/// it cuts at its end waits in `pending` (empty, no capacity, otherwise).
fn open_records(
    records: &mut Records,
    pending: &mut Vec<u8>,
    mut data: &mut [u8],
    out: &mut Vec<u8>,
    mut deliver: impl FnMut(&mut [u8]) -> bool,
) -> Result<Received, TlsError> {
    let mut received = Received::default();
    while !pending.is_empty() {
        let missing = record::missing(pending)?;
        if missing == 0 {
            let mut record = std::mem::take(pending);
            let opened = records.open(&mut record, out, &mut deliver)?;
            if opened.peer_closed || opened.stopped {
                // The peer is done, or the connection is gone: nothing more is read.
                received.peer_closed = opened.peer_closed;
                return Ok(received);
            }
            continue;
        }
        if data.is_empty() {
            return Ok(received);
        }
        let take = missing.min(data.len());
        let (head, rest) = std::mem::take(&mut data).split_at_mut(take);
        pending.extend_from_slice(head);
        data = rest;
    }
    let opened = records.open(data, out, deliver)?;
    received.peer_closed = opened.peer_closed;
    if !opened.peer_closed && !opened.stopped && opened.used < data.len() {
        *pending = data[opened.used..].to_vec();
    }
    Ok(received)
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

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read, Write};

    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

    use super::*;

    /// A server session and a rustls client over memory.
    struct Pair {
        server: Session,
        client: rustls::ClientConnection,
        out: OutQueue,
        pool: Pool,
        /// What the server delivered.
        got: Vec<u8>,
        peer_closed: bool,
    }

    impl Pair {
        fn new(versions: &[&'static rustls::SupportedProtocolVersion]) -> Self {
            let names = vec!["localhost".to_owned()];
            let generated = rcgen::generate_simple_self_signed(names).unwrap();
            let cert = CertificateDer::from(generated.cert.der().to_vec());
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            let server = ServerTls::new(vec![cert.clone()], key.into()).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from("localhost").unwrap();
            let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            Self {
                server: Session::server(&server).unwrap(),
                client,
                out: OutQueue::default(),
                pool: Pool::default(),
                got: Vec::new(),
                peer_closed: false,
            }
        }

        /// The client's bytes to the server, `cut` bytes per receive.
        fn client_sends(&mut self, cut: usize) {
            let mut bytes = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut bytes).unwrap();
            }
            let mut scratch = Vec::new();
            for chunk in bytes.chunks_mut(cut.max(1)) {
                let got = &mut self.got;
                let received = self.server.receive(chunk, &mut scratch, |p| {
                    got.extend_from_slice(p);
                    true
                });
                self.peer_closed |= received.unwrap().peer_closed;
            }
            self.server.queue_records(&mut self.out, &mut self.pool);
        }

        /// The server's queue, sealed, to the client; what the client read.
        fn server_sends(&mut self, close: bool) -> Vec<u8> {
            self.server.seal(&mut self.out, &mut self.pool, close).unwrap();
            let mut bytes = Vec::new();
            while self.out.unsent(true) > 0 {
                let mut iov = [IoSlice::new(&[]); 8];
                let n = self.out.slices(&mut iov, true);
                let len: usize = iov[..n].iter().map(|s| s.len()).sum();
                iov[..n].iter().for_each(|s| bytes.extend_from_slice(s));
                self.out.consume(&mut self.pool, len);
            }
            let mut rest = &bytes[..];
            let mut read = Vec::new();
            while !rest.is_empty() {
                self.client.read_tls(&mut rest).unwrap();
                self.client.process_new_packets().unwrap();
                let _ = self.client.reader().read_to_end(&mut read);
            }
            read
        }

        fn handshake(&mut self, cut: usize) {
            for _ in 0..4 {
                self.client_sends(cut);
                self.server_sends(false);
            }
            assert!(!self.client.is_handshaking());
        }

        fn echo(&mut self, text: &[u8], cut: usize) {
            self.got.clear();
            self.client.writer().write_all(text).unwrap();
            self.client_sends(cut);
            assert_eq!(self.got, text);
            self.out.push_copy(&mut self.pool, text);
            assert_eq!(self.server_sends(false), text);
        }
    }

    #[test]
    fn after_a_tls13_handshake_our_record_layer_carries_the_data_both_ways() {
        let mut pair = Pair::new(&[&rustls::version::TLS13]);
        pair.handshake(usize::MAX);
        assert!(matches!(pair.server.state, State::Records(_)));
        // The server's choice of suite, though rustls's client lists AES-256 first.
        let suite = pair.client.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        pair.echo(b"hello", usize::MAX);
        // Records cut anywhere, and larger than a record.
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        pair.echo(&big, 7);
        pair.echo(&big, 1000);
    }

    #[test]
    fn a_handshake_cut_into_any_pieces_completes() {
        for cut in [1, 2, 5, 10, 100] {
            let mut pair = Pair::new(&[&rustls::version::TLS13]);
            pair.handshake(cut);
            pair.echo(b"cut", cut);
        }
    }

    /// Bad bytes in front of a hello: one alert, and rustls is not asked again (a second
    /// read of the same bytes would make a second alert, which rustls asserts against).
    #[test]
    fn a_broken_hello_gets_one_alert() {
        let mut pair = Pair::new(&[&rustls::version::TLS13]);
        let mut bytes = vec![22, 249];
        while pair.client.wants_write() {
            pair.client.write_tls(&mut bytes).unwrap();
        }
        let received = pair.server.receive(&mut bytes, &mut Vec::new(), |_| true);
        assert!(matches!(received, Err(TlsError::Protocol(_))), "{received:?}");
        pair.server.queue_records(&mut pair.out, &mut pair.pool);
        let mut iov = [IoSlice::new(&[]); 4];
        let n = pair.out.slices(&mut iov, true);
        assert_eq!(n, 1);
        assert_eq!(&iov[0][..], &[21, 3, 3, 0, 2, 2, 50], "one decode_error alert");
        // What comes after is not read (rustls would fail again, and alert again).
        let mut more = vec![22, 3, 3, 0, 1, 0];
        let received = pair.server.receive(&mut more, &mut Vec::new(), |_| true);
        assert!(received.is_ok() && !pair.server.queue_records(&mut pair.out, &mut pair.pool));
    }

    #[test]
    fn key_updates_go_both_ways() {
        let mut pair = Pair::new(&[&rustls::version::TLS13]);
        pair.handshake(usize::MAX);
        // The client's update asks for ours (rustls sets update_requested).
        pair.client.refresh_traffic_keys().unwrap();
        pair.echo(b"after the client's update", usize::MAX);
        // Our keys reach their limit: we update on our own, and the client follows.
        let State::Records(records) = &mut pair.server.state else { panic!("not ours") };
        records.limit_keys_to(2);
        for i in 0..5 {
            pair.echo(format!("message {i}").as_bytes(), usize::MAX);
        }
    }

    #[test]
    fn close_notify_both_ways() {
        let mut pair = Pair::new(&[&rustls::version::TLS13]);
        pair.handshake(usize::MAX);
        pair.out.push_copy(&mut pair.pool, b"last");
        assert_eq!(pair.server_sends(true), b"last");
        let mut rest = [0u8; 8];
        assert_eq!(pair.client.reader().read(&mut rest).unwrap(), 0, "close_notify came");
        pair.client.send_close_notify();
        pair.client_sends(usize::MAX);
        assert!(pair.peer_closed);
    }

    #[test]
    fn tls12_stays_with_rustls() {
        let mut pair = Pair::new(&[&rustls::version::TLS12]);
        pair.handshake(usize::MAX);
        assert!(matches!(pair.server.state, State::Rustls(_)));
        pair.echo(b"over tls 1.2", 3);
    }
}
