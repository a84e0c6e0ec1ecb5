//! Messages gathered for one peer and sent as few WebSocket messages as the limits allow: a
//! batch is closed at [`MAX_BATCH`] messages or about [`BATCH_BYTES`], and the next started,
//! so no gathering alone reaches a receiver's message limit (1 MiB by default). Used for the
//! answers to a received message, for what other threads queue for a connection, on both
//! sides.

use bidir_protocol::Message;
use bidir_protocol::rpc::{MAX_BATCH, bin, json};

use super::wire::Wire;

/// A batch is closed once it holds this many bytes (a message bigger than it goes alone).
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// Batches in order; the last one open.
#[derive(Debug)]
pub(crate) struct Gathering {
    full: Vec<Batch>,
    current: Batch,
    /// Bytes encoded since the last flush.
    bytes: usize,
    /// Messages pushed since the last flush.
    messages: usize,
}

/// A batch of the connection's encoding.
#[derive(Debug)]
enum Batch {
    Json(json::Batch),
    Bin(bin::Batch),
}

impl Batch {
    fn new(wire: Wire) -> Self {
        match wire {
            Wire::Json => Self::Json(json::Batch::default()),
            Wire::Bin => Self::Bin(bin::Batch::default()),
        }
    }

    fn next_message(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Json(b) => b.next_message(),
            Self::Bin(b) => b.next_message(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Json(b) => b.len(),
            Self::Bin(b) => b.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Json(b) => b.bytes(),
            Self::Bin(b) => b.bytes(),
        }
    }

    /// The WebSocket message so far, if it holds any.
    fn message(&mut self) -> Option<Message<'_>> {
        match self {
            Self::Json(b) => b.text().map(Message::Text),
            Self::Bin(b) => b.bytes_out().map(Message::Binary),
        }
    }

    fn clear(&mut self) {
        match self {
            Self::Json(b) => b.clear(),
            Self::Bin(b) => b.clear(),
        }
    }

    fn empty_like(&self) -> Self {
        Self::new(match self {
            Self::Json(_) => Wire::Json,
            Self::Bin(_) => Wire::Bin,
        })
    }
}

impl Gathering {
    /// Nothing gathered yet, for a connection speaking `wire`.
    pub(crate) fn new(wire: Wire) -> Self {
        Self { full: Vec::new(), current: Batch::new(wire), bytes: 0, messages: 0 }
    }

    /// Encodes the next message with `write`, into a new batch when the current one is full.
    pub(crate) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let current = &self.current;
        if current.len() >= MAX_BATCH || current.bytes() >= BATCH_BYTES {
            let next = self.current.empty_like();
            let full = std::mem::replace(&mut self.current, next);
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

    /// Hands each batch's WebSocket message to `send`, oldest first, and empties it (keeping
    /// the current batch's buffer).
    pub(crate) fn flush(&mut self, mut send: impl FnMut(Message<'_>)) {
        for batch in self.full.iter_mut().chain(std::iter::once(&mut self.current)) {
            if let Some(msg) = batch.message() {
                send(msg);
            }
        }
        self.full.clear();
        self.current.clear();
        self.bytes = 0;
        self.messages = 0;
    }
}

#[cfg(test)]
mod tests {
    use bidir_protocol::rpc::{Msg, json};

    use super::*;

    fn texts(gathering: &mut Gathering) -> Vec<String> {
        let mut texts = Vec::new();
        gathering.flush(|msg| match msg {
            Message::Text(text) => texts.push(text.to_owned()),
            other => panic!("{other:?}"),
        });
        texts
    }

    #[test]
    fn batches_are_cut_at_their_count_and_size_in_order() {
        let mut gathering = Gathering::new(Wire::Json);
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
