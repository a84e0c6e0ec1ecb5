//! Connection limits and behaviour, with secure defaults.

use core::time::Duration;

/// How data messages reach the application.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// Whole messages ([`Event::Message`](crate::Event::Message)): fragments and partial frames
    /// are joined in the caller's spill buffer; a message that arrives whole in one input
    /// buffer is handed over in place, without a copy.
    #[default]
    Messages,
    /// Pieces as they arrive ([`Event::Fragment`](crate::Event::Fragment)): nothing is buffered,
    /// so a large message streams through in constant memory.
    Fragments,
}

/// Limits and behaviour of a [`Connection`](crate::Connection).
///
/// Every default is chosen for a server facing the open internet; each field says why. Raise
/// limits per route when the application needs it (the Autobahn echo server lifts
/// `max_message_size` and `max_fragments` for its 16 MiB cases), never globally by accident.
///
/// ```
/// let mut config = bidir_protocol::Config::default();
/// config.max_message_size = 16 << 20;
/// config.max_frame_size = 16 << 20;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted, in bytes. Default 1 MiB.
    ///
    /// Checked against the length a header announces, before any payload arrives: a peer
    /// cannot make the connection wait for, or buffer, a frame it will refuse. Exceeding it
    /// fails the connection with 1009. With permessage-deflate, a compressed frame may be
    /// larger by 1/8 plus 1 KiB (incompressible data grows when compressed).
    pub max_frame_size: usize,
    /// Largest message accepted, in bytes, after joining fragments. Default 1 MiB.
    ///
    /// This bounds the spill buffer a connection may grow: with 10 000 connections each
    /// holding a partial message, 1 MiB caps the worst case at 10 GiB instead of the 640 GiB
    /// that a 64 MiB default (tungstenite's) would allow. Exceeding it fails the connection
    /// with 1009, as soon as a frame header announces a length that would cross it. With
    /// permessage-deflate it bounds the decompressed message (checked while inflating), and
    /// the compressed bytes may be 1/8 plus 1 KiB more.
    pub max_message_size: usize,
    /// Most frames one message may be split into. Default 4096.
    ///
    /// Each fragment costs a header parse and a call; a peer could otherwise keep a message
    /// open forever with empty continuation frames. 4096 fragments of the smallest sensible
    /// size (256 B) still carry a full 1 MiB message. Exceeding it fails with 1009.
    pub max_fragments: u32,
    /// How data messages reach the application. Default [`Delivery::Messages`].
    pub delivery: Delivery,
    /// Answer pings with pongs automatically. Default `true`.
    ///
    /// RFC 6455 §5.5.2 requires an answer; turn this off only to answer from the application
    /// (pings are reported as [`Event::Ping`](crate::Event::Ping) either way).
    pub auto_pong: bool,
    /// Send a heartbeat ping after this long without receiving anything. Default 30 s.
    ///
    /// Without it a peer that vanished (power loss, NAT timeout) holds its connection forever:
    /// TCP alone notices nothing while we have nothing to send. 30 s stays under the idle
    /// timeouts of common NATs and load balancers (60 s and more). `None` disables heartbeats.
    pub ping_interval: Option<Duration>,
    /// After a heartbeat ping, fail the connection if nothing at all arrives within this long.
    /// Default 30 s.
    ///
    /// Any received byte proves the peer alive, not only the pong, so a peer busy sending a
    /// large message is never cut. The connection fails with [`Error::PongTimeout`](crate::Error::PongTimeout).
    pub pong_timeout: Duration,
    /// Start the closing handshake (1001, "idle timeout") after this long without receiving
    /// a data message. Default `None`.
    ///
    /// Off by default because whether a quiet peer is idle depends on the application (a
    /// subscriber to rare events is quiet by design); heartbeats already catch dead peers.
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours. Default 5 s.
    ///
    /// Bounds the resources a peer that never answers can hold after we decided to close.
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            max_fragments: 4096,
            delivery: Delivery::Messages,
            auto_pong: true,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(30),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
        }
    }
}
