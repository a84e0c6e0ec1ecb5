//! The egress: what queuing a frame on a connection takes — the backpressure policy, text
//! validation, compression through the protocol, header encoding (masking for clients), and
//! the choice between copying a payload into the queue and sharing it.
//!
//! Everything here queues; nothing writes. The worker's flush writes each dirty connection's
//! queue once per loop turn.

use bytes::{Bytes, BytesMut};

use bidir_protocol::frame::{FrameHeader, FrameRepr, Rsv};
use bidir_protocol::{Connection, DataKind, FrameKind};

use crate::SendError;
use crate::config::Backpressure;
use crate::cx::WorkerCx;
use crate::meta::Meta;
use crate::outq::SHARE_THRESHOLD;

/// A payload to queue.
pub(crate) enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Shared(b) => b,
        }
    }
}

impl WorkerCx {
    /// Applies the backpressure policy; `Err` when the send must be refused.
    pub(crate) fn admit(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
    ) -> Result<(), SendError> {
        if meta.abort {
            return Err(SendError::Closed);
        }
        if meta.out.len() < self.shared.config.max_backpressure {
            return Ok(());
        }
        self.counters.dropped_sends += 1;
        if let Backpressure::Close(code) = self.shared.config.backpressure {
            let now = self.now;
            let _ =
                self.control(conn, meta, |conn, out| conn.close(now, code, "backpressure", out));
        }
        Err(SendError::Backpressure)
    }

    /// Queues one data frame. `text_checked`: the payload is known to be UTF-8 already.
    pub(crate) fn send_payload(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        kind: FrameKind,
        payload: Payload<'_>,
        text_checked: bool,
    ) -> Result<(), SendError> {
        self.admit(conn, meta)?;
        let bytes = payload.bytes();
        let is_text = match kind {
            FrameKind::Message(k) | FrameKind::First(k) => k == DataKind::Text,
            FrameKind::Continue | FrameKind::Last => false,
        };
        let needs_validation =
            !text_checked && (is_text || matches!(kind, FrameKind::Continue | FrameKind::Last));
        let compress = match kind {
            FrameKind::Message(_) => conn.will_compress(bytes.len()),
            FrameKind::First(_) => conn.will_compress(usize::MAX),
            FrameKind::Continue | FrameKind::Last => false,
        };
        if needs_validation || compress {
            // Let the protocol validate text (and text fragments as they join) and compress.
            self.scratch.clear();
            conn.send_frame(kind, bytes, &mut self.scratch).map_err(protocol_error)?;
            meta.out.push_copy(&mut self.pool, &self.scratch);
        } else {
            let header = conn.encode_header(kind, bytes.len()).map_err(protocol_error)?;
            meta.out.push_copy(&mut self.pool, header.as_bytes());
            match payload {
                // A client's payload is masked: always a copy.
                _ if let Some(key) = header.mask() => {
                    meta.out.push_masked(&mut self.pool, bytes, key)
                }
                Payload::Shared(shared) if shared.len() >= SHARE_THRESHOLD => {
                    meta.out.push_shared(&mut self.pool, shared);
                }
                _ => meta.out.push_copy(&mut self.pool, bytes),
            }
        }
        if matches!(kind, FrameKind::Message(_) | FrameKind::Last) {
            self.counters.messages_out += 1;
        }
        self.queued(meta);
        Ok(())
    }

    /// Queues a pre-encoded (server, unmasked) frame of a whole message; `false` if refused.
    pub(crate) fn push_frame(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        kind: DataKind,
        frame: &Bytes,
    ) -> bool {
        if conn.check_send(FrameKind::Message(kind)).is_err() || self.admit(conn, meta).is_err() {
            return false;
        }
        if frame.len() >= SHARE_THRESHOLD {
            meta.out.push_shared(&mut self.pool, frame.clone());
        } else {
            meta.out.push_copy(&mut self.pool, frame);
        }
        self.counters.messages_out += 1;
        self.queued(meta);
        true
    }

    /// Queues the frames the protocol produced by itself (pongs, a heartbeat ping, a close
    /// reply). Past the backpressure limit pongs wait in the connection, where a ping flood
    /// collapses to one pong for the latest ping, until the worker's flush has drained the queue
    /// below the limit; the heartbeat and the close frame, one each at most, go at once. So
    /// what a peer that never reads can make the engine queue on its own is bounded.
    pub(crate) fn transmit(&mut self, conn: &mut Connection, meta: &mut Meta) {
        self.scratch.clear();
        let wrote = if meta.out.len() < self.shared.config.max_backpressure {
            conn.poll_transmit(&mut self.scratch)
        } else {
            conn.poll_transmit_congested(&mut self.scratch)
        };
        if wrote {
            meta.out.push_copy(&mut self.pool, &self.scratch);
            self.mark_dirty(meta);
        }
    }

    /// Queues a control frame the protocol writes.
    pub(crate) fn control(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        write: impl FnOnce(&mut Connection, &mut Vec<u8>) -> Result<(), bidir_protocol::SendError>,
    ) -> Result<(), SendError> {
        if meta.abort {
            return Err(SendError::Closed);
        }
        self.scratch.clear();
        write(conn, &mut self.scratch).map_err(protocol_error)?;
        meta.out.push_copy(&mut self.pool, &self.scratch);
        self.queued(meta);
        Ok(())
    }

    pub(crate) fn queued(&mut self, meta: &mut Meta) {
        if meta.out.len() >= self.shared.config.drain_threshold {
            meta.above_drain = true;
        }
        self.mark_dirty(meta);
    }
}

fn protocol_error(e: bidir_protocol::SendError) -> SendError {
    match e {
        bidir_protocol::SendError::Closed => SendError::Closed,
        other => SendError::Protocol(other),
    }
}

/// A whole message as one unmasked (server) frame.
pub(crate) fn encode_frame(kind: DataKind, payload: &[u8]) -> Bytes {
    server_frame(Rsv::NONE, kind, payload)
}

/// A whole message as one unmasked frame with reserved bits `rsv` (RSV1: compressed).
pub(crate) fn server_frame(rsv: Rsv, kind: DataKind, payload: &[u8]) -> Bytes {
    let repr = FrameRepr {
        fin: true,
        rsv,
        opcode: kind.opcode(),
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut frame = BytesMut::zeroed(repr.buffer_len());
    repr.emit(&mut FrameHeader::new_unchecked(&mut frame[..]));
    frame.extend_from_slice(payload);
    frame.freeze()
}
