//! The worker's permessage-deflate codecs: lent, one call at a time, to connections that keep
//! no zlib state between messages, and used to compress a publish once for many subscribers.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use bidir_protocol::deflate::{Codec, DeflateConfig, DeflateParams};
use bidir_protocol::frame::Rsv;
use bidir_protocol::{Connection, DataKind};

use crate::meta::Meta;
use crate::send::server_frame;

/// One codec per (level, memory level) in use; a lent one is out of the list.
#[derive(Default)]
pub(super) struct Codecs {
    #[allow(clippy::vec_box, reason = "lent to connections as the Box they hold")]
    codecs: Vec<Box<Codec>>,
}

/// A connection borrowed with the worker's codec lent to it (when `lent`); the codec goes back
/// to the worker when the borrow ends.
pub(super) struct Lent<'a> {
    conn: &'a mut Connection,
    codecs: &'a mut Codecs,
    lent: bool,
}

impl Deref for Lent<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
    }
}

impl Drop for Lent<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.lent
            && let Some(codec) = self.conn.detach_codec()
        {
            self.codecs.codecs.push(codec);
        }
    }
}

impl Codecs {
    /// Lends the codec with the connection's settings to `conn` if it `shares` one.
    #[inline]
    pub(super) fn lend<'a>(&'a mut self, conn: &'a mut Connection, shares: bool) -> Lent<'a> {
        let lent = shares
            && match conn.codec_settings() {
                Some(settings) => {
                    let at = self.index(settings);
                    conn.attach_codec(self.codecs.swap_remove(at));
                    true
                }
                None => false,
            };
        Lent { conn, codecs: self, lent }
    }

    /// A whole message compressed on its own with the codec for `settings` (level, memory
    /// level), as one server frame; `None` when compressing does not make it smaller (it then
    /// goes out plain).
    pub(super) fn compressed_frame(
        &mut self,
        settings: (u8, u8),
        kind: DataKind,
        payload: &[u8],
        bits: u8,
    ) -> Option<Bytes> {
        let mut compressed = Vec::with_capacity(payload.len() / 2 + 64);
        let at = self.index(settings);
        self.codecs[at].compress_message(bits, payload, &mut compressed);
        if compressed.len() >= payload.len() {
            return None;
        }
        Some(server_frame(Rsv::RSV1, kind, &compressed))
    }

    /// Where the codec with `settings` (level, memory level) is, created on first use.
    fn index(&mut self, settings: (u8, u8)) -> usize {
        let settings = (settings.0.min(9), settings.1.clamp(1, 9));
        match self.codecs.iter().position(|c| c.settings() == settings) {
            Some(at) => at,
            None => {
                self.codecs.push(Box::new(Codec::new(settings.0, settings.1, 15)));
                self.codecs.len() - 1
            }
        }
    }
}

/// Turns permessage-deflate on for a new connection: with the worker's codec lent call by call
/// when the connection keeps no zlib state between messages (no context, or compact context),
/// else with a codec of its own.
pub(super) fn open_deflate(
    conn: &mut Connection,
    meta: &mut Meta,
    params: DeflateParams,
    config: &DeflateConfig,
) {
    conn.enable_deflate(params, config);
    adopt_codec(conn, meta);
}

/// Gives a connection with permessage-deflate on its codec: the worker's, lent call by call,
/// or its own.
pub(super) fn adopt_codec(conn: &mut Connection, meta: &mut Meta) {
    if conn.deflate_params().is_none() {
        return;
    }
    if conn.shares_codec() {
        meta.shares_codec = true;
    } else if let Some(codec) = conn.new_codec() {
        conn.attach_codec(codec);
    }
}
