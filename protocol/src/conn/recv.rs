//! The receiving side's internals: a deframed chunk to an event — control frames, data
//! frames gathered into messages or handed over as fragments, decompression, the size and
//! fragment limits — and the event's bytes borrowed from the input or the spill buffer.

use super::output::slide_window;
use super::*;

/// Where an event's bytes are.
#[derive(Clone, Debug)]
pub(super) enum Src {
    Input(Range<usize>),
    Spill(Range<usize>),
}

impl Src {
    fn slice<'e>(&self, input: &'e Input<'_>, spill: &'e [u8]) -> &'e [u8] {
        match self {
            Self::Input(r) => input.get(r.clone()),
            Self::Spill(r) => &spill[r.clone()],
        }
    }

    pub(super) fn slice_mut<'e>(
        &self,
        input: &'e mut Input<'_>,
        spill: &'e mut [u8],
    ) -> &'e mut [u8] {
        match self {
            Self::Input(r) => input.get_mut(r.clone()),
            Self::Spill(r) => &mut spill[r.clone()],
        }
    }

    /// The bytes from `skip` on.
    fn skip(self, skip: usize) -> Self {
        match self {
            Self::Input(r) => Self::Input((r.start + skip).min(r.end)..r.end),
            Self::Spill(r) => Self::Spill((r.start + skip).min(r.end)..r.end),
        }
    }
}

/// An event decoded, before its bytes are borrowed.
#[derive(Debug)]
pub(super) enum Ready {
    Message { kind: DataKind, src: Src },
    Fragment { kind: DataKind, src: Src, first: bool, last: bool },
    Ping(Src),
    Pong(Src),
    Close { code: Option<CloseCode>, reason: Src, initiated_locally: bool },
}

impl Connection {
    pub(super) fn on_chunk(
        &mut self,
        now: Instant,
        chunk: Chunk,
        input: &Input<'_>,
        spill: &mut Vec<u8>,
    ) -> Result<Option<Ready>, Error> {
        // RSV1 means "compressed" on a message's first frame only (RFC 7692 §6); the deframer
        // lets it through once permessage-deflate is on.
        let frame = &chunk.frame;
        if frame.rsv.contains(Rsv::RSV1)
            && (frame.opcode.is_control() || frame.opcode == OpCode::Continuation)
        {
            return Err(InvalidFrame::ReservedBits(Rsv::RSV1.bits()).into());
        }
        if frame.opcode.is_control() {
            self.on_control(now, chunk, input, spill)
        } else {
            self.on_data(now, chunk, input, spill)
        }
    }

    pub(super) fn on_control(
        &mut self,
        now: Instant,
        chunk: Chunk,
        input: &Input<'_>,
        spill: &mut Vec<u8>,
    ) -> Result<Option<Ready>, Error> {
        let src = if chunk.is_whole() {
            Src::Input(chunk.payload)
        } else {
            // A control frame split across reads: gather it after any message bytes.
            if chunk.is_first() {
                self.recv.control_start = spill.len();
            }
            spill.extend_from_slice(input.get(chunk.payload));
            if !chunk.is_last {
                return Ok(None);
            }
            let start = self.recv.control_start;
            self.recv.truncate_spill = Some(start);
            Src::Spill(start..spill.len())
        };
        let payload = src.slice(input, spill);
        Ok(Some(match chunk.frame.opcode {
            OpCode::Ping => {
                if self.config.auto_pong && self.state == State::Open {
                    let mut pongs = core::mem::take(&mut self.pending.pongs);
                    if self.pending.hold_pongs || pongs.len() > MAX_PENDING_PONGS {
                        pongs.clear(); // only the latest is answered (RFC 6455 §5.5.3)
                    }
                    self.write_frame(OpCode::Pong, true, payload, &mut pongs);
                    self.pending.pongs = pongs;
                }
                Ready::Ping(src)
            }
            OpCode::Pong => {
                let echo = <[u8; 8]>::try_from(payload).map(u64::from_be_bytes);
                if let (Ok(echo), Some(sent)) = (echo, self.timers.last_ping)
                    && echo == sent.as_nanos()
                {
                    self.timers.rtt = Some(now - sent);
                }
                Ready::Pong(src)
            }
            _ => {
                let close = ClosePayload::parse(payload)?;
                let initiated_locally = self.state == State::Closing;
                if !initiated_locally {
                    // Echo the code (RFC 6455 §5.5.1); an empty close is answered empty.
                    self.pending.close = Some(PendingClose { code: close.code, reply: true });
                }
                self.pending.pongs = Vec::new();
                self.pending.ping = false;
                self.state = State::Closed;
                let skip = if close.code.is_some() { 2 } else { 0 };
                Ready::Close { code: close.code, reason: src.skip(skip), initiated_locally }
            }
        }))
    }

    pub(super) fn on_data(
        &mut self,
        now: Instant,
        chunk: Chunk,
        input: &Input<'_>,
        spill: &mut Vec<u8>,
    ) -> Result<Option<Ready>, Error> {
        let frame = chunk.frame;
        if chunk.is_first() {
            self.start_frame(&frame)?;
        }
        let message = self.recv.message.expect("a data frame belongs to a message");
        let ends_message = chunk.is_last && frame.fin;
        let first_piece = chunk.is_first() && message.fragments == 1;
        if ends_message {
            self.recv.message = None;
            self.timers.last_message = now;
        }
        let text = message.kind == DataKind::Text;
        if message.compressed {
            return self.on_compressed(
                chunk,
                first_piece,
                ends_message,
                message.kind,
                input,
                spill,
            );
        }
        match self.config.delivery {
            Delivery::Messages if first_piece && ends_message => {
                // The whole message is here in one piece: hand it over in place. Text is
                // validated once, when the event is built.
                Ok(Some(Ready::Message { kind: message.kind, src: Src::Input(chunk.payload) }))
            }
            Delivery::Messages => {
                let bytes = input.get(chunk.payload);
                if text {
                    self.recv.utf8.feed(bytes).map_err(|_| Error::InvalidUtf8)?;
                }
                spill.extend_from_slice(bytes);
                if !ends_message {
                    return Ok(None);
                }
                if text {
                    self.recv.utf8.finish().map_err(|_| Error::InvalidUtf8)?;
                }
                self.recv.truncate_spill = Some(0);
                Ok(Some(Ready::Message { kind: message.kind, src: Src::Spill(0..spill.len()) }))
            }
            Delivery::Fragments => {
                if text {
                    self.recv
                        .utf8
                        .feed(input.get(chunk.payload.clone()))
                        .map_err(|_| Error::InvalidUtf8)?;
                    if ends_message {
                        self.recv.utf8.finish().map_err(|_| Error::InvalidUtf8)?;
                    }
                }
                Ok(Some(Ready::Fragment {
                    kind: message.kind,
                    src: Src::Input(chunk.payload),
                    first: first_piece,
                    last: ends_message,
                }))
            }
        }
    }

    /// A piece of a compressed message: gathered in spill (unless the message lies whole in
    /// the input), decompressed when the message ends, within the message size limit.
    pub(super) fn on_compressed(
        &mut self,
        chunk: Chunk,
        first_piece: bool,
        ends_message: bool,
        kind: DataKind,
        input: &Input<'_>,
        spill: &mut Vec<u8>,
    ) -> Result<Option<Ready>, Error> {
        let whole = first_piece && ends_message;
        if !whole {
            spill.extend_from_slice(input.get(chunk.payload.clone()));
            if !ends_message {
                return Ok(None);
            }
        }
        let role = self.role;
        let limit = self.config.max_message_size;
        let d = self.deflate.as_mut().expect("RSV1 is only allowed with permessage-deflate");
        let (level, mem_level, bits) =
            (d.level, d.mem_level, d.params.decompress_window_bits(role));
        let shared = d.shares_codec();
        // Compact context: prime the codec with the window the peer may refer to.
        let windowed = d.compact && !d.params.decompress_no_context_takeover(role);
        let codec = d.codec.get_or_insert_with(|| Box::new(Codec::new(level, mem_level, bits)));
        if windowed {
            codec.prime_decompressor(&d.rx_window);
        }
        let reset = shared && !windowed;
        // A message that refers to nothing before it is decompressed whole, in one call.
        let standalone = d.params.decompress_no_context_takeover(role);
        let mut decompress = |compressed: &[u8], spill: &mut Vec<u8>| match standalone {
            true => codec.decompress_message(compressed, limit, spill),
            false => codec.decompress(compressed, limit, reset, spill),
        };
        let start = if whole { spill.len() } else { 0 };
        let result = if whole {
            decompress(input.get(chunk.payload), spill)
        } else {
            let compressed = std::mem::take(spill);
            decompress(&compressed, spill)
        };
        result.map_err(|e| match e {
            DecompressError::TooBig => Error::MessageTooBig { limit: limit as u64 },
            _ => Error::InvalidCompressedData,
        })?;
        if windowed {
            // zlib compresses with 9 bits when told 8: keep at least that much.
            slide_window(&mut d.rx_window, bits.max(9), &spill[start..]);
        }
        self.recv.truncate_spill = Some(start);
        let src = Src::Spill(start..spill.len());
        Ok(Some(match self.config.delivery {
            Delivery::Messages => Ready::Message { kind, src },
            // Compressed messages are decompressed whole: one piece, validated here.
            Delivery::Fragments => {
                if kind == DataKind::Text && simdutf8::basic::from_utf8(&spill[start..]).is_err() {
                    return Err(Error::InvalidUtf8);
                }
                Ready::Fragment { kind, src, first: true, last: true }
            }
        }))
    }

    /// Applies the continuation rules (RFC 6455 §5.4) and the message limits to a new data
    /// frame. A compressed message may be larger on the wire than the limit it decompresses
    /// within: incompressible data coded with the fixed Huffman codes (as zlib-ng's fastest
    /// level does) grows by up to 1/8, stored blocks by a few bytes each.
    pub(super) fn start_frame(&mut self, frame: &FrameRepr) -> Result<(), Error> {
        let max_message = self.config.max_message_size as u64;
        let max_frame = self.config.max_frame_size;
        let wire_limit = |compressed: bool| {
            if compressed { compressed_limit(max_message as usize) as u64 } else { max_message }
        };
        let frame_limit = |compressed: bool| {
            if compressed { compressed_limit(max_frame) as u64 } else { max_frame as u64 }
        };
        match (frame.opcode, self.recv.message.as_mut()) {
            (OpCode::Continuation, None) => Err(PeerMisbehaved::UnexpectedContinuation.into()),
            (OpCode::Continuation, Some(m)) => {
                if frame.payload_len > frame_limit(m.compressed) {
                    return Err(Error::FrameTooBig { limit: max_frame as u64 });
                }
                if m.fragments >= self.config.max_fragments {
                    return Err(Error::TooManyFragments { limit: self.config.max_fragments });
                }
                m.fragments += 1;
                m.announced += frame.payload_len;
                if m.announced > wire_limit(m.compressed) {
                    return Err(Error::MessageTooBig { limit: max_message });
                }
                Ok(())
            }
            (_, Some(_)) => Err(PeerMisbehaved::ExpectedContinuation.into()),
            (opcode, None) => {
                let compressed = frame.rsv.contains(Rsv::RSV1);
                if frame.payload_len > frame_limit(compressed) {
                    return Err(Error::FrameTooBig { limit: max_frame as u64 });
                }
                if frame.payload_len > wire_limit(compressed) {
                    return Err(Error::MessageTooBig { limit: max_message });
                }
                let kind = if opcode == OpCode::Text { DataKind::Text } else { DataKind::Binary };
                self.recv.utf8.reset();
                self.recv.message = Some(InMessage {
                    kind,
                    announced: frame.payload_len,
                    fragments: 1,
                    compressed,
                });
                Ok(())
            }
        }
    }

    /// Borrows a decoded event's bytes.
    pub(super) fn event<'e>(
        &mut self,
        ready: Ready,
        input: &'e Input<'_>,
        spill: &'e [u8],
    ) -> Result<Option<Event<'e>>, Error> {
        Ok(Some(match ready {
            Ready::Message { kind: DataKind::Text, src } => {
                match simdutf8::basic::from_utf8(src.slice(input, spill)) {
                    Ok(text) => Event::Message(Message::Text(text)),
                    Err(_) => return Err(self.fail_with(Error::InvalidUtf8)),
                }
            }
            Ready::Message { kind: DataKind::Binary, src } => {
                Event::Message(Message::Binary(src.slice(input, spill)))
            }
            Ready::Fragment { kind, src, first, last } => {
                Event::Fragment(Fragment { kind, payload: src.slice(input, spill), first, last })
            }
            Ready::Ping(src) => Event::Ping(src.slice(input, spill)),
            Ready::Pong(src) => Event::Pong(src.slice(input, spill)),
            Ready::Close { code, reason, initiated_locally } => {
                // Validated by ClosePayload::parse already.
                let reason = simdutf8::basic::from_utf8(reason.slice(input, spill)).unwrap_or("");
                Event::Close(Close { code, reason, initiated_locally })
            }
        }))
    }
}
