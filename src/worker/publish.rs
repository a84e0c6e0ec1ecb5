//! Publishes delivered to this worker's subscribers: the frame encoded once, and compressed
//! at most once per window size, for every subscriber that can take it as is.

use bytes::Bytes;

use bidir_protocol::{DataKind, FrameKind, Message, Role};
use bidir_sys::Backend;

use super::Worker;
use super::slot::Phase;
use crate::mailbox::Publish;
use crate::send::{Payload, encode_frame};

impl<B: Backend> Worker<B> {
    pub(super) fn deliver_local_publishes(&mut self) {
        for publish in std::mem::take(&mut self.cx.local_publishes) {
            self.deliver(&publish);
        }
    }

    /// Queues a message for every subscriber of its topic on this worker but the one it
    /// excludes. The frame is encoded
    /// once, and compressed at most once per window size, for the subscribers that may get a
    /// standalone compressed message ([`Connection::broadcast_window`]: no context, or compact
    /// context, which is then told with [`Connection::broadcast_sent`]). A client-role
    /// subscriber masks per connection: its frame is encoded (and compressed, with the
    /// worker's codec lent if it shares it) on its own.
    ///
    /// [`Connection::broadcast_window`]: bidir_protocol::Connection::broadcast_window
    /// [`Connection::broadcast_sent`]: bidir_protocol::Connection::broadcast_sent
    pub(super) fn deliver(&mut self, publish: &Publish) {
        let Publish { topic, kind, payload, exclude } = publish;
        let kind = *kind;
        let members: Vec<usize> = self.cx.topics.members(topic).collect();
        let compression = self.cx.config().compression.as_ref();
        let settings = compression.map_or((1, 8), |c| (c.level, c.mem_level));
        let mut plain: Option<Bytes> = None;
        // Per window size: not tried yet, or the compressed frame (`None`: no smaller).
        let mut compressed: [Option<Option<Bytes>>; 7] = Default::default();
        for key in members {
            let Some(slot) = self.conns.slots.get_mut(key) else { continue };
            if Some(slot.meta.id) == *exclude {
                continue;
            }
            let Phase::Open { conn, .. } = &mut slot.phase else { continue };
            if slot.meta.intercepts_publishes {
                self.intercepted(key, kind, payload);
                continue;
            }
            let queued = if conn.role() == Role::Client {
                let Some(mut open) = self.conns.open(key) else { continue };
                let payload = Payload::Shared(payload.clone());
                let kind = FrameKind::Message(kind);
                self.cx.send_payload(&mut open.conn, open.meta, kind, payload, true).is_ok()
            } else {
                let codecs = &mut self.conns.codecs;
                let standalone = conn.broadcast_window(payload.len()).and_then(|bits| {
                    compressed[usize::from(bits.clamp(9, 15) - 9)]
                        .get_or_insert_with(|| {
                            codecs.compressed_frame(settings, kind, payload, bits)
                        })
                        .clone()
                });
                let is_compressed = standalone.is_some();
                let frame = standalone.unwrap_or_else(|| {
                    plain.get_or_insert_with(|| encode_frame(kind, payload)).clone()
                });
                let queued = self.cx.push_frame(conn, &mut slot.meta, kind, &frame);
                if queued && is_compressed {
                    conn.broadcast_sent(payload);
                }
                queued
            };
            if !queued {
                self.cx.counters.dropped_sends += 1;
            }
            self.conns.settle(&mut self.cx, key);
        }
    }

    /// A publish to a connection that sends them itself ([`Handler::on_publish`]).
    ///
    /// [`Handler::on_publish`]: crate::Handler::on_publish
    fn intercepted(&mut self, key: usize, kind: DataKind, payload: &[u8]) {
        let msg = match kind {
            DataKind::Binary => Message::Binary(payload),
            // Checked when it was published.
            DataKind::Text => match std::str::from_utf8(payload) {
                Ok(text) => Message::Text(text),
                Err(_) => return,
            },
        };
        self.conns.call(&mut self.cx, key, |h, cx| h.on_publish(cx, msg));
        self.conns.settle(&mut self.cx, key);
    }
}
