//! The connection state machine: one type for both roles.

mod config;
mod event;
mod output;
mod recv;

pub use config::{Config, Delivery};
pub use event::{Close, Event, EventMut};

use self::recv::Ready;

use core::fmt;
use core::ops::Range;
use core::time::Duration;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::deflate::{Codec, DecompressError, DeflateConfig, DeflateParams};
use crate::deframer::{Chunk, Deframer, Input};
use crate::error::{Error, InvalidFrame, PeerMisbehaved, SendError};
use crate::frame::{
    CloseCode, ClosePayload, DataKind, FrameRepr, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_LEN, OpCode, Rsv, mask,
};
use crate::message::{Fragment, Message, Utf8Validator};
use crate::time::Instant;

/// Which end of the connection this is. Clients mask what they send; servers do not
/// (RFC 6455 §5.1), and each side rejects frames masked the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that sent the upgrade request.
    Client,
    /// The side that accepted it.
    Server,
}

/// Where a connection is in its life (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; no more frames are sent.
    Closing,
    /// The closing handshake completed, or the connection failed. Frames still queued by
    /// [`Connection::poll_transmit`] (a close reply) may be written; then the transport can be
    /// shut.
    Closed,
}

/// What kind of data frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A whole message in one frame.
    Message(DataKind),
    /// The first frame of a fragmented message.
    First(DataKind),
    /// A middle frame of the fragmented message in progress.
    Continue,
    /// The final frame of the fragmented message in progress.
    Last,
}

/// A frame header produced by [`Connection::encode_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
    mask: Option<[u8; 4]>,
}

impl EncodedHeader {
    /// The header bytes, to be written right before the payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The masking key the header announces (clients only). The caller must mask the payload
    /// with it, e.g. with [`mask::apply_mask`], before writing it.
    pub fn mask(&self) -> Option<[u8; 4]> {
        self.mask
    }
}

/// Pending pong bytes past which a new ping's pong replaces them (RFC 6455 §5.5.3).
const MAX_PENDING_PONGS: usize = 4096;

/// A sans-IO WebSocket connection (RFC 6455), for either role, after the HTTP upgrade.
///
/// It parses received bytes, enforces the protocol, runs the closing handshake, the heartbeat
/// and the timeouts, and encodes frames to send. It performs no I/O and reads no clock: the
/// caller passes bytes and the current [`Instant`] in and writes out what it is given.
///
/// # Calling order
///
/// 1. **Receive.** Wrap received bytes in an [`Input`] and call [`Connection::handle_bytes`]
///    until it returns `Ok(None)`; the input is then fully consumed, a partial frame kept in
///    the deframer and the `spill` buffer. Each event borrows the input or `spill` and must be
///    dropped before the next call.
/// 2. **Send.** [`Connection::send`], [`Connection::send_frame`], [`Connection::encode_header`],
///    [`Connection::ping`], [`Connection::pong`] and [`Connection::close`] append to (or return
///    bytes for) the caller's output, in call order.
/// 3. **Transmit.** After handling input, timeouts or a failure, call
///    [`Connection::poll_transmit`]: it appends the frames the connection produced by itself
///    (pong replies, heartbeat pings, the close reply or the failure's close frame). A caller
///    whose output is backed up (the peer is not reading) calls
///    [`Connection::poll_transmit_congested`] instead, which holds pongs back so that a ping
///    flood costs one pending pong, not one per ping.
/// 4. **Time.** When the instant [`Connection::poll_timeout`] returns has passed, call
///    [`Connection::handle_timeout`], then [`Connection::poll_transmit`].
/// 5. **End of stream.** When the transport reports EOF, call [`Connection::handle_eof`].
///
/// An `Err` from a `handle_*` method means the connection failed: its close frame, when one is
/// due, waits in [`Connection::poll_transmit`]; the transport may be shut once it is written.
/// The connection then ignores input. A clean ending is [`Event::Close`]. Exactly one of the
/// two ends every connection that sees its transport close.
///
/// # The spill buffer
///
/// `spill` is the caller's per-connection buffer for bytes that must outlive one input: the
/// parts of a message split across frames or reads, and a control frame split across reads.
/// It is empty whenever [`Connection::handle_bytes`] has returned `Ok(None)` with no message
/// in progress, so the caller can free it to keep idle connections small. Its size is bounded
/// by [`Config::max_message_size`] plus 125 bytes.
pub struct Connection {
    role: Role,
    state: State,
    config: Arc<Config>,
    deframer: Deframer,
    recv: Receive,
    send: Send,
    pending: Pending,
    timers: Timers,
    /// Masking keys for the client role, from a caller-seeded ChaCha8 generator.
    masks: Option<Box<ChaCha8Rng>>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<DeflateState>>,
}

/// Negotiated permessage-deflate and the codec attached to the connection.
#[derive(Debug)]
struct DeflateState {
    params: DeflateParams,
    /// Whether outgoing messages are compressed at all (not when the peer demanded a window
    /// of 8 bits, which zlib cannot compress with).
    compress: bool,
    /// Messages shorter than this go out uncompressed.
    min_size: usize,
    level: u8,
    mem_level: u8,
    /// The codec: owned, or lent by the caller for the duration of a call.
    codec: Option<Box<Codec>>,
    /// Context between messages is kept as plaintext windows, not in the codec
    /// ([`DeflateConfig::compact_context`]).
    compact: bool,
    /// Compact context: the last bytes sent (at most the compression window), when this side
    /// keeps context.
    tx_window: Vec<u8>,
    /// Compact context: the last bytes received (at most the decompression window), when the
    /// peer keeps context.
    rx_window: Vec<u8>,
    /// The fragmented message being sent is compressed.
    sending_compressed: bool,
}

impl DeflateState {
    /// Whether the connection keeps no zlib state between calls, so that a codec can be lent.
    fn shares_codec(&self) -> bool {
        self.params.is_stateless() || self.compact
    }
}

/// How large compressed data may be on the wire for `limit` bytes of message or frame:
/// incompressible data coded with the fixed Huffman codes (what zlib-ng's fastest level does)
/// grows by up to 1/8, stored blocks by a few bytes each.
fn compressed_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 8).saturating_add(1024)
}

/// Receive-side message state.
#[derive(Debug, Default)]
struct Receive {
    /// The data message in progress.
    message: Option<InMessage>,
    /// UTF-8 state of a text message that is being buffered or streamed.
    utf8: Utf8Validator,
    /// Offset in spill where a control frame split across reads starts.
    control_start: usize,
    /// Length to cut spill back to before the next input: what an event borrowed is released.
    truncate_spill: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct InMessage {
    kind: DataKind,
    /// Sum of the payload lengths its frames announced so far.
    /// INVARIANT: `announced <= max_message_size`.
    announced: u64,
    /// Frames so far. INVARIANT: `1 <= fragments <= max_fragments`.
    fragments: u32,
    /// RSV1 was set on its first frame: the payload is DEFLATE data (RFC 7692 §6).
    compressed: bool,
}

/// Send-side state.
#[derive(Debug, Default)]
struct Send {
    /// The fragmented message in progress.
    fragment: Option<DataKind>,
    /// UTF-8 state of the text fragments sent so far; `None` once a fragment of the message
    /// went out through [`Connection::encode_header`], which does not see payloads.
    utf8: Option<Utf8Validator>,
}

/// Frames the connection produced by itself, waiting for [`Connection::poll_transmit`].
#[derive(Debug, Default)]
struct Pending {
    /// Pong frames, encoded, answering the pings received since the last transmit: every one
    /// (peers such as Autobahn's 2.10 expect all) while the caller keeps taking them, only the
    /// latest while it holds them back ([`Connection::poll_transmit_congested`]) or once they
    /// pass [`MAX_PENDING_PONGS`] bytes, as RFC 6455 §5.5.3 allows for pongs not yet sent.
    /// INVARIANT: `pongs.len() <= MAX_PENDING_PONGS` + one pong frame (at most 131 bytes).
    pongs: Vec<u8>,
    /// The caller holds pongs back: a new ping's pong replaces the pending ones.
    hold_pongs: bool,
    /// A heartbeat ping is due; its payload is `Timers::last_ping`, echoed back for the
    /// round-trip time.
    ping: bool,
    close: Option<PendingClose>,
}

#[derive(Clone, Copy, Debug)]
struct PendingClose {
    code: Option<CloseCode>,
    /// A reply echoes the code without a reason; our own close explains itself.
    reply: bool,
}

#[derive(Debug)]
struct Timers {
    /// When bytes last arrived.
    last_recv: Instant,
    /// When a data message last arrived (idle timeout).
    last_message: Instant,
    /// When the last heartbeat ping was sent; its payload, echoed in the pong, is this time.
    last_ping: Option<Instant>,
    /// The last heartbeat ping is out and nothing arrived since it was sent.
    awaiting_pong: bool,
    /// Round-trip time measured on the last heartbeat pong.
    rtt: Option<Duration>,
    /// When the closing handshake we started times out (state `Closing`).
    close_deadline: Instant,
}

impl Connection {
    /// A server-side connection, opened at `now`.
    pub fn server(now: Instant, config: impl Into<Arc<Config>>) -> Self {
        Self::new(Role::Server, now, config.into(), None)
    }

    /// A client-side connection, opened at `now`.
    ///
    /// `mask_seed` seeds the generator of masking keys. It must come from a cryptographically
    /// secure source (the OS): RFC 6455 §10.3 requires keys an attacker cannot predict, to
    /// keep proxies' caches safe from poisoning.
    pub fn client(now: Instant, config: impl Into<Arc<Config>>, mask_seed: [u8; 32]) -> Self {
        let rng = Box::new(ChaCha8Rng::from_seed(mask_seed));
        Self::new(Role::Client, now, config.into(), Some(rng))
    }

    fn new(role: Role, now: Instant, config: Arc<Config>, masks: Option<Box<ChaCha8Rng>>) -> Self {
        Self {
            role,
            state: State::Open,
            deframer: Deframer::new(role, config.max_frame_size),
            config,
            recv: Receive::default(),
            send: Send::default(),
            pending: Pending::default(),
            timers: Timers {
                last_recv: now,
                last_message: now,
                last_ping: None,
                awaiting_pong: false,
                rtt: None,
                close_deadline: now,
            },
            masks,
            deflate: None,
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Round-trip time measured by the last heartbeat ping and its pong.
    pub fn rtt(&self) -> Option<Duration> {
        self.timers.rtt
    }

    /// Lets received frames carry reserved bits that a negotiated extension claims.
    pub fn allow_rsv(&mut self, rsv: Rsv) {
        self.deframer.allow_rsv(rsv);
    }

    /// Turns permessage-deflate on with the negotiated `params` (RFC 7692): RSV1 is allowed on
    /// the first frame of data messages, compressed messages are decompressed on arrival, and
    /// messages of at least `config.min_size` bytes are compressed when sent — if a [`Codec`]
    /// is attached when they are. Call once, before any byte is exchanged.
    ///
    /// Without an attached codec, a received compressed message makes the connection create
    /// its own; an engine that shares one codec among connections
    /// ([`Connection::shares_codec`]) attaches it around each call instead.
    pub fn enable_deflate(&mut self, params: DeflateParams, config: &DeflateConfig) {
        self.deframer.allow_rsv(Rsv::RSV1);
        // Compressed frames may be larger than the data they carry; `start_frame` holds
        // uncompressed ones to the configured size.
        self.deframer.set_max_frame_size(compressed_limit(self.config.max_frame_size));
        self.deflate = Some(Box::new(DeflateState {
            params,
            compress: params.compress_window_bits(self.role) >= 9,
            min_size: config.min_size,
            level: config.level,
            mem_level: config.mem_level,
            codec: None,
            compact: config.compact_context,
            tx_window: Vec::new(),
            rx_window: Vec::new(),
            sending_compressed: false,
        }));
    }

    /// Whether this connection keeps no zlib state of its own between calls: neither side
    /// keeps context ([`DeflateParams::is_stateless`]), or context is kept compactly
    /// ([`DeflateConfig::compact_context`]). Such a connection can be served by a codec
    /// shared with others, attached around each call; otherwise it needs one of its own.
    /// `false` without permessage-deflate.
    pub fn shares_codec(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.shares_codec())
    }

    /// The negotiated permessage-deflate parameters, if any.
    pub fn deflate_params(&self) -> Option<DeflateParams> {
        self.deflate.as_ref().map(|d| d.params)
    }

    /// The compression level and memory level this connection's codec should have (see
    /// [`Codec::settings`]); `None` without permessage-deflate.
    pub fn codec_settings(&self) -> Option<(u8, u8)> {
        self.deflate.as_ref().map(|d| (d.level.min(9), d.mem_level.clamp(1, 9)))
    }

    /// A codec suited to this connection's parameters (sized for the windows negotiated), not
    /// attached. `None` without permessage-deflate.
    pub fn new_codec(&self) -> Option<Box<Codec>> {
        let d = self.deflate.as_ref()?;
        Some(Box::new(Codec::new(d.level, d.mem_level, d.params.decompress_window_bits(self.role))))
    }

    /// Attaches `codec` for compressing and decompressing; returns the one attached before, if
    /// any. Ignored (and returned) without permessage-deflate.
    ///
    /// A codec may serve several connections in turn, attached to one at a time, only when
    /// they share codecs ([`Connection::shares_codec`]): the connection then resets (and
    /// primes) it before each message and never relies on it between calls.
    pub fn attach_codec(&mut self, codec: Box<Codec>) -> Option<Box<Codec>> {
        match self.deflate.as_mut() {
            Some(d) => d.codec.replace(codec),
            None => Some(codec),
        }
    }

    /// Detaches the codec, if one is attached.
    pub fn detach_codec(&mut self) -> Option<Box<Codec>> {
        self.deflate.as_mut().and_then(|d| d.codec.take())
    }

    // ---------------------------------------------------------------------------------------
    // Inputs.

    /// Consumes received bytes up to the next event and returns it; `Ok(None)` once the input
    /// is exhausted.
    ///
    /// A message that lies whole in `input` (one frame, fully received) is handed over in
    /// place; any other is gathered in `spill` (see the type's docs). After the connection
    /// is closed or failed, input is consumed and ignored.
    ///
    /// # Errors
    ///
    /// The [`Error`] that failed the connection. Its close frame (1002, 1007 or 1009) is
    /// queued for [`Connection::poll_transmit`].
    pub fn handle_bytes<'e>(
        &mut self,
        now: Instant,
        input: &'e mut Input<'_>,
        spill: &'e mut Vec<u8>,
    ) -> Result<Option<Event<'e>>, Error> {
        match self.next_ready(now, input, spill)? {
            Some(ready) => self.event(ready, input, spill),
            None => Ok(None),
        }
    }

    /// [`Connection::handle_bytes`], with a whole binary message handed over writable
    /// ([`EventMut::Binary`]): its receiver may change it where it lies (decrypt it in place)
    /// instead of copying it first. The bytes are the connection's input or spill buffer,
    /// which the caller owns; nothing else reads them after.
    ///
    /// # Errors
    ///
    /// As [`Connection::handle_bytes`].
    pub fn handle_bytes_mut<'e>(
        &mut self,
        now: Instant,
        input: &'e mut Input<'_>,
        spill: &'e mut Vec<u8>,
    ) -> Result<Option<EventMut<'e>>, Error> {
        match self.next_ready(now, input, spill)? {
            Some(Ready::Message { kind: DataKind::Binary, src }) => {
                Ok(Some(EventMut::Binary(src.slice_mut(input, spill))))
            }
            Some(ready) => Ok(self.event(ready, input, spill)?.map(EventMut::Other)),
            None => Ok(None),
        }
    }

    /// Consumes received bytes up to the next event, not yet borrowed.
    fn next_ready(
        &mut self,
        now: Instant,
        input: &mut Input<'_>,
        spill: &mut Vec<u8>,
    ) -> Result<Option<Ready>, Error> {
        if let Some(len) = self.recv.truncate_spill.take() {
            spill.truncate(len);
        }
        if self.state == State::Closed {
            input.skip_all();
            return Ok(None);
        }
        if !input.is_empty() {
            self.timers.last_recv = now;
            self.timers.awaiting_pong = false;
        }
        loop {
            let chunk = match self.deframer.next(input) {
                None => return Ok(None),
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(self.fail_with(e)),
            };
            match self.on_chunk(now, chunk, input, spill) {
                Ok(Some(ready)) => return Ok(Some(ready)),
                Ok(None) => {}
                Err(e) => return Err(self.fail_with(e)),
            }
        }
    }

    /// Advances the timers to `now`: heartbeat, pong, idle and close-handshake timeouts.
    ///
    /// May queue a heartbeat ping or an idle-timeout close for [`Connection::poll_transmit`].
    ///
    /// # Errors
    ///
    /// [`Error::PongTimeout`] or [`Error::CloseTimeout`]: the peer is silent, the connection
    /// failed, and nothing more is sent.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        match self.state {
            State::Closed => Ok(()),
            State::Closing if now >= self.timers.close_deadline => {
                Err(self.fail_with(Error::CloseTimeout))
            }
            State::Closing => Ok(()),
            State::Open => {
                match (self.timers.awaiting_pong, self.timers.last_ping, self.config.ping_interval)
                {
                    (true, Some(sent), _) if now >= sent + self.config.pong_timeout => {
                        return Err(self.fail_with(Error::PongTimeout));
                    }
                    (false, _, Some(interval)) if now >= self.timers.last_recv + interval => {
                        self.pending.ping = true;
                        self.timers.last_ping = Some(now);
                        self.timers.awaiting_pong = true;
                    }
                    _ => {}
                }
                if self
                    .config
                    .idle_timeout
                    .is_some_and(|idle| now >= self.timers.last_message + idle)
                {
                    self.start_close(now);
                    self.pending.close =
                        Some(PendingClose { code: Some(CloseCode::GOING_AWAY), reply: false });
                }
                Ok(())
            }
        }
    }

    /// The transport's byte stream ended.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedEof`] unless the connection was already closed (handshake done, or
    /// failed earlier).
    pub fn handle_eof(&mut self) -> Result<(), Error> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.state = State::Closed;
        self.pending = Pending::default();
        Err(Error::UnexpectedEof)
    }

    /// Fails the connection with `error`, e.g. [`Error::Internal`] when the application
    /// cannot go on. Queues the error's close frame when one may be sent and none was; the
    /// connection then ignores input and refuses sends. Does nothing if already closed.
    pub fn fail(&mut self, error: Error) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Open && error.sends_close_frame() {
            self.pending.close =
                Some(PendingClose { code: Some(error.close_code()), reply: false });
        }
        if !error.sends_close_frame() {
            self.pending.close = None;
        }
        self.pending.pongs = Vec::new();
        self.pending.ping = false;
        self.state = State::Closed;
        self.recv.message = None;
    }

    // ---------------------------------------------------------------------------------------
    // Outputs.

    /// The next instant at which [`Connection::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Closing => Some(self.timers.close_deadline),
            State::Open => {
                let heartbeat = match (self.timers.awaiting_pong, self.timers.last_ping) {
                    (true, Some(sent)) => Some(sent + self.config.pong_timeout),
                    _ => self.config.ping_interval.map(|i| self.timers.last_recv + i),
                };
                let idle = self.config.idle_timeout.map(|i| self.timers.last_message + i);
                match (heartbeat, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Appends the frames the connection produced by itself to `out`: pongs for the pings
    /// received, a heartbeat ping, the close reply or the failure's close frame, in that order.
    /// Returns whether anything was written.
    #[inline]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        self.pending.hold_pongs = false;
        // The common case, after most events: nothing to write.
        if self.pending.pongs.is_empty() && !self.pending.ping && self.pending.close.is_none() {
            return false;
        }
        self.transmit(out, true)
    }

    /// [`Connection::poll_transmit`] for a caller whose output is backed up (the peer is not
    /// reading): appends the heartbeat ping and the close frame, which are one each at most,
    /// and holds pong answers back. Until the next [`Connection::poll_transmit`], each ping
    /// received replaces the pending pongs with its own (RFC 6455 §5.5.3 allows answering only
    /// the most recent ping), so memory stays bounded however many pings arrive.
    /// [`Connection::has_pending_pong`] tells when there is one to take later.
    /// Returns whether anything was written.
    #[inline]
    pub fn poll_transmit_congested(&mut self, out: &mut Vec<u8>) -> bool {
        self.pending.hold_pongs = true;
        if !self.pending.ping && self.pending.close.is_none() {
            return false;
        }
        self.transmit(out, false)
    }

    /// Writes the pending frames, pongs only if `pongs`; whether anything was written.
    fn transmit(&mut self, out: &mut Vec<u8>, pongs: bool) -> bool {
        let start = out.len();
        if pongs && !self.pending.pongs.is_empty() {
            out.extend_from_slice(&self.pending.pongs);
            self.pending.pongs.clear();
            if self.pending.pongs.capacity() > MAX_PENDING_PONGS {
                self.pending.pongs = Vec::new(); // a ping flood's buffer is not kept
            }
        }
        if let (true, Some(sent)) = (core::mem::take(&mut self.pending.ping), self.timers.last_ping)
        {
            self.write_frame(OpCode::Ping, true, &sent.as_nanos().to_be_bytes(), out);
        }
        if let Some(close) = self.pending.close.take() {
            let reason = if close.reply { "" } else { close.code.map_or("", reason_for) };
            let mut payload = Vec::with_capacity(2 + reason.len());
            ClosePayload { code: close.code, reason }.emit(&mut payload);
            self.write_frame(OpCode::Close, true, &payload, out);
        }
        out.len() > start
    }

    /// Whether pong answers wait for [`Connection::poll_transmit`].
    #[inline]
    pub fn has_pending_pong(&self) -> bool {
        !self.pending.pongs.is_empty()
    }

    /// Appends a whole message as one frame to `out`, compressed when permessage-deflate is
    /// on, a codec is attached and the message is at least the configured minimum size.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent or received;
    /// [`SendError::FragmentInProgress`] while a fragmented message is being sent.
    pub fn send(&mut self, message: Message<'_>, out: &mut Vec<u8>) -> Result<(), SendError> {
        let plan = self.plan(FrameKind::Message(message.kind()))?;
        self.commit(plan);
        let payload = message.as_bytes();
        if self.will_compress(payload.len()) {
            self.write_compressed(plan.opcode, true, true, payload, out);
        } else {
            self.write_frame(plan.opcode, true, payload, out);
        }
        Ok(())
    }

    /// Appends one data frame to `out`: a whole message or a piece of a fragmented one.
    ///
    /// Text is validated: a whole message must be UTF-8, and text fragments must be UTF-8
    /// once joined (a fragment may end inside a code point, the message may not).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`], [`SendError::FragmentInProgress`],
    /// [`SendError::NoFragmentInProgress`], or [`SendError::InvalidUtf8`]. Nothing is written
    /// and the fragment state is unchanged on error.
    pub fn send_frame(
        &mut self,
        kind: FrameKind,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        let plan = self.plan(kind)?;
        if plan.text {
            let starts = matches!(kind, FrameKind::Message(_) | FrameKind::First(_));
            let mut utf8 = if starts { Some(Utf8Validator::new()) } else { self.send.utf8 };
            if let Some(v) = utf8.as_mut() {
                v.feed(payload).map_err(|_| SendError::InvalidUtf8)?;
                if plan.fin {
                    v.finish().map_err(|_| SendError::InvalidUtf8)?;
                }
            }
            self.send.utf8 = utf8;
        }
        self.commit(plan);
        // A fragmented message is compressed, or not, as a whole: decided on its first frame.
        let compressed = match kind {
            FrameKind::Message(_) => self.will_compress(payload.len()),
            FrameKind::First(_) => {
                let compress = self.will_compress(usize::MAX);
                if let Some(d) = self.deflate.as_mut() {
                    d.sending_compressed = compress;
                }
                compress
            }
            FrameKind::Continue | FrameKind::Last => {
                self.deflate.as_ref().is_some_and(|d| d.sending_compressed)
            }
        };
        if compressed {
            let starts = matches!(kind, FrameKind::Message(_) | FrameKind::First(_));
            self.write_compressed(plan.opcode, plan.fin, starts, payload, out);
        } else {
            self.write_frame(plan.opcode, plan.fin, payload, out);
        }
        Ok(())
    }

    /// The header of one data frame whose `len`-byte payload the caller writes itself, e.g.
    /// straight from shared memory with `writev`. This is how a server sends without copying.
    ///
    /// The payload is not seen, so text is not validated: the caller vouches that it is UTF-8.
    /// A client must mask the payload with [`EncodedHeader::mask`]. The frame is never
    /// compressed (uncompressed messages are always allowed, RFC 7692 §6).
    ///
    /// # Errors
    ///
    /// As [`Connection::send_frame`], but never [`SendError::InvalidUtf8`];
    /// [`SendError::CompressedFragmentInProgress`] for a piece of a message whose first frame
    /// was compressed (continue it with [`Connection::send_frame`]).
    pub fn encode_header(
        &mut self,
        kind: FrameKind,
        len: usize,
    ) -> Result<EncodedHeader, SendError> {
        let plan = self.plan(kind)?;
        if matches!(kind, FrameKind::Continue | FrameKind::Last)
            && self.deflate.as_ref().is_some_and(|d| d.sending_compressed)
        {
            return Err(SendError::CompressedFragmentInProgress);
        }
        self.send.utf8 = None;
        self.commit(plan);
        let mask = self.next_mask();
        let repr = FrameRepr {
            fin: plan.fin,
            rsv: Rsv::NONE,
            opcode: plan.opcode,
            mask,
            payload_len: len as u64,
        };
        let (bytes, n) = repr.to_bytes();
        Ok(EncodedHeader { bytes, len: n as u8, mask })
    }

    /// Checks whether a frame of this kind may be sent now, without changing anything: the
    /// connection is open and the fragment order allows it. An engine that sends one
    /// pre-encoded frame to many server connections (a broadcast) checks each with this.
    ///
    /// # Errors
    ///
    /// As [`Connection::encode_header`].
    pub fn check_send(&self, kind: FrameKind) -> Result<(), SendError> {
        self.plan(kind).map(|_| ())
    }

    /// Appends a ping to `out`; the peer answers with a pong carrying the same payload.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once closing; [`SendError::ControlPayloadTooLong`] past 125 bytes.
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload, out)
    }

    /// Appends a pong to `out`: the answer to a ping when [`Config::auto_pong`] is off, or an
    /// unsolicited heartbeat.
    ///
    /// # Errors
    ///
    /// As [`Connection::ping`].
    pub fn pong(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload, out)
    }

    /// Starts the closing handshake: appends a close frame to `out` and waits up to
    /// [`Config::close_timeout`] for the peer's (then [`Error::CloseTimeout`]). No frame may be
    /// sent after it.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if a close frame was already sent or received;
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent (1005, 1006, 1015,
    /// reserved ranges); [`SendError::ControlPayloadTooLong`] for a reason over 123 bytes.
    pub fn close(
        &mut self,
        now: Instant,
        code: CloseCode,
        reason: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::ControlPayloadTooLong);
        }
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.write_frame(OpCode::Close, true, &payload[..2 + reason.len()], out);
        self.start_close(now);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Internals.

    #[cfg(fuzzing)]
    pub(crate) fn check_invariants(&self, spill: &[u8]) {
        let max_message = self.config.max_message_size;
        // Compressed messages may exceed the limit on the wire (see start_frame).
        let wire_limit = compressed_limit(max_message);
        assert!(spill.len() <= wire_limit + MAX_CONTROL_PAYLOAD, "spill grew to {}", spill.len());
        if let Some(m) = self.recv.message {
            assert!(m.announced <= wire_limit as u64);
            assert!(m.fragments >= 1 && m.fragments <= self.config.max_fragments);
        }
        if self.state == State::Closed {
            assert!(self.poll_timeout().is_none());
            assert!(!self.pending.ping);
        }
        if self.state != State::Open {
            assert!(self.pending.pongs.is_empty());
        }
        let pong_frame = 2 + 4 + MAX_CONTROL_PAYLOAD;
        assert!(self.pending.pongs.len() <= MAX_PENDING_PONGS + pong_frame);
        self.deframer.check_invariants();
    }

    fn fail_with(&mut self, error: Error) -> Error {
        self.fail(error);
        error
    }

    /// Enters `Closing`: nothing but the peer's close is awaited, nothing more is sent.
    fn start_close(&mut self, now: Instant) {
        self.state = State::Closing;
        self.timers.close_deadline = now + self.config.close_timeout;
        self.pending.pongs = Vec::new();
        self.pending.ping = false;
    }
}

/// The reason sent with a close frame the connection starts itself.
fn reason_for(code: CloseCode) -> &'static str {
    match code {
        CloseCode::GOING_AWAY => "idle timeout",
        CloseCode::PROTOCOL_ERROR => "protocol error",
        CloseCode::INVALID_PAYLOAD => "invalid payload data",
        CloseCode::MESSAGE_TOO_BIG => "message too big",
        CloseCode::INTERNAL_ERROR => "internal error",
        _ => "",
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("deframer", &self.deframer)
            .field("recv", &self.recv)
            .field("send", &self.send)
            .field("pending", &self.pending)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}
