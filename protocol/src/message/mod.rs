//! Data messages as the application sees them.

mod utf8;

pub use utf8::{Utf8Error, Utf8Validator};

use crate::frame::DataKind;

/// A whole data message, borrowed from the input buffer or the connection's spill buffer.
///
/// Text is validated UTF-8. The borrow ends before the next call that feeds the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// Text or binary.
    pub const fn kind(&self) -> DataKind {
        match self {
            Self::Text(_) => DataKind::Text,
            Self::Binary(_) => DataKind::Binary,
        }
    }

    /// The payload bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        match self {
            Self::Text(s) => s.as_bytes(),
            Self::Binary(b) => b,
        }
    }

    /// Payload length in bytes.
    pub const fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of a data message, for applications that stream messages instead of receiving them
/// whole ([`Delivery::Fragments`](crate::Delivery::Fragments)).
///
/// Pieces arrive in order. A piece is a frame's payload or part of one: large frames are
/// delivered as their bytes arrive, so the connection buffers nothing. For text, the pieces
/// joined are valid UTF-8 (checked as they arrive), but one piece may end inside a code point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fragment<'a> {
    /// Text or binary, from the message's first frame.
    pub kind: DataKind,
    /// The bytes, unmasked.
    pub payload: &'a [u8],
    /// The first piece of its message.
    pub first: bool,
    /// The last piece of its message.
    pub last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let t = Message::Text("hé");
        assert_eq!((t.kind(), t.len(), t.as_bytes()), (DataKind::Text, 3, "hé".as_bytes()));
        let b = Message::Binary(&[]);
        assert_eq!(b.kind(), DataKind::Binary);
        assert!(b.is_empty());
    }
}
