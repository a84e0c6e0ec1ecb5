//! `--wire bin`: calls over `bidir.bin.v1`, each in its envelope (compressed above
//! `--compress-above`, sealed when `--key` is given), answers opened in place, and the
//! `Bidir-Key` exchange of the upgrade (docs/rpc.md, "Keys" and "bidir.bin.v1 envelope").
//!
//! The generator uses the protocol crate's sans-IO pieces directly, as the engine's own rpc
//! client does, so what it costs the server is what a bidir client would.

use bidir::client::Connect;
use bidir::protocol::rpc::Msg;
use bidir::protocol::rpc::bin::{self, FrameError};
use bidir::protocol::rpc::envelope::{self, Inbound};
use bidir::protocol::rpc::key::{self, KeyExchange};
use bidir::protocol::rpc::seal::{Opener, Sealer};
use bidir::rpc::{KeyMode, Psk};
use bidir::{Context, SendError};

/// The key of `--key FILE --key-mode MODE`.
pub(crate) type Key = (KeyMode, Psk);

/// Starts one connection's key exchange: `connect` with the offer in its `Bidir-Key`
/// header, and the exchange to [`finish`] with the server's answer. Each connection offers
/// fresh randomness, so each needs its own request.
///
/// # Errors
///
/// When the operating system gives no randomness.
pub(crate) fn offer(
    connect: &Connect,
    (mode, psk): &Key,
) -> Result<(Connect, KeyExchange), String> {
    let exchange = KeyExchange::start(*mode, psk).map_err(|e| e.to_string())?;
    Ok((connect.clone().header(key::HEADER, exchange.offer()), exchange))
}

/// Finishes `exchange` with the `Bidir-Key` of the server's answer `headers`: the client's
/// sealer and opener.
///
/// # Errors
///
/// No answer header, or one that does not prove the server has the key: the connection
/// must fail.
pub(crate) fn finish(
    exchange: KeyExchange,
    headers: &[(String, String)],
) -> Result<(Sealer, Opener), String> {
    let answer = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(key::HEADER));
    let (_, answer) = answer.ok_or_else(|| format!("no {} in the answer", key::HEADER))?;
    let keys = exchange.finish(answer.as_bytes()).map_err(|e| e.to_string())?;
    Ok(keys.client())
}

/// One connection's `bidir.bin.v1` envelope, both ways. Sending packs (and compresses) each
/// call in a buffer kept between calls and seals it with the connection's key; receiving
/// opens each answer where it lies, in arrival order.
pub(crate) struct Envelope {
    compress_above: Option<usize>,
    sealer: Option<Sealer>,
    inbound: Inbound,
    /// The connection's message limit, for a keyed [`Inbound`].
    max_message: usize,
    /// The message being sent, and the compressor's buffer.
    msg: Vec<u8>,
    scratch: Vec<u8>,
}

impl Envelope {
    /// An unencrypted envelope compressing messages longer than `compress_above` bytes and
    /// reading messages of at most `max_message` bytes (decompressed).
    pub(crate) fn new(compress_above: Option<usize>, max_message: usize) -> Self {
        Self {
            compress_above,
            sealer: None,
            inbound: Inbound::new(None, max_message),
            max_message,
            msg: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Encrypts from here on with the keys the exchange agreed (before the connection opens).
    pub(crate) fn keyed(&mut self, (sealer, opener): (Sealer, Opener)) {
        self.sealer = Some(sealer);
        self.inbound = Inbound::new(Some(opener), self.max_message);
    }

    /// Sends the message `write` appends to an empty buffer (its MessagePack bytes), in the
    /// envelope.
    ///
    /// # Errors
    ///
    /// The connection refused it (closing, or past its backpressure limit), or the key's
    /// counter is used up.
    pub(crate) fn send(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), String> {
        let msg = self.wrap(write)?;
        cx.send_binary(msg).map_err(|e: SendError| e.to_string())
    }

    /// The WebSocket message of the MessagePack bytes `write` appends to an empty buffer:
    /// packed (compressed when longer than the threshold and that makes it shorter), and
    /// sealed under the connection's next counter when it is encrypted.
    ///
    /// # Errors
    ///
    /// The key's counter is used up.
    fn wrap(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<&[u8], String> {
        self.msg.clear();
        self.msg.push(0);
        write(&mut self.msg);
        envelope::pack(&mut self.msg, self.compress_above, &mut self.scratch);
        if let Some(sealer) = &mut self.sealer {
            envelope::seal(sealer, &mut self.msg).map_err(|e| e.to_string())?;
        }
        Ok(&self.msg)
    }

    /// Opens a received message in place and hands `each` the id of every `ok` answer it
    /// carries (one, or each of a batch), `None` for any other message.
    ///
    /// # Errors
    ///
    /// A message that cannot be opened or read: the connection must close with its code.
    pub(crate) fn answers(
        &mut self,
        payload: &mut [u8],
        mut each: impl FnMut(Option<u64>),
    ) -> Result<(), FrameError> {
        let body = self.inbound.open(payload)?;
        bin::decode(body, |msg| {
            each(match msg {
                Ok(Msg::Result { id, .. }) => Some(id),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use bidir::CloseCode;
    use bidir::protocol::rpc::bin::RawPack;
    use bidir::protocol::rpc::envelope::{COMPRESSED, ENCRYPTED};
    use bidir::protocol::rpc::{ErrorBody, ErrorCode};

    use super::*;

    const LIMIT: usize = 1 << 20;

    /// A client envelope and the server's sealer and opener: keyed through the real
    /// exchange in `mode`, or neither.
    fn pair(mode: Option<KeyMode>, compress_above: Option<usize>) -> (Envelope, Server) {
        let mut client = Envelope::new(compress_above, LIMIT);
        let Some(mode) = mode else { return (client, Server(None, Inbound::new(None, LIMIT))) };
        let key = (mode, Psk::new(&[7; 32]).unwrap());
        let (connect, exchange) = offer(&Connect::new("ws://h/rpc").unwrap(), &key).unwrap();
        let request = exchange.offer();
        assert!(format!("{connect:?}").contains(&request), "the request offers it");
        let (answer, keys) = key::accept_with_seed(&key.1, Some(request.as_bytes()), [9; 32])
            .expect("the server takes the offer");
        client.keyed(finish(exchange, &[("bidir-key".into(), answer)]).unwrap());
        let (sealer, opener) = keys.server();
        (client, Server(Some(sealer), Inbound::new(Some(opener), LIMIT)))
    }

    /// The server's side of an exchange.
    struct Server(Option<Sealer>, Inbound);

    impl Server {
        /// `msgs` as one message in the envelope (a batch when several).
        fn send(&mut self, msgs: &[bin::BinMsg<'_>]) -> Vec<u8> {
            let mut msg = vec![0];
            bin::encode_batch(msgs, &mut msg);
            envelope::pack(&mut msg, None, &mut Vec::new());
            if let Some(sealer) = &mut self.0 {
                envelope::seal(sealer, &mut msg).unwrap();
            }
            msg
        }
    }

    #[test]
    fn calls_are_compressed_above_the_threshold_and_sealed() {
        let long: Vec<u8> = b"a call of words, words and words; ".repeat(40);
        for mode in [None, Some(KeyMode::Psk), Some(KeyMode::Ecdhe)] {
            for (threshold, plain, compressed) in [
                (Some(512), &b"short"[..], false),
                (Some(512), &long[..], true),
                (None, &long[..], false),
            ] {
                let (mut client, mut server) = pair(mode, threshold);
                for _ in 0..3 {
                    let mut wire =
                        client.wrap(|out| out.extend_from_slice(plain)).unwrap().to_vec();
                    let what = format!("{mode:?} {threshold:?} {}", plain.len());
                    assert_eq!(wire[0] & COMPRESSED != 0, compressed, "{what}");
                    assert_eq!(wire[0] & ENCRYPTED != 0, mode.is_some(), "{what}");
                    if compressed {
                        assert!(wire.len() < plain.len() / 2, "{what}: {} bytes", wire.len());
                    }
                    assert_eq!(server.1.open(&mut wire).unwrap(), plain, "{what}");
                }
            }
        }
    }

    #[test]
    fn answers_are_opened_in_place_and_bad_ones_refused() {
        for mode in [None, Some(KeyMode::Psk), Some(KeyMode::Ecdhe)] {
            let (mut client, mut server) = pair(mode, Some(512));
            let ok = |id| Msg::Result { id, value: RawPack::NIL };
            let error = ErrorBody { code: ErrorCode::Internal, message: "no".into(), data: None };
            let mut ids = Vec::new();
            for msgs in [vec![ok(7)], vec![ok(8), Msg::Error { id: 9, error }, ok(10)]] {
                let mut wire = server.send(&msgs);
                client.answers(&mut wire, |id| ids.push(id)).unwrap();
            }
            assert_eq!(ids, [Some(7), Some(8), None, Some(10)], "{mode:?}");

            // Altered on the way, or not MessagePack: the connection must close.
            let mut wire = server.send(&[ok(11)]);
            *wire.last_mut().unwrap() ^= 1;
            let e = client.answers(&mut wire, |_| panic!("nothing is read")).unwrap_err();
            let code = if mode.is_some() {
                CloseCode::POLICY_VIOLATION
            } else {
                CloseCode::INVALID_PAYLOAD
            };
            assert_eq!(e.close_code(), code, "{mode:?}: {}", e.reason());
        }
    }
}
