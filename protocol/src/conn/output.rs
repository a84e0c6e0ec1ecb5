//! The sending side's internals: planning a data frame against the fragment in progress,
//! control frames, masks, permessage-deflate on the way out (standalone broadcasts included)
//! and writing frames.

use super::*;

impl Connection {
    pub(super) fn plan(&self, kind: FrameKind) -> Result<Plan, SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let open = self.send.fragment;
        let (opcode, fin, fragment, text) = match (kind, open) {
            (FrameKind::Message(k), None) => (k.opcode(), true, None, k == DataKind::Text),
            (FrameKind::First(k), None) => (k.opcode(), false, Some(k), k == DataKind::Text),
            (FrameKind::Message(_) | FrameKind::First(_), Some(_)) => {
                return Err(SendError::FragmentInProgress);
            }
            (FrameKind::Continue, Some(k)) => {
                (OpCode::Continuation, false, Some(k), k == DataKind::Text)
            }
            (FrameKind::Last, Some(k)) => (OpCode::Continuation, true, None, k == DataKind::Text),
            (FrameKind::Continue | FrameKind::Last, None) => {
                return Err(SendError::NoFragmentInProgress);
            }
        };
        Ok(Plan { opcode, fin, fragment, text })
    }

    pub(super) fn commit(&mut self, plan: Plan) {
        self.send.fragment = plan.fragment;
    }

    pub(super) fn send_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.write_frame(opcode, true, payload, out);
        Ok(())
    }

    pub(super) fn next_mask(&mut self) -> Option<[u8; 4]> {
        self.masks.as_mut().map(|rng| rng.next_u32().to_ne_bytes())
    }

    /// Whether a message of `len` bytes would go out compressed now (permessage-deflate on, a
    /// codec attached, the message at least the minimum size). Frames from
    /// [`Connection::encode_header`] never are.
    pub fn will_compress(&self, len: usize) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.compress && d.codec.is_some() && len >= d.min_size)
    }

    /// For a broadcast: the window (9–15) with which a message of `len` bytes, compressed on
    /// its own by someone else's codec, may be sent to this connection; `None` if it must go
    /// uncompressed. A standalone compressed message is safe when this side forgets its
    /// compression context after every message, or keeps it compactly
    /// ([`DeflateConfig::compact_context`]) and is told with [`Connection::broadcast_sent`];
    /// not with a live compressor, which would never see the bytes the peer's window now
    /// holds.
    pub fn broadcast_window(&self, len: usize) -> Option<u8> {
        let d = self.deflate.as_ref()?;
        let standalone = d.params.compress_no_context_takeover(self.role) || d.compact;
        (d.compress && len >= d.min_size && standalone)
            .then(|| d.params.compress_window_bits(self.role))
    }

    /// Records that a standalone compressed message carrying `payload`, allowed by
    /// [`Connection::broadcast_window`], was queued for this connection (after everything
    /// this connection wrote before, before anything it writes next): with compact context,
    /// the peer's window now ends with `payload`, and so must this side's. Call it exactly
    /// once per such message sent, and not for a message that was dropped.
    pub fn broadcast_sent(&mut self, payload: &[u8]) {
        let role = self.role;
        if let Some(d) = self.deflate.as_mut()
            && d.compact
            && !d.params.compress_no_context_takeover(role)
        {
            slide_window(&mut d.tx_window, d.params.compress_window_bits(role), payload);
        }
    }

    /// Compresses a piece of a message and appends it as one frame: RSV1 on the message's
    /// first frame (RFC 7692 §6), the sync-flush tail stripped from its last. A whole message
    /// that does not shrink goes out uncompressed instead, where that leaves no trace in the
    /// context the peer keeps: when this side forgets context, or keeps it compactly (the
    /// message then stays out of the window, as it stays out of the peer's).
    pub(super) fn write_compressed(
        &mut self,
        opcode: OpCode,
        fin: bool,
        starts: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let role = self.role;
        let d = self.deflate.as_mut().expect("checked by will_compress()");
        let bits = d.params.compress_window_bits(role);
        let forget = d.params.compress_no_context_takeover(role);
        let shared = d.shares_codec();
        let mut codec = d.codec.take().expect("checked by will_compress()");
        // A shared codec may have served others since the last piece: start afresh (a new
        // sync-flushed run of blocks continues a DEFLATE stream validly), primed with the
        // window when context is kept compactly.
        let windowed = d.compact && !forget;
        if windowed {
            codec.prime_compressor(bits, &d.tx_window);
        }
        let reset = !windowed && (shared || (starts && forget));
        let mut compressed = std::mem::take(&mut codec.scratch);
        compressed.clear();
        if starts && fin && forget {
            codec.compress_message(bits, payload, &mut compressed);
        } else {
            codec.compress(bits, payload, fin, reset, &mut compressed);
        }
        let plain = starts && fin && (forget || windowed) && compressed.len() >= payload.len();
        if windowed && !plain {
            slide_window(&mut d.tx_window, bits, payload);
        }
        if plain {
            self.write_frame_with(opcode, fin, Rsv::NONE, payload, out);
        } else {
            let rsv = if starts { Rsv::RSV1 } else { Rsv::NONE };
            self.write_frame_with(opcode, fin, rsv, &compressed, out);
        }
        // Keep the scratch unless one message made it large.
        compressed.clear();
        if compressed.capacity() > 1 << 20 {
            compressed = Vec::new();
        }
        codec.scratch = compressed;
        if let Some(d) = self.deflate.as_mut() {
            d.codec = Some(codec);
        }
    }

    /// Appends header and payload, masked with a fresh key for the client role.
    pub(super) fn write_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.write_frame_with(opcode, fin, Rsv::NONE, payload, out);
    }

    pub(super) fn write_frame_with(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: Rsv,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mask = self.next_mask();
        let repr = FrameRepr { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
        let (header, n) = repr.to_bytes();
        out.reserve(n + payload.len());
        out.extend_from_slice(&header[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            mask::apply_mask(&mut out[start..], key, 0);
        }
    }
}

/// A send decided but not yet applied.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) opcode: OpCode,
    pub(super) fin: bool,
    /// The fragmented message in progress after this frame.
    pub(super) fragment: Option<DataKind>,
    pub(super) text: bool,
}

/// Appends `data` to a plaintext window, keeping its last `1 << bits` bytes.
pub(super) fn slide_window(window: &mut Vec<u8>, bits: u8, data: &[u8]) {
    let size = 1usize << bits;
    if data.len() >= size {
        window.clear();
        window.extend_from_slice(&data[data.len() - size..]);
        return;
    }
    let excess = (window.len() + data.len()).saturating_sub(size);
    window.drain(..excess);
    // Grow in powers of two up to the window, never past it.
    let needed = window.len() + data.len();
    if needed > window.capacity() {
        window.reserve_exact(needed.next_power_of_two().min(size) - window.len());
    }
    window.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::slide_window;

    #[test]
    fn a_window_keeps_the_last_bytes_and_never_grows_past_its_size() {
        let mut w = Vec::new();
        slide_window(&mut w, 9, b"abc");
        assert_eq!(w, b"abc");
        assert!(w.capacity() < 512);
        let data: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
        slide_window(&mut w, 9, &data[..400]);
        assert_eq!(w.len(), 403);
        slide_window(&mut w, 9, &data[400..]);
        assert_eq!(w.len(), 512);
        assert_eq!(w[..], [&b"abc"[..], &data][..].concat()[703 - 512..]);
        assert_eq!(w.capacity(), 512);
        // More than a window at once: its tail.
        let big: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        slide_window(&mut w, 9, &big);
        assert_eq!(w[..], big[2000 - 512..]);
        assert_eq!(w.capacity(), 512);
    }
}
