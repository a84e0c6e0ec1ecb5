//! Messages gathered for one peer and sent as few WebSocket messages as the limits allow: a
//! batch is closed at [`MAX_BATCH`] messages or about [`BATCH_BYTES`], and the next started,
//! so no gathering alone reaches a receiver's message limit (1 MiB by default). Used for the
//! answers to a received message, for what other threads queue for a connection, on both
//! sides.

use bidir_protocol::rpc::{MAX_BATCH, json};

use crate::Context;

/// A batch is closed once it holds this many bytes (a message bigger than it goes alone).
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// Batches in order; the last one open.
#[derive(Debug, Default)]
pub(crate) struct Gathering {
    full: Vec<json::Batch>,
    current: json::Batch,
    /// Bytes encoded since the last flush.
    bytes: usize,
    /// Messages pushed since the last flush.
    messages: usize,
}

impl Gathering {
    /// Encodes the next message with `write`, into a new batch when the current one is full.
    pub(crate) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let current = &self.current;
        if current.len() >= MAX_BATCH || current.bytes() >= BATCH_BYTES {
            let full = std::mem::take(&mut self.current);
            self.full.push(full);
        }
        let before = self.current.bytes();
        write(self.current.next_message());
        self.bytes += self.current.bytes() - before;
        self.messages += 1;
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    /// The bytes gathered since the last flush.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hands each batch's text to `send`, oldest first, and empties it (keeping the current
    /// batch's buffer).
    pub(crate) fn flush(&mut self, mut send: impl FnMut(&str)) {
        for batch in self.full.iter_mut().chain(std::iter::once(&mut self.current)) {
            if let Some(text) = batch.text() {
                send(text);
            }
        }
        self.full.clear();
        self.current.clear();
        self.bytes = 0;
        self.messages = 0;
    }

    /// Sends everything on `cx`, one WebSocket message per batch.
    pub(crate) fn send(&mut self, cx: &mut Context<'_>) {
        // Refused only past the backpressure limit (counted) or once closing.
        self.flush(|text| {
            let _ = cx.send_text(text);
        });
    }
}

#[cfg(test)]
mod tests {
    use bidir_protocol::rpc::{Msg, json};

    use super::*;

    fn texts(gathering: &mut Gathering) -> Vec<String> {
        let mut texts = Vec::new();
        gathering.flush(|text| texts.push(text.to_owned()));
        texts
    }

    #[test]
    fn batches_are_cut_at_their_count_and_size_in_order() {
        let mut gathering = Gathering::default();
        for callback in 0..2500 {
            gathering.push(|out| json::encode(&Msg::Release { callback }, out));
        }
        assert_eq!(gathering.len(), 2500);
        let batches = texts(&mut gathering);
        assert_eq!(batches.len(), 3, "1024 + 1024 + 452");
        let mut next = 0;
        for text in &batches {
            json::decode(text, |msg| {
                assert!(matches!(msg, Ok(Msg::Release { callback }) if callback == next));
                next += 1;
            })
            .unwrap();
        }
        assert_eq!((next, gathering.len(), gathering.bytes()), (2500, 0, 0));

        let big = "x".repeat(40 << 10);
        for _ in 0..3 {
            gathering
                .push(|out| out.extend_from_slice(format!(r#"["pub","t","{big}"]"#).as_bytes()));
        }
        let sizes: Vec<usize> = texts(&mut gathering).iter().map(String::len).collect();
        assert_eq!(sizes.len(), 2, "two fit under 64 KiB before the cut: {sizes:?}");
        assert!(sizes[0] < 2 * (41 << 10) && sizes[1] < 41 << 10, "{sizes:?}");
        assert!(texts(&mut gathering).is_empty());
    }
}
